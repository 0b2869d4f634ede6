"""Bring-up of one recipe on one cluster: runs each step once, caches its typed result, records it.

The Stack owns the parsed inputs (recipe, cluster, overrides), the runtime (picked by name from
runtimes/base.py), the node hosts and the run's results. It has no runtime branches: every "how" is the
runtime's or a step module's. Every consumer (pytest fixtures, the CLI, the image gate) calls the same
step methods, so any subset of the runbook checks what the full one checks before a launch:
`deployment()` itself asks the flags, env-parity and model-folder steps and refuses on their errors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from servegate.config.cluster import Cluster, load_cluster
from servegate.config.paths import CLUSTERS_DIR, MODEL_SPECS_DIR
from servegate.config.recipe import Recipe, load_recipe
from servegate.errors import LaunchRefused, ServegateError
from servegate.flags.prelaunch import GateResult, check_launches
from servegate.labels import new_run_id
from servegate.lifecycle import Managed
from servegate.memory.plan import MemoryPlan
from servegate.memory.recipe_plan import plan_for
from servegate.nodes.host import NodeHost, sessions
from servegate.render.command import Rendered, render
from servegate.results.run import Progress, RunDir
from servegate.runtimes import docker as _docker  # noqa: F401 - registers the docker runtime
from servegate.runtimes import host as _host  # noqa: F401 - registers the host runtime
from servegate.runtimes.base import RuntimeContext, runtime_for
from servegate.serve.deployment import Deployment
from servegate.sim.cluster import simulated_cluster
from servegate.steps import fabric, model_folder, stack_parity
from servegate.steps.env_parity import ParityReport, parity
from servegate.steps.preflight import NodeCheck, check_nodes
from servegate.steps.ray import RayCluster, node_name

T = TypeVar("T")


class Stack(Managed):
    def __init__(self, recipe: Recipe, cluster: Cluster, overrides: dict[str, Any] | None = None,
                 results_root: Path | None = None):
        self.recipe, self.cluster, self.overrides = recipe, cluster, dict(overrides or {})
        self.run = RunDir(recipe.name, results_root)
        self.progress = Progress(self.run)
        self.run_id = new_run_id()  # labels this run's containers, Ray and vLLM processes
        self.hosts = {node.name: NodeHost(node) for node in cluster.nodes}
        self.runtime = runtime_for(RuntimeContext(recipe, cluster, self.hosts, self.run, self.progress, self.run_id))
        self._done: dict[str, Any] = {}
        self._exits: ExitStack | None = None
        self.record_inputs()

    @classmethod
    def from_files(cls, recipe_path: str | Path, cluster_path: str | Path | None = None,
                   overrides: dict[str, Any] | None = None, results_root: Path | None = None) -> Stack:
        recipe = load_recipe(recipe_path)
        return cls(recipe, load_cluster(cluster_path or default_cluster_path(recipe)), overrides, results_root)

    # ---- lifecycle: a simulated cluster comes up with the stack; the runtime and it go at close --------
    def start(self) -> None:
        self._exits = ExitStack()
        log = lambda message: self.progress("simulation", message)  # noqa: E731
        self._exits.enter_context(simulated_cluster(self.cluster, log=log))

    def stop(self) -> list[str]:
        return self.close()

    def close(self) -> list[str]:
        """Stop Ray and remove this run's containers on every node, then leave a simulation it entered."""
        with self.phase("runtime teardown"):
            survivors = self.runtime.close()
        self.run.update("teardown", value={"survivors": survivors})
        if self._exits is not None:
            self._exits.close()
            self._exits = None
        return survivors

    def record_inputs(self) -> None:
        self.run.update("recipe", value={"name": self.recipe.name, "file": str(self.recipe.path),
                                         "sha256": self.recipe.hash(), "overrides": self.overrides})
        self.run.update("cluster", value={"name": self.cluster.name, "file": str(self.cluster.path),
                                          "runtime": self.runtime.name,
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
            key = name if node is None else f"{name}[{node}]"
            self.run.phase(key, elapsed + self.run.data["phases"].get(key, 0.0))

    def _once(self, step: str, func: Callable[[], T], phase: str | None = None) -> T:
        """Run a step the first time it is asked for (timed as `phase`), then return its cached result."""
        if step not in self._done:
            if phase is None:
                self._done[step] = func()
            else:
                with self.phase(phase):
                    self._done[step] = func()
        return self._done[step]

    # ---- steps, in runbook order (steps/__init__.py lists them with their scenario modules) ------------
    def preflight(self, min_free_gib: float) -> dict:
        """Disk and serve port on every node in one round trip each, all nodes at once: {node: report}."""
        rendered = self.rendered()
        checks = {node.name: NodeCheck(node.workdir, min_free_gib,
                                       port=rendered.port if any(x.role == "serve" for x in
                                                                 rendered.launches_for(node)) else None,
                                       gpus=node.gpus or 0)
                  for node in self.cluster.nodes}
        with self.phase("node checks"), sessions(dict(self.hosts)):
            reports = check_nodes(self.hosts, checks)
        self.run.update("node_checks", value={name: {"seconds": round(r.seconds, 3), "problems": r.problems}
                                               for name, r in reports.items()})
        return reports

    def image(self):
        """The image report (docker runtime), None where the runtime has no image."""
        return self._once("image", self.runtime.image, "image")

    def environments(self):
        def bring_up():
            self.image()
            envs = self.runtime.environments()
            for name, env in envs.items():
                self.run.update("nodes", name, {"versions": env.versions, "python": env.python})
            return envs
        return self._once("environments", bring_up, "environment")

    def apply_mods(self) -> dict[str, list]:
        def apply():
            outcomes = self.runtime.apply_mods(self.environments())
            summary = {name: [vars(o) for o in items] for name, items in outcomes.items()}
            self.run.update("mods", value=summary)
            return summary
        self.environments()
        return self._once("mods", apply, "mods")

    def model_path(self) -> str:
        """The model location on the nodes; generated models are built once and shipped to every node."""
        def locate():
            spec_name = self.recipe.generated_model
            path = (self.recipe.model or "") if spec_name is None else self._generate_model(spec_name)
            self.run.update("model", value={"path": path, "generated": spec_name})
            if len(self.cluster.nodes) > 1 and path:
                self._distribute_model(path)
            return path
        self.environments()
        return self._once("model", locate)

    def _generate_model(self, spec_name: str) -> str:
        spec = MODEL_SPECS_DIR / f"{spec_name}.yaml"
        if not spec.is_file():
            raise ServegateError(f"{self.recipe.path}: model 'generated:{spec_name}' has no spec at {spec}")
        with self.phase("model generation"):
            return self.runtime.generate_model(spec_name, spec)

    def _distribute_model(self, path: str) -> None:
        """Every node that lacks the model folder receives the head's copy (generated models included)."""
        with self.phase("weights"):
            stamp = "servegate-model.json" if self.recipe.generated_model else None  # ours: replace if stale
            actions = model_folder.sync_folder(self.hosts, self.cluster.head.name, path, stamp,
                                               log=lambda message: self.progress("weights", message))
        self.run.update("weights", "distribution", actions)

    def weights(self) -> dict[str, Any]:
        """Manifest (file list, sizes, content hash) of the model folder on every node, and the problems."""
        def check():
            path = self.model_path()
            manifests = self.on_nodes(lambda host: model_folder.manifest(host, path))
            problems = model_folder.problems(manifests, self.cluster.head.name, path)
            report = {"path": path, "problems": problems,
                      "nodes": {name: (m.summary() if m else None) for name, m in manifests.items()}}
            self.run.update("weights", "check", report)
            return report
        with self.phase("weights check"):  # not cached: a folder can change between the check and the launch
            return check()

    def rendered(self) -> Rendered:
        """The recipe rendered onto the cluster, once per run (the model location filled in)."""
        def make():
            rendered = render(self.recipe, self.cluster, self.overrides, model_path=self.model_path())
            redact = self.run.redact
            for launch in rendered.launches:
                redact.learn_argv(launch.argv)
                redact.learn_env(launch.env)
            self.run.update("rendered", value={
                "mode": rendered.mode, "command": redact(rendered.command_text), "notes": rendered.notes,
                "launches": [{"node": x.node.name, "role": x.role, "argv": redact.argv(x.argv),
                              "env": redact.env(x.env)} for x in rendered.launches]})
            self.run.update("multinode", value={"vllm": rendered.mode, "launcher": rendered.launcher,
                                               "ray": self._ray_use(rendered)})
            return rendered
        return self._once("rendered", make)

    def flags(self) -> dict[str, GateResult]:
        """Every launch checked against the vLLM (after mods) of the node that runs it: {node: result}."""
        def check():
            rendered, results = self.rendered(), {}
            self.apply_mods()
            for node in self.cluster.nodes:
                if rendered.launches_for(node):
                    with self.phase("flags", node=node.name):
                        found = self.runtime.flag_manifest(node.name)
                        origin = {**found.record(), "runtime": self.runtime.name}
                        results[node.name] = check_launches(rendered, node.name, found.manifest)
                    results[node.name].origin = origin
                    self.run.update("flags", node.name, {**origin, **results[node.name].record()})
            return results
        return self._once("flags", check)

    def memory_plan(self) -> MemoryPlan:
        """The memory plan of the rendered recipe (model read on the head node; no weights loaded)."""
        def plan():
            result = plan_for(self.rendered(), self.hosts)
            self.run.update("memory", "plan", result.as_dict())
            return result
        return self._once("memory_plan", plan)

    def ray(self) -> RayCluster:
        """Ray across every node (head on the head's fabric IP), from the rendered Ray spec; up until close()."""
        self.environments()
        return self._once("ray", self.runtime.ray, "ray")

    def env_parity(self) -> ParityReport | None:
        """Env parity as a Ray task pinned to each node sees it; None where the run has no Ray to ask."""
        def check():
            if self._ray_use(self.rendered()) == "none":
                return None
            by_ip = self.ray().node_envs()
            envs = {node_name(self.cluster, ip, list(by_ip)): env for ip, env in by_ip.items()}
            report = parity(envs, self.recipe.env, list(self.recipe.expect.per_node_env))
            self.run.update("env_parity", value=report.as_dict())
            return report
        return self._once("env_parity", check, "env parity")

    def stack_parity(self) -> stack_parity.ParityReport:
        """Step 15: each node's fingerprint where vLLM runs (driver, CUDA, kernel, NCCL, packages, freeze, image)."""
        def check():
            envs, images, hosts = self.environments(), stack_parity.image_ids(self.image()), self.runtime.serve_hosts()
            prints = self.runtime.ctx.parallel(
                lambda name: stack_parity.fingerprint(hosts[name], envs[name].python, images.get(name)))
            report = stack_parity.compare(prints, self.cluster.head.name)
            self.run.update("stack_parity", value=report.as_dict())
            return report
        return self._once("stack_parity", check, "stack parity")

    def fabric(self) -> fabric.FabricReport:
        """Step 47: declared interfaces up on every node, the fabric IPs on them, a timed all-reduce across nodes."""
        def check():
            envs, hosts = self.environments(), self.runtime.serve_hosts()
            wanted = {n.name: {**{k: str(v) for k, v in self.recipe.env.items()}, **n.env} for n in self.cluster.nodes}
            report = fabric.preflight(hosts, wanted, {n.name: n.fabric_ip for n in self.cluster.nodes},
                                      {name: env.python for name, env in envs.items()}, self.cluster.head.name,
                                      self.recipe.expect.fabric, self.runtime.ctx.parallel)
            self.run.update("fabric", value=report.as_dict())
            return report
        return self._once("fabric", check, "fabric")

    def launch_problems(self) -> list[str]:
        """What the pre-launch steps found that must stop a launch, from whichever subset of scenarios ran."""
        problems = []
        for node, result in self.flags().items():
            if result.errors:
                problems.append(f"{result.failure_message()}\n({result.origin.get('node', node)})")
        if len(self.cluster.nodes) > 1:
            problems += [f"model folder not identical on every node, not launching: {p}"
                         for p in self.weights()["problems"]]
        report = self.env_parity()
        if report is not None:
            problems += [f"env parity: {p}" for p in report.problems]
        plan = self.memory_plan()
        unfit = [str(f) for f in plan.findings if f.level == "fail"]
        if unfit:
            problems.append(f"memory plan of {self.recipe.name} cannot fit; nothing was launched:\n"
                            + "\n".join(unfit) + "\nplan:\n  " + "\n  ".join(plan.lines()))
        return problems

    def deployment(self) -> Deployment:
        """The launch handle (enter it to start); refused when a pre-launch step found errors."""
        self.apply_mods()
        rendered = self.rendered()
        problems = self.launch_problems()
        if problems:
            raise LaunchRefused(f"not launching {self.recipe.name}: the pre-launch checks found errors:\n"
                                + "\n".join(problems))
        if rendered.mode == "ray":
            self.ray()  # vLLM's Ray executor joins the stack's Ray
        return Deployment(rendered, dict(self.runtime.serve_hosts()), self.run, self.progress,
                          self.runtime.bin_dirs(), ready_timeout_s=float(self.recipe.expect.ready_timeout_s),
                          run_id=self.run_id)

    # ---- helpers ---------------------------------------------------------------------------------------
    def on_nodes(self, func: Callable[[NodeHost], T]) -> dict[str, T]:
        """Run func on every node in parallel; re-raise the first failure."""
        return self.runtime.ctx.parallel(lambda name: func(self.hosts[name]))

    def ray_use(self) -> str:
        """How this run uses Ray: "executor" (vLLM's), "checks only" (multi-node checks), or "none"."""
        return self._ray_use(self.rendered())

    def rendered_offline(self) -> Rendered:
        """The recipe rendered without touching a node (model location unresolved): an external endpoint's
        serve flags, where no bring-up happens."""
        return self._once("rendered_offline", lambda: render(self.recipe, self.cluster, self.overrides))

    def _ray_use(self, rendered: Rendered) -> str:
        if rendered.mode == "ray":
            return "executor"
        return "checks only" if len(self.cluster.nodes) > 1 and self.runtime.ray_for_checks else "none"


def default_cluster_path(recipe: Recipe) -> Path | None:
    if recipe.cluster:
        candidate = (recipe.path.parent / recipe.cluster)
        if candidate.is_file():
            return candidate
        return CLUSTERS_DIR / Path(recipe.cluster).name
    return None
