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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from servegate.cluster import Cluster, Node, load_cluster
from servegate.environment import (HostEnvironment, existing_environment, pip_requirements, provision,
                                   sync_mods)
from servegate.errors import ServegateError
from servegate.nodes import NodeHost
from servegate.recipe import Recipe, load_recipe
from servegate.render import Rendered, render
from servegate.results import Progress, RunDir
from servegate.server import Deployment

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_SPECS = REPO_ROOT / "recipes" / "models"
T = TypeVar("T")


def cache_root() -> Path:
    return Path(os.environ.get("SERVEGATE_CACHE", Path.home() / ".cache" / "servegate"))


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

    @classmethod
    def from_files(cls, recipe_path: str | Path, cluster_path: str | Path | None = None,
                   overrides: dict[str, Any] | None = None, results_root: Path | None = None) -> "Stack":
        recipe = load_recipe(recipe_path)
        cluster = load_cluster(cluster_path or default_cluster_path(recipe))
        run = RunDir(recipe.name, results_root)
        stack = cls(recipe, cluster, dict(overrides or {}), run, Progress(run))
        stack.record_inputs()
        return stack

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
            with self.phase("environment"):
                self._envs = self.on_nodes(self._environment_for)
                for name, env in self._envs.items():
                    self.run.update("nodes", name, {"versions": env.versions, "python": env.python})
        return self._envs

    def _environment_for(self, host: NodeHost) -> HostEnvironment:
        node = host.node
        if node.runtime != "host":
            raise ServegateError(f"node '{node.name}': runtime '{node.runtime}' is not supported by this step yet")
        if node.python:
            return existing_environment(host, node.python)
        requirements = pip_requirements(self.recipe.container, self.recipe.where("container"))
        return provision(host, requirements, log=lambda msg: self.progress("environment", msg, node=node.name))

    def apply_mods(self) -> dict[str, list]:
        envs = self.environments()
        with self.phase("mods"):
            outcomes = self.on_nodes(lambda host: sync_mods(host, envs[host.name], self.recipe.mods,
                                                            self.recipe.path.parent))
        summary = {name: [vars(o) for o in items] for name, items in outcomes.items()}
        self.run.update("mods", value=summary)
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
        return self._model

    def _generate_model(self, spec_name: str) -> str:
        spec = MODEL_SPECS / f"{spec_name}.yaml"
        if not spec.is_file():
            raise ServegateError(f"{self.recipe.path}: model 'generated:{spec_name}' has no spec at {spec}")
        python = self.controller_python()
        out = cache_root() / "models" / spec_name
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "lib")}
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
            "launches": [{"node": l.node.name, "role": l.role, "argv": self.run.redact.argv(l.argv),
                          "env": self.run.redact.env(l.env)} for l in rendered.launches]})
        return rendered

    def deployment(self) -> Deployment:
        envs = self.environments()
        self.apply_mods()
        rendered = self.rendered()
        bin_dirs = {name: env.bin_dir for name, env in envs.items()}
        return Deployment(rendered, self.hosts, self.run, self.progress, bin_dirs,
                          ready_timeout_s=float(self.recipe.expect.ready_timeout_s))


def default_cluster_path(recipe: Recipe) -> Path | None:
    if recipe.cluster:
        candidate = (recipe.path.parent / recipe.cluster)
        if candidate.is_file():
            return candidate
        return REPO_ROOT / "recipes" / "clusters" / Path(recipe.cluster).name
    return None


def shell_join(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
