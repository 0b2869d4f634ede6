"""One schema for every load generator's numbers: what a concurrency level measured.

AIPerf and `vllm bench serve` name the same quantities differently (and define one of them differently:
vLLM's `itl` pools every gap between chunks, AIPerf's `inter_token_latency` is per request, which is vLLM's
`tpot`). Each tool module maps its raw output onto LevelResult; everything downstream (thresholds,
baselines, plots, reports) reads only this.

TTFT is servegate's own, whichever tool ran (TTFT_DEFINITION; docs/load-generation.md quotes both tools'
source): each tool's per-request timestamps are brought to that definition and the percentiles are taken
here, with one method (ttft_stats), over the successful requests. What the tool itself printed is kept as
`ttft_tool_ms_p50`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    default_tolerance_pct: float


METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("output_tps", "system output", "tok/s", True, 10.0),
        Metric("output_tps_per_gpu", "system output per GPU", "tok/s/GPU", True, 10.0),
        Metric("output_tps_per_user_p50", "output per user p50", "tok/s/user", True, 10.0),
        Metric("request_tps", "requests", "req/s", True, 10.0),
        Metric("ttft_ms_p50", "TTFT p50", "ms", False, 25.0),
        Metric("ttft_ms_p99", "TTFT p99", "ms", False, 50.0),
        Metric("itl_ms_p50", "ITL p50", "ms", False, 15.0),
        Metric("errors", "errors", "requests", False, 0.0),
    )
}

# threshold key in expect.throughput[] -> (metric, "min"|"max")
THRESHOLDS: dict[str, tuple[str, str]] = {
    "min_output_tps_per_user_p50": ("output_tps_per_user_p50", "min"),
    "min_output_tps": ("output_tps", "min"),
    "min_output_tps_per_gpu": ("output_tps_per_gpu", "min"),
    "max_ttft_ms_p50": ("ttft_ms_p50", "max"),
    "max_ttft_ms_p99": ("ttft_ms_p99", "max"),
    "max_itl_ms_p50": ("itl_ms_p50", "max"),
    "max_errors": ("errors", "max"),
}


@dataclass
class LevelResult:
    """One concurrency level of one workload, normalised. None means the tool did not report it."""

    workload: str
    tool: str
    concurrency: int
    status: str = "ok"  # ok | failed (the level ran but something broke) | not run
    note: str = ""
    tool_version: str | None = None
    requests: int | None = None  # sent
    completed: int | None = None
    errors: int | None = None
    error_samples: list[str] = field(default_factory=list)
    duration_s: float | None = None
    output_tps: float | None = None
    output_tps_per_gpu: float | None = None
    output_tps_per_user_p50: float | None = None
    total_tps: float | None = None
    request_tps: float | None = None
    ttft_ms_mean: float | None = None
    ttft_ms_p50: float | None = None
    ttft_ms_p90: float | None = None
    ttft_ms_p99: float | None = None
    itl_ms_mean: float | None = None
    itl_ms_p50: float | None = None
    itl_ms_p90: float | None = None
    itl_ms_p99: float | None = None
    ttft_tool_ms_p50: float | None = None  # the tool's own TTFT p50, before servegate's definition
    e2el_ms_p50: float | None = None
    e2el_ms_p99: float | None = None
    isl_mean: float | None = None
    osl_mean: float | None = None
    raw: str = ""  # folder of the tool's own output, relative to the run folder
    repeats: int = 1  # runs merged into this level (noise.py)
    ci: dict[str, dict] = field(default_factory=dict)  # metric -> 95 % interval over the repeats
    validity: dict[str, Any] = field(default_factory=dict)  # validity.py: counts and problems

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LevelResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def per_gpu(self, gpus: int) -> None:
        if gpus > 0 and self.output_tps is not None:
            self.output_tps_per_gpu = self.output_tps / gpus


TTFT_DEFINITION = (
    "time from the client starting the request (before the connection is taken from the pool and the body "
    "sent) to the arrival of the first streamed chunk that carries generated output: non-empty content, "
    "reasoning or tool-call text; a role-only first chunk (delta {role, content: ''}) and usage-only chunks do "
    "not count; successful requests only; percentiles by linear interpolation (numpy's default)"
)


def percentile(values: list[float], pct: float) -> float | None:
    """Linear interpolation between closest ranks (numpy.percentile's default), the method vllm bench uses."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ttft_stats(result: LevelResult, ttfts_ms: list[float]) -> None:
    """Set the level's TTFT figures from per-request values already on servegate's definition."""
    if not ttfts_ms:
        return
    result.ttft_ms_mean = sum(ttfts_ms) / len(ttfts_ms)
    for pct in (50, 90, 99):
        setattr(result, f"ttft_ms_p{pct}", percentile(ttfts_ms, pct))


def number(value: Any) -> float | None:
    """A float, or None for anything a tool writes when it has no value (None, '', NaN)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if out != out else out
