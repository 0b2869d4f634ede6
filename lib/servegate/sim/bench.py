"""Benchmark: how long servegate's per-node checks take on 1, 2, 4 and 8 simulated nodes (not vLLM time).

    python -m servegate.sim.bench [--nodes 1 2 4 8] [--repeat 3] [--keep]

Per node size it brings up a simulation (each node a container with its own docker engine and fabric IP),
gives every node a small image, a running container with an env and a model folder (setup, not timed),
then times the checks a deployment runs on every node, in parallel as Stack.on_nodes runs them: reach the
node, disk, serve port, image ID, env probe inside the container, model folder manifest. Target: 8 nodes
within 2x one node. Prints a table and writes JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from servegate.containers import ContainerPlan, remove_container, start_container
from servegate.envcheck import missing_vars
from servegate.images import local_image_id, node_image_id, sync_image
from servegate.nodes import NodeHost
from servegate.sim.base import BASE_IMAGE, ensure_base_image
from servegate.sim.cluster import make_cluster, sim_down, sim_up
from servegate.weights import manifest

ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "GLOO_SOCKET_IFNAME": "eth0", "NCCL_SOCKET_IFNAME": "eth0"}
MODEL_DIR = "/root/.cache/servegate/bench-model"
PORT = 18490


def node_checks(host: NodeHost, inside: NodeHost) -> None:
    """One node's checks, as the scenarios run them (each raises or asserts on a real failure)."""
    host.ping()
    assert host.run(f"df -Pk {MODEL_DIR} | tail -1").ok
    assert not host.run(f"ss -Htln 'sport = :{PORT}'").stdout.strip()
    assert node_image_id(host, BASE_IMAGE)
    assert missing_vars(inside, ENV) == []
    assert manifest(host, MODEL_DIR) is not None


def setup(count: int, log) -> tuple[object, dict[str, NodeHost], dict[str, NodeHost], float]:
    cluster, sim = make_cluster(count, f"servegate-bench{count}", subnet=f"172.31.{220 + count}.0/24")
    sim_up(sim, log=log)
    hosts = {node.name: NodeHost(node) for node in cluster.nodes}
    started = time.monotonic()
    sync_image(
        BASE_IMAGE,
        hosts,
        cluster.head.name,
        Path("/tmp/servegate-bench-images"),
        controller_id=local_image_id(BASE_IMAGE),
        log=log,
    )
    distribute_s = time.monotonic() - started

    def prepare(name: str) -> NodeHost:
        host = hosts[name]
        host.check(
            f"mkdir -p {MODEL_DIR} && head -c 2000000 /dev/zero > {MODEL_DIR}/model.safetensors && "
            f"echo '{{}}' > {MODEL_DIR}/config.json",
            "writing a model folder",
        )
        plan = ContainerPlan(host.node, BASE_IMAGE, f"servegate-bench-{name}", "bench", dict(ENV))
        return start_container(host, plan)

    with ThreadPoolExecutor(max_workers=count) as pool:
        inside = dict(zip(hosts, pool.map(prepare, hosts), strict=True))
    return sim, hosts, inside, distribute_s


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of this machine: every simulated node's work runs on these same cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def time_checks(
    hosts: dict[str, NodeHost], inside: dict[str, NodeHost], repeat: int, sequential: bool = False
) -> tuple[list[float], float]:
    """Wall time of each round of checks on every node in parallel, and how busy the CPUs were meanwhile."""
    times = []
    busy0, total0 = cpu_busy()
    for _ in range(repeat):
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=1 if sequential else len(hosts)) as pool:
            list(pool.map(lambda name: node_checks(hosts[name], inside[name]), hosts))
        times.append(time.monotonic() - started)
    busy1, total1 = cpu_busy()
    return times, (busy1 - busy0) / max(1, total1 - total0)


def bench(sizes: list[int], repeat: int, keep: bool, log, sequential: bool = False) -> list[dict]:
    ensure_base_image(log=log)
    rows = []
    for count in sizes:
        sim, hosts, inside, distribute_s = setup(count, log)
        try:
            times, busy = time_checks(hosts, inside, repeat, sequential)
        finally:
            for name, host in hosts.items():
                remove_container(host, f"servegate-bench-{name}")
            if not keep:
                sim_down(sim, volumes=True, log=log)
        rows.append(
            {
                "nodes": count,
                "check_s_median": round(statistics.median(times), 3),
                "check_s_all": [round(t, 3) for t in times],
                "cpu_busy": round(busy, 2),
                "cpus": os.cpu_count(),
                "image_distribution_s": round(distribute_s, 1),
            }
        )
        log(f"{count} node(s): checks {rows[-1]['check_s_median']} s (median of {repeat})")
    base = rows[0]["check_s_median"] if rows else 1.0
    for row in rows:
        row["vs_first"] = round(row["check_s_median"] / base, 2)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m servegate.sim.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the simulations up (faster reruns)")
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--sequential", action="store_true", help="one node after another, for comparison")
    args = parser.parse_args(argv)
    log = lambda m: print(f"bench: {m}", file=sys.stderr)  # noqa: E731
    rows = bench(args.nodes, args.repeat, args.keep, log, args.sequential)
    print(f"{'nodes':>5} {'checks s':>9} {'x 1 node':>9} {'CPU busy':>9} {'image to nodes s':>17}")
    for row in rows:
        print(
            f"{row['nodes']:>5} {row['check_s_median']:>9.2f} {row['vs_first']:>9.2f} "
            f"{row['cpu_busy']:>8.0%} {row['image_distribution_s']:>17.1f}"
        )
    worst = rows[-1]["vs_first"] if rows else 0
    print(
        f"target: {rows[-1]['nodes'] if rows else '?'} nodes within 2x one node -> "
        f"{'met' if worst <= 2 else 'NOT met'} ({worst}x)"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
