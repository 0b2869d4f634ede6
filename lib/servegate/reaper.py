"""Reap what a crashed or killed run left: processes carrying SERVEGATE_RUN_ID, on every node of a cluster."""

from __future__ import annotations

import os
import shlex
import socket

from servegate.cluster import Cluster
from servegate.nodes import NodeHost
from servegate.server import OWNER_VAR, RUN_ID_VAR


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
        for pid in leftover_pids(host):
            if only_stale and _owner_alive(_environ_value(host, pid, OWNER_VAR)):
                continue
            pgid = host.run(f"ps -o pgid= -p {pid}").stdout.strip()
            if pgid.isdigit():
                groups[int(pgid)] = _environ_value(host, pid, RUN_ID_VAR) or "?"
        for pgid, run_id in groups.items():
            gone = host.kill_group(pgid, grace_s=10)
            report.append(f"{node.name}: run {run_id} process group {pgid} {'killed' if gone else 'SURVIVED'}")
    return report or ["nothing to clean"]
