"""Saving a sampled timeline: a CSV per node, one PNG for all nodes, and a summary for run.json."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from servegate.errors import ServegateError
from servegate.memory.sampler import MemorySampler, Sample, sample_rate

PHASE_COLOURS = {
    "load": "#9ecae1",
    "warmup": "#c6dbef",
    "idle": "#e5f5e0",
    "heavy": "#fdae6b",
    "teardown": "#d9d9d9",
}


def csv_text(sampler: MemorySampler, node: str) -> str:
    samples = sampler.samples(node)
    gpu_ids = sorted({g[0] for s in samples for g in s.gpus})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "utc_epoch_s",
            "elapsed_s",
            "phase",
            "mem_total_gib",
            "mem_available_gib",
            "mem_free_gib",
            "cached_gib",
        ]
        + [f"gpu{i}_used_mib" for i in gpu_ids]
    )
    start = sampler.started or (samples[0].t if samples else 0.0)
    for s in samples:
        used = {g[0]: g[1] for g in s.gpus}
        writer.writerow(
            [f"{s.t:.3f}", f"{s.t - start:.3f}", sampler.phase_of(s.t)]
            + [f"{s.gib(k):.4f}" for k in ("MemTotal", "MemAvailable", "MemFree", "Cached")]
            + [used.get(i, "") for i in gpu_ids]
        )
    return out.getvalue()


def summary(sampler: MemorySampler, node: str) -> dict:
    samples = sampler.samples(node)
    per_phase = {}
    for phase, _, _ in sampler.windows():
        inside = sampler.samples_in(node, phase)
        padded = not inside  # a phase shorter than one tick is judged by the samples around it
        if padded:
            inside = sampler.samples_in(node, phase, pad_s=1.0 / sampler.nodes[node].hz)
        if inside:
            per_phase[phase] = {
                "samples": len(inside),
                "padded": padded,
                "min_mem_available_gib": round(min(s.gib("MemAvailable") for s in inside), 3),
                "max_gpu_used_mib": max((g[1] for s in inside for g in s.gpus), default=None),
            }
    return {
        "samples": len(samples),
        "rate_hz": round(sample_rate(samples), 3),
        "mem_total_gib": round(samples[0].gib("MemTotal"), 3) if samples else None,
        "min_mem_available_gib": round(min(s.gib("MemAvailable") for s in samples), 3) if samples else None,
        "phases": per_phase,
    }


def plot_png(
    sampler: MemorySampler, path: Path, floor_gib: float | None, warn_gib: float | None, title: str
) -> Path:
    try:
        import matplotlib
    except ImportError:
        raise ServegateError(
            "matplotlib is not installed, so the memory timeline has no PNG (the CSVs are saved)",
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(sampler.nodes)
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 4.2 * len(names)), squeeze=False)
    for ax, node in zip(axes[:, 0], names, strict=True):
        _plot_node(ax, sampler, node, floor_gib, warn_gib)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_node(ax, sampler: MemorySampler, node: str, floor_gib, warn_gib) -> None:
    samples: list[Sample] = sampler.samples(node)
    start = sampler.started or (samples[0].t if samples else 0.0)
    xs = [s.t - start for s in samples]
    for key, style in (("MemAvailable", "-"), ("MemFree", ":"), ("Cached", "--")):
        ax.plot(
            xs,
            [s.gib(key) for s in samples],
            style,
            linewidth=1.4 if key == "MemAvailable" else 1,
            label=f"{key} (GiB)",
        )
    total = samples[0].gib("MemTotal") if samples else None
    if total:
        ax.axhline(total, color="black", linewidth=0.8, alpha=0.5, label=f"MemTotal {total:.1f} GiB")
    if floor_gib is not None:
        ax.axhline(floor_gib, color="red", linestyle="--", linewidth=1.2, label=f"floor {floor_gib:g} GiB")
    if warn_gib is not None:
        ax.axhline(warn_gib, color="orange", linestyle="--", linewidth=1, label=f"warn {warn_gib:g} GiB")
    _shade_phases(ax, sampler, start, (xs[-1] if xs else 1.0) or 1.0)
    _mark_minimum(ax, sampler, node, start)
    handles, labels = ax.get_legend_handles_labels()
    if any(s.gpus for s in samples):
        twin = ax.twinx()
        for index in sorted({g[0] for s in samples for g in s.gpus}):
            twin.plot(
                xs,
                [next((g[1] / 1024 for g in s.gpus if g[0] == index), float("nan")) for s in samples],
                color="purple",
                linewidth=1,
                label=f"GPU{index} used (GiB)",
            )
        twin.set_ylabel("GPU used (GiB)")
        twin.set_ylim(bottom=0)
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.set_xlabel("seconds since the sampler started")
    ax.set_ylabel("GiB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"node {node}", loc="left", fontsize=10, pad=26)
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=7, ncol=4)
    ax.grid(alpha=0.3)


def _shade_phases(ax, sampler: MemorySampler, start: float, width: float) -> None:
    """A coloured band per phase, named above the plot; names of narrow bands are staggered upwards."""
    level = 0
    for phase, begin, end in sampler.windows():
        ax.axvspan(begin - start, end - start, color=PHASE_COLOURS.get(phase, "#f0f0f0"), alpha=0.6, zorder=0)
        level = (level + 1) % 3 if (end - begin) < 0.06 * width else 0
        ax.text(
            (begin + end) / 2 - start,
            1.01 + 0.07 * level,
            phase,
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
        )


def _mark_minimum(ax, sampler: MemorySampler, node: str, start: float) -> None:
    """A dot and label at the lowest MemAvailable of the heavy phase (of the whole run if none)."""
    samples = sampler.samples_in(node, "heavy") or sampler.samples(node)
    if not samples:
        return
    low = min(samples, key=lambda s: s.kib["MemAvailable"])
    ax.plot([low.t - start], [low.gib("MemAvailable")], "o", color="red", markersize=5)
    ax.annotate(
        f"min {low.gib('MemAvailable'):.2f} GiB",
        (low.t - start, low.gib("MemAvailable")),
        textcoords="offset points",
        xytext=(6, -12),
        fontsize=8,
        color="red",
    )


def save_run(
    sampler: MemorySampler, run, floor_gib: float | None, warn_gib: float | None, title: str
) -> dict:
    """memory/<node>.csv and memory/timeline.png in the run folder, a summary under run.json 'memory'."""
    files = {}
    for node in sampler.nodes:
        files[node] = str(run.write_text(f"memory/{node}.csv", csv_text(sampler, node)))
    try:
        png, failure = (
            str(plot_png(sampler, Path(run.path) / "memory" / "timeline.png", floor_gib, warn_gib, title)),
            None,
        )
    except ServegateError as exc:
        png, failure = None, exc
    data = {
        "sampler_id": sampler.sampler_id,
        "csv": files,
        "png": png,
        "marks": [{"t": round(t, 3), "phase": phase} for t, phase in sampler.marks],
        "nodes": {node: summary(sampler, node) for node in sampler.nodes},
        "gone": dict(sampler.gone),  # node -> why its samples were lost (it died mid-run)
    }
    run.update("memory", "timeline", data)
    if failure is not None:
        raise ServegateError(f"{failure}; fix: pip install -e '.[plot]' (nox sessions install it)")
    return data
