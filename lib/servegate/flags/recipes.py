"""A recipe's serve commands as the flag checker sees them, shared by `flags check` and `flags matrix`."""

from __future__ import annotations

from pathlib import Path

from servegate.config.cluster import load_cluster
from servegate.config.paths import CLUSTERS_DIR
from servegate.config.recipe import Recipe, command_argv, load_recipe, parse_override
from servegate.errors import ServegateError
from servegate.flags import findings as codes
from servegate.flags.findings import Finding
from servegate.render.command import render
from servegate.render.upstream import check_topology
from servegate.steps.mods import resolve_mod
from servegate.steps.modspec import load_spec

MOD_FLAG = "mod-flag"


def recipe_cluster_path(recipe: Recipe) -> Path | None:
    """The cluster the recipe names (`cluster:`), as `servegate render` picks it; None: the local machine."""
    if not recipe.cluster:
        return None
    candidate = recipe.path.parent / recipe.cluster
    return candidate if candidate.is_file() else CLUSTERS_DIR / Path(recipe.cluster).name


def recipe_commands(recipe: Recipe, overrides: list[str], cluster_path: Path | None, *, force: bool = False,
                    multinode: str | None = None, notes: list[str] | None = None) -> list[tuple]:
    """(source, argv, env) to check: the recipe's command as written, or each vLLM launch on a cluster.

    Without a cluster the command is checked exactly as the recipe renders it (solo rendering would drop
    `--distributed-executor-backend`, and flags must be checked as written), but upstream's cluster_only /
    solo_only refusal still applies, judged on the recipe's own cluster (else the local machine).
    """
    values = dict(parse_override(text) for text in overrides)
    builtins = {"model": recipe.model} if recipe.model else {}
    if cluster_path is None:
        solo = len(load_cluster(recipe_cluster_path(recipe)).nodes) == 1
        found = check_topology(recipe, solo, force)
        if notes is not None:
            notes += found + [f"warning: {w}" for w in recipe.warnings]
        argv = command_argv(recipe.render_command(values, builtins=builtins), recipe)
        return [(f"{recipe.name} ({recipe.path})", argv, dict(recipe.env))]
    rendered = render(recipe, load_cluster(cluster_path), values, force=force, multinode=multinode)
    if notes is not None:
        notes += rendered.notes
    return [
        (f"{recipe.name}[{launch.node.name}]", launch.argv, launch.env)
        for launch in rendered.launches
        if launch.role in ("serve", "headless")
    ]


def rendered_commands(recipe_path: Path, overrides: list[str], cluster_path: Path | None) -> list[tuple]:
    return recipe_commands(load_recipe(recipe_path), overrides, cluster_path)


def mod_flags(recipe: Recipe) -> dict[str, str]:
    """Flag -> mod folder name, for every flag the recipe's mods add (declared, or learned from their
    patches and run.sh: steps/modspec.py). A mod that cannot be found adds nothing here."""
    found: dict[str, str] = {}
    for mod in recipe.mods:
        try:
            spec = load_spec(resolve_mod(mod, recipe.path.parent))
        except ServegateError:
            continue
        for flag in spec.adds_flags:
            found.setdefault(flag, spec.name)
    return found


def relabel_mod_flags(findings: list[Finding], added: dict[str, str], version: str) -> list[Finding]:
    """An unknown flag that a recipe's mod adds is the mod's: "added by mod X, unverified here" (a warning;
    the stored manifest is of vLLM without the mod), never "did you mean" another flag."""
    out = []
    for finding in findings:
        if finding.code == codes.UNKNOWN_FLAG and finding.flag in added:
            mod = added[finding.flag]
            finding = Finding("warning", finding.source, finding.flag,
                              f"added by mod {mod}, unverified here: {version} is vLLM without the mod",
                              f"scenarios/test_50_flags.py checks it with {mod} applied; `servegate flags matrix` "
                              f"shows whether the mod applies to each version", MOD_FLAG)
        out.append(finding)
    return out
