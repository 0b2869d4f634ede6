"""runtimes.pyenv.provision under races: two runs building the same env at once end with one good env (a real
cross-process lock on the node), and a lock left by a killed build is taken over. Real venvs, real pip,
a tiny local wheel made here (no index needed)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

from servegate.config.cluster import Node
from servegate.nodes.host import NodeHost
from servegate.runtimes.pyenv import env_slug, provision

ROOT = Path(__file__).resolve().parents[1]

PROVISION = """
import json, sys
from servegate.config.cluster import Node
from servegate.nodes.host import NodeHost
from servegate.runtimes.pyenv import provision
node = Node(name="local", role="head", host="local://", fabric_ip="127.0.0.1", workdir=sys.argv[1])
env = provision(NodeHost(node), [sys.argv[2]], log=lambda m: print("LOG", m, flush=True), imports=["sgtiny"])
print("ENV", json.dumps({"python": env.python, "root": env.root}))
"""


def tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel built by hand: module sgtiny, no dependencies."""
    name, version = "sgtiny", "1.0"
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}.py": b"VALUE = 42\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for path, data in files.items()]
    files[f"{dist}/RECORD"] = ("\n".join(record + [f"{dist}/RECORD,,"]) + "\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def start(workdir: Path, requirement: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "PIP_NO_INDEX": "1"}
    return subprocess.Popen([sys.executable, "-c", PROVISION, str(workdir), requirement], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_concurrent_provisions_end_with_one_good_env(tmp_path):
    wheel = tiny_wheel(tmp_path)
    workdir = tmp_path / "work"
    children = [start(workdir, str(wheel)) for _ in range(2)]
    outputs = [child.communicate(timeout=600)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    envs = [json.loads(line.split(" ", 1)[1]) for out in outputs for line in out.splitlines()
            if line.startswith("ENV ")]
    assert len(envs) == 2 and envs[0] == envs[1], outputs
    builds = sum(out.count("building environment") for out in outputs)
    assert builds == 1, outputs  # one built, the other waited and reused it
    assert any("waiting for the environment build" in out for out in outputs), outputs
    check = subprocess.run([envs[0]["python"], "-c", "import sgtiny; print(sgtiny.VALUE)"], capture_output=True,
                           text=True)
    assert check.stdout.strip() == "42", check.stderr
    assert not Path(envs[0]["root"] + ".lock").exists(), "the lock outlived the build"


def test_a_lock_left_by_a_killed_build_is_taken_over(tmp_path, monkeypatch):
    wheel = tiny_wheel(tmp_path)
    workdir = tmp_path / "work"
    lock = workdir / "envs" / f"{env_slug([str(wheel)])}.lock"
    lock.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (lock / "owner").write_text(f"{socket.gethostname()}:{dead.pid} deadbeef")
    node = Node(name="local", role="head", host="local://", fabric_ip="127.0.0.1", workdir=str(workdir))
    said: list[str] = []
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    env = provision(NodeHost(node), [str(wheel)], log=said.append, imports=["sgtiny"])
    assert any("removing a stale environment lock" in line for line in said), said
    assert Path(env.python).exists() and not lock.exists()
