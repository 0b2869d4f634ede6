"""Benchmark validity (issue 18, item 3): every level checked against the server's own token counts.

The good cases are real tool output (tests/data/throughput); the bad ones are those real files with the
fault written into them (a server that stopped early, 4xx answers, a prompt that grew, zero tokens)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from servegate.throughput import aiperf, validity, vllm_bench
from servegate.throughput.proc import Watched
from servegate.throughput.runner import _judge
from servegate.throughput.workload import Workload

DATA = Path(__file__).parent / "data" / "throughput"


def workload(**changes) -> Workload:
    base = dict(name="chat", tool="aiperf", isl=64, osl=32, concurrency=[4], requests=12)
    return Workload(**(base | changes))


def rewrite_records(src: Path, dst: Path, change) -> Path:
    """Copy AIPerf's per-request records with change(index, record) applied to each."""
    dst.mkdir(parents=True, exist_ok=True)
    lines = (src / aiperf.RECORDS).read_text().splitlines()
    records = [change(i, json.loads(line)) for i, line in enumerate(lines)]
    (dst / aiperf.RECORDS).write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return dst


def set_metric(record: dict, name: str, value: int) -> dict:
    record["metrics"][name] = {"value": value, "unit": "tokens"}
    return record


def test_real_aiperf_level_is_valid():
    v = validity.for_level(DATA / "aiperf-c4", workload())
    assert v.problems == [], v.problems
    assert v.requests == 12 and v.ok == 12 and v.output_tokens == 12 * 32
    assert v.output_range == [32, 32] and v.input_range == [73, 73]  # 64 prompt tokens + the chat template's


def test_real_vllm_bench_level_is_valid():
    v = validity.for_level(DATA / "vllm-bench-c1", workload(tool="vllm-bench", osl=8, requests=3))
    assert v.problems == [] and v.output_range == [8, 8] and v.requests == 3


def test_all_404_is_invalid_with_the_counts():
    v = validity.for_level(DATA / "aiperf-all-failed", workload())
    text = "\n".join(v.problems)
    assert v.http_errors == {"404": v.requests} and v.requests > 0
    assert f"{v.requests}/{v.requests} requests answered 4xx/5xx (HTTP 404: {v.requests})" in text
    assert "zero tokens" in text


def test_short_outputs_under_ignore_eos_are_named(tmp_path):
    level = rewrite_records(DATA / "aiperf-c4", tmp_path / "c4",
                            lambda i, r: set_metric(r, "usage_completion_tokens", 7) if i < 3 else r)
    v = validity.for_level(level, workload())
    assert v.output_off == 3
    assert "3/12 requests produced a server-counted output length other than the 32 asked under ignore_eos " \
           "(counted 7-32)" in v.problems[0]
    assert validity.for_level(level, workload(ignore_eos=False)).problems == []  # EOS may stop early then


def test_zero_token_run_fails(tmp_path):
    level = rewrite_records(DATA / "aiperf-c4", tmp_path / "c4",
                            lambda i, r: set_metric(set_metric(r, "usage_completion_tokens", 0),
                                                    "output_sequence_length", 0))
    v = validity.for_level(level, workload())
    assert v.problems[0] == "zero tokens: 12 request(s) sent, 12 answered, 0 output tokens counted by the server"


def test_prompts_outside_the_tolerance_are_named(tmp_path):
    level = rewrite_records(DATA / "aiperf-c4", tmp_path / "c4",
                            lambda i, r: set_metric(r, "usage_prompt_tokens", 400) if i == 0 else r)
    v = validity.for_level(level, workload())
    assert v.input_off == 1 and "1/12 prompts were 73-400 tokens, outside isl 64 +- 38" in v.problems[0]


def test_a_few_5xx_pass_under_the_share_but_many_fail(tmp_path):
    def fail(i, r):
        if i < 2:
            r["error"] = {"code": 503, "type": "Service Unavailable", "message": "overloaded"}
        return r
    level = rewrite_records(DATA / "aiperf-c4", tmp_path / "c4", fail)
    assert validity.for_level(level, workload(max_http_error_pct=20)).problems == []
    v = validity.for_level(level, workload())
    assert v.http_errors == {"503": 2} and "2/12 requests answered 4xx/5xx (HTTP 503: 2)" in v.problems[0]


def test_an_invalid_level_fails_with_its_cause(tmp_path):
    """A tool that exited 0 with plausible aggregates is still failed when the server did not do the work."""
    level_dir = rewrite_records(DATA / "aiperf-c4", tmp_path / "c4",
                                lambda i, r: set_metric(r, "usage_completion_tokens", 1))
    shutil.copy(DATA / "aiperf-c4" / aiperf.AGGREGATE, level_dir)
    level = aiperf.parse(level_dir, workload(), 4)
    level.validity = validity.for_level(level_dir, workload()).to_dict()
    _judge(level, Watched(0, 0, "exited", 10.0), workload(), level_dir)
    assert level.status == "failed" and level.output_tps  # the tool's own figure looked fine
    assert "invalid benchmark: 12/12 requests produced a server-counted output length" in level.note


def test_vllm_bench_errors_carry_their_status(tmp_path):
    data = json.loads((DATA / "vllm-bench-c1" / vllm_bench.RESULT).read_text())
    data["errors"] = ["", "Bad Request: HTTP 400 prompt too long", "500 Internal Server Error"]
    data["completed"], data["failed"] = 1, 2
    (tmp_path / vllm_bench.RESULT).write_text(json.dumps(data))
    v = validity.for_level(tmp_path, workload(tool="vllm-bench", osl=8, requests=3))
    assert v.http_errors == {"400": 1, "500": 1}
    assert "2/3 requests answered 4xx/5xx (HTTP 400: 1, HTTP 500: 1)" in v.problems[0]
