"""The flag manifest of the vLLM a node will really run: its environment, after the recipe's mods.

Why not the stored per-version manifests: a mod can add a flag (`--gpu-memory-utilization-gb`) or
register a parser, and a node's environment may not be the version the recipe believes. So the
manifest is extracted where vLLM lives, through the node's own transport (extract.py piped to the
env's Python), after the mods are applied. Extraction imports vLLM (10-20 s), so the result is
cached on the controller, keyed by node, interpreter, vLLM version, the mods' content and extract.py
itself: an unchanged environment and mod set costs nothing on the next run.

Docker nodes: the vLLM that serves is the one in the node's container, so extract.py is piped (stdin)
into that container's Python over the node's transport, and the result is cached by the ID of the image
the container runs (plus mods and extract.py): nodes holding the same image share one extraction, and a
rebuilt image is extracted again. The record names the node, container, image and image ID, and which
node the extraction ran on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
from servegate.nodes.container import ContainerHost
from servegate.nodes.host import NodeHost
from servegate.nodes.transport import send_bytes
from servegate.runtimes.pyenv import HostEnvironment
from servegate.steps.mods import resolve_mod

NODE_CACHE_DIR = USER_CACHE_DIR / "nodes"
IMAGE_CACHE_DIR = USER_CACHE_DIR / "images"
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
    image: dict[str, str] | None = None  # docker nodes: {tag, id, container, extracted_on}

    def record(self) -> dict:
        """What run.json keeps about the manifest (not the manifest itself)."""
        vllm = self.manifest.get("vllm") or {}
        return {
            "vllm": f"{vllm.get('distribution')} {vllm.get('version')}",
            "node": self.node,
            "python": self.python,
            "mods": self.mods,
            "manifest": str(self.path),
            "cache": "hit" if self.cached else "miss",
            "seconds": round(self.seconds, 3),
            **({"image": self.image} if self.image else {}),
        }


def origin_line(record: dict) -> str:
    """One line saying where a manifest came from, for progress lines and failure messages."""
    where = f"node {record.get('node')} ({record.get('python')})"
    image = record.get("image")
    if image:
        where = (f"image {image['tag']} ({image['id'][:19]}) in container {image['container']} on node "
                 f"{record.get('node')}, extracted on node {image['extracted_on']}")
    return f"flag manifest of {record.get('vllm')} from {where}; cache {record.get('cache')}"


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


def cached_or_extracted(path: Path, extract: Callable[[], dict], *, refresh: bool) -> tuple[dict, bool]:
    """(manifest, whether it came from the cache): the one stored at `path`, else extract() saved there."""
    if path.exists() and not refresh:
        return load_cached(path), True
    manifest = extract()
    save(manifest, path, overwrite=True)
    return manifest, False


def node_manifest(
    host: NodeHost, env: HostEnvironment, mods: Sequence[str], recipe_dir: Path,
    *, cache_dir: Path = NODE_CACHE_DIR, refresh: bool = False,
) -> NodeManifest:
    """The manifest of the env's vLLM as it is now; call after the recipe's mods were applied."""
    started = time.perf_counter()
    path = cache_path(host, env, mods_digest(mods, recipe_dir), cache_dir)
    manifest, cached = cached_or_extracted(path, lambda: extract_on(host, env.python), refresh=refresh)
    seconds = time.perf_counter() - started
    return NodeManifest(manifest, host.name, env.python, list(mods), path, cached, seconds)


def image_cache_path(image_id: str, mods_hash: str, cache_dir: Path) -> Path:
    key = digest(image_id, mods_hash, EXTRACT_SCRIPT.read_bytes())
    return Path(cache_dir) / f"image-{image_id.removeprefix('sha256:')[:12]}-{key[:16]}.json"


def container_image_id(host: ContainerHost) -> str:
    """The ID of the image the container really runs (not what its tag points to now)."""
    fmt = shlex.quote("{{.Image}}")
    command = f"docker container inspect --format {fmt} {shlex.quote(host.container)}"
    return host.outer.check(command, f"reading the image of container {host.container}").stdout.strip()


def extract_in_container(host: ContainerHost, python: str, *, timeout: float = EXTRACT_TIMEOUT_S) -> dict:
    """Pipe extract.py (stdin) into the container's Python, over the node's own transport."""
    command = host.wrap(f"{shlex.quote(python)} - --no-help-text", interactive=True)
    where = Location(node=host.name, key=f"{host.container}:{python}")
    try:
        done = send_bytes(host.node.host, EXTRACT_SCRIPT.read_bytes(), command, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ManifestError(f"flag extraction in container {host.container} ran over {timeout:.0f} s",
                            where=where, fix="check that the container is not starved") from None
    stdout, stderr = (stream.decode(errors="replace") for stream in (done.stdout, done.stderr))
    if done.returncode != 0:
        raise ManifestError(
            f"flag extraction in container {host.container} exited {done.returncode}; "
            f"stderr tail: {tail(stderr)}",
            where=where,
            fix=f"check that {python} can `import vllm` in the container (after the recipe's mods)",
        )
    shown = f"{python} - --no-help-text < extract.py in container {host.container} on node '{host.name}'"
    return accept(parse_output(stdout, stderr, shown), where)


def image_manifest(
    host: ContainerHost, image: str, python: str, mods: Sequence[str], recipe_dir: Path,
    *, cache_dir: Path = IMAGE_CACHE_DIR, refresh: bool = False,
) -> NodeManifest:
    """The manifest of the vLLM in a node's container after the recipe's mods, cached by image ID."""
    started = time.perf_counter()
    image_id = container_image_id(host)
    path = image_cache_path(image_id, mods_digest(mods, recipe_dir), cache_dir)
    origin_path = path.with_suffix(".origin.json")
    refresh = refresh or not origin_path.exists()
    manifest, cached = cached_or_extracted(path, lambda: extract_in_container(host, python), refresh=refresh)
    if cached:
        extracted_on = json.loads(origin_path.read_text())["node"]
    else:
        extracted_on = host.name
        origin_path.write_text(json.dumps({"node": host.name, "container": host.container, "image": image,
                                           "image_id": image_id}) + "\n")
    origin = {"tag": image, "id": image_id, "container": host.container, "extracted_on": extracted_on}
    seconds = time.perf_counter() - started
    return NodeManifest(manifest, host.name, python, list(mods), path, cached, seconds, origin)
