"""Step 3 of the image-bump gate, in-process: the new vLLM's flags against the recipes of its image family.

The gated recipe is checked per node by Stack.flags(): against the manifest of the vLLM that node really
runs, after the recipe's mods. The other recipes of the image family are checked as written against the
head node's manifest (the functions `servegate flags check` calls: recipe_commands, check_command).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from servegate.config.paths import RECIPES_DIR
from servegate.config.recipe import find_recipes, load_recipe
from servegate.flags.check import Finding, check_command, describe_version
from servegate.flags.node import origin_line
from servegate.flags.recipes import recipe_commands
from servegate.gate.pins import uses_family
from servegate.stack import Stack


@dataclass
class FlagReport:
    """Every line `flags check` would print, how many recipes were checked, and whether any error."""

    lines: list[str] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)
    recipes: int = 0
    errors: int = 0

    def add(self, source: str, findings: list[Finding], version: str) -> None:
        errors = sum(f.severity == "error" for f in findings)
        self.errors += errors
        self.lines += [str(f) for f in findings]
        summary = (
            f"{source}: {errors} error(s), {len(findings) - errors} warning(s) against {version}"
            if findings
            else f"{source}: ok against {version}"
        )
        self.lines.append(summary)
        self.summaries.append(summary)


def family_recipes(recipe_path: Path, family: str) -> list[Path]:
    """The other recipes under recipes/ that run an image of `family`."""
    gated = Path(recipe_path).resolve()
    return sorted(p for p in find_recipes(RECIPES_DIR) if p.resolve() != gated and uses_family(p, family))


def check_family(stack: Stack, family: str) -> FlagReport:
    """The gated recipe on each of its nodes, then every other recipe of the family as written."""
    report = FlagReport()
    results = stack.flags()
    for node, result in results.items():
        report.lines.append(origin_line(result.origin))
        report.add(f"{result.recipe}[{node}]", result.findings, result.version)
    report.recipes = 1
    if results:
        head = stack.cluster.head.name if stack.cluster.head.name in results else next(iter(results))
        manifest = stack.runtime.flag_manifest(head).manifest  # the extraction Stack.flags() just cached
        version = describe_version(manifest)
        for path in family_recipes(stack.recipe.path, family):
            for source, argv, env in recipe_commands(load_recipe(path), [], None):
                report.add(source, check_command(argv, env, manifest, source=source), version)
            report.recipes += 1
    return report
