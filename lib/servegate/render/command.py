"""Render a recipe onto a cluster: per node, the exact environment and command that will run.

Follows upstream run-recipe semantics: solo mode forces tensor_parallel=1 (unless overridden) and drops
`--distributed-executor-backend`; a multi-node recipe that names the Ray backend gets Ray head/workers;
any other multi-node recipe gets vLLM's own `--nnodes/--node-rank/--master-addr` (workers `--headless`).
One servegate addition: a one-node cluster with `solo_ray: true` keeps the Ray backend and gets a Ray head.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from servegate.config.cluster import Cluster, Node
from servegate.config.recipe import Recipe, command_argv

RAY_BACKEND = re.compile(r"--distributed-executor-backend(?:=|\s+)\S+")
FORWARDED_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "VLLM_API_KEY")
MASTER_PORT = 29501


@dataclass
class NodeLaunch:
    node: Node
    role: str  # "serve" (the API server), "headless" (a vLLM follower), "ray-head", "ray-worker"
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        from servegate.nodes.host import quote
        return quote(self.argv)


@dataclass
class Rendered:
    recipe: Recipe
    cluster: Cluster
    values: dict[str, Any]
    command_text: str
    serve_argv: list[str]
    mode: str  # "solo", "ray", "multinode"
    launches: list[NodeLaunch]
    notes: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(flag_value(self.serve_argv, "--port") or self.values.get("port") or 8000)

    @property
    def served_model_name(self) -> str:
        expected = self.recipe.expect.get("served_model_name")
        return expected or flag_value(self.serve_argv, "--served-model-name") or self.model_arg

    @property
    def model_arg(self) -> str:
        if len(self.serve_argv) > 2 and self.serve_argv[:2] == ["vllm", "serve"]:
            return self.serve_argv[2]
        return flag_value(self.serve_argv, "--model") or ""

    @property
    def api_key(self) -> str | None:
        return flag_value(self.serve_argv, "--api-key") or os.environ.get("VLLM_API_KEY")

    def launches_for(self, node: Node) -> list[NodeLaunch]:
        return [launch for launch in self.launches if launch.node.name == node.name]


def flag_value(argv: list[str], flag: str) -> str | None:
    for index, token in enumerate(argv):
        if token == flag and index + 1 < len(argv):
            return argv[index + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    return None


def render(recipe: Recipe, cluster: Cluster, overrides: dict[str, Any] | None = None,
           model_path: str | None = None, extra_args: list[str] | None = None) -> Rendered:
    solo = len(cluster.nodes) == 1
    overrides = dict(overrides or {})
    builtins: dict[str, Any] = {}
    if model_path or recipe.model:
        builtins["model"] = model_path or recipe.model
    if solo and "tensor_parallel" not in overrides:
        overrides["tensor_parallel"] = 1
        if "tensor_parallel" not in recipe.defaults and "tensor_parallel" not in recipe.placeholders():
            overrides.pop("tensor_parallel")
    values = {**builtins, **recipe.resolve_defaults(overrides)}
    text = recipe.render_command(overrides, builtins=builtins)
    uses_ray = bool(RAY_BACKEND.search(text))
    notes: list[str] = []
    if solo and uses_ray and not cluster.solo_ray:
        text = RAY_BACKEND.sub("", text)
        notes.append("solo mode: --distributed-executor-backend removed, as upstream run-recipe does")
    elif solo and uses_ray:
        notes.append(f"cluster {cluster.name} sets solo_ray: Ray backend kept, one Ray head on the node")
    argv = command_argv(text) + list(extra_args or [])
    mode = "ray" if uses_ray and (not solo or cluster.solo_ray) else ("solo" if solo else "multinode")
    launches = _launches(recipe, cluster, argv, mode)
    return Rendered(recipe, cluster, values, text, argv, mode, launches, notes)


def node_env(recipe: Recipe, node: Node) -> dict[str, str]:
    """What a node's processes get: the recipe env, then the node's own vars, then forwarded secrets."""
    env = dict(recipe.env)
    env.update(node.env)
    for name in FORWARDED_SECRETS:
        if os.environ.get(name) and name not in env:
            env[name] = os.environ[name]
    return env


def _launches(recipe: Recipe, cluster: Cluster, argv: list[str], mode: str) -> list[NodeLaunch]:
    head = cluster.head
    if mode == "solo":
        return [NodeLaunch(head, "serve", argv, node_env(recipe, head))]
    if mode == "ray":
        address = f"{head.fabric_ip}:{cluster.ray_port}"
        head_argv = ["ray", "start", "--head", "--node-ip-address", head.fabric_ip,
                     "--port", str(cluster.ray_port), *_ray_gpus(head), "--block"]
        launches = [NodeLaunch(head, "ray-head", head_argv, node_env(recipe, head))]
        for worker in cluster.workers:
            worker_argv = ["ray", "start", "--address", address, "--node-ip-address", worker.fabric_ip,
                           *_ray_gpus(worker), "--block"]
            launches.append(NodeLaunch(worker, "ray-worker", worker_argv, node_env(recipe, worker)))
        launches.append(NodeLaunch(head, "serve", argv, node_env(recipe, head)))
        return launches
    launches = []
    for rank, node in enumerate([head, *cluster.workers]):
        extra = ["--nnodes", str(len(cluster.nodes)), "--node-rank", str(rank),
                 "--master-addr", head.fabric_ip, "--master-port", str(MASTER_PORT)]
        role = "serve" if rank == 0 else "headless"
        launches.append(NodeLaunch(node, role, argv + extra + (["--headless"] if rank else []),
                                   node_env(recipe, node)))
    return launches


def _ray_gpus(node: Node) -> list[str]:
    """The cluster file's GPU count, given to Ray rather than left to its autodetection."""
    return ["--num-gpus", str(node.gpus)] if node.gpus else []
