"""Render a recipe onto a cluster: per node, the exact environment and command that will run.

Follows upstream run-recipe semantics (render/upstream.py): cluster_only/solo_only refuse (or, forced, warn);
solo mode forces tensor_parallel=1 (unless overridden) and drops `--distributed-executor-backend`; a multi-node
run is Ray (Ray head/workers, the command as written) or no-Ray (vLLM's own `--nnodes/--node-rank/--master-addr`,
workers `--headless`, the backend flag dropped), chosen by render/upstream.choose_multinode; tp*pp*dp must fit
the nodes, extra nodes are trimmed. One servegate addition: a one-node cluster with `solo_ray: true` keeps the
Ray backend and gets a Ray head.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Any

from servegate.config.cluster import Cluster, Node
from servegate.config.recipe import Recipe, command_argv
from servegate.errors import RecipeError
from servegate.render.argv import flag_value
from servegate.render.launches import RAY_ROLES, VLLM_ROLES, NodeLaunch, ray_launches, vllm_launches
from servegate.render.upstream import (
    RAY_BACKEND_NAMED,
    UPSTREAM_BACKEND,
    check_topology,
    choose_multinode,
    fit_nodes,
    launch_script,
    ray_backend,
    trim_continuation,
    upstream_filter,
)


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
    launcher: str = "solo"  # "solo" | "ray" | "no-ray": how upstream's launch-cluster.sh would start it

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
           model_path: str | None = None, extra_args: list[str] | None = None, *, force: bool = False,
           multinode: str | None = None) -> Rendered:
    """The recipe on the cluster as upstream's run-recipe.py + launch-cluster.sh would launch it (see
    render/upstream.py); `force` renders a cluster_only/solo_only mismatch with a loud note instead of refusing,
    `multinode` ("ray" | "no-ray") picks the multi-node launcher over the recipe's and cluster's choice."""
    solo = len(cluster.nodes) == 1
    notes = [f"warning: {w}" for w in recipe.warnings] + check_topology(recipe, solo, force)
    overrides = dict(overrides or {})
    builtins: dict[str, Any] = {}
    if model_path or recipe.model:
        builtins["model"] = model_path or recipe.model
    if solo and "tensor_parallel" not in overrides:
        # run-recipe.py:1159 `if is_solo and "tensor_parallel" not in overrides: overrides["tensor_parallel"] = 1`
        overrides["tensor_parallel"] = 1
        if "tensor_parallel" not in recipe.defaults and "tensor_parallel" not in recipe.placeholders():
            overrides.pop("tensor_parallel")
    values = {**builtins, **recipe.resolve_defaults(overrides)}
    # the model location is a path, not shell words: quoted, a path with spaces stays one argument
    raw = recipe.render_command(overrides, builtins={k: shlex.quote(str(v)) for k, v in builtins.items()})
    text, mode, launcher = _launch_text(recipe, cluster, raw, solo, multinode, notes, extra_args or [])
    argv = command_argv(text, recipe)
    if not solo:
        cluster, trimmed = fit_nodes(cluster, launch_script(recipe, recipe.env, text))
        notes += trimmed
    launches = vllm_launches(recipe, cluster, argv, mode)
    if mode == "ray":
        launches = ray_launches(recipe, cluster) + launches
    return Rendered(recipe, cluster, values, text, argv, mode, launches, notes, launcher)


def _launch_text(recipe: Recipe, cluster: Cluster, raw: str, solo: bool, choice: str | None,
                 notes: list[str], extra_args: list[str]) -> tuple[str, str, str]:
    """The command text that runs, the render mode and the launcher's name (solo | ray | no-ray), in
    run-recipe.py's order: the last `\\` trimmed, extra args appended (`" ".join(shlex.quote(a) for a in
    extra_args)`), then the backend flag stripped (solo, no-Ray) or ensured (Ray)."""
    text = trim_continuation(raw)
    if extra_args:
        text = text + " " + " ".join(shlex.quote(a) for a in extra_args)
    if solo and cluster.solo_ray and RAY_BACKEND_NAMED.search(text):
        notes.append(f"cluster {cluster.name} sets solo_ray: Ray backend kept, one Ray head on the node")
        return text, "ray", "ray"
    if solo:
        launcher, mode = "solo", "solo"
        if UPSTREAM_BACKEND.search(text):
            notes.append("solo mode: --distributed-executor-backend removed, as upstream run-recipe does")
    else:
        launcher, why = choose_multinode(recipe, cluster, text, choice)
        mode = "ray" if launcher == "ray" else "multinode"
        notes.append(f"multinode: {launcher} ({why})")
        if launcher == "ray":
            text, added = ray_backend(text)
            if added:
                notes.append("Ray mode: --distributed-executor-backend ray appended, as upstream's --ray does")
            return text, mode, launcher
    text, repaired = upstream_filter(text)
    if repaired:
        try:
            command_argv(raw, recipe)
        except RecipeError as exc:
            notes.append(f"warning: {str(exc).splitlines()[0]} -- upstream's {launcher} launch drops blank lines "
                         f"(run-recipe.py:488), so it runs the whole command here; its Ray launch would not")
    return text, mode, launcher
