"""The `docker` runtime: image, one container per node, env probe, mods, model; Ray runs in the containers.

Each step runs on every node in parallel, records what it did in the run's results, and raises an error
naming node and cause. Teardown (`close`) stops Ray and removes the containers it started, by name, and
carries on past a node that is gone.
"""

from __future__ import annotations

import io
import shlex
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from servegate.config.paths import PACKAGE_DIR
from servegate.errors import Location, NodeError, ServegateError
from servegate.flags.node import image_manifest
from servegate.nodes.container import (
    HF_CACHE,
    ContainerHost,
    ContainerPlan,
    container_name,
    container_started_at,
    remove_container,
    start_container,
)
from servegate.nodes.host import NodeHost
from servegate.nodes.transport import send_bytes
from servegate.render.launches import node_env
from servegate.runtimes import images
from servegate.runtimes.base import Runtime, register
from servegate.runtimes.pyenv import HostEnvironment, describe
from servegate.steps.env_parity import EnvFinding, missing_vars
from servegate.steps.mods import ModOutcome, apply_mod, resolve_mod

IN_CONTAINER = "/opt/servegate"


class EnvProbeError(ServegateError):
    """A recipe var is missing (or different) in a node's container at start."""

    def __init__(self, findings: list[EnvFinding]):
        self.findings = findings
        lines = "\n".join(f"  {f}" for f in findings)
        super().__init__(
            "env vars missing or different inside the containers, before launch:\n"
            + lines
            + "\n  fix: these must be present at container START on every node (Ray-spawned workers "
            "inherit only the container env); `docker exec -e` later cannot fix rank 1. Tear the "
            "containers down and start them again with the recipe env"
        )


@dataclass
class ImageReport:
    tag: str
    build: images.BuildOutcome | None
    nodes: dict[str, dict] = field(default_factory=dict)  # node -> {id, before, action, versions}
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


@register
class DockerRuntime(Runtime):
    name = "docker"
    ray_for_checks = True  # the image carries Ray (checked by the image step)
    ray_exports_env = False  # Ray workers inherit the container env only: parity must see what it lacks

    def __init__(self, ctx):
        super().__init__(ctx)
        self.image_report: ImageReport | None = None
        self.containers: dict[str, ContainerHost] = {}
        self.plans: dict[str, ContainerPlan] = {}
        self.started: dict[str, dict] = {}  # node -> {epoch, started_at}: see container_starts
        self._envs: dict[str, HostEnvironment] | None = None
        self.env_probe: list[EnvFinding] = []  # what the probe found missing or different at container start

    @property
    def recipe(self):
        return self.ctx.recipe

    def log(self, phase: str):
        return self.ctx.log(phase)

    def parallel(self, func, names):
        return self.ctx.parallel(func, names)

    # ---- image -----------------------------------------------------------------------------------------
    def image(self) -> ImageReport:
        """Build (cached), give every node the same image ID, probe versions and Ray inside it."""
        if self.image_report is not None:
            return self.image_report
        started = time.monotonic()
        tag = self.recipe.container
        spec = images.build_spec(
            tag, self.recipe.build_args, self.recipe.path.parent, self.recipe.where("container")
        )
        log = self.log("image")
        build = images.build_image(spec, log=log) if spec else None
        hosts = self.ctx.hosts
        state = images.sync_image(
            tag,
            hosts,
            self.ctx.cluster.head.name,
            self.ctx.cache / "images",
            controller_id=build.image_id if build else None,
            log=log,
        )
        problems = images.identity_problems(state, tag)
        if not problems:
            probes = self.parallel(lambda name: images.probe_image(hosts[name], tag), list(hosts))
            pins = dict(self.recipe.expect.get("image") or {})
            for name, info in probes.items():
                state[name]["versions"] = info
                problems += images.image_problems(info, pins, name, tag)
        self.image_report = ImageReport(tag, build, state, problems, time.monotonic() - started)
        self._record_image(self.image_report)
        return self.image_report

    def _record_image(self, report: ImageReport) -> None:
        build = report.build
        built = None if build is None else {"content": build.content, "id": build.image_id,
                                            "seconds": round(build.seconds, 1), "cached": build.cached}
        record = {"tag": report.tag, "seconds": round(report.seconds, 1), "problems": report.problems,
                  "nodes": report.nodes, "build": built}
        self.ctx.run.update("image", value=record)

    # ---- containers ------------------------------------------------------------------------------------
    def container_plans(self) -> dict[str, ContainerPlan]:
        """What each node's container starts with: the recipe env (+ the node's own), the run id labels."""
        plans = {}
        for node in self.ctx.cluster.nodes:
            host = self.ctx.hosts[node.name]
            mounts = [host.home_path(node.workdir), host.home_path(HF_CACHE)]
            plans[node.name] = ContainerPlan(
                node,
                self.recipe.container,
                container_name(self.ctx.run_id, node),
                self.ctx.run_id,
                node_env(self.recipe, node),
                mounts,
            )
        return plans

    def start(self, plans: dict[str, ContainerPlan] | None = None) -> dict[str, ContainerHost]:
        """Start every node's container (image first), then probe that each holds its env."""
        if self.containers:
            return self.containers
        report = self.image()
        if report.problems:
            raise ServegateError(
                f"image {report.tag} is not usable, containers not started:\n"
                + "\n".join(f"  {p}" for p in report.problems)
            )
        self.plans = plans or self.container_plans()
        log = self.log("containers")

        def one(name: str) -> ContainerHost:
            host = start_container(self.ctx.hosts[name], self.plans[name])
            self.started[name] = {"epoch": round(time.time(), 3),
                                  "started_at": container_started_at(self.ctx.hosts[name], self.plans[name].name)}
            self.containers[name] = host
            log(f"started {self.plans[name].name} ({self.plans[name].image})", name)
            return host

        try:
            self.parallel(one, list(self.plans))
        finally:
            self.ctx.run.update(
                "containers",
                value={
                    name: {
                        "name": plan.name,
                        "image": plan.image,
                        "flags": plan.flags(),
                        "dropped": plan.dropped,
                        "env": self.ctx.run.redact.env(plan.env),
                        "started": name in self.containers,
                        **({"started_epoch": self.started[name]["epoch"],
                            "started_at": self.started[name]["started_at"]} if name in self.started else {}),
                    }
                    for name, plan in self.plans.items()
                },
            )
        self.probe_env()
        return self.containers

    def container_starts(self) -> dict[str, dict]:
        return dict(self.started)

    def probe_env(self) -> None:
        """Before launch: every recipe var (and the node's own) is inside every container, with its value."""
        wanted = {node.name: node_env(self.recipe, node) for node in self.ctx.cluster.nodes}
        findings = self.parallel(
            lambda name: missing_vars(self.containers[name], wanted[name]), list(self.containers)
        )
        flat = [f for items in findings.values() for f in items]
        self.env_probe = flat
        self.ctx.run.update("env_probe", value={"missing_or_different": [str(f) for f in flat]})
        if flat:
            raise EnvProbeError(flat)

    def environments(self) -> dict[str, HostEnvironment]:
        if self._envs is None:
            hosts = self.start()
            self._envs = self.parallel(lambda name: self._environment(hosts[name]), list(hosts))
        return self._envs

    def _environment(self, host: ContainerHost) -> HostEnvironment:
        python = host.check("command -v python3", "finding python3 in the container").stdout.strip()
        return describe(host, str(Path(python).parent.parent), python, [])

    def serve_hosts(self) -> dict[str, ContainerHost]:
        return self.start()

    # ---- mods and flags --------------------------------------------------------------------------------
    def apply_mods(self, envs: dict[str, HostEnvironment]) -> dict[str, list[ModOutcome]]:
        """Apply the recipe's mods inside every container, then extract the flag manifest there."""
        folders = [resolve_mod(mod, self.recipe.path.parent) for mod in self.recipe.mods]

        def one(name: str) -> list[ModOutcome]:
            host, env = self.containers[name], envs[name]
            outcomes: list[ModOutcome] = []
            for folder in folders:
                outcomes += apply_mod(
                    host.run,
                    folder,
                    target_dir=env.site_packages,
                    dest_root=f"{IN_CONTAINER}/mods",
                    node=name,
                    extra_env={"VLLM_PYTHON": env.python},
                    vllm_version=env.versions.get("vllm"),
                )
            return outcomes

        return self.parallel(one, list(self.containers))

    def flag_manifest(self, name: str, refresh: bool = False):
        """The flag manifest of the vLLM inside one node's container after mods: flags/extract.py piped into
        the container's Python, cached by the ID of the image the container runs (flags.node.image_manifest),
        so nodes holding the same image share one extraction."""
        env = self.environments()[name]
        found = image_manifest(self.containers[name], self.plans[name].image, env.python, self.recipe.mods,
                               self.recipe.path.parent, refresh=refresh)
        self.ctx.run.update("flag_manifests", name, found.record())
        return found

    # ---- model -----------------------------------------------------------------------------------------
    def generate_model(self, spec_name: str, spec_file: Path) -> str:
        """Generate a servegate tiny model in the head's container (it has torch), into the node workdir."""
        head = self.start()[self.ctx.cluster.head.name]
        out = f"{head.home_path(head.node.workdir)}/models/{spec_name}"
        put_tree(head, PACKAGE_DIR, f"{IN_CONTAINER}/lib/servegate")
        put_file(head, spec_file.read_bytes(), f"{IN_CONTAINER}/specs/{spec_file.name}")
        command = (
            f"PYTHONPATH={IN_CONTAINER}/lib python3 -m servegate.models "
            f"{IN_CONTAINER}/specs/{spec_file.name} {shlex.quote(out)}"
        )
        head.check(command, f"generating model '{spec_name}' in the head's container", timeout=900)
        return out

    # ---- teardown --------------------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Stop Ray, remove the containers this runtime started (a dead node does not stop the others)."""
        survivors = super().close()
        names = list(self.plans)

        def remove(name: str) -> None:
            try:
                gone = remove_container(self.ctx.hosts[name], self.plans[name].name)
            except Exception as exc:  # noqa: BLE001 - teardown carries on past a node that died
                gone, why = False, f" ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            else:
                why = ""
            if not gone:
                survivors.append(f"{name}: container {self.plans[name].name}{why}")

        self.parallel(remove, names)
        self.containers.clear()
        return survivors


def put_file(host: NodeHost, data: bytes, path: str) -> None:
    wrapped = _in(host, f"mkdir -p {shlex.quote(str(Path(path).parent))} && cat > {shlex.quote(path)}")
    done = send_bytes(host.node.host, data, wrapped)
    if done.returncode != 0:
        raise NodeError(
            f"writing {path} failed: {done.stderr.decode(errors='replace')[-300:]}",
            where=Location(node=host.name),
        )


def put_tree(host: NodeHost, folder: Path, dest: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=".", filter=lambda info: None if "__pycache__" in info.name else info)
    command = f"rm -rf {shlex.quote(dest)} && mkdir -p {shlex.quote(dest)} && tar -xz -C {shlex.quote(dest)}"
    done = send_bytes(host.node.host, buffer.getvalue(), _in(host, command))
    if done.returncode != 0:
        raise NodeError(
            f"copying {folder} to {dest} failed: {done.stderr.decode(errors='replace')[-300:]}",
            where=Location(node=host.name),
        )


def _in(host: NodeHost, command: str) -> str:
    return host.wrap(command, interactive=True) if isinstance(host, ContainerHost) else command
