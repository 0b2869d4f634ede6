"""Baselines: a run's normalised throughput kept in git (results/baselines/<recipe>.json) and compared
against later runs metric by metric, each with a tolerance in % (a latency may rise, a throughput may
fall, by that much before it counts as a regression)."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servegate.config.paths import RESULTS_DIR
from servegate.errors import ServegateError
from servegate.results.schema import load_run
from servegate.throughput import noise, store
from servegate.throughput.schema import METRICS

BASELINES = RESULTS_DIR / "baselines"


def baseline_path(recipe_name: str) -> Path:
    return BASELINES / f"{recipe_name}.json"


def make(run_path: Path) -> dict[str, Any]:
    """A baseline from a run's throughput summary; levels that did not pass cleanly are left out."""
    summary = _summary(run_path)
    run = load_run(run_path)
    workloads = {}
    for name, entry in summary["workloads"].items():
        levels = {
            str(lv["concurrency"]): {key: lv.get(key) for key in METRICS if lv.get(key) is not None}
            for lv in entry["levels"]
            if lv["status"] == "ok"
        }
        intervals = {str(lv["concurrency"]): lv["ci"] for lv in entry["levels"]
                     if lv["status"] == "ok" and lv.get("ci")}
        if levels:
            workloads[name] = {"tool": entry["spec"]["tool"], "spec": entry["spec"], "levels": levels}
            if intervals:
                workloads[name]["ci"] = intervals  # the noise the gate weighs a later change against
    if not workloads:
        raise ServegateError(f"{run_path}: no throughput level passed cleanly; nothing to keep as a baseline")
    return {
        "schema_version": 1,
        "recipe": run["recipe"]["name"],
        "source_run": Path(run_path).name,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "provenance": summary.get("provenance", {}),
        "gpus": summary.get("gpus", 0),
        "workloads": workloads,
    }


def write(run_path: Path, out: Path | None = None, force: bool = False) -> Path:
    data = make(run_path)
    out = Path(out) if out else baseline_path(data["recipe"])
    if out.exists() and not force:
        raise ServegateError(
            f"{out} exists (from run {json.loads(out.read_text()).get('source_run')})\n"
            f"  fix: pass --force to replace it (git keeps the old one), or --out FILE"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return out


def load(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise ServegateError(
            f"no baseline at {path}\n  fix: record one from a good run: servegate baseline RUN"
        )
    return json.loads(Path(path).read_text())


@dataclass
class Delta:
    workload: str
    concurrency: int
    metric: str
    baseline: float | None
    current: float | None
    delta_pct: float | None
    tolerance_pct: float
    verdict: str  # ok | improved | regressed | within noise | not measured
    noise_pct: float | None = None  # 95 % intervals of both sides combined; None: neither side repeated

    def __str__(self) -> str:
        meta = METRICS[self.metric]
        if self.verdict == "not measured":
            return (
                f"workload '{self.workload}' at concurrency {self.concurrency}: {meta.label} not measured "
                f"(baseline {self.baseline:.4g} {meta.unit})"
            )
        return (
            f"workload '{self.workload}' at concurrency {self.concurrency}: {meta.label} {self.current:.4g} "
            f"{meta.unit} vs baseline {self.baseline:.4g} ({_pct(self.delta_pct)}, tolerance "
            f"{self.tolerance_pct:g} %, noise {_noise(self.noise_pct)}): {self.verdict}"
        )


def tolerances(
    spec: dict | None = None, overrides: dict[str, float] | None = None
) -> dict[str, float | None]:
    """Per-metric tolerance: the schema's default, then the workload's tolerance_pct, then the caller's.
    None (null in YAML) leaves the metric out of the comparison."""
    out = {key: meta.default_tolerance_pct for key, meta in METRICS.items()}
    for source in ((spec or {}).get("tolerance_pct") or {}, overrides or {}):
        for key, value in source.items():
            if key not in METRICS:
                raise ServegateError(
                    f"tolerance for unknown metric '{key}'\n  fix: metrics: {', '.join(METRICS)}"
                )
            out[key] = None if value is None else float(value)
    return out


def compare(
    summary: dict[str, Any], baseline: dict[str, Any], overrides: dict[str, float] | None = None
) -> list[Delta]:
    deltas: list[Delta] = []
    for name, entry in summary.get("workloads", {}).items():
        base = baseline.get("workloads", {}).get(name)
        if not base:
            continue
        tol = tolerances(entry.get("spec"), overrides)
        current = {str(lv["concurrency"]): lv for lv in entry["levels"]}
        base_ci = base.get("ci") or {}
        for conc, base_metrics in base["levels"].items():
            level = current.get(conc)
            if level is None:
                continue  # this run did not ask for that level (e.g. another sweep)
            for metric, base_value in base_metrics.items():
                if tol.get(metric) is None:
                    continue
                value = level.get(metric) if level["status"] == "ok" or metric == "errors" else None
                spread = noise.noise_pct((level.get("ci") or {}).get(metric), (base_ci.get(conc) or {}).get(metric))
                deltas.append(_delta(name, int(conc), metric, base_value, value, tol[metric], spread))
    return deltas


def _delta(workload: str, conc: int, metric: str, base: float, current: float | None, tol: float,
           spread: float | None = None) -> Delta:
    """A regression needs a change beyond the tolerance and beyond the measured noise (when measured)."""
    if current is None:
        return Delta(workload, conc, metric, base, None, None, tol, "not measured", spread)
    if base == 0:
        pct = 0.0 if current == 0 else math.inf
    else:
        pct = 100.0 * (current - base) / abs(base)
    worse = -pct if METRICS[metric].higher_is_better else pct
    verdict = "regressed" if worse > tol else ("improved" if worse < -tol else "ok")
    if verdict != "ok" and spread is not None and abs(worse) <= spread:
        verdict = "within noise"
    return Delta(workload, conc, metric, base, current, pct, tol, verdict, spread)


def regressions(deltas: list[Delta]) -> list[Delta]:
    return [d for d in deltas if d.verdict in ("regressed", "not measured")]


def delta_lines(deltas: list[Delta]) -> list[str]:
    lines = [
        "| workload | conc | metric | baseline | this run | delta | tolerance | noise (95 % CI) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in deltas:
        meta = METRICS[d.metric]
        current = "-" if d.current is None else f"{d.current:.4g}"
        mark = {"regressed": "**regressed**", "not measured": "**not measured**"}.get(d.verdict, d.verdict)
        lines.append(
            f"| {d.workload} | {d.concurrency} | {meta.label} ({meta.unit}) | {d.baseline:.4g} | {current} "
            f"| {_pct(d.delta_pct)} | {d.tolerance_pct:g} % | {_noise(d.noise_pct)} | {mark} |"
        )
    return lines


def _noise(value: float | None) -> str:
    return "not measured (1 repeat)" if value is None else f"+-{value:.1f} %"


def _pct(value: float | None) -> str:
    if value is None:
        return "-"
    return "+inf %" if value == math.inf else f"{value:+.1f} %"


def _summary(run_path: Path) -> dict[str, Any]:
    summary = store.load(Path(run_path))
    if summary is None:
        raise ServegateError(
            f"{run_path} has no {store.FOLDER}/{store.SUMMARY}\n"
            f"  fix: pick a run whose throughput scenario ran (results/<stamp>-<recipe>/)"
        )
    return summary
