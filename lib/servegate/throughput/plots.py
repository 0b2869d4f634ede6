"""Plots of a concurrency sweep (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

from servegate.throughput.schema import LevelResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sweep_plot(title: str, series: dict[str, list[LevelResult]], out: Path) -> Path:
    """Four panels against concurrency: system output tok/s, per-user tok/s, TTFT and ITL percentiles.

    `series` maps a label (a workload, or a run) to its levels, so one figure can compare runs.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    panels = [
        (axes[0][0], [("output_tps", "")], "system output (tok/s)"),
        (axes[0][1], [("output_tps_per_user_p50", "")], "output per user p50 (tok/s)"),
        (axes[1][0], [("ttft_ms_p50", " p50"), ("ttft_ms_p99", " p99")], "TTFT (ms)"),
        (axes[1][1], [("itl_ms_p50", " p50"), ("itl_ms_p99", " p99")], "ITL (ms)"),
    ]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metrics, ylabel in panels:
        for index, (label, levels) in enumerate(series.items()):
            for metric, suffix in metrics:
                points = [
                    (lv.concurrency, getattr(lv, metric)) for lv in levels if getattr(lv, metric) is not None
                ]
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(
                        xs,
                        ys,
                        marker="o",
                        color=colors[index % len(colors)],
                        linestyle="--" if suffix == " p99" else "-",
                        label=label + suffix,
                    )
        ax.set_xlabel("concurrency")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
