"""An air-gapped node's bundle, end to end: `servegate wheelhouse --bundle --split` here (real pip download of a
small set), then the bundle's own install.sh / `servegate node install` into a fresh venv with no index, and a
damaged part named by its checksum."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from servegate.runtimes.bundle import LOCK_NAME, lock_drift, parse_size, read_lock

ROOT = Path(__file__).resolve().parents[1]
PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"
OFFLINE = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_INDEX_URL": "http://127.0.0.1:9/nowhere"}


def servegate(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servegate", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """six + packaging + pytest-testinfra (and their deps) for this Python, AIPerf's set stood in by idna (the
    real aiperf set is ~139 wheels), split into 64 KiB parts."""
    bundle = tmp_path_factory.mktemp("bundle") / "b"
    out = servegate("wheelhouse", "six==1.16.0", "packaging", "--bundle", str(bundle), "--aiperf", "idna==3.7",
                    "--python-version", PYVER, "--split", "64K")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "parts of at most 65536 bytes" in out.stdout and "install.sh" in out.stdout
    return bundle


def fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin" / "python"


def test_bundle_holds_parts_locks_and_a_manifest(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert len(manifest["parts"]) >= 3 and all(len(p["sha256"]) == 64 for p in manifest["parts"])
    assert sorted(p.name for p in (built / "parts").iterdir()) == [p["name"] for p in manifest["parts"]]
    assert not (built / "wheels").exists()  # packed into the parts, not carried twice
    assert [s["name"] for s in manifest["sets"]] == ["wheels", "aiperf"] and manifest["sets"][1]["own_site"]
    names = {Path(f).name.split("-")[0].lower() for f in manifest["files"] if f.endswith(".whl")}
    assert {"six", "packaging", "pytest_testinfra", "pytest", "pluggy", "idna"} <= names
    assert f"wheels/{LOCK_NAME}" in manifest["files"] and f"aiperf/{LOCK_NAME}" in manifest["files"]
    assert (built / "install.sh").stat().st_mode & 0o111 and (built / "install.py").is_file()


def test_install_sh_installs_into_a_fresh_venv_with_no_index(built, tmp_path):
    bundle = tmp_path / "carried"
    shutil.copytree(built, bundle)
    python = fresh_venv(tmp_path / "venv")
    aiperf_site = tmp_path / "aiperf-site"
    out = subprocess.run(["sh", str(bundle / "install.sh"), "--aiperf-target", str(aiperf_site)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, **OFFLINE,
                                                                           "PYTHON": str(python)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "parts, sha256 checked" in out.stdout and "installed set wheels" in out.stdout
    check = subprocess.run([str(python), "-c", "import six, packaging, testinfra; print(six.__version__)"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "1.16.0", check.stderr
    assert (aiperf_site / "idna").is_dir() and (aiperf_site / "bin" / "aiperf").is_file()


def test_servegate_node_install_names_a_damaged_part(built, tmp_path):
    bundle = tmp_path / "carried"
    shutil.copytree(built, bundle)
    part = bundle / "parts" / "bundle.tar.001"
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    (bundle / "parts" / "bundle.tar.002").unlink()
    python = fresh_venv(tmp_path / "venv")
    out = servegate("node", "install", str(bundle), "--python", str(python), env=OFFLINE)
    assert out.returncode != 0
    assert "part bundle.tar.001: sha256" in out.stderr and "damaged in transfer" in out.stderr
    assert "part bundle.tar.002: missing" in out.stderr
    assert "Traceback" not in out.stderr
    assert subprocess.run([str(python), "-c", "import six"], capture_output=True).returncode != 0  # nothing installed


def test_unmet_requirements_fail_unless_provided_and_the_lock_pins_with_hashes(tmp_path):
    dest, freeze = tmp_path / "wh", tmp_path / "freeze.txt"
    freeze.write_text("pluggy==0.1\niniconfig==2.0.0\n")  # a node whose pluggy is too old for pytest 8
    args = ["wheelhouse", "packaging==24.1", "pytest==8.3.3", "--dest", str(dest), "--python-version", PYVER,
            "--freeze", str(freeze)]
    unmet = servegate(*args)
    assert unmet.returncode == 1 and "PROBLEMS: 1 requirement(s)" in unmet.stdout, unmet.stdout
    assert "the node has pluggy 0.1" in unmet.stdout and "--provided pluggy" in unmet.stdout
    ok = servegate(*args, "--provided", "pluggy")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lock = (dest / LOCK_NAME).read_text()
    assert "packaging==24.1 \\\n    --hash=sha256:" in lock and "pytest==8.3.3 \\\n    --hash=sha256:" in lock
    assert read_lock(dest / LOCK_NAME) == {"packaging": "24.1", "pytest": "8.3.3"}
    (dest / LOCK_NAME).write_text(lock.replace("packaging==24.1", "packaging==23.2"))
    drift = servegate(*args, "--provided", "pluggy", "--locked")
    assert drift.returncode != 0 and "packaging: locked 23.2, resolved 24.1" in drift.stderr


def test_sizes_and_drift():
    assert parse_size("60M") == 60 * 2**20 and parse_size("512K") == 2**19 and parse_size("1GiB") == 2**30
    with pytest.raises(Exception, match="expected a size"):
        parse_size("lots")
    assert lock_drift({"a": "1", "b": "2"}, {"a": "1", "c": "3"}) == ["b: locked 2, no longer fetched",
                                                                     "c: resolved 3, not in the lock"]
