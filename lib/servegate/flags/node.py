"""The flag manifest of the vLLM a node will really run: its environment, after the recipe's mods.

Why not the stored per-version manifests: a mod can add a flag (`--gpu-memory-utilization-gb`) or
register a parser, and a node's environment may not be the version the recipe believes. So the
manifest is extracted where vLLM lives, through the node's own transport (extract.py piped to the
env's Python), after the mods are applied. Extraction imports vLLM (10-20 s), so the result is
cached on the controller, keyed by node, interpreter, vLLM version, the mods' content and extract.py
itself: an unchanged environment and mod set costs nothing on the next run.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from servegate.environment import HostEnvironment
from servegate.errors import Location
from servegate.flags.manifest import (
    EXTRACT_SCRIPT,
    USER_CACHE_DIR,
    ManifestError,
    accept,
    load_cached,
    parse_output,
    save,
    tail,
)
from servegate.mods import resolve_mod
from servegate.nodes import NodeHost

NODE_CACHE_DIR = USER_CACHE_DIR / "nodes"
EXTRACT_TIMEOUT_S = 600


@dataclass
class NodeManifest:
    """A manifest and where it came from: which node, which mods, cached or just extracted."""

    manifest: dict
    node: str
    python: str
    mods: list[str]
    path: Path
    cached: bool
    seconds: float  # extraction (or cache read) wall time

    def record(self) -> dict:
        """What run.json keeps about the manifest (not the manifest itself)."""
        vllm = self.manifest.get("vllm") or {}
        return {
            "vllm": f"{vllm.get('distribution')} {vllm.get('version')}",
            "python": self.python,
            "mods": self.mods,
            "manifest": str(self.path),
            "cache": "hit" if self.cached else "miss",
            "seconds": round(self.seconds, 3),
        }


def digest(*parts: str | bytes) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part if isinstance(part, bytes) else part.encode())
        sha.update(b"\0")
    return sha.hexdigest()


def mods_digest(mods: Sequence[str], recipe_dir: Path) -> str:
    """Hash of every file of every mod folder, in recipe order: a mod edit means a new manifest."""
    parts: list[str | bytes] = []
    for mod in mods:
        folder = resolve_mod(mod, recipe_dir)
        parts.append(folder.name)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            parts += [str(path.relative_to(folder)), path.read_bytes()]
    return digest(*parts)


def cache_path(host: NodeHost, env: HostEnvironment, mods_hash: str, cache_dir: Path) -> Path:
    key = digest(
        host.node.host,
        env.python,
        env.versions.get("vllm") or "",
        mods_hash,
        EXTRACT_SCRIPT.read_bytes(),
    )
    node_slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", host.name)
    return Path(cache_dir) / f"{node_slug}-{key[:16]}.json"


def extract_on(host: NodeHost, python: str, *, timeout: float = EXTRACT_TIMEOUT_S) -> dict:
    """Run extract.py with the node's interpreter over the node's own transport (local, SSH, docker)."""
    script = base64.b64encode(EXTRACT_SCRIPT.read_bytes()).decode()
    command = f"echo {script} | base64 -d | {shlex.quote(python)} - --no-help-text"
    shown = f"{python} - --no-help-text < extract.py on node '{host.name}'"
    result = host.run(command, timeout=timeout)
    if not result.ok:
        raise ManifestError(
            f"flag extraction exited {result.rc}; stderr tail: {tail(result.stderr)}",
            where=Location(node=host.name, key=python),
            fix=f"check that {python} can `import vllm` on the node (after the recipe's mods)",
        )
    return accept(parse_output(result.stdout, result.stderr, shown), Location(node=host.name, key=python))


def node_manifest(
    host: NodeHost,
    env: HostEnvironment,
    mods: Sequence[str],
    recipe_dir: Path,
    *,
    cache_dir: Path = NODE_CACHE_DIR,
    refresh: bool = False,
) -> NodeManifest:
    """The manifest of the env's vLLM as it is now; call after the recipe's mods were applied."""
    started = time.perf_counter()
    path = cache_path(host, env, mods_digest(mods, recipe_dir), cache_dir)
    cached = path.exists() and not refresh
    if cached:
        manifest = load_cached(path)
    else:
        manifest = extract_on(host, env.python)
        save(manifest, path, overwrite=True)
    seconds = time.perf_counter() - started
    return NodeManifest(manifest, host.name, env.python, list(mods), path, cached, seconds)


def deploy_manifest(stack, host: NodeHost) -> tuple[dict, dict]:
    """The manifest of the vLLM a deploy (servegate.stack.Stack) runs on one node, after its mods,
    and what run.json keeps about it. Docker nodes: extracted inside the node's container by the
    docker runtime, through node_manifest as well (same cache)."""
    if getattr(stack, "uses_docker", lambda: False)():
        manifest = stack.docker.flag_manifest(host.name)
        vllm = manifest.get("vllm") or {}
        return manifest, {"vllm": f"{vllm.get('distribution')} {vllm.get('version')}", "runtime": "docker"}
    env = stack.environments()[host.name]
    live = node_manifest(host, env, stack.recipe.mods, stack.recipe.path.parent)
    return live.manifest, live.record()
