"""Benchmark: how long servegate's per-node checks take on 1, 2, 4 and 8 simulated nodes (not vLLM time).

    python -m servegate.sim.bench [--nodes 1 2 4 8] [--repeat 3] [--keep]

Per node size it brings up a simulation (each node a container with its own docker engine and fabric IP),
gives every node a small image, a running container with an env and a model folder (setup, not timed),
then times the checks a deployment runs on every node (servegate.steps.preflight: one batched round trip per node,
every node in parallel): reach the node, disk, serve port, the image and start env of its container, model
folder manifest. Each size is timed twice: cold (a new `docker exec` per node per round) and over a session
per node (one long-lived shell each, opened first and timed apart as the connection, like SSH's
ControlMaster). Target: 8 nodes within 2x one node.

Every simulated node runs on this machine's cores, so with the cores shared N nodes cannot finish faster than
N x CPU per node / cores (the CPU floor, in the table), whatever the scheduling: on 2 cores that alone puts 8
nodes at 4x one node. Real nodes each bring their own CPUs. So each size is also timed with every node
container held to its own equal CPU share (`docker update --cpus`, default cores / largest size: 0.25 of a
core each here), the same share for 1 node as for 8: what a node does then costs the same wall time at any
size, and what grows with N is servegate's own fan-out (threads, pipes, the host engine relaying each exec),
which is what the target is about. The headline is that pass; the shared-core figures stay in the table.
Prints a table and writes JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from servegate.nodes.container import ContainerPlan, remove_container, start_container
from servegate.nodes.host import NodeHost, sessions
from servegate.runtimes.images import local_image_id, sync_image
from servegate.sim.base import BASE_IMAGE, ensure_base_image
from servegate.sim.cluster import make_cluster, sim_down, sim_up
from servegate.steps.preflight import NodeCheck, check_node

ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "GLOO_SOCKET_IFNAME": "eth0", "NCCL_SOCKET_IFNAME": "eth0"}
MODEL_DIR = "/root/.cache/servegate/bench-model"
PORT = 18490


def node_check(name: str, image_id: str) -> NodeCheck:
    return NodeCheck(MODEL_DIR, port=PORT, container=container(name), image_id=image_id, env=dict(ENV),
                     model_path=MODEL_DIR)


def container(name: str) -> str:
    return f"servegate-bench-{name}"


def node_checks(host: NodeHost, check: NodeCheck) -> None:
    """One node's checks; a real problem (port taken, env missing, folder absent) stops the benchmark."""
    problems = check_node(host, check).problems
    if problems:
        raise RuntimeError("node checks failed:\n" + "\n".join(problems))


def setup(count: int, log) -> tuple[object, dict[str, NodeHost], float]:
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
        plan = ContainerPlan(host.node, BASE_IMAGE, container(name), "bench", dict(ENV))
        return start_container(host, plan)

    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(prepare, hosts))
    return sim, hosts, distribute_s


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of this machine: every simulated node's work runs on these same cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def time_checks(hosts: dict[str, NodeHost], image_id: str, repeat: int, sequential: bool = False) -> dict:
    """Wall time of each round of checks on every node in parallel, how busy the CPUs were meanwhile, and
    the CPU one node's checks cost."""
    checks = {name: node_check(name, image_id) for name in hosts}
    times = []
    busy0, total0 = cpu_busy()
    for _ in range(repeat):
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=1 if sequential else len(hosts)) as pool:
            list(pool.map(lambda name: node_checks(hosts[name], checks[name]), hosts))
        times.append(time.monotonic() - started)
    busy1, total1 = cpu_busy()
    # machine-wide CPU time (all cores) while the checks ran: every simulated node's work runs on this machine
    cpu_per_node = (busy1 - busy0) / os.sysconf("SC_CLK_TCK") / (repeat * len(hosts))
    return {"times": times, "busy": (busy1 - busy0) / max(1, total1 - total0), "cpu_per_node": cpu_per_node}


CFS_PERIOD_US = 10_000  # a short accounting period: with docker's 100 ms a round's time moves in 100 ms steps


def cpu_share(sim, cpus: float) -> None:
    """Hold every node container to `cpus` cores (0: no limit)."""
    quota = str(int(cpus * CFS_PERIOD_US)) if cpus else "-1"
    for node in sim.nodes:
        subprocess.run(["docker", "update", "--cpu-period", str(CFS_PERIOD_US), "--cpu-quota", quota,
                        node.container], check=True, capture_output=True)


def bench(sizes: list[int], repeat: int, keep: bool, log, sequential: bool = False,
          node_cpus: float | None = None) -> list[dict]:
    ensure_base_image(log=log)
    share = node_cpus if node_cpus is not None else round((os.cpu_count() or 1) / max(sizes), 3)
    rows = []
    for count in sizes:
        sim, hosts, distribute_s = setup(count, log)
        try:
            image_id = local_image_id(BASE_IMAGE)
            cold = time_checks(hosts, image_id, repeat, sequential)  # a new docker exec per node per round
            started = time.monotonic()
            with sessions(hosts):  # one long-lived shell per node, like an SSH ControlMaster
                connect_s = time.monotonic() - started
                timed = time_checks(hosts, image_id, repeat, sequential)
                cpu_share(sim, share)
                try:
                    shared = timed
                    timed = time_checks(hosts, image_id, repeat, sequential)
                finally:
                    cpu_share(sim, 0)
        finally:
            for name, host in hosts.items():
                remove_container(host, container(name))
            if not keep:
                sim_down(sim, volumes=True, log=log)
        times = timed["times"]
        rows.append(
            {
                "nodes": count,
                "node_cpus": share,
                "check_s_median": round(statistics.median(times), 3),
                "check_s_all": [round(t, 3) for t in times],
                "shared_check_s_median": round(statistics.median(shared["times"]), 3),
                "shared_check_s_all": [round(t, 3) for t in shared["times"]],
                "session_connect_s": round(connect_s, 3),
                "cold_check_s_median": round(statistics.median(cold["times"]), 3),
                "cold_cpu_s_per_node": round(cold["cpu_per_node"], 3),
                "cpu_busy": round(shared["busy"], 2),
                "cpus": os.cpu_count(),
                "cpu_s_per_node": round(shared["cpu_per_node"], 3),
                "cpu_floor_s": round(count * shared["cpu_per_node"] / (os.cpu_count() or 1), 3),
                "image_distribution_s": round(distribute_s, 1),
            }
        )
        log(f"{count} node(s): checks {rows[-1]['check_s_median']} s (median of {repeat})")
    for key, ratio in (("check_s_median", "vs_first"), ("shared_check_s_median", "shared_vs_first")):
        base = rows[0][key] if rows else 1.0
        for row in rows:
            row[ratio] = round(row[key] / base, 2)
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
    parser.add_argument("--node-cpus", type=float, help="each node's CPU share (default: cores / largest size)")
    args = parser.parse_args(argv)
    log = lambda m: print(f"bench: {m}", file=sys.stderr)  # noqa: E731
    rows = bench(args.nodes, args.repeat, args.keep, log, args.sequential, args.node_cpus)
    share = rows[0]["node_cpus"] if rows else 0
    print(f"{'':>5} {f'own share ({share} cores)':>20} | {'shared cores':>20} |")
    print(f"{'nodes':>5} {'checks s':>9} {'x 1 node':>10} | {'checks s':>9} {'x 1 node':>10} | {'CPU busy':>9} "
          f"{'CPU s/node':>11} {'CPU floor s':>12} {'connect s':>10} {'cold checks s':>14} {'image to nodes s':>17}")
    for row in rows:
        print(
            f"{row['nodes']:>5} {row['check_s_median']:>9.3f} {row['vs_first']:>10.2f} | "
            f"{row['shared_check_s_median']:>9.3f} {row['shared_vs_first']:>10.2f} | "
            f"{row['cpu_busy']:>8.0%} {row['cpu_s_per_node']:>11.3f} {row['cpu_floor_s']:>12.3f} "
            f"{row['session_connect_s']:>10.2f} {row['cold_check_s_median']:>14.2f} "
            f"{row['image_distribution_s']:>17.1f}"
        )
    print(f"checks s: over a session per node (connect s, paid once per run, not in it), every node held to "
          f"{share} cores (own share) or all on this machine's cores (shared); cold: a new docker exec per node "
          "per round, shared cores")
    print(f"CPU floor = nodes x CPU s/node / {os.cpu_count()} cores: with shared cores no scheduling makes a "
          "round faster while every node's checks run on this machine's cores")
    worst = rows[-1]["vs_first"] if rows else 0
    print(
        f"target: {rows[-1]['nodes'] if rows else '?'} nodes within 2x one node, each node on its own CPU share "
        f"-> {'met' if worst <= 2 else 'NOT met'} ({worst}x; shared cores: "
        f"{rows[-1]['shared_vs_first'] if rows else 0}x)"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
