"""Bring-up of one recipe on one cluster, step by step, shared by the CLI and the pytest fixtures.

Each step is a method that can be called on its own (a fixture per step) and records its phase time in
the run's results. Nothing touches a node before it is asked for.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from servegate.config.cluster import Cluster, load_cluster
from servegate.config.paths import CLUSTERS_DIR, LIB_DIR, MODEL_SPECS_DIR, cache_root
from servegate.config.recipe import Recipe, load_recipe
from servegate.errors import ServegateError
from servegate.nodes.host import NodeHost
from servegate.render.command import Rendered, render
from servegate.results.run import Progress, RunDir
from servegate.runtimes.host import HostEnvironment, existing_environment, pip_requirements, provision, sync_mods
from servegate.serve.deployment import Deployment, new_run_id

RAY_ROLES = ("ray-head", "ray-worker")
T = TypeVar("T")


@dataclass
class Stack:
    recipe: Recipe
    cluster: Cluster
    overrides: dict[str, Any] = field(default_factory=dict)
    run: RunDir | None = None
    progress: Progress = field(default_factory=Progress)
    _hosts: dict[str, NodeHost] | None = None
    _envs: dict[str, HostEnvironment] | None = None
    _model: str | None = None
    run_id: str = field(default_factory=new_run_id)  # labels this run's containers, Ray and vLLM processes
    _docker: Any = None  # runtime.DockerRuntime, made on first use by a docker-runtime cluster
    _mods: dict[str, list] | None = None
    _exits: ExitStack | None = None  # a simulated cluster this stack entered (sim/cluster.py)

    @classmethod
    def from_files(cls, recipe_path: str | Path, cluster_path: str | Path | None = None,
                   overrides: dict[str, Any] | None = None, results_root: Path | None = None) -> Stack:
        recipe = load_recipe(recipe_path)
        cluster = load_cluster(cluster_path or default_cluster_path(recipe))
        run = RunDir(recipe.name, results_root)
        stack = cls(recipe, cluster, dict(overrides or {}), run, Progress(run))
        stack.record_inputs()
        return stack

    # ---- lifecycle: a simulated cluster comes up with the stack; containers, Ray and it go at close ------
    def __enter__(self) -> Stack:
        from servegate.sim.cluster import simulated_cluster
        self._exits = ExitStack()
        try:
            log = lambda message: self.progress("simulation", message)  # noqa: E731
            self._exits.enter_context(simulated_cluster(self.cluster, log=log))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> list[str]:
        """Stop Ray and remove this run's containers on every node, then leave a simulation it entered."""
        survivors = []
        if self._docker is not None:
            with self.phase("runtime teardown"):
                survivors = self._docker.close()
            self.run.update("teardown", value={"survivors": survivors})
        if self._exits is not None:
            self._exits.close()
            self._exits = None
        return survivors

    @property
    def docker(self):
        """The docker runtime of this run (image, containers, env probe, Ray); every node must use it."""
        if self._docker is None:
            from servegate.runtimes.docker import DockerRuntime
            runtimes = sorted({node.runtime for node in self.cluster.nodes})
            if runtimes != ["docker"]:
                raise ServegateError(f"cluster {self.cluster.name} mixes runtimes {runtimes}; a run uses one")
            self._docker = DockerRuntime(self)
        return self._docker

    def uses_docker(self) -> bool:
        return any(node.runtime == "docker" for node in self.cluster.nodes)

    @property
    def image_cache(self) -> Path:
        return cache_root() / "images"

    def record_inputs(self) -> None:
        assert self.run
        self.run.update("recipe", value={"name": self.recipe.name, "file": str(self.recipe.path),
                                         "sha256": self.recipe.hash(), "overrides": self.overrides})
        self.run.update("cluster", value={"name": self.cluster.name, "file": str(self.cluster.path),
                                          "nodes": [vars(n) | {"env": sorted(n.env)} for n in self.cluster.nodes]})

    @contextmanager
    def phase(self, name: str, node: str | None = None, heartbeat_s: float = 30.0) -> Iterator[None]:
        """Time a phase into run.json; print a heartbeat line while it runs so long work shows progress."""
        started = time.monotonic()
        self.progress(name, "start", node=node)
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(heartbeat_s):
                self.progress(name, f"still running ({time.monotonic() - started:.0f}s)", node=node)

        threading.Thread(target=heartbeat, daemon=True, name=f"heartbeat-{name}").start()
        try:
            yield
        finally:
            done.set()
            elapsed = time.monotonic() - started
            self.progress(name, f"done in {elapsed:.1f}s", node=node)
            if self.run:
                key = name if node is None else f"{name}[{node}]"
                self.run.phase(key, elapsed + self.run.data["phases"].get(key, 0.0))

    def on_nodes(self, func: Callable[[NodeHost], T]) -> dict[str, T]:
        """Run func on every node in parallel; re-raise the first failure with its node named."""
        hosts = self.hosts
        with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
            futures = {name: pool.submit(func, host) for name, host in hosts.items()}
            return {name: future.result() for name, future in futures.items()}

    # ---- steps -----------------------------------------------------------------------------------------
    @property
    def hosts(self) -> dict[str, NodeHost]:
        if self._hosts is None:
            self._hosts = {node.name: NodeHost(node) for node in self.cluster.nodes}
        return self._hosts

    def environments(self) -> dict[str, HostEnvironment]:
        if self._envs is None:
            if self.uses_docker():
                with self.phase("image"):
                    self.docker.image()
                with self.phase("containers"):
                    self.docker.start()
            with self.phase("environment"):
                self._envs = self.on_nodes(self._environment_for)
                for name, env in self._envs.items():
                    self.run.update("nodes", name, {"versions": env.versions, "python": env.python})
        return self._envs

    def _environment_for(self, host: NodeHost) -> HostEnvironment:
        node = host.node
        if node.runtime == "docker":
            return self.docker.environment(node.name)
        if node.runtime != "host":
            raise ServegateError(f"node '{node.name}': runtime '{node.runtime}' is not supported by this step yet")
        if node.python:
            return existing_environment(host, node.python)
        requirements = pip_requirements(self.recipe.container, self.recipe.where("container"))
        return provision(host, requirements, log=lambda msg: self.progress("environment", msg, node=node.name))

    def apply_mods(self) -> dict[str, list]:
        if self._mods is not None:
            return self._mods
        envs = self.environments()
        with self.phase("mods"):
            if self.uses_docker():
                outcomes = self.docker.apply_mods(envs)
            else:
                outcomes = self.on_nodes(lambda host: sync_mods(host, envs[host.name], self.recipe.mods,
                                                                self.recipe.path.parent))
        summary = {name: [vars(o) for o in items] for name, items in outcomes.items()}
        self.run.update("mods", value=summary)
        self._mods = summary
        return summary

    def model_path(self) -> str:
        """The model location on the nodes; generated models are built once and shipped to every node."""
        if self._model is None:
            spec_name = self.recipe.generated_model
            if spec_name is None:
                self._model = self.recipe.model or ""
            else:
                with self.phase("model generation"):
                    self._model = self._generate_model(spec_name)
            self.run.update("model", value={"path": self._model, "generated": spec_name})
            if len(self.cluster.nodes) > 1 and self._model:
                self.distribute_model(self._model)
        return self._model

    def distribute_model(self, path: str) -> dict[str, str]:
        """Every node that lacks the model folder receives the head's copy (generated models included)."""
        from servegate.steps.model_folder import sync_folder
        with self.phase("weights"):
            stamp = "servegate-model.json" if self.recipe.generated_model else None  # ours: replace if stale
            actions = sync_folder(self.hosts, self.cluster.head.name, path, stamp,
                                  log=lambda message: self.progress("weights", message))
        self.run.update("weights", "distribution", actions)
        return actions

    def weights(self) -> dict[str, Any]:
        """Manifest (file list, sizes, content hash) of the model folder on every node, and the problems."""
        from servegate.steps import model_folder as weights
        path = self.model_path()
        with self.phase("weights check"):
            manifests = self.on_nodes(lambda host: weights.manifest(host, path))
        problems = weights.problems(manifests, self.cluster.head.name, path)
        report = {"path": path, "problems": problems,
                  "nodes": {name: (m.summary() if m else None) for name, m in manifests.items()}}
        self.run.update("weights", "check", report)
        return report

    def ray(self):
        """Ray across every node (head on the head's fabric IP); stays up until close()."""
        return self.docker.ray_cluster()

    def preflight(self, min_free_gib: float, rendered: Rendered) -> dict:
        """nodecheck on every node at once over one session each: {node: NodeCheckReport}."""
        from servegate.nodes.check import NodeCheck, check_nodes
        from servegate.nodes.host import sessions
        checks = {}
        for node in self.cluster.nodes:
            serves = any(launch.role == "serve" for launch in rendered.launches_for(node))
            checks[node.name] = NodeCheck(node.workdir, min_free_gib, port=rendered.port if serves else None)
        with self.phase("node checks"), sessions(dict(self.hosts)):
            reports = check_nodes(self.hosts, checks)
        self.run.update("node_checks", value={name: {"seconds": round(r.seconds, 3), "problems": r.problems}
                                               for name, r in reports.items()})
        return reports

    def deployment_ray(self):
        """A view of the Ray head a host-runtime deployment launched (role ray-head); it stops with vLLM."""
        from servegate.steps.ray import RayCluster
        head = self.cluster.head.name
        return RayCluster(self.cluster, dict(self.hosts), self.run_id, python=self.environments()[head].python)

    def _generate_model(self, spec_name: str) -> str:
        spec = MODEL_SPECS_DIR / f"{spec_name}.yaml"
        if not spec.is_file():
            raise ServegateError(f"{self.recipe.path}: model 'generated:{spec_name}' has no spec at {spec}")
        if self.cluster.head.runtime == "docker":
            return self.docker.generate_model(spec_name, spec)
        python = self.controller_python()
        out = cache_root() / "models" / spec_name
        env = {**os.environ, "PYTHONPATH": str(LIB_DIR)}
        result = subprocess.run([python, "-m", "servegate.models", str(spec), str(out)], capture_output=True,
                                text=True, env=env, timeout=900)
        if result.returncode != 0:
            raise ServegateError(f"generating model '{spec_name}' failed:\n{result.stderr[-3000:]}")
        return str(out)

    def controller_python(self) -> str:
        """A python with torch: the head node's vLLM environment when the head is this machine."""
        head_env = self.environments()[self.cluster.head.name]
        if self.cluster.head.host.startswith("local://"):
            return head_env.python
        return os.environ.get("SERVEGATE_TORCH_PYTHON", head_env.python)

    def rendered(self) -> Rendered:
        rendered = render(self.recipe, self.cluster, self.overrides, model_path=self.model_path())
        self.run.update("rendered", value={
            "mode": rendered.mode, "command": self.run.redact(rendered.command_text), "notes": rendered.notes,
            "launches": [{"node": launch.node.name, "role": launch.role, "argv": self.run.redact.argv(launch.argv),
                          "env": self.run.redact.env(launch.env)} for launch in rendered.launches]})
        return rendered

    def deployment(self) -> Deployment:
        envs = self.environments()
        self.apply_mods()
        rendered = self.rendered()
        bin_dirs = {name: env.bin_dir for name, env in envs.items()}
        hosts = self.hosts
        if self.uses_docker():
            hosts = dict(self.docker.start())  # vLLM runs inside each node's container
            if len(self.cluster.nodes) > 1:
                problems = self.weights()["problems"]
                if problems:
                    raise ServegateError("model folder not identical on every node, not launching:\n"
                                         + "\n".join(f"  {p}" for p in problems))
            if rendered.mode == "ray":  # Ray is the stack's (started once, shared with the Ray checks)
                self.ray()
                launches = [x for x in rendered.launches if x.role not in RAY_ROLES]
                rendered = replace(rendered, launches=launches)
            ray_use = "executor" if rendered.mode == "ray" else "checks only"
            self.run.update("multinode", value={"vllm": rendered.mode, "ray": ray_use})
        return Deployment(rendered, hosts, self.run, self.progress, bin_dirs,
                          ready_timeout_s=float(self.recipe.expect.ready_timeout_s), run_id=self.run_id)


def default_cluster_path(recipe: Recipe) -> Path | None:
    if recipe.cluster:
        candidate = (recipe.path.parent / recipe.cluster)
        if candidate.is_file():
            return candidate
        return CLUSTERS_DIR / Path(recipe.cluster).name
    return None


def shell_join(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
