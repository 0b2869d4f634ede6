"""Images for the docker runtime: built once (cached by content hash), identical on every node.

A recipe's `container` is an image tag. When recipes/images/<repository>/Dockerfile exists (or the recipe's
`build_args` names a folder with `dockerfile:`), servegate builds it on this machine; the build context
gets the host's pip setup as host-pip/: its find-links folders (host-pip/find-links/<n>/, some pinned
wheels live only there) and its CA bundle (host-pip/cert.pem, for TLS-intercepting networks). The image
is tagged with a content label; a tag whose label matches the current content is never rebuilt.

Every node must hold the very same image ID. A node that lacks it receives it with
`docker save | docker load` over the node transports (see transport.py). Nothing is removed with a
blanket prune: removal is by exact tag or ID only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servegate.config.paths import IMAGES_DIR, RECIPES_DIR, REPO_ROOT
from servegate.errors import Location, NodeError, RecipeError, ServegateError
from servegate.labels import CONTENT_LABEL
from servegate.nodes.host import NodeHost
from servegate.nodes.transport import pipe_between
from servegate.runtimes.pyenv import VERSION_OF
from servegate.sim.base import BASE_IMAGE, ensure_base_image, image_exists

BUILD_TIMEOUT_S = 3600


@dataclass
class ImageBuild:
    tag: str
    folder: Path
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def dockerfile(self) -> Path:
        return self.folder / "Dockerfile"


@dataclass
class BuildOutcome:
    tag: str
    image_id: str
    content: str
    seconds: float
    cached: bool


def repository(tag: str) -> str:
    """'servegate-vllm-cpu:0.32.0' -> 'servegate-vllm-cpu'; 'nvcr.io/x/vllm:1' -> 'vllm'."""
    name = tag.rsplit("/", 1)[-1]
    return name.split("@", 1)[0].split(":", 1)[0]


def build_spec(
    container: str, build_args: Any = None, recipe_dir: Path | None = None, where: Location | None = None
) -> ImageBuild | None:
    """The build for a recipe's image, or None when the image is not built by servegate (pulled/preloaded)."""
    args = dict(build_args) if isinstance(build_args, dict) else {}
    folder_arg = args.pop("dockerfile", None)
    if folder_arg:
        candidates = [
            (recipe_dir or REPO_ROOT) / folder_arg,
            REPO_ROOT / folder_arg,
            RECIPES_DIR / folder_arg,
        ]
        folder = next((c.resolve() for c in candidates if (c / "Dockerfile").is_file()), None)
        if folder is None:
            raise RecipeError(
                f"build_args.dockerfile {folder_arg!r} names no folder with a Dockerfile",
                where=where,
                fix=f"looked in {', '.join(str(c) for c in candidates)}",
            )
    else:
        folder = IMAGES_DIR / repository(container)
        if not (folder / "Dockerfile").is_file():
            return None
    return ImageBuild(container, folder, {str(k): str(v) for k, v in args.items()})


def find_links_folders() -> list[Path]:
    """The host's pip find-links folders (pip config + PIP_FIND_LINKS), existing directories only."""
    out = subprocess.run(["python3", "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    values = re.findall(r"^\S*find-links='([^']*)'", out, flags=re.MULTILINE)
    values.append(os.environ.get("PIP_FIND_LINKS", ""))
    folders: list[Path] = []
    for value in values:
        for item in value.split():
            path = Path(item.removeprefix("file://"))
            if path.is_dir() and path.resolve() not in folders:
                folders.append(path.resolve())
    return folders


def pip_cert() -> Path | None:
    """The CA bundle pip is configured with (PIP_CERT or `pip config` cert), if any."""
    out = subprocess.run(["python3", "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    values = re.findall(r"^\S*\.cert='([^']*)'", out, flags=re.MULTILINE) + [os.environ.get("PIP_CERT", "")]
    return next((Path(v) for v in reversed(values) if v and Path(v).is_file()), None)


def _hash_tree(digest, root: Path, label: str) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{label}/{path.relative_to(root)}\0".encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)


def content_hash(build: ImageBuild, links: list[Path], cert: Path | None = None) -> str:
    """Dockerfile folder, find-links wheels, CA bundle, build args, and the local image IDs it builds FROM."""
    digest = hashlib.sha256()
    _hash_tree(digest, build.folder, "context")
    digest.update(b"cert\0" + (cert.read_bytes() if cert else b""))
    for index, folder in enumerate(links):
        _hash_tree(digest, folder, f"find-links/{index}")
    for key, value in sorted(build.build_args.items()):
        digest.update(f"arg {key}={value}\0".encode())
    for base in _base_images(build):
        digest.update(f"from {base}={local_image_id(base) or 'absent'}\0".encode())
    return digest.hexdigest()[:16]


def _base_images(build: ImageBuild) -> list[str]:
    text = build.dockerfile.read_text()
    defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))
    defaults.update(build.build_args)
    bases = []
    for ref in re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE):
        bases.append(re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), ""), ref))
    return bases


def local_image_id(tag: str) -> str | None:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True
    )
    return out.stdout.strip() if out.returncode == 0 else None


def _label(tag: str, key: str) -> str | None:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{key}"}}}}', tag],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def build_image(build: ImageBuild, log=print) -> BuildOutcome:
    """Build (or reuse) the image on this machine's engine; return its ID and whether the cache served it."""
    started = time.monotonic()
    if BASE_IMAGE in _base_images(build):
        ensure_base_image(log=log)
    links, cert = find_links_folders(), pip_cert()
    content = content_hash(build, links, cert)
    if image_exists(build.tag) and _label(build.tag, CONTENT_LABEL) == content:
        return BuildOutcome(
            build.tag, local_image_id(build.tag) or "", content, time.monotonic() - started, True
        )
    previous = local_image_id(build.tag)
    log(f"building image {build.tag} from {build.folder} (content {content}); cached afterwards")
    with tempfile.TemporaryDirectory(prefix="servegate-build-") as tmp:
        context = Path(tmp)
        shutil.copytree(build.folder, context, dirs_exist_ok=True)
        host_pip = context / "host-pip"
        (host_pip / "find-links").mkdir(parents=True, exist_ok=True)
        for index, folder in enumerate(links):
            shutil.copytree(folder, host_pip / "find-links" / str(index), copy_function=_link_or_copy)
        (host_pip / "cert.pem").write_bytes(cert.read_bytes() if cert else b"")
        argv = ["docker", "build", "--force-rm", "-t", build.tag, "--label", f"{CONTENT_LABEL}={content}"]
        for key, value in build.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        done = subprocess.run(
            argv + [str(context)],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise ServegateError(
            f"docker build of {build.tag} from {build.dockerfile} failed (exit {done.returncode}):\n"
            f"{tail}\n  fix: run the same build by hand: {shlex.join(argv)} <context>"
        )
    seconds = time.monotonic() - started
    log(f"image {build.tag} built in {seconds:.0f} s")
    if previous and previous != local_image_id(build.tag):
        # the older build lost its tag: remove it by exact ID (refused, harmlessly, while something uses it)
        subprocess.run(["docker", "rmi", previous], capture_output=True)
    return BuildOutcome(build.tag, local_image_id(build.tag) or "", content, seconds, False)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ---- on the nodes --------------------------------------------------------------------------------------
IMAGE_PROBE = VERSION_OF + r"""
import json, shutil, sys
info = {"python": sys.version.split()[0], "vllm": v("vllm", "vllm-cpu"), "torch": v("torch"), "ray": v("ray"),
        "flashinfer": v("flashinfer-python", "flashinfer"), "ray_on_path": shutil.which("ray"),
        "vllm_on_path": shutil.which("vllm")}
for module in ("torch", "ray"):
    try:
        imported = __import__(module)
        info[module + "_import"] = "ok"
        if module == "torch":
            info["torch_cuda"] = imported.version.cuda
    except Exception as exc:
        info[module + "_import"] = f"{type(exc).__name__}: {exc}"
print("SERVEGATE-PROBE " + json.dumps(info))
"""


def node_image_id(host: NodeHost, tag: str) -> str | None:
    out = host.run(f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(tag)} 2>/dev/null")
    return out.stdout.strip() if out.ok and out.stdout.strip() else None


def probe_image(host: NodeHost, tag: str) -> dict:
    """Versions and Ray presence inside the image, from a throwaway container on the node."""
    command = f"docker run --rm --network none --entrypoint bash {shlex.quote(tag)} -c " + shlex.quote(
        f"python3 -c {shlex.quote(IMAGE_PROBE)}"
    )
    result = host.run(command, timeout=300)
    line = next((x for x in result.stdout.splitlines() if x.startswith("SERVEGATE-PROBE ")), None)
    if line is None:
        raise NodeError(
            f"probing image {tag} failed (exit {result.rc}): "
            f"{(result.stderr or result.stdout).strip()[-400:]}",
            where=Location(node=host.name),
            fix=f"run by hand on the node: {command[:200]}",
        )

    return json.loads(line.removeprefix("SERVEGATE-PROBE "))


def image_problems(info: dict, pins: dict, node: str, tag: str) -> list[str]:
    """What is wrong with one node's image: pinned versions that differ, Ray missing or not on PATH."""
    problems = []
    for key in ("vllm", "torch", "ray", "flashinfer"):
        want = pins.get(key)
        if want and info.get(key) != str(want):
            problems.append(
                f"node {node}: image {tag} has {key} {info.get(key) or 'not installed'}, "
                f"the recipe pins {want}"
            )
    if info.get("ray_import") != "ok":
        problems.append(f"node {node}: `import ray` fails in image {tag}: {info.get('ray_import')}")
    if not info.get("ray_on_path"):
        problems.append(f"node {node}: no `ray` executable on PATH in image {tag}")
    return problems


def _save_archive(tag: str, image_id: str, folder: Path, log) -> Path:
    """`docker save` once into a file; every receiving node reads that file (the caller deletes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{image_id.removeprefix('sha256:')[:16]}.tar"
    log(f"saving {tag} ({image_id[:19]}) to {target}")
    with open(target, "wb") as out:
        done = subprocess.run(
            ["docker", "save", tag], stdout=out, stderr=subprocess.PIPE, timeout=BUILD_TIMEOUT_S
        )
    if done.returncode != 0:
        target.unlink(missing_ok=True)
        raise ServegateError(f"docker save {tag} failed: {done.stderr.decode(errors='replace')[-500:]}")
    return target


def send_image(
    host: NodeHost, tag: str, expected_id: str, archive: Path | None, source: NodeHost | None
) -> None:
    """Load the image into one node: from the archive saved here, or straight from a source node."""
    load = "docker load -q"
    if archive is not None:
        pipe_between(
            "local://",
            f"cat {shlex.quote(str(archive))}",
            host.node.host,
            load,
            what=f"sending image {tag} to the node",
            node=host.name,
        )
    else:
        pipe_between(
            source.node.host,
            f"docker save {shlex.quote(tag)}",
            host.node.host,
            load,
            what=f"sending image {tag} from node {source.name}",
            node=host.name,
        )
    seen = node_image_id(host, tag)
    if seen != expected_id:
        raise NodeError(
            f"after docker load, image {tag} is {seen}, expected {expected_id}",
            where=Location(node=host.name),
            fix="check the node's disk space and docker engine log",
        )


def sync_image(
    tag: str, hosts: dict[str, NodeHost], head: str, cache_dir: Path, *, controller_id: str | None, log=print
) -> dict[str, dict]:
    """Make every node hold `tag` with one image ID; return per node {id, before, action}.

    The source of truth is this machine's image when servegate built it (controller_id), else the head
    node's. A node lacking the image receives it; when servegate built the image, a node holding an
    older build of the same tag receives the new one and the old ID is removed by exact ID. A node whose
    image differs from a source servegate did not build is reported, never overwritten.
    """
    before = _ids(hosts, tag)
    truth = controller_id or before.get(head)
    if truth is None:
        raise NodeError(
            f"image {tag} is on neither this machine nor the head node",
            where=Location(node=head),
            fix="build or load the image on the head node, or add "
            f"recipes/images/{repository(tag)}/Dockerfile so servegate builds it",
        )
    receivers = [name for name, seen in before.items() if seen is None or (controller_id and seen != truth)]
    archive = _save_archive(tag, truth, cache_dir, log) if controller_id and receivers else None
    source = None if controller_id else hosts[head]

    def receive(name: str) -> None:
        log(f"node {name}: receiving image {tag} ({truth[:19]}); it had {before[name] or 'none'}")
        send_image(hosts[name], tag, truth, archive, source)
        if before[name] and before[name] != truth:
            hosts[name].run(f"docker rmi {shlex.quote(before[name])} >/dev/null 2>&1")

    try:
        with ThreadPoolExecutor(max_workers=max(1, len(receivers))) as pool:
            list(pool.map(receive, receivers))
    finally:
        if archive is not None:
            archive.unlink(missing_ok=True)  # several GB; a later receiver gets a fresh save
    after = _ids(hosts, tag)
    return {
        name: {
            "id": after[name],
            "before": before[name],
            "action": "received" if name in receivers else "present",
        }
        for name in hosts
    }


def _ids(hosts: dict[str, NodeHost], tag: str) -> dict[str, str | None]:

    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        return dict(zip(hosts, pool.map(lambda h: node_image_id(h, tag), hosts.values()), strict=True))


def identity_problems(state: dict[str, dict], tag: str) -> list[str]:
    """Every node must hold the image, all with one ID."""
    ids = {name: info["id"] for name, info in state.items()}
    missing = [name for name, seen in ids.items() if seen is None]
    problems = [f"node {name}: image {tag} is missing" for name in missing]
    present = {seen for seen in ids.values() if seen}
    if len(present) > 1:
        problems.append(
            f"image {tag} differs across nodes: "
            + ", ".join(f"{name}={(seen or 'none')[:19]}" for name, seen in ids.items())
        )
    return problems


def remove_image(host: NodeHost, tag: str) -> bool:
    """Remove one image by exact tag (no prune); True when the tag is gone."""
    host.run(f"docker rmi {shlex.quote(tag)} >/dev/null 2>&1")
    return node_image_id(host, tag) is None
