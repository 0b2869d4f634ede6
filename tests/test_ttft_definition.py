"""servegate reports ONE TTFT definition whichever tool ran (schema.TTFT_DEFINITION), recomputed from the tools'
real per-request files in tests/data/throughput (vllm bench counts vLLM's role-only first chunk; AIPerf's
aggregate percentiles include failed requests)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from servegate.throughput import aiperf, vllm_bench
from servegate.throughput.schema import TTFT_DEFINITION, percentile
from servegate.throughput.workload import Workload

DATA = Path(__file__).parent / "data" / "throughput"


def workload(tool: str) -> Workload:
    return Workload(name="t", tool=tool, isl=64, osl=8, concurrency=[1], requests=3)


def test_vllm_bench_ttft_adds_back_the_gap_after_the_role_only_chunk():
    data = json.loads((DATA / "vllm-bench-c1" / "vllm_bench.json").read_text())
    # every request got one chunk more than it has output tokens: the first (role-only) chunk carried none
    assert [len(g) + 1 - o for g, o in zip(data["itls"], data["output_lens"], strict=True)] == [1, 1, 1]
    expected = [1000 * (t + g[0]) for t, g in zip(data["ttfts"], data["itls"], strict=True)]
    assert vllm_bench.request_ttfts_ms(DATA / "vllm-bench-c1") == pytest.approx(expected)
    assert vllm_bench.request_ttfts_ms(DATA / "vllm-bench-c1", unified=False) == pytest.approx(
        [1000 * t for t in data["ttfts"]])
    level = vllm_bench.parse(DATA / "vllm-bench-c1", workload("vllm-bench"), 1)
    assert level.ttft_tool_ms_p50 == pytest.approx(data["p50_ttft_ms"])
    assert level.ttft_ms_p50 == pytest.approx(statistics.median(expected))
    assert level.ttft_ms_p50 > level.ttft_tool_ms_p50  # later by the role chunk's gap, never earlier
    assert level.ttft_ms_p99 == pytest.approx(percentile(expected, 99))


def test_a_server_without_a_role_only_chunk_is_left_as_measured(tmp_path):
    data = json.loads((DATA / "vllm-bench-c1" / "vllm_bench.json").read_text())
    data["itls"] = [g[1:] for g in data["itls"]]  # as many chunks as tokens: the first chunk had a token
    (tmp_path / vllm_bench.RESULT).write_text(json.dumps(data))
    assert vllm_bench.request_ttfts_ms(tmp_path) == pytest.approx([1000 * t for t in data["ttfts"]])


def test_aiperf_ttft_is_taken_over_successful_requests_with_the_same_percentile():
    records = [json.loads(line) for line in (DATA / "aiperf-server-killed" / "profile_export.jsonl").open()]
    ok = [r["metrics"]["time_to_first_token"]["value"] for r in records
          if not r.get("error") and "time_to_first_token" in r["metrics"]]
    level = aiperf.parse(DATA / "aiperf-server-killed", workload("aiperf"), 2)
    assert level.ttft_ms_p50 == pytest.approx(percentile(ok, 50))
    assert level.ttft_ms_p90 == pytest.approx(percentile(ok, 90))
    assert level.ttft_tool_ms_p50 is not None
    c4 = aiperf.parse(DATA / "aiperf-c4", workload("aiperf"), 4)
    assert c4.ttft_ms_p50 == pytest.approx(percentile(aiperf.request_ttfts_ms(DATA / "aiperf-c4"), 50))


def test_percentile_is_numpys_linear_default():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0, 0.0, 5.0], 90) == pytest.approx(9.0)
    assert percentile([], 50) is None
    assert "role-only" in TTFT_DEFINITION and "successful requests only" in TTFT_DEFINITION


def test_fidelity_default_is_one_short_level_and_the_estimate_uses_the_last_run(tmp_path):
    from servegate.throughput.bench_fidelity import ASSUMED_TURN_S, estimate, parse_args

    args = parse_args(["--endpoint", "http://127.0.0.1:1", "--results", str(tmp_path)])
    assert args.concurrency == [2] and (args.rounds, args.warmup) == (2, 1)
    assert estimate(args) == (f"fidelity: 6 turns (2 tools x 3 rounds x 1 level(s)), about "
                              f"{6 * ASSUMED_TURN_S / 60:.0f} min plus the server start (assumed "
                              f"{ASSUMED_TURN_S:g} s per turn: no earlier fidelity run found)")
    (tmp_path / "20261204T000000Z-x").mkdir()
    (tmp_path / "20261204T000000Z-x" / "run.json").write_text(json.dumps({"fidelity": {"turn_seconds": 30.0}}))
    assert "about 3 min plus the server start (30.0 s per turn in 20261204T000000Z-x)" in estimate(args)


def test_arrivals_read_both_tools_start_times_and_measure_burst_dispatch(tmp_path):
    """A burst of 3 sent 0 / 1 / 2 ms after its leader and batched by the server in one step: each follower's
    first token comes with the leader's, so its TTFT is shorter by exactly its dispatch delay."""
    from servegate.throughput import arrivals

    starts, ttfts = [10.0, 10.001, 10.002, 11.0], [0.150, 0.149, 0.148, 0.100]
    bench = {"start_times": starts, "ttfts": ttfts, "itls": [[0.008]] * 4, "output_lens": [2] * 4,
             "errors": [""] * 4}
    (tmp_path / "vb").mkdir()
    (tmp_path / "vb" / vllm_bench.RESULT).write_text(json.dumps(bench))
    (tmp_path / "ap").mkdir()
    lines = [json.dumps({"metadata": {"request_start_ns": int(s * 1e9), "benchmark_phase": "profiling"},
                         "metrics": {"time_to_first_token": {"value": t * 1000, "unit": "ms"}}})
             for s, t in zip(starts, ttfts, strict=True)]
    (tmp_path / "ap" / aiperf.RECORDS).write_text("\n".join(lines) + "\n")
    for tool, folder in (("vllm-bench", "vb"), ("aiperf", "ap")):
        pairs = arrivals.requests(tool, tmp_path / folder)
        assert [round(t, 3) for _, t in pairs] == [150.0, 149.0, 148.0, 100.0]
        stats = arrivals.bursts([pairs])
        assert stats["bursts"] == 2 and stats["burst_size_p50"] == 2.0
        assert stats["follower_sent_after_leader_ms_p50"] == pytest.approx(1.5, abs=1e-3)
        assert stats["follower_first_token_after_leader_ms_p50"] == pytest.approx(0.0, abs=1e-3)
        assert "sent 1.50 ms after" in arrivals.describe(tool, stats)
    assert arrivals.bursts([]) == {} and "no per-request" in arrivals.describe("aiperf", {})
