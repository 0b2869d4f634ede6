"""Results: one folder per run, written as the run goes, so a failed or interrupted run loses nothing.

`run.json` is rewritten after every change (atomic rename). Every text that reaches the folder goes through
the Redactor (servegate.redact: by name, by learned value, by shape): secret values never appear in a result
file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from servegate.config.paths import REPO_ROOT, RESULTS_DIR
from servegate.errors import ServegateError
from servegate.labels import owner_tag
from servegate.redact import MASK, SECRET_FLAGS, SECRET_NAME, Redactor, secret_name
from servegate.results.schema import SCHEMA_VERSION, check_section

DEFAULT_RESULTS = RESULTS_DIR
# the one redactor lives in servegate.redact (re-exported here: results code and callers import it from here)
__all__ = ["MASK", "SECRET_FLAGS", "SECRET_NAME", "Progress", "Redactor", "RunDir", "secret_name"]


def utc_stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() + ("-dirty" if dirty else "")) if out.returncode == 0 else None


def machine() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": sys.version.split()[0],
            "cpus": os.cpu_count()}


def folder_safe(name: str) -> str:
    """One path component made of a name: separators, `..` and control characters replaced, length capped."""
    safe = re.sub(r"[^A-Za-z0-9_.+@=-]+", "_", name).strip("._") or "run"
    return safe[:100]


class RunDir:
    """The results folder of one recipe's run; never overwrites an earlier run's folder."""

    def __init__(self, recipe_name: str, root: Path | None = None, redactor: Redactor | None = None):
        root = Path(root or os.environ.get("SERVEGATE_RESULTS", DEFAULT_RESULTS))
        self.path = self._unique(root, f"{utc_stamp()}-{folder_safe(recipe_name)}")
        self.redact = redactor or Redactor()
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "recipe": {"name": recipe_name},
                                     "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(),
                                     "suite": {"commit": git_commit(), "machine": machine(),
                                               "owner": owner_tag()},
                                     "phases": {}, "scenarios": {}, "nodes": {}, "verdict": "running"}
        self.flush()

    @staticmethod
    def _unique(root: Path, name: str) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        candidate, n = root / name, 1
        while True:
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                n += 1
                candidate = root / f"{name}-{n}"

    def update(self, section: str, key: str | None = None, value: Any = None) -> None:
        check_section(section)
        with self._lock:
            if key is None:
                self.data[section] = value
            else:
                self.data.setdefault(section, {})[key] = value
        self.flush()

    def phase(self, name: str, seconds: float) -> None:
        self.update("phases", name, round(seconds, 3))

    def flush(self) -> None:
        with self._lock:
            # redacted value by value (never the dumped text): the file stays valid JSON whatever is masked
            safe = self.redact.tree(json.loads(json.dumps(self.data, default=str)))
            text = json.dumps(safe, indent=2, sort_keys=True)
            tmp = self.path / "run.json.tmp"
            tmp.write_text(text + "\n", encoding="utf-8")
            tmp.replace(self.path / "run.json")

    def inside(self, name: str) -> Path:
        """self.path / name, refused when the name would leave the run folder (absolute, `..`)."""
        target = (self.path / name).resolve()
        if not target.is_relative_to(self.path.resolve()):
            raise ServegateError(f"refusing to write {name!r}: it is outside the run folder {self.path}")
        return target

    def write_text(self, name: str, text: str) -> Path:
        target = self.inside(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.redact(text), encoding="utf-8")
        return target

    def append_text(self, name: str, text: str) -> None:
        with self._lock, open(self.inside(name), "a", encoding="utf-8") as handle:
            handle.write(self.redact(text))

    def finish(self, verdict: str) -> None:
        self.data["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat()
        self.update("verdict", value=verdict)


class Progress:
    """Phase/node/elapsed lines on the terminal (past pytest's capture) and in the run's progress.log."""

    def __init__(self, run: RunDir | None = None, stream=None):
        self.run = run
        self.stream = stream or sys.__stderr__
        self.started = time.monotonic()

    def __call__(self, phase: str, message: str = "", node: str | None = None) -> None:
        elapsed = time.monotonic() - self.started
        where = f" [{node}]" if node else ""
        line = f"[servegate {elapsed:7.1f}s] {phase}{where}: {message}".rstrip(": ")
        if self.run:
            line = self.run.redact(line)
            self.run.append_text("progress.log", line + "\n")
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (ValueError, OSError):
            pass
