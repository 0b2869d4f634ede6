"""Reap what a crashed or killed run left, on every node of a cluster: processes carrying SERVEGATE_RUN_ID,
containers labelled org.servegate.run (with the Ray and vLLM inside them), env files left under the node's
`<workdir>/runs/<id>/` (they may hold secrets), and on this machine the simulated nodes and fabric networks
labelled org.servegate.sim. Removal is by exact name, never a prune. `mark_killed_runs` then marks the
run.json of a run whose owner died while it was `running` as `killed`.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import time
from pathlib import Path

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


owner_alive = _owner_alive  # public: "host:pid" of a live process here (another host's: assumed alive)


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
        report += reap_env_files(host, only_stale)
    if any(node.host.startswith("local://") for node in cluster.nodes):
        report += reap_simulations(only_stale)
    return report or ["nothing to clean"]


ENV_FILE_GRACE_S = 120  # an env file without an owner line (docker --env-file) lives a few seconds at most


def reap_env_files(host: NodeHost, only_stale: bool = False) -> list[str]:
    """Remove what runs left under the node's `<workdir>/runs/<id>/` (env files may hold secrets, raw logs hold
    vLLM's args). A folder with an `owner` file (host:pid) goes when that owner is gone; elsewhere each `*.env`
    file is judged alone: its SERVEGATE_OWNER line, else its age and whether a process of its run lives."""
    runs = f"{host.home_path(host.node.workdir)}/runs"
    try:
        listing = host.run(f"for d in {shlex.quote(runs)}/*/; do [ -d \"$d\" ] || continue; "
                           f"printf 'DIR %s %s\\n' \"$d\" \"$(cat \"$d/owner\" 2>/dev/null)\"; done; "
                           f"find {shlex.quote(runs)} -mindepth 2 -maxdepth 2 -name '*.env' -type f "
                           f"-printf 'ENV %T@ %p\\n' 2>/dev/null; true").stdout
    except NodeUnreachable:
        return [f"{host.name}: unreachable, env files not checked"]
    report, owned = [], set()
    for line in listing.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "DIR":
            folder, _, owner = rest.partition(" ")
            if owner.strip():
                owned.add(folder.rstrip("/"))
                if not (only_stale and owner_alive(owner.strip().split()[0])):
                    gone = host.run(f"rm -rf {shlex.quote(folder)} && test ! -e {shlex.quote(folder)}").ok
                    report.append(f"{host.name}: run folder {folder} {'removed' if gone else 'SURVIVED'}")
            continue
        stamp, _, path = rest.partition(" ")
        run_id = Path(path).parent.name
        if str(Path(path).parent) in owned or (only_stale and _env_file_live(host, path, run_id, float(stamp or 0))):
            continue
        gone = host.run(f"rm -f {shlex.quote(path)} && test ! -e {shlex.quote(path)}").ok
        report.append(f"{host.name}: run {run_id} env file {path} {'removed' if gone else 'SURVIVED'}")
    return report


def _env_file_live(host: NodeHost, path: str, run_id: str, mtime: float) -> bool:
    owner = host.run(f"grep -o '^export {OWNER_VAR}=.*' {shlex.quote(path)} 2>/dev/null").stdout.strip()
    if owner:
        return _owner_alive(owner.split("=", 1)[1].strip("'\""))
    young = time.time() - mtime < ENV_FILE_GRACE_S
    return young or bool(host.processes_with_env(RUN_ID_VAR, run_id))


def mark_killed_runs(roots: list[Path]) -> list[str]:
    """run.json files still `running` whose owner process is gone (SIGKILL, power loss): mark them `killed`,
    with the time this was found. A run.json without an owner (older runs) is left as it is."""
    report = []
    for root in roots:
        for path in sorted(Path(root).glob("*/run.json")) if Path(root).is_dir() else []:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            owner = (data.get("suite") or {}).get("owner")
            if data.get("verdict") != "running" or not owner or _owner_alive(owner):
                continue
            data["verdict"] = "killed"
            data.setdefault("finished_utc", time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()))
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            tmp.replace(path)
            report.append(f"run {path.parent}: owner {owner} is gone, verdict marked killed")
    return report


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
