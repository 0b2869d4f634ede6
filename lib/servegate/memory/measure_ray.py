"""Measure what Ray's daemons hold on a node: start a head with the Python that runs this, sum the RSS
of every process under its temp dir, stop it. The planner's RAY_DAEMONS_BYTES (memory/terms.py) is this
figure.

    python -m servegate.memory.measure_ray        (with the vLLM env's python: it needs ray)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from servegate.waits import wait_until


def _rss_under(marker: str) -> list[tuple[str, int]]:
    rows = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            if not any(marker.encode() in part for part in argv):
                continue
            with open(f"/proc/{pid}/status") as handle:
                kib = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
        except (OSError, StopIteration, ValueError):
            continue
        rows.append((os.path.basename(argv[0].decode(errors="replace")), kib * 1024))
    return rows


def main() -> int:
    temp = tempfile.mkdtemp(prefix="sg-rayrss-")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    started = subprocess.run(
        ray + ["start", "--head", "--port", "0", "--num-cpus", "1", "--temp-dir", temp,
               "--include-dashboard", "false", "--disable-usage-stats"],
        env=env, capture_output=True, text=True,
    )
    try:
        if started.returncode != 0:
            print(json.dumps({"error": started.stderr[-2000:]}))
            return 1
        # settle: the agents start after the raylet; take the figure once the process count is stable
        counts: list[int] = []

        def settled() -> tuple[bool, str]:
            counts.append(len(_rss_under(temp)))
            return len(counts) >= 3 and counts[-3:] == [counts[-1]] * 3, f"{counts[-1]} processes"

        wait_until("Ray daemons settle", settled, timeout_s=60, poll_s=2)
        rows = _rss_under(temp)
    finally:
        subprocess.run(ray + ["stop", "--force"], env=env, capture_output=True)
    import ray as ray_module

    print(json.dumps({"ray": ray_module.__version__, "processes": sorted(rows, key=lambda r: -r[1]),
                      "total_rss": sum(r for _, r in rows)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
