"""Dry run: every step the suite would take for a recipe on a cluster, touching nothing."""

from __future__ import annotations

from servegate.config.cluster import Cluster, placeholder_addresses
from servegate.config.recipe import Recipe
from servegate.render.command import Rendered, render
from servegate.results.run import Redactor
from servegate.runtimes.pyenv import PIP_PREFIX, env_slug, pip_requirements
from servegate.steps.mods import mod_files, mod_shadowing, resolve_mod
from servegate.steps.modspec import load_spec
from servegate.steps.runbook import STEPS


def render_lines(rendered: Rendered, redact: Redactor | None = None) -> list[str]:
    redact = redact or Redactor()
    lines = [f"mode: {rendered.mode}", f"multinode: {rendered.launcher}"]
    lines += [f"note: {note}" for note in rendered.notes]
    for launch in rendered.launches:
        redact.learn_env(launch.env)
        redact.learn_argv(launch.argv)
    for launch in rendered.launches:
        lines.append(f"node {launch.node.name} ({launch.node.host}, fabric {launch.node.fabric_ip}) "
                     f"role {launch.role}:")
        for key, value in redact.env(launch.env).items():
            lines.append(f"  env {key}={value}")
        lines.append(f"  $ {redact(launch.text)}")
    return lines


def plan_lines(recipe: Recipe, cluster: Cluster, overrides: dict | None = None, *, force: bool = False,
               multinode: str | None = None) -> list[str]:
    rendered = render(recipe, cluster, overrides, model_path=_model_location(recipe), force=force,
                      multinode=multinode)
    lines = [f"recipe {recipe.name} ({recipe.path}, sha256 {recipe.hash()[:12]})",
             f"cluster {cluster.name} ({cluster.path}): {len(cluster.nodes)} node(s)"]
    missing = placeholder_addresses(cluster)
    if missing:
        lines.append(f"!! nodes with <placeholder> addresses, fill them before a deploy: {', '.join(missing)}")
    step = 0

    def add(text: str) -> None:
        nonlocal step
        step += 1
        lines.append(f"{step:2}. {text}")

    for node in cluster.nodes:
        add(f"preflight {node.name}: reach {node.host}; record python/vLLM/torch versions; check disk")
    add(_environment_step(recipe, cluster))
    for mod in recipe.mods:
        add(_mod_step(recipe, mod))
    add(_model_step(recipe))
    redact = Redactor()
    for launch in rendered.launches:
        redact.learn_env(launch.env)
        redact.learn_argv(launch.argv)
        add(f"launch on {launch.node.name} as {launch.role}: {redact(launch.text)}")
    add(f"readiness on {cluster.head.name}: process alive -> port {rendered.port} open -> /health 200 -> "
        f"/v1/models lists '{rendered.served_model_name}' -> streamed first token "
        f"(deadline {recipe.expect.ready_timeout_s} s)")
    for entry in STEPS:
        gate = " (the launch refuses on its errors)" if entry.pre_launch else ""
        add(f"step {entry.number} {entry.name} ({entry.scenario}, {entry.runs}): {entry.checks}{gate}")
    add("teardown: SIGTERM then SIGKILL every process group started, on every node; save redacted logs")
    lines.append("")
    lines.append("rendered:")
    lines += ["  " + line for line in render_lines(rendered)]
    return lines


def _model_location(recipe: Recipe) -> str | None:
    name = recipe.generated_model
    return f"~/.cache/servegate/models/{name}" if name else None


def _environment_step(recipe: Recipe, cluster: Cluster) -> str:
    runtimes = sorted({node.runtime for node in cluster.nodes})
    if recipe.container.startswith(PIP_PREFIX):
        requirements = pip_requirements(recipe.container, recipe.where("container"))
        return (f"environment ({'/'.join(runtimes)} runtime) on every node: venv envs/{env_slug(requirements)} "
                f"with {' '.join(requirements)} (cached after the first build)")
    return f"image {recipe.container} present and identical on every node ({'/'.join(runtimes)} runtime)"


def _mod_step(recipe: Recipe, mod: str) -> str:
    folder = resolve_mod(mod, recipe.path.parent)
    patches, run_sh = mod_files(folder)
    spec = load_spec(folder)
    shadow = mod_shadowing(mod, recipe.path.parent)
    extra = (f"; for vLLM {spec.vllm}" if spec.vllm else "") + (f"; {shadow}" if shadow else "")
    if run_sh:
        return f"mod {mod} on every node ({folder}): run its run.sh (the entry point, as upstream){extra}"
    parts = ", ".join(p.name for p in patches)
    return f"mod {mod} on every node ({folder}): superseded-check, check, apply {parts}{extra}"


def _model_step(recipe: Recipe) -> str:
    if recipe.generated_model:
        return (f"model: generate recipes/models/{recipe.generated_model}.yaml (cached by spec hash) and give "
                f"every node an identical copy")
    if not recipe.model:
        return "model: none in the recipe (the command names what it serves); nothing to stage or compare"
    return f"model {recipe.model}: identical file list, sizes and content hash on every node"
