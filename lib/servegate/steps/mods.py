"""Mods: folders of patch files and/or a run.sh, applied to the installed vLLM before launch.

Every patch is checked for real: a reverse check that passes means "already applied"; otherwise
`git apply --check` must pass, then the patch is applied. A rejected hunk fails the run naming mod, file
and hunk. Nothing is ever skipped with a warning.
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


def resolve_mod(mod: str, recipe_dir: Path) -> Path:
    """Upstream resolves mods against the repo root; we also accept paths relative to the recipe."""
    for base in (RECIPES_DIR, REPO_ROOT, recipe_dir):
        candidate = (base / mod).resolve()
        if candidate.is_dir():
            return candidate
    raise ModError(mod, "folder not found", fix=f"looked in {RECIPES_DIR}, {REPO_ROOT} and {recipe_dir}")


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
        return "already-applied"
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
              extra_env: dict[str, str] | None = None) -> list[ModOutcome]:
    """Apply one mod folder: its patches against target_dir (site-packages), then its run.sh."""
    patches, run_sh = mod_files(folder)
    remote = copy_mod(shell, folder, dest_root)
    outcomes = []
    for patch in patches:
        status = apply_patch(shell, folder.name, f"{remote}/{patch.name}", target_dir, node)
        outcomes.append(ModOutcome(folder.name, patch.name, status))
    if run_sh:
        env = {"WORKSPACE_DIR": dest_root, "VLLM_SITE_PACKAGES": target_dir, **(extra_env or {})}
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        result = shell(f"cd {shlex.quote(remote)} && chmod +x run.sh && env {exports} ./run.sh")
        if not result.ok:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise ModError(folder.name, f"run.sh exited {result.rc}: {' | '.join(tail)}", node=node,
                           fix="run the mod's run.sh by hand inside the environment to see why")
        outcomes.append(ModOutcome(folder.name, "run.sh", "ran"))
    return outcomes

