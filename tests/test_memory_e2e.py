"""The memory headroom scenario for real: a child pytest serves the tiny model on this CPU, runs the heavy
phase and must fail a floor that cannot hold, naming node, floor and the measured minimum; the timeline
(CSV per node, PNG) is saved even though the run failed, and the sampler leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servegate.config.cluster import load_cluster
from servegate.nodes.host import NodeHost

ROOT = Path(__file__).resolve().parents[1]
LOCAL_RECIPE = ROOT / "recipes" / "local-hybrid.yaml"
PORT = "18200"
pytestmark = pytest.mark.slow


def memory_recipe(folder: Path, memory: dict, extra_flags: str = "") -> Path:
    """local-hybrid with its own name, an expect.memory block and extra serve flags; mods made absolute."""
    data = yaml.safe_load(LOCAL_RECIPE.read_text())
    data["name"] = "local-memfault"
    data["mods"] = [str((LOCAL_RECIPE.parent / mod).resolve()) for mod in data.get("mods", [])]
    data["command"] = data["command"].rstrip() + (f" \\\n  {extra_flags}\n" if extra_flags else "\n")
    data.setdefault("expect", {})["memory"] = memory
    path = folder / "local-memfault.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def child_pytest(results: Path, recipe: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "scenarios",
        "-p",
        "no:cacheprovider",
        "-q",
        "--sg-recipe",
        str(recipe),
        "--sg-set",
        f"port={PORT}",
        "--sg-results",
        str(results),
        *args,
    ]
    return subprocess.run(argv, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=1200)


def test_floor_above_total_memory_fails_naming_node_floor_and_minimum(tmp_path):
    floor = 100000  # GiB: above any node's total, so the floor cannot hold
    recipe = memory_recipe(
        tmp_path,
        {
            "floor_gib": floor,
            "sample_hz": 2,
            "heavy": {"concurrency": 2, "prompt_tokens": 900, "output_tokens": 16},
        },
        extra_flags="--no-enable-prefix-caching",
    )
    child = child_pytest(tmp_path / "results", recipe, "-k", "memory_floor_held or heavy_phase")
    output = child.stdout + child.stderr
    assert child.returncode == 1, output[-4000:]
    node = load_cluster().head.name
    assert f"node {node}: MemAvailable fell to" in output, output[-4000:]
    assert f"floor expect.memory.floor_gib = {floor} GiB" in output, output[-4000:]
    assert "test_heavy_phase_succeeds[local-memfault] PASSED" in output or "1 failed, 1 passed" in output, (
        output[-4000:]
    )
    run = next((tmp_path / "results").iterdir())
    data = json.loads((run / "run.json").read_text())
    timeline = data["memory"]["timeline"]
    csv_lines = (run / "memory" / f"{node}.csv").read_text().splitlines()
    assert csv_lines[0].startswith("utc_epoch_s,elapsed_s,phase,mem_total_gib,mem_available_gib")
    assert {"load", "warmup", "idle", "heavy", "teardown"} <= {mark["phase"] for mark in timeline["marks"]}
    assert {"load", "idle"} <= {
        line.split(",")[2] for line in csv_lines[1:]
    }  # warmup and a fast heavy phase may each be shorter than one tick; the heavy stats below use padding
    assert (run / "memory" / "timeline.png").stat().st_size > 10_000
    assert timeline["nodes"][node]["phases"]["heavy"]["min_mem_available_gib"] < floor
    assert NodeHost(load_cluster().head).processes_with_env("SERVEGATE_RUN_ID", timeline["sampler_id"]) == []


def test_plan_that_cannot_fit_stops_the_launch(tmp_path):
    recipe = memory_recipe(tmp_path, {})
    child = child_pytest(tmp_path / "results", recipe, "--sg-set", "max_model_len=4000000", "-k", "readiness")
    output = child.stdout + child.stderr
    assert child.returncode == 1, output[-4000:]
    assert "memory plan of local-memfault cannot fit; nothing was launched" in output, output[-4000:]
    assert "cannot hold one sequence of 4000000 tokens" in output, output[-4000:]
    run = next((tmp_path / "results").iterdir())
    assert "launch" not in json.loads((run / "run.json").read_text())
    assert not (run / "logs").exists()
