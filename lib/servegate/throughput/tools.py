"""Load-generator tools in their own cached venvs, never in the harness venv.

AIPerf pulls ~139 packages (no torch); keeping it apart means its pins cannot break the suite or vLLM.
The venv is built on first use under ~/.cache/servegate/tools/<name>-<version>, guarded by a file lock so
two runs starting together build it once, and stamped only after an import check passes. Offline nodes
either point pip at a wheelhouse (PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR) or name a preinstalled console
script in SERVEGATE_AIPERF.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from servegate.config.paths import cache_root
from servegate.errors import ServegateError

AIPERF_VERSION = "0.13.0"
STAMP = ".servegate-tool.json"


@dataclass(frozen=True)
class ToolSpec:
    name: str
    version: str
    requirements: tuple[str, ...]
    import_check: str  # python -c text that must succeed in the new venv
    executable: str  # console script inside the venv's bin/

    @property
    def slug(self) -> str:
        return f"{self.name}-{self.version}"


AIPERF = ToolSpec("aiperf", AIPERF_VERSION, (f"aiperf=={AIPERF_VERSION}",), "import aiperf", "aiperf")


def tools_root() -> Path:
    return cache_root() / "tools"


def tool_dir(spec: ToolSpec) -> Path:
    return tools_root() / spec.slug


def preinstalled(spec: ToolSpec) -> Path | None:
    """SERVEGATE_<NAME> names an executable installed some other way (e.g. from an offline wheelhouse)."""
    variable = f"SERVEGATE_{spec.name.upper().replace('-', '_')}"
    value = os.environ.get(variable)
    if not value:
        return None
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ServegateError(f"{variable}={value} is not an executable file\n"
                             f"  fix: point it at the {spec.name} console script, or unset it to build the venv")
    return path


def ensure_tool(spec: ToolSpec = AIPERF, log=print) -> Path:
    """Path of the tool's console script, building its venv first if needed (idempotent, locked)."""
    given = preinstalled(spec)
    if given:
        return given
    root = tool_dir(spec)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{spec.slug}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _stamped(root, spec):
            _build(root, spec, log)
    return root / "bin" / spec.executable


def _stamped(root: Path, spec: ToolSpec) -> bool:
    stamp = root / STAMP
    if not stamp.is_file():
        return False
    return json.loads(stamp.read_text()).get("requirements") == list(spec.requirements)


def _build(root: Path, spec: ToolSpec, log) -> None:
    log(f"building the {spec.slug} tool venv at {root} (first use only, ~2 min)")
    _step([sys.executable, "-m", "venv", "--clear", str(root)], f"creating the {spec.slug} venv")
    python = str(root / "bin" / "python")
    _step(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *spec.requirements],
        f"pip install {' '.join(spec.requirements)}",
    )
    _step([python, "-c", spec.import_check], f"checking '{spec.import_check}' in the new venv")
    (root / STAMP).write_text(json.dumps({"requirements": list(spec.requirements)}))


def _step(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise ServegateError(
            f"{what} failed (exit {result.returncode}): {tail}\n"
            f"  fix: check the package index settings (pip config list); rerun to retry"
        )
