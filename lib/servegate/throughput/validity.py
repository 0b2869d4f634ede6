"""Benchmark validity: did the server really do the work the figures claim?

A load generator can "succeed" with 0 tokens (srt-slurm #429) or average over a run that mostly got HTTP
4xx/5xx (AIPerf #339). For every level this reads the tool's per-request records and checks, with the
server's own token counts (AIPerf --use-server-token-count: usage.completion_tokens; vLLM bench: the
per-request output_lens it takes from usage):

    zero tokens      requests completed but the server produced no output token at all
    HTTP errors      more than max_http_error_pct of the requests answered 4xx/5xx (counts per status)
    output lengths   under ignore_eos every successful request produced exactly osl tokens
    input lengths    every prompt within isl +- (input_tolerance_pct % + the chat template's own tokens)

A trace replay has per-line lengths: only zero tokens and HTTP errors are checked there.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from servegate.throughput.schema import number

AIPERF_RECORDS = "profile_export.jsonl"
VLLM_RESULT = "vllm_bench.json"
TEMPLATE_SLACK_TOKENS = 32  # a chat template wraps the prompt in role markers: a few to a few dozen tokens
HTTP_STATUS = re.compile(r"\b([45]\d\d)\b")


@dataclass
class Request:
    ok: bool
    status: int | None = None  # HTTP status of a failed request, where the tool recorded one
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass
class Validity:
    requests: int = 0
    ok: int = 0
    http_errors: dict[str, int] = field(default_factory=dict)  # status -> count
    other_errors: int = 0
    output_tokens: int = 0
    output_asked: int | None = None
    output_range: list[int] | None = None
    output_off: int = 0  # successful requests whose server count differs from osl (ignore_eos)
    input_asked: int | None = None
    input_range: list[int] | None = None
    input_off: int = 0
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_requests(level_dir: Path, tool: str) -> list[Request]:
    """Every profiled request of the level from the tool's raw files (empty when it wrote none)."""
    return _aiperf(level_dir / AIPERF_RECORDS) if tool == "aiperf" else _vllm_bench(level_dir / VLLM_RESULT)


def _aiperf(path: Path) -> list[Request]:
    out = []
    if not path.is_file():
        return out
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short when the tool was stopped
        if (record.get("metadata") or {}).get("benchmark_phase", "profiling") != "profiling":
            continue
        metrics = record.get("metrics") or {}
        error = record.get("error")
        status = _status(error.get("code")) if isinstance(error, dict) else None
        out.append(Request(not error, status, _value(metrics, "usage_prompt_tokens", "input_sequence_length"),
                           _value(metrics, "usage_completion_tokens", "output_sequence_length")))
    return out


def _value(metrics: dict, *names: str) -> int | None:
    """The first of `names` the record carries (the server's usage count before AIPerf's own)."""
    for name in names:
        entry = metrics.get(name)
        if isinstance(entry, dict) and number(entry.get("value")) is not None:
            return int(number(entry["value"]))
    return None


def _vllm_bench(path: Path) -> list[Request]:
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    errors = data.get("errors") or []
    inputs, outputs = data.get("input_lens") or [], data.get("output_lens") or []
    count = max(len(errors), len(outputs), int(data.get("completed") or 0) + int(data.get("failed") or 0))
    out = []
    for i in range(count):
        error = errors[i] if i < len(errors) else ""
        found = HTTP_STATUS.search(str(error)) if error else None
        out.append(Request(not error, int(found.group(1)) if found else None,
                           inputs[i] if i < len(inputs) else None, outputs[i] if i < len(outputs) else None))
    return out


def _status(code: Any) -> int | None:
    try:
        return int(code)
    except (TypeError, ValueError):
        return None


def check(requests: list[Request], *, isl: int | None, osl: int | None, ignore_eos: bool,
          input_tolerance_pct: float = 10.0, max_http_error_pct: float = 5.0) -> Validity:
    """The level's validity: counts, and one problem line per broken rule (with the counts)."""
    v = Validity(requests=len(requests), ok=sum(r.ok for r in requests))
    statuses = Counter(str(r.status) for r in requests if not r.ok and r.status and r.status >= 400)
    v.http_errors = dict(sorted(statuses.items()))
    v.other_errors = len(requests) - v.ok - sum(statuses.values())
    good = [r for r in requests if r.ok]
    v.output_tokens = sum(r.output_tokens or 0 for r in good)
    if requests and v.output_tokens == 0:
        v.problems.append(f"zero tokens: {len(requests)} request(s) sent, {v.ok} answered, "
                          f"0 output tokens counted by the server")
    http = sum(statuses.values())
    if requests and 100.0 * http / len(requests) > max_http_error_pct:
        codes = ", ".join(f"HTTP {code}: {n}" for code, n in v.http_errors.items())
        v.problems.append(f"{http}/{len(requests)} requests answered 4xx/5xx ({codes}); more than "
                          f"max_http_error_pct={max_http_error_pct:g} %")
    if osl is not None:
        _outputs(v, good, osl, ignore_eos)
    if isl is not None:
        _inputs(v, good, isl, input_tolerance_pct)
    return v


def _outputs(v: Validity, good: list[Request], osl: int, ignore_eos: bool) -> None:
    counts = [r.output_tokens for r in good if r.output_tokens is not None]
    v.output_asked = osl
    v.output_range = [min(counts), max(counts)] if counts else None
    if not ignore_eos or not good:
        return
    if len(counts) < len(good):
        v.problems.append(f"{len(good) - len(counts)}/{len(good)} successful requests carry no server output "
                          "token count; output lengths cannot be checked")
    v.output_off = sum(1 for c in counts if c != osl)
    if v.output_off:
        v.problems.append(f"{v.output_off}/{len(counts)} requests produced a server-counted output length other "
                          f"than the {osl} asked under ignore_eos (counted {v.output_range[0]}-{v.output_range[1]})")


def _inputs(v: Validity, good: list[Request], isl: int, tolerance_pct: float) -> None:
    counts = [r.input_tokens for r in good if r.input_tokens is not None]
    v.input_asked = isl
    v.input_range = [min(counts), max(counts)] if counts else None
    band = isl * tolerance_pct / 100.0 + TEMPLATE_SLACK_TOKENS
    v.input_off = sum(1 for c in counts if abs(c - isl) > band)
    if v.input_off:
        v.problems.append(f"{v.input_off}/{len(counts)} prompts were {v.input_range[0]}-{v.input_range[1]} tokens, "
                          f"outside isl {isl} +- {band:.0f} (input_tolerance_pct={tolerance_pct:g} % + "
                          f"{TEMPLATE_SLACK_TOKENS} chat-template tokens)")


def for_level(level_dir: Path, workload) -> Validity:
    """Validity of one level of `workload` (a throughput.workload.Workload) from its raw files."""
    fixed = workload.trace is None
    return check(read_requests(level_dir, workload.tool), isl=workload.isl if fixed else None,
                 osl=workload.osl if fixed else None, ignore_eos=workload.ignore_eos,
                 input_tolerance_pct=workload.input_tolerance_pct, max_http_error_pct=workload.max_http_error_pct)
