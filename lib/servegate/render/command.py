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
from servegate.render.argv import flag_value
from servegate.render.launches import RAY_ROLES, VLLM_ROLES, NodeLaunch, ray_launches, vllm_launches

RAY_BACKEND = re.compile(r"--distributed-executor-backend(?:=|\s+)\S+")


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

    @property
    def vllm(self) -> list[NodeLaunch]:
        """The vLLM processes to launch (Ray, when the mode uses it, is the runtime's to start)."""
        return [launch for launch in self.launches if launch.role in VLLM_ROLES]

    @property
    def ray(self) -> list[NodeLaunch]:
        return [launch for launch in self.launches if launch.role in RAY_ROLES]


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
    launches = vllm_launches(recipe, cluster, argv, mode)
    if mode == "ray":
        launches = ray_launches(recipe, cluster) + launches
    return Rendered(recipe, cluster, values, text, argv, mode, launches, notes)
