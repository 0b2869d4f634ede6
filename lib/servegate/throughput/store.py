"""Throughput results in a run folder: raw tool output per level, one normalised summary, a table, plots.

<run>/throughput/summary.json        every workload: spec, levels (normalised), violations, provenance
<run>/throughput/sweep.md            the levels of every workload as one markdown table
<run>/throughput/<workload>.png      the workload's sweep plot
<run>/throughput/<workload>/c<N>/    the tool's own files for that level, its log and exact command
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from servegate.results.run import RunDir
from servegate.throughput.plots import sweep_plot
from servegate.throughput.schema import LevelResult
from servegate.throughput.thresholds import Violation
from servegate.throughput.workload import Workload

FOLDER = "throughput"
SUMMARY = "summary.json"
SCHEMA_VERSION = 1


def folder(run_path: Path) -> Path:
    return Path(run_path) / FOLDER


def record(
    run: RunDir,
    workload: Workload,
    levels: list[LevelResult],
    violations: list[Violation],
    provenance: dict[str, Any],
    gpus: int,
) -> dict[str, Any]:
    """Add one workload's outcome to the run's summary, table, plot and run.json; return the summary."""
    summary = load(run.path) or {"schema_version": SCHEMA_VERSION, "workloads": {}}
    summary["provenance"] = provenance
    summary["gpus"] = gpus
    spec = asdict(workload) | {"trace": str(workload.trace) if workload.trace else None}
    summary["workloads"][workload.name] = {
        "spec": spec,
        "verdict": "failed" if violations else "passed",
        "levels": [level.to_dict() for level in levels],
        "violations": [v.to_dict() for v in violations],
    }
    out = folder(run.path)
    out.mkdir(parents=True, exist_ok=True)
    run.write_text(f"{FOLDER}/{SUMMARY}", json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    run.write_text(f"{FOLDER}/sweep.md", "\n".join(table_lines(summary)) + "\n")
    sweep_plot(
        f"{run.data['recipe']['name']}: {workload.name} ({workload.tool})",
        {workload.name: levels},
        out / f"{workload.name}.png",
    )
    run.update("provenance", value=provenance)
    run.update(
        "throughput",
        workload.name,
        {
            "verdict": summary["workloads"][workload.name]["verdict"],
            "violations": [str(v) for v in violations],
            "levels": [_compact(level) for level in levels],
        },
    )
    return summary


def load(run_path: Path) -> dict[str, Any] | None:
    path = folder(run_path) / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None


def levels_of(summary: dict[str, Any], workload: str) -> list[LevelResult]:
    return [LevelResult.from_dict(d) for d in summary["workloads"][workload]["levels"]]


COLUMNS = [
    ("conc", "concurrency", "{:d}"),
    ("status", "status", "{}"),
    ("ok", "completed", "{}"),
    ("errors", "errors", "{}"),
    ("output tok/s", "output_tps", "{:.1f}"),
    ("tok/s/GPU", "output_tps_per_gpu", "{:.1f}"),
    ("tok/s/user p50", "output_tps_per_user_p50", "{:.2f}"),
    ("TTFT p50 ms", "ttft_ms_p50", "{:.0f}"),
    ("TTFT p99 ms", "ttft_ms_p99", "{:.0f}"),
    ("ITL p50 ms", "itl_ms_p50", "{:.1f}"),
    ("E2E p50 ms", "e2el_ms_p50", "{:.0f}"),
]


def table_lines(summary: dict[str, Any]) -> list[str]:
    """One markdown table: a row per workload and concurrency level."""
    lines = [
        "| workload | tool | " + " | ".join(h for h, _, _ in COLUMNS) + " |",
        "|" + "---|" * (len(COLUMNS) + 2),
    ]
    for name, entry in summary.get("workloads", {}).items():
        for level in entry["levels"]:
            cells = [_cell(level.get(key), fmt) for _, key, fmt in COLUMNS]
            lines.append(f"| {name} | {level['tool']} | " + " | ".join(cells) + " |")
    return lines


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _compact(level: LevelResult) -> dict[str, Any]:
    keys = (
        "concurrency",
        "status",
        "completed",
        "errors",
        "output_tps",
        "output_tps_per_gpu",
        "output_tps_per_user_p50",
        "ttft_ms_p50",
        "ttft_ms_p99",
        "itl_ms_p50",
        "note",
        "raw",
    )
    out = {key: getattr(level, key) for key in keys}
    out["repeats"] = level.repeats
    out["ci_half_pct"] = {k: round(v["half_pct"], 2) for k, v in level.ci.items()}  # noise per metric
    out["validity"] = {k: level.validity.get(k) for k in ("requests", "ok", "http_errors", "output_tokens",
                                                          "output_range", "input_range", "problems")
                       if k in level.validity}
    return out
