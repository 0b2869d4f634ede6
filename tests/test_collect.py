"""servegate collect: a results folder becomes one archive plus a summary, on a real fidelity run's files."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_collect_packs_one_archive_and_a_summary(tmp_path):
    results = tmp_path / "sg-results"
    run = results / "20261204T000000Z-gpu-bench-dense"
    (run / "throughput" / "chat" / "c8").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({
        "recipe": {"name": "gpu-bench-dense"}, "verdict": "failed",
        "scenarios": {"test_00_preflight.py::test_serve_port_free": {"outcome": "failed", "message": "port"},
                      "test_60_serve.py::test_serve": {"outcome": "passed"}},
        "fidelity": {"concurrency": {"8": {"ttft_ms_p50": {"pooled_diff_pct": 1.2, "paired_diff_pct": 0.8}}}}}))
    (run / "junit.xml").write_text("<testsuite/>")
    (run / "progress.log").write_text("step\n")
    (results / "session.log").write_text("session done\n")
    (run / "throughput" / "chat" / "c8" / "profile_export.jsonl").write_bytes(b"x" * 5000)  # bulky raw dump
    (run / "core.bin").write_bytes(b"\0" * 10)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "servegate", "collect", str(results), "--out", str(out),
                           "--name", "visit", "--max-file", "4096"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["visit-summary.json", "visit-summary.md", "visit.tar.gz"]
    with tarfile.open(out / "visit.tar.gz") as tar:
        names = sorted(tar.getnames())
    assert names == ["visit/20261204T000000Z-gpu-bench-dense/junit.xml",
                     "visit/20261204T000000Z-gpu-bench-dense/progress.log",
                     "visit/20261204T000000Z-gpu-bench-dense/run.json", "visit/session.log"]
    summary = json.loads((out / "visit-summary.json").read_text())
    assert summary["runs"][0]["verdict"] == "failed" and summary["runs"][0]["outcomes"] == {"failed": 1, "passed": 1}
    assert summary["left_out"][0].startswith("20261204T000000Z-gpu-bench-dense/throughput/chat/c8/profile_export")
    md = (out / "visit-summary.md").read_text()
    assert "| 20261204T000000Z-gpu-bench-dense | gpu-bench-dense | failed | failed 1, passed 1 |" in md
    assert "fidelity c=8: TTFT p50 pooled 1.2 %, paired 0.8 %" in md and summary["sha256"] in md
    missing = subprocess.run([sys.executable, "-m", "servegate", "collect", str(tmp_path / "nope"), "--out",
                              str(out)], capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode != 0 and "is not a folder of results" in missing.stderr
    assert "Traceback" not in missing.stderr
