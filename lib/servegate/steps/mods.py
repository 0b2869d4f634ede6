"""Mods: folders applied to the installed vLLM before launch.

As upstream (launch-cluster.sh apply_mod_to_container): a folder with a `run.sh` is run through it -- run.sh
is the entry point and applies its own patches, so a stale `*.patch` it does not use cannot fail a mod that
passes upstream. servegate's own format, a folder of patches without run.sh, is applied by servegate: a
patch whose reverse applies cleanly on a vLLM servegate did not patch means upstream already has it
("superseded: drop the mod"); otherwise `git apply --check` must pass, then the patch is applied; a rejected
hunk fails naming mod, file and hunk. A run.sh that exits non-zero or prints "skipping" fails the step.
A folder's servegate-mod.yaml (steps/modspec.py) may name the vLLM versions it is for. Nothing is ever
skipped with a warning.

Where a mod name resolves (resolve_mod): the recipe's own folder wins -- upstream resolves `mods/<name>`
against its checkout's root (`SCRIPT_DIR / mod`), i.e. next to or above the recipe -- then servegate's
bundled recipes/mods; two different folders of the recipe's own for one name are an error naming both.
"""

from __future__ import annotations

import base64
import io
import re
import shlex
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from servegate.config.paths import RECIPES_DIR, REPO_ROOT
from servegate.errors import ServegateError
from servegate.nodes.host import Result
from servegate.steps.modspec import load_spec, version_refusal


class ModError(ServegateError):
    def __init__(self, mod: str, cause: str, node: str | None = None, fix: str | None = None):
        self.mod, self.cause, self.node, self.fix = mod, cause, node, fix
        where = f" on node '{node}'" if node else ""
        text = f"mod '{mod}'{where}: {cause}"
        super().__init__(text + (f"\n  fix: {fix}" if fix else ""))


@dataclass
class ModOutcome:
    mod: str
    patch: str
    status: str  # "applied", "already-applied", "ran"


Shell = Callable[[str], Result]


def mod_candidates(mod: str, recipe_dir: Path) -> tuple[list[Path], list[Path]]:
    """(the recipe's own folders, servegate's bundled folders) that exist for `mod`, each deduplicated."""
    recipe_dir = recipe_dir.resolve()
    own_bases = [recipe_dir, recipe_dir.parent, recipe_dir.parent.parent]
    own = list(dict.fromkeys(c for c in ((b / mod).resolve() for b in own_bases) if c.is_dir()))
    bundled = [c for c in dict.fromkeys((b / mod).resolve() for b in (RECIPES_DIR, REPO_ROOT))
               if c.is_dir() and c not in own]
    return own, bundled


def resolve_mod(mod: str, recipe_dir: Path) -> Path:
    """The folder a recipe's `mods:` entry names: the recipe's own first, then servegate's bundled one."""
    own, bundled = mod_candidates(mod, recipe_dir)
    if len(own) > 1:
        raise ModError(mod, f"the name is ambiguous: {own[0]} and {own[1]} both exist next to the recipe",
                       fix="keep one of the two folders, or name the mod by a path that picks one")
    if own or bundled:
        return (own or bundled)[0]
    raise ModError(mod, "folder not found", fix=f"looked next to and above {recipe_dir}, then in {RECIPES_DIR} "
                                                f"and {REPO_ROOT}")


def mod_shadowing(mod: str, recipe_dir: Path) -> str | None:
    """A note when the recipe's own mod folder hides servegate's bundled one of the same name."""
    own, bundled = mod_candidates(mod, recipe_dir)
    if own and bundled:
        return f"the recipe's own {own[0]} is used; servegate's bundled {bundled[0]} is not"
    return None


def mod_files(folder: Path) -> tuple[list[Path], Path | None]:
    patches = sorted(list(folder.glob("*.patch")) + list(folder.glob("*.diff")))
    run_sh = folder / "run.sh"
    if not patches and not run_sh.is_file():
        raise ModError(folder.name, "holds neither *.patch files nor a run.sh",
                       fix="a mod folder needs patch files, a run.sh, or both")
    return patches, run_sh if run_sh.is_file() else None


def tar_b64(folder: Path) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return base64.b64encode(buffer.getvalue()).decode()


def copy_mod(shell: Shell, folder: Path, dest_root: str) -> str:
    """Ship the mod folder through the shell (works over any transport) and return its path there."""
    dest = f"{dest_root}/{folder.name}"
    script = (f"rm -rf {shlex.quote(dest)} && mkdir -p {shlex.quote(dest_root)} && "
              f"echo {tar_b64(folder)} | base64 -d | tar -xz -C {shlex.quote(dest_root)}")
    result = shell(script)
    if not result.ok:
        raise ModError(folder.name, f"could not be copied: {result.stderr.strip()[:300]}")
    return dest


SKIPPING = re.compile(r"\bskipp(?:ing|ed)\b", re.IGNORECASE)
HUNK_ERROR = re.compile(r"error: patch failed: (?P<file>[^:]+):(?P<line>\d+)")
FILE_ERROR = re.compile(r"error: (?P<file>\S+): (?P<why>patch does not apply|No such file or directory|"
                        r"does not exist in index|already exists.*)")


def describe_rejection(stderr: str) -> str:
    hunks = [f"{m['file']} hunk at line {m['line']}" for m in HUNK_ERROR.finditer(stderr)]
    files = [f"{m['file']}: {m['why']}" for m in FILE_ERROR.finditer(stderr)]
    return "; ".join(hunks + [f for f in files if not any(f.startswith(h.split(' hunk')[0]) for h in hunks)]) \
        or stderr.strip()[:400]


def apply_patch(shell: Shell, mod: str, patch_path: str, target_dir: str, node: str | None) -> str:
    base = f"cd {shlex.quote(target_dir)} && git apply"
    if shell(f"{base} --reverse --check {shlex.quote(patch_path)}").ok:
        raise ModError(mod, f"superseded: drop the mod -- patch {Path(patch_path).name} reverse-applies cleanly, "
                            f"so this vLLM already has the change", node=node,
                       fix="remove the mod from the recipe's mods: list (or bound it with vllm: in its "
                           "servegate-mod.yaml)")
    check = shell(f"{base} --check {shlex.quote(patch_path)}")
    if not check.ok:
        raise ModError(mod, f"patch {Path(patch_path).name} does not apply: {describe_rejection(check.stderr)}",
                       node=node, fix="rebase the patch on this vLLM version or drop the mod from the recipe")
    applied = shell(f"{base} {shlex.quote(patch_path)}")
    if not applied.ok:
        raise ModError(mod, f"patch {Path(patch_path).name} failed: {describe_rejection(applied.stderr)}", node=node)
    return "applied"


def revert_patch(shell: Shell, mod: str, patch_path: str, target_dir: str, node: str | None) -> bool:
    base = f"cd {shlex.quote(target_dir)} && git apply"
    if not shell(f"{base} --reverse --check {shlex.quote(patch_path)}").ok:
        return False
    result = shell(f"{base} --reverse {shlex.quote(patch_path)}")
    if not result.ok:
        raise ModError(mod, f"could not revert {Path(patch_path).name}: {describe_rejection(result.stderr)}", node=node)
    return True


def apply_mod(shell: Shell, folder: Path, *, target_dir: str, dest_root: str, node: str | None,
              extra_env: dict[str, str] | None = None, vllm_version: str | None = None) -> list[ModOutcome]:
    """Apply one mod folder: through its run.sh when it has one (upstream's entry point), else its patches."""
    patches, run_sh = mod_files(folder)
    refusal = version_refusal(load_spec(folder), vllm_version, node)
    if refusal:
        raise ModError(folder.name, refusal[0], node=node, fix=refusal[1])
    remote = copy_mod(shell, folder, dest_root)
    if run_sh:
        return [run_entry_point(shell, folder, remote, target_dir, dest_root, node, extra_env)]
    return [ModOutcome(folder.name, patch.name, apply_patch(shell, folder.name, f"{remote}/{patch.name}",
                                                            target_dir, node)) for patch in patches]


def run_entry_point(shell: Shell, folder: Path, remote: str, target_dir: str, dest_root: str, node: str | None,
                    extra_env: dict[str, str] | None) -> ModOutcome:
    """upstream: `export WORKSPACE_DIR=$PWD && cd $container_dest && chmod +x run.sh && ./run.sh`; non-zero
    is "Error: Patch script failed". servegate also fails a run.sh that says it skipped its work."""
    env = {"WORKSPACE_DIR": dest_root, "VLLM_SITE_PACKAGES": target_dir, **(extra_env or {})}
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    result = shell(f"cd {shlex.quote(remote)} && chmod +x run.sh && env {exports} ./run.sh")
    output = f"{result.stdout}\n{result.stderr}"
    if not result.ok:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ModError(folder.name, f"run.sh exited {result.rc}: {' | '.join(tail)}", node=node,
                       fix="run the mod's run.sh by hand inside the environment to see why")
    skipped = [line.strip() for line in output.splitlines() if SKIPPING.search(line)]
    if skipped:
        raise ModError(folder.name, f"run.sh skipped its work: {skipped[0][:200]}", node=node,
                       fix="a mod that skips is stale for this vLLM: fix it or drop it from the recipe")
    return ModOutcome(folder.name, "run.sh", "ran")

