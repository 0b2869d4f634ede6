"""Report charts: throughput vs concurrency across runs, and latency percentiles per concurrency level."""

from __future__ import annotations

from pathlib import Path

from servegate.report.model import RunView
from servegate.throughput.plots import _pyplot, sweep_plot

PERCENTILES = ("p50", "p90", "p99")


def throughput_chart(runs: list[RunView], out: Path) -> Path | None:
    series = {}
    for run in runs:
        for workload, levels in run.levels().items():
            label = workload if len(runs) == 1 else f"{run.name[:16]} {workload}"
            series[label] = levels
    if not series:
        return None
    return sweep_plot("throughput and latency vs concurrency", series, out)


def percentile_chart(run: RunView, out: Path) -> Path | None:
    """Grouped bars: TTFT and ITL at p50/p90/p99 for every workload and concurrency level of one run."""
    groups = [
        (f"{workload}\nc={lv.concurrency}", lv)
        for workload, levels in run.levels().items()
        for lv in levels
        if lv.ttft_ms_p50 is not None
    ]
    if not groups:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    width = 0.8 / len(PERCENTILES)
    for ax, metric, title in ((axes[0], "ttft", "TTFT (ms)"), (axes[1], "itl", "ITL (ms)")):
        for index, pct in enumerate(PERCENTILES):
            values = [getattr(lv, f"{metric}_ms_{pct}") or 0.0 for _, lv in groups]
            positions = [g + (index - 1) * width for g in range(len(groups))]
            ax.bar(positions, values, width=width, label=pct)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([label for label, _ in groups], fontsize=8)
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{run.recipe}: latency percentiles ({run.name})")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
