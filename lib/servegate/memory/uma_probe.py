"""What vLLM's profiler would count as non-torch memory on a unified-memory node, measured on a discrete GPU.

On an integrated GPU (DGX Spark GB10, GH200, Orin) vLLM's MemorySnapshot.measure replaces cudaMemGetInfo's
free memory by psutil's MemAvailable (vllm/utils/mem_utils.py, `is_integrated_gpu`), so the non-torch
increase it subtracts from the reservation (gpu_worker.determine_available_memory: init snapshot -> after
profile_run) is every byte the whole system took in that window less what torch reserved: the CUDA-side
non-torch memory a discrete GPU also sees (cuBLAS workspaces, loaded kernel modules) *plus* the host side:
the worker's heap growth while it loads and profiles (Triton's in-process compiles, model code, loader
buffers), pinned buffers, the other vLLM processes. A discrete GPU's log shows only the first part.

A GPU run puts tracehook/ on PYTHONPATH with SERVEGATE_HOST_PROBE=FILE: every MemorySnapshot.measure in
every vLLM process then appends one JSON line (pid, the calling functions, the process's RssAnon,
MemTotal/MemAvailable, and the snapshot's own torch and CUDA figures). window() pairs the worker's init
snapshot with its last after-profile snapshot:

    host bytes   = (MemTotal - MemAvailable) after - init   (all processes, host RAM only on a discrete GPU)
    device bytes = vLLM's non-torch increase on this GPU     (cuda used - torch reserved, after - init)
    UMA non-torch = host bytes + device bytes                (what the same run would log on a GB10)

    python -m servegate.memory.uma_probe FILE.jsonl     # the window, printed
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from servegate.memory.import_hook import after_import

TARGET_MODULE = "vllm.utils.mem_utils"


def _proc_fields(path: str, names: tuple[str, ...]) -> dict[str, int]:
    """Fields of a /proc file in 'Name:   123 kB' form, in bytes (0 when missing)."""
    out = dict.fromkeys(names, 0)
    try:
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key in out:
                out[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def record(snapshot, out_path: str) -> None:
    callers = [frame.name for frame in traceback.extract_stack(limit=8)[:-2]][::-1]
    line = {"t": round(time.time(), 3), "pid": os.getpid(), "callers": callers,
            **_proc_fields("/proc/self/status", ("RssAnon", "RssFile", "RssShmem")),
            **_proc_fields("/proc/meminfo", ("MemTotal", "MemAvailable")),
            **{key: int(getattr(snapshot, key, 0) or 0)
               for key in ("torch_memory", "cuda_memory", "non_torch_memory", "free_memory", "total_memory")}}
    fd = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def _wrap(snapshot_class, out_path: str) -> None:
    original = snapshot_class.measure
    if getattr(original, "_servegate_probe", False):
        return

    def measure(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        try:
            record(self, out_path)
        except Exception as exc:  # the probe must never break vLLM's start
            print(f"servegate host probe: {exc}", file=sys.stderr)
        return result

    measure._servegate_probe = True
    snapshot_class.measure = measure


def install(out_path: str) -> None:
    after_import(TARGET_MODULE, lambda module: _wrap(module.MemorySnapshot, out_path))


def read(path: str | Path) -> list[dict]:
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from None
    return rows


def window(rows: list[dict]) -> dict | None:
    """The worker's init snapshot and its last after-profile snapshot (memory_profiling's exit), or None
    when the run never got that far. Both must come from the same process."""
    inits = [r for r in rows if "init_device" in r["callers"]]
    for init in reversed(inits):
        afters = [r for r in rows if r["pid"] == init["pid"] and r["t"] >= init["t"]
                  and "memory_profiling" in r["callers"]]
        if len(afters) >= 2:  # before_profile, after_profile
            after = afters[-1]
            host = (after["MemTotal"] - after["MemAvailable"]) - (init["MemTotal"] - init["MemAvailable"])
            device = after["non_torch_memory"] - init["non_torch_memory"]
            return {"pid": init["pid"], "seconds": round(after["t"] - init["t"], 1),
                    "host_bytes": host, "worker_rss_anon_bytes": after["RssAnon"] - init["RssAnon"],
                    "device_non_torch_bytes": device, "uma_non_torch_bytes": host + device}
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m servegate.memory.uma_probe HOST_PROBE.jsonl", file=sys.stderr)
        return 2
    try:
        found = window(read(args[0]))
    except (OSError, ValueError, KeyError) as exc:
        print(f"{args[0]}: cannot read the host probe: {exc}", file=sys.stderr)
        return 2
    if found is None:
        print(f"{args[0]}: no init snapshot followed by a profile in one process (vLLM stopped earlier)")
        return 1
    gib = 2**30
    print(f"pid {found['pid']}, {found['seconds']} s from init snapshot to after profile: "
          f"host {found['host_bytes'] / gib:.3f} GiB (worker RssAnon {found['worker_rss_anon_bytes'] / gib:+.3f}), "
          f"device non-torch {found['device_non_torch_bytes'] / gib:.3f} GiB, "
          f"UMA non-torch {found['uma_non_torch_bytes'] / gib:.3f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
