"""A recipe's serve commands as the flag checker sees them, shared by `flags check` and `flags matrix`."""

from __future__ import annotations

from pathlib import Path

from servegate.config.cluster import load_cluster
from servegate.config.recipe import Recipe, command_argv, load_recipe, parse_override
from servegate.render.command import render


def recipe_commands(recipe: Recipe, overrides: list[str], cluster_path: Path | None) -> list[tuple]:
    """(source, argv, env) to check: the recipe's command as written, or each vLLM launch on a cluster.

    Without a cluster the command is checked exactly as the recipe renders it; solo rendering would
    drop `--distributed-executor-backend`, and flags must be checked as written.
    """
    values = dict(parse_override(text) for text in overrides)
    builtins = {"model": recipe.model} if recipe.model else {}
    if cluster_path is None:
        argv = command_argv(recipe.render_command(values, builtins=builtins))
        return [(f"{recipe.name} ({recipe.path})", argv, dict(recipe.env))]
    rendered = render(recipe, load_cluster(cluster_path), values)
    return [
        (f"{recipe.name}[{launch.node.name}]", launch.argv, launch.env)
        for launch in rendered.launches
        if launch.role in ("serve", "headless")
    ]


def rendered_commands(recipe_path: Path, overrides: list[str], cluster_path: Path | None) -> list[tuple]:
    return recipe_commands(load_recipe(recipe_path), overrides, cluster_path)
