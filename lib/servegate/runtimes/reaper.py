"""Reap what a crashed or killed run left, on every node of a cluster: processes carrying SERVEGATE_RUN_ID,
containers labelled org.servegate.run (with the Ray and vLLM inside them), and on this machine the
simulated nodes and fabric networks labelled org.servegate.sim. Removal is by exact name, never a prune.
"""

from __future__ import annotations

import os
import shlex
import socket

from servegate.config.cluster import Cluster
from servegate.labels import OWNER_LABEL, OWNER_VAR, RUN_ID_VAR, RUN_LABEL, SIM_LABEL, SIM_OWNER_LABEL
from servegate.nodes.container import remove_container
from servegate.nodes.host import NodeHost, NodeUnreachable


def _environ_value(host: NodeHost, pid: int, key: str) -> str | None:
    out = host.run(f"tr '\\0' '\\n' < /proc/{pid}/environ 2>/dev/null | grep ^{shlex.quote(key)}=").stdout
    return out.strip().split("=", 1)[1] if "=" in out else None


def _owner_alive(owner: str | None) -> bool:
    if not owner or ":" not in owner:
        return False
    hostname, _, pid = owner.rpartition(":")
    if hostname != socket.gethostname():
        return True  # another controller's run: never ours to judge
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def leftover_pids(host: NodeHost, run_id: str | None = None) -> list[int]:
    own = {os.getpid()} if host.node.host.startswith("local://") else set()
    return [pid for pid in host.processes_with_env(RUN_ID_VAR, run_id) if pid not in own]


def reap(cluster: Cluster, only_stale: bool = False) -> list[str]:
    report = []
    for node in cluster.nodes:
        host = NodeHost(node)
        groups: dict[int, str] = {}
        live: set[int] = set()  # groups holding a process of a run whose controller is alive
        for pid in leftover_pids(host):
            run_id = _environ_value(host, pid, RUN_ID_VAR)
            pgid = host.run(f"ps -o pgid= -p {pid}").stdout.strip()
            if run_id is None or not pgid.isdigit():
                continue  # exited since listed (a zombie's environ reads empty)
            if only_stale and _owner_alive(_environ_value(host, pid, OWNER_VAR)):
                live.add(int(pgid))
            else:
                groups[int(pgid)] = run_id
        for pgid, run_id in groups.items():
            if pgid in live:
                continue
            gone = host.kill_group(pgid, grace_s=10)
            report.append(f"{node.name}: run {run_id} process group {pgid} {'killed' if gone else 'SURVIVED'}")
        report += reap_containers(host, only_stale)
    if any(node.host.startswith("local://") for node in cluster.nodes):
        report += reap_simulations(only_stale)
    return report or ["nothing to clean"]


def _labelled(host: NodeHost, kind: str, label: str) -> list[tuple[str, dict]]:
    """(name, labels) of every container or network on the node that carries the label."""
    listing = "docker network ls" if kind == "network" else "docker ps -a"
    fmt = ("{{.Name}}" if kind == "network" else "{{.Names}}") + "\t{{.Labels}}"  # labels: k=v,k=v
    out = host.run(f"{listing} --filter label={shlex.quote(label)} --format {shlex.quote(fmt)} 2>/dev/null")
    rows = []
    for line in out.stdout.splitlines():
        name, _, labels = line.partition("\t")
        rows.append((name, dict(item.split("=", 1) for item in labels.split(",") if "=" in item)))
    return rows


def reap_containers(host: NodeHost, only_stale: bool = False) -> list[str]:
    """Remove containers a servegate run labelled on this node (stale ones only, if asked)."""
    try:
        if not host.run("command -v docker >/dev/null").ok:
            return []
        rows = _labelled(host, "container", RUN_LABEL)
    except NodeUnreachable:
        return [f"{host.name}: unreachable, containers not checked"]
    report = []
    for name, labels in rows:
        if only_stale and _owner_alive(labels.get(OWNER_LABEL)):
            continue
        gone = remove_container(host, name)
        report.append(f"{host.name}: run {labels.get(RUN_LABEL, '?')} container {name} "
                      f"{'removed' if gone else 'SURVIVED'}")
    return report


def reap_simulations(only_stale: bool = False) -> list[str]:
    """Remove simulated nodes (their engines, Ray and vLLM go with them) and fabric networks here."""
    host = NodeHost(_local_node())
    if not host.run("command -v docker >/dev/null && docker info >/dev/null 2>&1").ok:
        return []
    report = []
    for name, labels in _labelled(host, "container", SIM_LABEL):
        if only_stale and (_owner_alive(labels.get(SIM_OWNER_LABEL)) or _sim_node_in_use(host, name)):
            continue
        gone = remove_container(host, name)
        report.append(f"simulated node {name} ({labels.get(SIM_LABEL)}) {'removed' if gone else 'SURVIVED'}")
    for name, labels in _labelled(host, "network", SIM_LABEL):
        if host.run(f"docker network rm {shlex.quote(name)} >/dev/null 2>&1").ok:
            report.append(f"fabric network {name} ({labels.get(SIM_LABEL)}) removed")
    return report


def _sim_node_in_use(host: NodeHost, container: str) -> bool:
    """A live run's containers inside the simulated node: the node is borrowed, not stale."""
    fmt = f'{{{{.Label "{OWNER_LABEL}"}}}}'
    out = host.run(f"docker exec {shlex.quote(container)} docker ps --filter label={RUN_LABEL} "
                   f"--format {shlex.quote(fmt)} 2>/dev/null").stdout
    return any(_owner_alive(owner) for owner in out.split())


def _local_node():
    from servegate.config.cluster import Node
    return Node(name="this-machine", role="head", host="local://", fabric_ip="127.0.0.1")
