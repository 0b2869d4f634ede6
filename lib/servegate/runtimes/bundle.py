"""The lock of a wheelhouse and the bundle an air-gapped node receives (`servegate wheelhouse ... --bundle DIR`).

Lock: `wheelhouse.lock` beside the wheels, one `name==version --hash=sha256:...` per wheel (pip's
requirements format), so the node's pip checks every wheel (`--require-hashes`) and a later run can be
compared with it (`--locked` resolves with its pins as constraints and fails on any other set).

Bundle: the wheel sets (wheels/: what the node lacks plus pytest-testinfra; aiperf/: AIPerf's own set, for
its own site), each with its lock, a manifest.json with the sha256 of every file, and install.sh/install.py
(servegate.runtimes.node_install, standard library only). With --split SIZE the sets are packed into one
tar cut into parts of at most SIZE under parts/, each part's sha256 in the manifest.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path

from servegate.errors import ServegateError
from servegate.runtimes import node_install
from servegate.runtimes.node_install import MANIFEST, sha256_file

LOCK_NAME = "wheelhouse.lock"
SIZE = re.compile(r"^(\d+)([KMG]?)i?B?$", re.IGNORECASE)
INSTALL_SH = """#!/bin/sh
# Verify and install this bundle with the node's own python3 and pip, no network: sh install.sh [--target DIR]
exec "${PYTHON:-python3}" "$(dirname "$0")/install.py" "$(dirname "$0")" "$@"
"""


class BundleBuildError(ServegateError):
    """A lock or bundle could not be written, or a resolution drifted from its lock."""


def parse_size(text: str) -> int:
    """'60M' -> 62914560; K, M, G are powers of 1024."""
    match = SIZE.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise BundleBuildError(f"--split {text!r}: expected a size such as 60M, 512K or 1G")
    return int(match.group(1)) * 1024 ** " KMG".index((match.group(2) or " ").upper())


def wheel_pin(path: Path) -> tuple[str, str]:
    """('pytest-testinfra', '10.1.1') from a wheel's file name."""
    fields = path.name.split("-")
    return re.sub(r"[-_.]+", "-", fields[0]).lower(), fields[1]


def lock_text(folder: Path) -> str:
    lines = []
    for path in sorted(folder.glob("*.whl")):
        name, version = wheel_pin(path)
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{sha256_file(path)}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_lock(folder: Path) -> Path:
    path = folder / LOCK_NAME
    path.write_text(lock_text(folder))
    return path


def read_lock(path: Path) -> dict[str, str]:
    """name -> version of a lock file."""
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", "--")):
            continue
        name, sep, version = line.split()[0].partition("==")
        if not sep:
            raise BundleBuildError(f"{path}:{number}: expected name==version, found {line!r}")
        pins[name] = version
    return pins


def lock_drift(lock: dict[str, str], fetched: dict[str, str]) -> list[str]:
    """What a new resolution fetches that differs from the lock (added, removed, another version)."""
    drift = [f"{n}: locked {lock[n]}, resolved {fetched[n]}" for n in sorted(lock) if n in fetched
             and lock[n] != fetched[n]]
    drift += [f"{n}: locked {lock[n]}, no longer fetched" for n in sorted(set(lock) - set(fetched))]
    return drift + [f"{n}: resolved {fetched[n]}, not in the lock" for n in sorted(set(fetched) - set(lock))]


def build_bundle(bundle: Path, sets: list[dict], split: int | None) -> dict:
    """manifest.json, install.sh and install.py in `bundle`, whose set folders (sets[i]['folder']) are
    already there with their locks; with `split`, the folders are packed into parts and removed."""
    files = {}
    for wheel_set in sets:
        for path in sorted((bundle / wheel_set["folder"]).iterdir()):
            if path.is_file():
                files[str(path.relative_to(bundle))] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        wheel_set["wheels"] = len(list((bundle / wheel_set["folder"]).glob("*.whl")))
    manifest = {"format": 1, "sets": sets, "files": files, "parts": []}
    if split:
        manifest["tar"], manifest["parts"] = pack(bundle, [s["folder"] for s in sets], split)
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.copyfile(node_install.__file__, bundle / "install.py")
    (bundle / "install.sh").write_text(INSTALL_SH)
    (bundle / "install.sh").chmod(0o755)
    return manifest


def pack(bundle: Path, folders: list[str], split: int) -> tuple[dict, list[dict]]:
    """One uncompressed tar of the folders (wheels do not compress) cut into parts of `split` bytes."""
    parts_dir = bundle / "parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir()
    archive = bundle / "bundle.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for folder in folders:
            tar.add(bundle / folder, arcname=folder)
    parts = []
    with open(archive, "rb") as handle:
        for index, block in enumerate(iter(lambda: handle.read(split), b"")):
            path = parts_dir / f"bundle.tar.{index:03d}"
            path.write_bytes(block)
            parts.append({"name": path.name, "sha256": sha256_file(path), "bytes": len(block)})
    tar_entry = {"name": archive.name, "sha256": sha256_file(archive), "bytes": archive.stat().st_size}
    archive.unlink()
    for folder in folders:
        shutil.rmtree(bundle / folder)
    return tar_entry, parts


def summary_lines(bundle: Path, manifest: dict) -> list[str]:
    total = sum(entry["bytes"] for entry in manifest["files"].values())
    lines = [f"bundle {bundle}: {len(manifest['files'])} files, {total / 2**20:.1f} MiB, sets "
             + ", ".join(f"{s['name']} ({s['wheels']} wheels)" for s in manifest["sets"])]
    if manifest["parts"]:
        lines.append(f"  {len(manifest['parts'])} parts of at most {max(p['bytes'] for p in manifest['parts'])} "
                     f"bytes in {bundle / 'parts'}; sha256 of each in {bundle / MANIFEST}")
    lines.append(f"  on the node: sh {bundle.name}/install.sh [--target DIR]   "
                 f"(or: servegate node install {bundle.name})")
    return lines
