"""The mods side of `servegate flags matrix`: what a recipe's mods add (where a missing flag may come from),
whether a mod's patches apply to a version's stock source, and the mods x versions table.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from servegate.config.paths import MODS_DIR
from servegate.config.recipe import Recipe
from servegate.errors import ServegateError
from servegate.steps.mods import ModError, describe_rejection, mod_files, resolve_mod
from servegate.steps.modspec import load_spec


class VersionSource(Protocol):
    """A matrix column as these functions see it (matrix.Column)."""

    number: str  # the vLLM version
    site_packages: str | None  # its stock source, for git apply
    problem: str | None  # why the column has nothing


@dataclass
class ModText:
    name: str
    folder: Path | None  # None: the recipe lists it but it is not in this repo
    added: str = ""  # '+' lines of its patches and its run.sh: where an added flag or name shows up
    patches: list[Path] = field(default_factory=list)


def recipe_mods(recipe: Recipe) -> list[ModText]:
    mods = []
    for mod in recipe.mods:
        try:
            folder = resolve_mod(mod, recipe.path.parent)
            patches, run_sh = mod_files(folder)
        except ModError:
            mods.append(ModText(Path(mod).name, None))
            continue
        added = [line[1:] for p in patches for line in p.read_text().splitlines() if line.startswith("+")]
        added += run_sh.read_text().splitlines() if run_sh else []
        added += load_spec(folder).adds_flags
        mods.append(ModText(folder.name, folder, "\n".join(added), patches))
    return mods


_APPLIES: dict[tuple[str, str], str | None] = {}  # (mod folder, site-packages) -> problem


def patch_problem(mod: ModText, column: VersionSource, run: Callable[[str], object]) -> str | None:
    """Why the mod's patches do not apply to this column's stock vLLM (None: they apply)."""
    key = (str(mod.folder), str(column.site_packages))
    if key not in _APPLIES:
        problems = []
        for patch in mod.patches:
            base = f"cd {shlex.quote(str(column.site_packages))} && git apply --check"
            result = run(f"{base} {shlex.quote(str(patch))}")
            if not result.ok:
                problems.append(f"{patch.name}: {describe_rejection(result.stderr)}")
        _APPLIES[key] = "; ".join(problems) or None
    return _APPLIES[key]



def mod_verdict(folder: Path, column: VersionSource, run: Callable[[str], object]) -> str:
    """Whether a mod applies to a column's stock vLLM: its declared range, then its patches (superseded =
    every patch reverse-applies: upstream has it), as test_20_mods would judge it at deploy time."""
    try:
        spec = load_spec(folder)
    except ServegateError as exc:
        return f"unreadable mod.yaml: {str(exc).splitlines()[0]}"
    if spec.applies_to(column.number) is False:
        return f"not for this version (vllm {spec.vllm})"
    try:
        patches, run_sh = mod_files(folder)
    except ModError as exc:
        return f"broken: {str(exc).splitlines()[0]}"
    if not patches:
        return "run.sh only: runs at deploy, not checked here"
    if column.problem or not column.site_packages:
        return "no vLLM source here to check against"
    base = f"cd {shlex.quote(str(column.site_packages))} && git apply"
    if all(run(f"{base} --reverse --check {shlex.quote(str(p))}").ok for p in patches):
        return "superseded: upstream has it (drop the mod)"
    problem = patch_problem(ModText(folder.name, folder, "", patches), column, run)
    return f"rejected: {problem}" if problem else "applies" + (" (+ run.sh)" if run_sh else "")


def mod_lifecycle(columns: Sequence[VersionSource], run: Callable[[str], object],
                  folder: Path = MODS_DIR) -> list[tuple[str, list[str]]]:
    """Every mod under recipes/mods against every column."""
    mods = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return [(mod.name, [mod_verdict(mod, column, run) for column in columns]) for mod in mods]
