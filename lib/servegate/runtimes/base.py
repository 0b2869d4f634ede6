"""The runtime interface and its registry: how vLLM (and Ray) get onto a node, picked by name.

Like testinfra's backends: one small module per runtime, registered here under the name a cluster
file's `runtime:` uses. A runtime knows nothing of the Stack: it gets a RuntimeContext (the parsed
recipe and cluster, node hosts, the run's results and progress, the run id) and returns typed results.

    host    vLLM in a cached Python environment on the node (runtimes/host.py)
    docker  one long-lived container per node from the recipe's image (runtimes/docker.py)
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from servegate.config.cluster import Cluster
from servegate.config.paths import cache_root
from servegate.config.recipe import Recipe
from servegate.errors import Location, ServegateError
from servegate.nodes.host import NodeHost
from servegate.render.launches import ray_launches
from servegate.results.run import Progress, RunDir
from servegate.runtimes.pyenv import HostEnvironment
from servegate.steps.ray import RayCluster

T = TypeVar("T")


@dataclass
class RuntimeContext:
    """What every runtime step reads: parsed once by the Stack, passed down, never re-read from files."""

    recipe: Recipe
    cluster: Cluster
    hosts: dict[str, NodeHost]
    run: RunDir
    progress: Progress
    run_id: str
    cache: Path = field(default_factory=cache_root)

    def log(self, phase: str) -> Callable[..., None]:
        return lambda message, node=None: self.progress(phase, message, node=node)

    def parallel(self, func: Callable[[str], T], names: list[str] | None = None) -> dict[str, T]:
        """func(node name) on every node (or `names`) at once; the first failure is re-raised."""
        names = list(self.hosts) if names is None else names
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            return dict(zip(names, pool.map(func, names), strict=True))


class Runtime:
    """The interface; shared behaviour (Ray from the rendered spec, teardown of Ray) lives here."""

    name = "base"
    ray_for_checks = False  # start Ray on a multi-node cluster for the Ray/env-parity checks alone
    ray_exports_env = True  # Ray's start exports the recipe env (False: the container env is the only truth)

    def __init__(self, ctx: RuntimeContext):
        self.ctx = ctx
        self.ray_cluster: RayCluster | None = None

    # ---- steps each runtime implements -----------------------------------------------------------------
    def image(self):
        """The image report (docker), or None where the runtime has no image."""
        return None

    def environments(self) -> dict[str, HostEnvironment]:
        raise NotImplementedError

    def apply_mods(self, envs: dict[str, HostEnvironment]) -> dict[str, list]:
        raise NotImplementedError

    def flag_manifest(self, node: str, refresh: bool = False):
        """The flag manifest of the vLLM that will run on this node, after mods (.manifest, .record())."""
        raise NotImplementedError

    def generate_model(self, spec_name: str, spec_file: Path) -> str:
        raise NotImplementedError

    def serve_hosts(self) -> dict[str, NodeHost]:
        """Where vLLM and Ray run on each node (the node itself, or its container)."""
        return self.ctx.hosts

    def container_starts(self) -> dict[str, dict]:
        """node -> {epoch, started_at} of the container vLLM runs in: this machine's wall clock once `docker run`
        returned, and the engine's State.StartedAt (the node's clock); {} where vLLM runs on the node itself."""
        return {}

    def bin_dirs(self) -> dict[str, str]:
        """node -> folder holding vllm and ray, where they are not on PATH."""
        return {}

    # ---- shared ----------------------------------------------------------------------------------------
    def ray(self) -> RayCluster:
        """Ray across every node from the one Ray spec (render.launches.ray_launches); up until close()."""
        if self.ray_cluster is None:
            envs = self.environments()
            head = self.ctx.cluster.head.name
            ray = RayCluster(self.ctx.cluster, dict(self.serve_hosts()), self.ctx.run_id,
                             ray_launches(self.ctx.recipe, self.ctx.cluster), bin_dirs=self.bin_dirs(),
                             log=self.ctx.log("ray"), python=envs[head].python,
                             export_env=self.ray_exports_env)
            self.ray_cluster = ray
            ray.start()
            self.ctx.run.update("ray", value={"address": ray.address, "bring_up_s": round(ray.bring_up_s, 2)})
        return self.ray_cluster

    def close(self) -> list[str]:
        """Stop what this runtime started; return what survived (empty when all is gone)."""
        survivors = []
        if self.ray_cluster is not None:
            for name, text in self.ray_cluster.logs().items():  # kept in the results: the node's copy goes
                self.ctx.run.write_text(f"logs/{name}-ray.log", text)  # redacted there
            survivors += self.ray_cluster.stop()
            self.ray_cluster = None
        return survivors


RUNTIMES: dict[str, type[Runtime]] = {}


def register(cls: type[Runtime]) -> type[Runtime]:
    RUNTIMES[cls.name] = cls
    return cls


def runtime_for(ctx: RuntimeContext) -> Runtime:
    """The runtime every node of the cluster names (a run uses one)."""
    names = sorted({node.runtime for node in ctx.cluster.nodes})
    if len(names) != 1:
        raise ServegateError(f"cluster {ctx.cluster.name} mixes runtimes {names}; a run uses one",
                             where=Location(file=str(ctx.cluster.path)), fix="give every node the same runtime:")
    if names[0] not in RUNTIMES:
        raise ServegateError(f"runtime {names[0]!r} is not supported", where=Location(file=str(ctx.cluster.path)),
                             fix=f"use one of {', '.join(sorted(RUNTIMES))}")
    return RUNTIMES[names[0]](ctx)
