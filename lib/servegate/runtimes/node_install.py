"""Install an offline bundle on an air-gapped node: reassemble its parts, verify every checksum, pip --no-index.

Standard library only, on purpose: this very file is shipped inside every bundle as `install.py` (with
`install.sh` calling it), so a node that has only python3 and pip can install a bundle without servegate;
`servegate node install BUNDLE` runs the same code. Layout of a bundle (servegate.runtimes.bundle writes it):

    manifest.json   sets (name, folder, lock), files {path: {sha256, bytes}}, parts [{name, sha256, bytes}], tar
    install.sh      python3 install.py "$@"
    install.py      this file
    parts/bundle.tar.NNN   (split bundles) or the set folders themselves (wheels/, aiperf/)

Every part is checked before anything is joined (a damaged part is named), then the joined archive, then
every file it held; pip itself checks each wheel against the set's lock (`--require-hashes`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

MANIFEST = "manifest.json"
CHUNK = 2**20


class BundleError(Exception):
    """A bundle that cannot be installed: the message names the file and the cause."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle: Path) -> dict:
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: no manifest; is {bundle} a bundle written by `servegate wheelhouse --bundle`?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}:{exc.lineno}: not JSON ({exc.msg}); the manifest was damaged") from None


def check_parts(bundle: Path, manifest: dict) -> None:
    """Every part present with its size and sha256; every problem named at once."""
    problems = []
    for part in manifest.get("parts", []):
        path = bundle / "parts" / part["name"]
        if not path.is_file():
            problems.append(f"part {part['name']}: missing from {path.parent}")
        elif path.stat().st_size != part["bytes"]:
            problems.append(f"part {part['name']}: {path.stat().st_size} bytes, the manifest says {part['bytes']}")
        elif sha256_file(path) != part["sha256"]:
            problems.append(f"part {part['name']}: sha256 {sha256_file(path)[:16]}..., the manifest says "
                            f"{part['sha256'][:16]}...: damaged in transfer, carry it again")
    if problems:
        raise BundleError("bundle parts do not match the manifest:\n  " + "\n  ".join(problems))


def join_parts(bundle: Path, manifest: dict) -> None:
    """Concatenate the parts, check the archive's sha256, unpack it into the bundle folder."""
    check_parts(bundle, manifest)
    archive = bundle / manifest["tar"]["name"]
    with open(archive, "wb") as out:
        for part in manifest["parts"]:
            with open(bundle / "parts" / part["name"], "rb") as handle:
                for block in iter(lambda h=handle: h.read(CHUNK), b""):
                    out.write(block)
    if sha256_file(archive) != manifest["tar"]["sha256"]:
        raise BundleError(f"{archive}: joined archive's sha256 differs from the manifest (parts out of order?)")
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            unsafe = member.name.startswith("/") or ".." in Path(member.name).parts
            if unsafe or not (member.isfile() or member.isdir()):
                raise BundleError(f"{archive}: refusing member {member.name!r} (absolute, '..' or not a file)")
        tar.extractall(bundle)
    archive.unlink()


def check_files(bundle: Path, manifest: dict) -> None:
    problems = []
    for name, entry in sorted(manifest["files"].items()):
        path = bundle / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    if problems:
        raise BundleError(f"{bundle}: files do not match the manifest:\n  " + "\n  ".join(problems))


def pip_argv(python: str, bundle: Path, wheel_set: dict, target: str | None) -> list[str]:
    folder = bundle / wheel_set["folder"]
    argv = [python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-cache-dir", "--quiet",
            "--find-links", str(folder), "--require-hashes", "-r", str(bundle / wheel_set["lock"])]
    return argv + (["--upgrade", "--target", target] if target else [])


def install_set(python: str, bundle: Path, wheel_set: dict, target: str | None) -> None:
    if not (bundle / wheel_set["lock"]).read_text().strip():
        return  # nothing the node lacks
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run(pip_argv(python, bundle, wheel_set, target), capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = "\n  ".join((result.stderr or result.stdout).strip().splitlines()[-10:])
        raise BundleError(f"installing set {wheel_set['name']} (pip exit {result.returncode}):\n  {tail}")
    if target and wheel_set.get("console") == "aiperf":
        write_aiperf_wrapper(python, Path(target))


def write_aiperf_wrapper(python: str, site: Path) -> Path:
    """SITE/bin/aiperf: the node's python with only AIPerf's own site on its path (export SERVEGATE_AIPERF)."""
    wrapper = site / "bin" / "aiperf"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    code = "import sys; from aiperf.cli import app; sys.argv[0] = 'aiperf'; sys.exit(app())"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {python} -c "{code}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def install(bundle: Path, python: str = sys.executable, target: str | None = None,
            aiperf_target: str = "/tmp/aiperf-site", verify_only: bool = False) -> list[str]:
    """Verify and install a bundle; returns what it did, one line each."""
    manifest = read_manifest(bundle)
    done = []
    if manifest.get("parts"):
        join_parts(bundle, manifest)
        done.append(f"joined {len(manifest['parts'])} parts, sha256 checked")
    check_files(bundle, manifest)
    done.append(f"{len(manifest['files'])} files match the manifest's sha256")
    if verify_only:
        return done
    for wheel_set in manifest["sets"]:
        where = aiperf_target if wheel_set.get("own_site") else target
        install_set(python, bundle, wheel_set, where)
        done.append(f"installed set {wheel_set['name']} ({wheel_set['wheels']} wheels) into "
                    f"{where or 'the environment of ' + python}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="install.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, nargs="?", default=Path(__file__).resolve().parent)
    parser.add_argument("--python", default=sys.executable, help="interpreter whose pip installs (default: this)")
    parser.add_argument("--target", help="install the main set into this folder (default: the python's own env)")
    parser.add_argument("--aiperf-target", default="/tmp/aiperf-site", help="AIPerf's own site")
    parser.add_argument("--verify-only", action="store_true", help="check every checksum, install nothing")
    args = parser.parse_args(argv)
    try:
        lines = install(args.bundle, args.python, args.target, args.aiperf_target, args.verify_only)
    except BundleError as exc:
        print(f"install: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
