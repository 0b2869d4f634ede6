"""Read finished runs back: the verdict table and the phase table with the suite's own overhead."""

from __future__ import annotations

from pathlib import Path

from servegate.results.run import DEFAULT_RESULTS
from servegate.results.schema import load_run


def runs_since(stamp: str, root: Path = DEFAULT_RESULTS) -> list[Path]:
    """Run folders (named <UTC stamp>-<recipe>) started at or after stamp."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "run.json").is_file() and p.name[:16] >= stamp[:16])


def overhead(data: dict) -> dict[str, float]:
    """total - (vLLM start + workload); workload is the time scenarios spent in their calls."""
    phases = data.get("phases", {})
    total = float(data.get("wall_s") or 0.0)
    vllm_start = float(phases.get("server start", 0.0))
    workload = sum(float(s.get("call_seconds", 0.0)) for s in data.get("scenarios", {}).values())
    suite = max(total - vllm_start - workload, 0.0)
    return {"total_s": total, "vllm_start_s": vllm_start, "workload_s": workload, "overhead_s": suite,
            "overhead_pct": 100.0 * suite / total if total else 0.0}


def summary_lines(run: Path) -> list[str]:
    data = load_run(run)
    lines = [f"{data['recipe']['name']}: {data.get('verdict', '?').upper()}   ({run})"]
    for nodeid, verdict in data.get("scenarios", {}).items():
        message = f"  {verdict.get('message', '')[:80]}" if verdict["outcome"] != "passed" else ""
        lines.append(f"  {verdict['outcome'].upper():8} {verdict.get('seconds', 0):7.1f}s  {nodeid}{message}")
    lines.append("  phase                    seconds")
    for name, seconds in data.get("phases", {}).items():
        lines.append(f"  {name:24} {seconds:8.1f}")
    for name, value in data.get("timings", {}).items():
        lines.append(f"  {name:24} {value:8.1f}")
    cost = overhead(data)
    lines.append(f"  {'total':24} {cost['total_s']:8.1f}")
    lines.append(f"  suite overhead = total - (vLLM start {cost['vllm_start_s']:.1f} + workload "
                 f"{cost['workload_s']:.1f}) = {cost['overhead_s']:.1f} s ({cost['overhead_pct']:.1f} %)")
    return lines
