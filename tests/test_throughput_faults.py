"""Fault: the server is killed in the middle of a benchmark. The run fails, the partial results and the error
count are written, the remaining levels are marked not run, and nothing is left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from test_throughput_e2e import RESULTS, child_pytest, only_run, recipe_variant, start_server

from servegate.throughput import store

pytestmark = pytest.mark.slow


@pytest.fixture
def doomed_server():
    with start_server() as deployment:
        yield deployment


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for_profiling(results: Path, deadline_s: float = 600) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for log in results.glob("*/throughput/long/c2/tool.log"):
            if "PROFILING" in log.read_text(errors="replace"):
                return
        time.sleep(1)
    raise AssertionError(f"the benchmark did not reach its profiling phase within {deadline_s} s")


def test_server_killed_mid_benchmark(doomed_server, tmp_path):
    recipe = recipe_variant(
        tmp_path, "    - {name: long, isl: 64, osl: 64, concurrency: [2, 4], requests: 40}\n"
    )
    marker = f"SG_TP_FAULT_{uuid.uuid4().hex}"
    results = RESULTS / f"fault-{marker[-8:]}"  # kept for inspection, unlike tmp_path
    results.mkdir(parents=True)
    with open(results / "child.log", "w") as log:
        child = child_pytest(
            doomed_server.base_url,
            results,
            "--sg-recipe",
            str(recipe),
            "-k",
            "throughput",
            env={marker: "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_profiling(results)
        time.sleep(3)
        os.killpg(doomed_server.server.pid, signal.SIGKILL)
        child.wait(timeout=600)
    output = (results / "child.log").read_text()
    assert child.returncode == 1, output[-4000:]
    assert "level failed: server stopped answering" in output

    run = only_run(results)
    c2, c4 = store.load(run)["workloads"]["long"]["levels"]
    assert c2["status"] == "failed" and c2["note"].startswith("server stopped answering"), c2
    assert c2["errors"] > 0 and c2["completed"] < 40 and c2["error_samples"], c2
    assert c2["errors"] + c2["completed"] >= 40, c2  # every planned request is either done or counted failed
    assert c4["status"] == "not run"
    assert (run / c2["raw"] / "tool.log").is_file() and (run / c2["raw"] / "command.txt").is_file()
    data = json.loads((run / "run.json").read_text())
    assert data["verdict"] == "failed" and data["throughput"]["long"]["verdict"] == "failed"

    assert processes_with(marker) == [], "load generator processes survived the run"
    host = doomed_server.hosts[doomed_server.server.launch.node.name]
    assert not host.group_alive(doomed_server.server.pid), "the killed server left processes behind"
