"""End to end on the CPU: a real vLLM server started with servegate's lib, then the suite run against it as
an external endpoint (--sg-endpoint) in a child pytest: readiness, serve and throughput scenarios pass,
and a threshold the CPU cannot reach fails with the measured value."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from servegate.stack import Stack
from servegate.throughput import store

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PORT = int(os.environ.get("SERVEGATE_TEST_PORT", "18300"))
RESULTS = Path(os.environ.get("SERVEGATE_TEST_RESULTS", "/tmp/tp-results"))


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def start_server():
    """A real vLLM CPU server of the local recipe, started with servegate's lib (on a port nobody holds)."""
    assert port_is_free(PORT), f"port {PORT} is taken: readiness would probe someone else's server"
    stack = Stack.from_files(
        REPO / "recipes" / "local-hybrid.yaml", None, {"port": PORT}, results_root=RESULTS
    )
    return stack.deployment()


@pytest.fixture(scope="module")
def server():
    with start_server() as deployment:
        yield deployment


def recipe_variant(tmp_path: Path, throughput: str) -> Path:
    text = (REPO / "recipes" / "local-hybrid.yaml").read_text()
    path = tmp_path / "local-hybrid.yaml"
    path.write_text(text[: text.index("  throughput:")] + "  throughput:\n" + throughput)
    return path


def child_pytest(url: str, results: Path, *args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "scenarios",
        "-p",
        "no:cacheprovider",
        "--sg-endpoint",
        url,
        "--sg-results",
        str(results),
        *args,
    ]
    return subprocess.Popen(argv, cwd=REPO, env={**os.environ, **(env or {})}, text=True, **popen)


def only_run(results: Path) -> Path:
    [run] = [p for p in results.iterdir() if (p / "run.json").is_file()]
    return run


def test_suite_validates_a_running_endpoint(server, tmp_path):
    child = child_pytest(
        server.base_url,
        tmp_path,
        "--sg-recipe",
        "recipes/local-hybrid.yaml",
        "-k",
        "serve or throughput",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = child.communicate(timeout=900)
    assert child.returncode == 0, output[-4000:]
    assert "external endpoint" in output and "deselected" in output
    run = only_run(tmp_path)
    data = json.loads((run / "run.json").read_text())
    assert data["endpoint"] == {"url": server.base_url, "model": "tiny-hybrid"}
    assert "server start" not in data["phases"] and "teardown" not in data["phases"]
    levels = store.load(run)["workloads"]["chat-small"]["levels"]
    assert [(lv["concurrency"], lv["status"], lv["errors"]) for lv in levels] == [
        (1, "ok", 0),
        (2, "ok", 0),
        (4, "ok", 0),
    ]
    assert all((run / lv["raw"] / "profile_export_aiperf.json").is_file() for lv in levels)
    assert data["provenance"]["server"] == {"version": "0.32.0"}
    assert server.alive(), "the endpoint belongs to its owner: the suite must not stop it"


def test_threshold_above_the_cpu_fails_with_the_measured_value(server, tmp_path):
    recipe = recipe_variant(
        tmp_path,
        "    - {name: too-fast, isl: 64, osl: 8, concurrency: 1, requests: 4, min_output_tps: 100000}\n",
    )
    child = child_pytest(
        server.base_url,
        tmp_path / "results",
        "--sg-recipe",
        str(recipe),
        "-k",
        "throughput",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = child.communicate(timeout=900)
    assert child.returncode == 1, output[-4000:]
    line = next(line for line in output.splitlines() if "workload 'too-fast'" in line)
    assert re.search(
        r"system output \(output_tps\) measured [\d.]+ tok/s, threshold >= 100000 tok/s", line
    ), line
    assert "expect.throughput min_output_tps" in line
