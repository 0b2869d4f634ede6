"""What is alive at the torch peak of vLLM's profile_run: the measurement behind the activation term.

vLLM sizes the KV cache as the reservation less weights, non-torch memory and the torch peak of one
dummy forward of max_num_batched_tokens tokens (gpu_worker.determine_available_memory). The planner
predicts that peak from the model's dims (memory/terms.py). To see which allocations make it up, a GPU
run records the CUDA caching allocator's trace during profile_run (torch.cuda.memory._record_memory_history)
and replays it: the running sum of allocations and frees, the moment of the peak, and every block alive
then, grouped by the innermost vLLM source line that allocated it.

    # on the GPU machine, for one launch (memory/gpu_runs.py does this for a case with "trace": true):
    PYTHONPATH=lib/servegate/memory/tracehook:$PYTHONPATH SERVEGATE_TRACE_PROFILE=peak.json vllm serve ...
    # here, a JSON written there:
    python -m servegate.memory.trace_peak peak.json

install() is what the hook's sitecustomize calls; analyze() is pure (a snapshot dict in, a summary out).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from servegate.memory.import_hook import after_import

TARGET_MODULE = "vllm.v1.worker.gpu_model_runner"
MAX_ENTRIES = 2_000_000
TOP = 40
LIFETIME_MIN_BYTES = 8 << 20  # blocks this large get their alloc/free event indices recorded
LIFETIMES = 400


def _site(frames: list[dict], depth: int = 3) -> str:
    """The innermost frames in vLLM's own source (up to `depth`), 'file:line:function' innermost first."""
    out = []
    for frame in frames or []:
        name = str(frame.get("filename", ""))
        if "/vllm/" not in name or "/memory/trace_peak" in name:
            continue
        short = name.split("/vllm/", 1)[1]
        out.append(f"{short}:{frame.get('line')}:{frame.get('name')}")
        if len(out) == depth:
            break
    return " < ".join(out) or "(no vLLM frame)"


def analyze(snapshot: dict, device: int = 0) -> dict:
    """Replay one device's trace: bytes allocated since recording began, its peak, and the live blocks then.

    Allocated bytes rise on 'alloc' and fall on 'free_requested' (a block freed while a stream still uses
    it is completed later; torch's allocated_bytes stat falls at the request). A free of a block allocated
    before recording began lowers the sum too (its size is in the event)."""
    traces = snapshot.get("device_traces") or []
    events = traces[device] if device < len(traces) else []
    live: dict[int, tuple[int, str]] = {}
    born: dict[int, int] = {}
    lifetimes: list[dict] = []
    current = peak = 0
    peak_live: dict[int, tuple[int, str]] = {}
    peak_index = -1
    for index, event in enumerate(events):
        action, addr, size = event.get("action"), event.get("addr"), int(event.get("size") or 0)
        if action == "alloc":
            live[addr] = (size, _site(event.get("frames")))
            born[addr] = index
            current += size
            if current > peak:
                peak, peak_index, peak_live = current, index, dict(live)
        elif action == "free_requested":
            current -= size
            _ended(lifetimes, live.pop(addr, None), born.pop(addr, None), index)
        elif action == "free_completed" and addr in live:  # a free whose request was not recorded
            block = live.pop(addr)
            current -= block[0]
            _ended(lifetimes, block, born.pop(addr, None), index)
    for addr, block in live.items():  # alive when recording stopped
        _ended(lifetimes, block, born.get(addr), None)
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for size, site in peak_live.values():
        groups[site][0] += size
        groups[site][1] += 1
    ranked = sorted(groups.items(), key=lambda item: -item[1][0])
    return {
        "events": len(events),
        "peak_bytes": peak,
        "peak_event": peak_index,
        "live_at_peak_bytes": sum(size for size, _ in peak_live.values()),
        "sites": [{"bytes": b, "blocks": n, "site": site} for site, (b, n) in ranked[:TOP]],
        "other_bytes": sum(b for _, (b, _n) in ranked[TOP:]),
        # the large blocks in allocation order: which were alive together, and for how many events
        "lifetimes": sorted(lifetimes, key=lambda b: b["alloc"])[:LIFETIMES],
    }


def _ended(out: list[dict], block: tuple[int, str] | None, alloc: int | None, free: int | None) -> None:
    if block and alloc is not None and block[0] >= LIFETIME_MIN_BYTES:
        out.append({"alloc": alloc, "free": free, "mib": round(block[0] / 2**20, 1), "site": block[1]})


def _wrap(runner_class, out_path: str) -> None:
    original = runner_class.profile_run
    if getattr(original, "_servegate_traced", False):
        return

    def profile_run(self, *args, **kwargs):
        import torch

        torch.cuda.synchronize()
        before = torch.cuda.memory_stats().get("allocated_bytes.all.current", 0)
        torch.cuda.memory._record_memory_history(enabled="all", context="alloc", stacks="python",
                                                 max_entries=MAX_ENTRIES, clear_history=True)
        try:
            return original(self, *args, **kwargs)
        finally:
            torch.cuda.synchronize()
            stats = torch.cuda.memory_stats()
            summary = analyze(torch.cuda.memory._snapshot(), torch.cuda.current_device())
            torch.cuda.memory._record_memory_history(enabled=None)
            summary.update(allocated_before_bytes=before,
                           torch_peak_bytes=stats.get("allocated_bytes.all.peak", 0),
                           torch_peak_increase_bytes=stats.get("allocated_bytes.all.peak", 0) - before)
            Path(out_path).write_text(json.dumps(summary, indent=1) + "\n")

    profile_run._servegate_traced = True
    runner_class.profile_run = profile_run


def install(out_path: str) -> None:
    after_import(TARGET_MODULE, lambda module: _wrap(module.GPUModelRunner, out_path))


def print_summary(summary: dict) -> None:
    gib = 2**30
    print(f"torch peak increase {summary.get('torch_peak_increase_bytes', 0) / gib:.3f} GiB (vLLM's figure); "
          f"replayed peak {summary['peak_bytes'] / gib:.3f} GiB over {summary['events']} events")
    for row in summary["sites"]:
        print(f"{row['bytes'] / gib:8.3f} GiB {row['blocks']:5d}  {row['site']}")
    if summary.get("other_bytes"):
        print(f"{summary['other_bytes'] / gib:8.3f} GiB        (other sites)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m servegate.memory.trace_peak PEAK_JSON", file=sys.stderr)
        return 2
    try:
        summary = json.loads(Path(args[0]).read_text())
    except (OSError, ValueError) as exc:
        print(f"{args[0]}: cannot read the peak summary: {exc}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
