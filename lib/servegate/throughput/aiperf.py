"""AIPerf (`aiperf profile`): the command for one concurrency level, and its output read back.

The command line is the one the Dynamo recipes publish (chat endpoint, streaming, server token counts,
ignore_eos via --extra-inputs), with a local tokenizer path so it runs offline. Output files used:
`profile_export_aiperf.json` (aggregates: per metric {unit, avg, p50, p90, p99, ...}) and
`profile_export.jsonl` (one record per request; failed requests carry an `error` object). When every
request fails AIPerf writes no aggregate file; the per-request records still give the error count.

TTFT: AIPerf's per-request `time_to_first_token` already is servegate's definition (first chunk with
content, reasoning or tool-call text; clock started just before `session.request`). servegate takes the
percentiles again over the successful requests' records with schema.ttft_stats, the one method it uses for
both tools (AIPerf's own `adj_*` rollups count failed requests as +inf; they are not used).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from servegate.throughput.schema import LevelResult, number, ttft_stats
from servegate.throughput.target import Target
from servegate.throughput.workload import Workload

AGGREGATE = "profile_export_aiperf.json"
RECORDS = "profile_export.jsonl"
MAX_ERROR_SAMPLES = 5


def command(
    executable: str, workload: Workload, concurrency: int, target: Target, out_dir: Path, gpus: int
) -> list[str]:
    argv = [
        executable,
        "profile",
        "-m",
        target.model,
        "--url",
        target.base_url,
        "--endpoint-type",
        "chat",
        "--streaming",
        "--use-server-token-count",
        "--concurrency",
        str(concurrency),
        "--tokenizer",
        target.tokenizer,
        "--random-seed",
        str(workload.seed),
        "--artifact-dir",
        str(out_dir),
        "--ui-type",
        "none",
    ]
    if workload.request_count is not None:
        argv += ["--request-count", str(workload.request_count)]
    if workload.prompts:
        argv += [
            "--input-file",
            str(workload.prompts / "aiperf.jsonl"),
            "--custom-dataset-type",
            "single_turn",
        ]
        argv += ["--output-tokens-mean", str(workload.osl), "--output-tokens-stddev", "0"]
    elif workload.trace:
        argv += ["--input-file", str(workload.trace), "--custom-dataset-type", "mooncake_trace"]
        if workload.trace_block_size:
            argv += ["--prompt-input-tokens-block-size", str(workload.trace_block_size)]
    else:
        argv += [
            "--synthetic-input-tokens-mean",
            str(workload.isl),
            "--synthetic-input-tokens-stddev",
            "0",
            "--output-tokens-mean",
            str(workload.osl),
            "--output-tokens-stddev",
            "0",
        ]
    extra = dict(workload.extra_inputs)
    if workload.ignore_eos:
        extra.setdefault("ignore_eos", True)
    if extra:
        argv += ["--extra-inputs", json.dumps(extra)]
    if target.api_key:
        argv += ["--api-key", target.api_key]
    if gpus == 0:
        argv.append("--no-gpu-telemetry")
    return argv


def parse(out_dir: Path, workload: Workload, concurrency: int) -> LevelResult:
    """The level's normalised result from AIPerf's files; partial (from records) when no aggregate exists."""
    result = LevelResult(workload=workload.name, tool="aiperf", concurrency=concurrency)
    records = _records(out_dir / RECORDS)
    failed = [r for r in records if r.get("error")]
    result.error_samples = [_error_text(r["error"]) for r in failed[:MAX_ERROR_SAMPLES]]
    aggregate = out_dir / AGGREGATE
    if aggregate.is_file():
        _from_aggregate(result, json.loads(aggregate.read_text()))
        result.errors = max(result.errors or 0, len(failed))
        result.ttft_tool_ms_p50 = result.ttft_ms_p50
        ttft_stats(result, request_ttfts_ms(out_dir))
    else:
        _from_records(result, records, failed)
    return result


def request_ttfts_ms(out_dir: Path, unified: bool = True) -> list[float]:  # noqa: ARG001
    """TTFT of every successful request of the level, in ms, from AIPerf's per-request records (already on
    servegate's definition: `unified` changes nothing here)."""
    values = (_metric(r, "time_to_first_token") for r in _records(out_dir / RECORDS) if not r.get("error"))
    return [v for v in values if v is not None]


def _stat(data: dict, name: str, key: str) -> float | None:
    entry = data.get(name)
    return number(entry.get(key)) if isinstance(entry, dict) else None


def _from_aggregate(result: LevelResult, data: dict) -> None:
    result.tool_version = data.get("aiperf_version")
    # AIPerf: request_count counts valid responses, completed_request_count every finished request
    # (valid + failed), error_request_count the failed ones (absent when none).
    result.completed = _int(_stat(data, "request_count", "avg"))
    result.errors = _int(_stat(data, "error_request_count", "avg")) or 0
    finished = _stat(data, "completed_request_count", "avg")
    result.requests = _int(finished) if finished is not None else (result.completed or 0) + result.errors
    result.duration_s = _stat(data, "benchmark_duration", "avg")
    result.output_tps = _stat(data, "output_token_throughput", "avg")
    result.total_tps = _stat(data, "total_token_throughput", "avg")
    result.request_tps = _stat(data, "request_throughput", "avg")
    result.output_tps_per_user_p50 = _stat(data, "output_token_throughput_per_user", "p50")
    for ours, theirs in (("ttft", "time_to_first_token"), ("itl", "inter_token_latency")):
        setattr(result, f"{ours}_ms_mean", _stat(data, theirs, "avg"))
        for pct in ("p50", "p90", "p99"):
            setattr(result, f"{ours}_ms_{pct}", _stat(data, theirs, pct))
    result.e2el_ms_p50 = _stat(data, "request_latency", "p50")
    result.e2el_ms_p99 = _stat(data, "request_latency", "p99")
    result.isl_mean = _stat(data, "input_sequence_length", "avg")
    result.osl_mean = _stat(data, "output_sequence_length", "avg")


def _from_records(result: LevelResult, records: list[dict], failed: list[dict]) -> None:
    """No aggregate (every request failed, or the run was stopped): count what the records show."""
    ok = [r for r in records if not r.get("error")]
    result.requests, result.completed, result.errors = len(records), len(ok), len(failed)
    ttft = sorted(v for v in (_metric(r, "time_to_first_token") for r in ok) if v is not None)
    itl = sorted(v for v in (_metric(r, "inter_token_latency") for r in ok) if v is not None)
    if ttft:
        result.ttft_ms_p50 = statistics.median(ttft)
        result.ttft_ms_mean = statistics.fmean(ttft)
    if itl:
        result.itl_ms_p50 = statistics.median(itl)
    result.note = (
        f"partial: no {AGGREGATE}; counted {len(records)} request record(s) in {RECORDS}"
        if records
        else f"no {AGGREGATE} and no request records"
    )


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short when the tool was stopped
        if (record.get("metadata") or {}).get("benchmark_phase", "profiling") == "profiling":
            out.append(record)
    return out


def _metric(record: dict, name: str) -> float | None:
    entry = (record.get("metrics") or {}).get(name)
    return number(entry.get("value")) if isinstance(entry, dict) else None


def _error_text(error: dict) -> str:
    return f"{error.get('code', '?')} {error.get('type', '')}: {str(error.get('message', ''))[:300]}".strip()


def _int(value: float | None) -> int | None:
    return None if value is None else int(round(value))
