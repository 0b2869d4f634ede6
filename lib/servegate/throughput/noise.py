"""Noise: repeats of one concurrency level merged into one result with a 95 % confidence interval per metric.

A regression verdict needs a change larger than the declared tolerance AND larger than the measured noise
(eugr #112: a -18.5 % prefill regression found by hand, against a 6.9 % noise floor on Spark runs). The
interval is Student's t over the repeats' values (mean +- t(0.975, n-1) * sd / sqrt(n)); its half width in
% of the mean is the metric's noise. The merged level reports the median of the repeats.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from servegate.throughput.schema import METRICS, LevelResult

# two-sided 95 % Student t quantiles by degrees of freedom (beyond 30: the normal 1.96)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
       10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}
MERGED = ("output_tps", "output_tps_per_gpu", "output_tps_per_user_p50", "total_tps", "request_tps",
          "ttft_ms_mean", "ttft_ms_p50", "ttft_ms_p90", "ttft_ms_p99", "itl_ms_mean", "itl_ms_p50", "itl_ms_p90",
          "itl_ms_p99", "e2el_ms_p50", "e2el_ms_p99", "isl_mean", "osl_mean", "duration_s")


def t95(df: int) -> float:
    if df <= 0:
        return math.inf
    known = [k for k in T95 if k <= df]
    return T95[max(known)] if df <= 30 else 1.96


def interval(values: list[float]) -> dict[str, Any] | None:
    """Mean, 95 % interval and its half width in % of the mean; None with fewer than two values."""
    values = [float(v) for v in values if v is not None]
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return {"n": len(values), "mean": mean, "low": mean - half, "high": mean + half,
            "half_pct": 100.0 * half / abs(mean) if mean else (0.0 if half == 0 else math.inf),
            "values": values}


def merge(repeats: list[LevelResult]) -> LevelResult:
    """One level from its repeats: counts summed, metrics the median of the clean repeats, ci per metric."""
    first = repeats[0]
    clean = [r for r in repeats if r.status == "ok"] or repeats
    merged = LevelResult(first.workload, first.tool, first.concurrency, tool_version=first.tool_version)
    merged.repeats = len(repeats)
    merged.status = "ok" if all(r.status == "ok" for r in repeats) else "failed"
    merged.note = " | ".join(f"repeat {i}: {r.note}" for i, r in enumerate(repeats, 1) if r.note)
    for key in ("requests", "completed", "errors"):
        counts = [getattr(r, key) for r in repeats if getattr(r, key) is not None]
        setattr(merged, key, sum(counts) if counts else None)
    merged.error_samples = [s for r in repeats for s in r.error_samples][:5]
    for key in MERGED:
        values = [getattr(r, key) for r in clean if getattr(r, key) is not None]
        setattr(merged, key, statistics.median(values) if values else None)
        ci = interval(values)
        if ci is not None and key in METRICS:
            merged.ci[key] = ci
    merged.validity = _validity([r.validity or {} for r in repeats])
    merged.raw = first.raw.rsplit("/", 1)[0] if "/" in first.raw else first.raw
    return merged


def _validity(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The repeats' validity counts summed, token ranges spanned, problems kept with their repeat number."""
    out: dict[str, Any] = {"repeats": parts, "requests": sum(p.get("requests", 0) for p in parts),
                           "ok": sum(p.get("ok", 0) for p in parts),
                           "output_tokens": sum(p.get("output_tokens", 0) for p in parts), "http_errors": {},
                           "problems": [f"repeat {i}: {x}" for i, p in enumerate(parts, 1)
                                        for x in p.get("problems", [])]}
    for part in parts:
        for code, count in (part.get("http_errors") or {}).items():
            out["http_errors"][code] = out["http_errors"].get(code, 0) + count
    for key in ("output_range", "input_range"):
        spans = [p[key] for p in parts if p.get(key)]
        out[key] = [min(s[0] for s in spans), max(s[1] for s in spans)] if spans else None
    return out


def noise_pct(current: dict[str, Any] | None, baseline: dict[str, Any] | None) -> float | None:
    """The noise of a comparison in %: the two intervals' half widths combined (root of the sum of squares);
    None when neither side was repeated."""
    parts = [side["half_pct"] for side in (current, baseline) if side]
    if not parts:
        return None
    return math.sqrt(sum(p * p for p in parts))
