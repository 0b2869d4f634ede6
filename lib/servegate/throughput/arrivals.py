"""How each load generator's requests met the server: request start times from the tools' own raw files.

At a fixed concurrency with equal output lengths, requests leave and return in bursts (a finished wave
frees its slots together). Whether a burst's requests reach the server inside one scheduler step or
straddle two moves every follower's TTFT by a whole prefill step, whichever tool sent them. So a TTFT
difference between tools is only a measurement difference if their arrival patterns match: this module
reads the start time and TTFT of every request (AIPerf `metadata.request_start_ns`, vllm bench
`start_times` with `--save-detailed`) and summarises the bursts.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from servegate.throughput import aiperf, vllm_bench

BURST_GAP_MS = 5.0  # starts closer than this belong to one burst


def requests(tool: str, out_dir: Path) -> list[tuple[float, float]]:
    """(start in seconds on the tool's own clock, TTFT in ms on servegate's definition) per successful request."""
    if tool == "aiperf":
        out = []
        for record in aiperf._records(out_dir / aiperf.RECORDS):
            start = (record.get("metadata") or {}).get("request_start_ns")
            ttft = aiperf._metric(record, "time_to_first_token")
            if not record.get("error") and isinstance(start, (int, float)) and ttft is not None:
                out.append((start / 1e9, ttft))
        return out
    path = out_dir / vllm_bench.RESULT
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    starts, errors = data.get("start_times") or [], data.get("errors") or [""] * len(data.get("ttfts") or [])
    ok = [i for i, t in enumerate(data.get("ttfts") or []) if t and not (errors[i] if i < len(errors) else "")]
    ttfts = vllm_bench.unified_ttfts_ms(data)
    return [(starts[i], ttft) for i, ttft in zip(ok, ttfts, strict=False) if i < len(starts)]


def bursts(rounds: list[list[tuple[float, float]]], gap_ms: float = BURST_GAP_MS) -> dict:
    """Bursts of starts (consecutive gaps under gap_ms), round by round: their sizes and spreads, how much
    later than the burst's leader each follower was sent, and how much later its first token came."""
    groups: list[list[tuple[float, float]]] = []
    for pairs in rounds:
        ordered = sorted(pairs)
        for index, current in enumerate(ordered):
            if index and (current[0] - ordered[index - 1][0]) * 1000.0 < gap_ms:
                groups[-1].append(current)
            else:
                groups.append([current])
    if not groups:
        return {}
    spreads = [(g[-1][0] - g[0][0]) * 1000.0 for g in groups if len(g) > 1]
    # per follower: how much later than its burst's leader it was sent, and its first token came
    offsets = [(start - g[0][0]) * 1000.0 for g in groups for start, _ in g[1:]]
    lags = [(start - g[0][0]) * 1000.0 + ttft - g[0][1] for g in groups for start, ttft in g[1:]]
    return {
        "requests": sum(len(g) for g in groups),
        "bursts": len(groups),
        "burst_size_p50": statistics.median(len(g) for g in groups),
        "spread_ms_p50": statistics.median(spreads) if spreads else 0.0,
        "follower_sent_after_leader_ms_p50": statistics.median(offsets) if offsets else None,
        "follower_first_token_after_leader_ms_p50": statistics.median(lags) if lags else None,
    }


def describe(tool: str, stats: dict) -> str:
    if not stats:
        return f"arrivals {tool}: no per-request start times in the raw files"
    sent, lag = stats["follower_sent_after_leader_ms_p50"], stats["follower_first_token_after_leader_ms_p50"]
    if sent is None:
        return f"arrivals {tool:10} {stats['requests']} requests, each sent alone (no bursts)"
    def fmt(value):
        return "-" if value is None else f"{value:.2f}"
    return (f"arrivals {tool:10} {stats['requests']} requests in {stats['bursts']} bursts (size p50 "
            f"{stats['burst_size_p50']:g}); a follower is sent {fmt(sent)} ms after its burst's leader (p50) and "
            f"gets its first token {fmt(lag)} ms after the leader's: TTFT shorter by what the client's dispatch "
            f"took when the server batches the burst in one step")
