"""Fabric preflight: the declared interfaces are up on every node, and a small all-reduce crosses them.

Seed 004 lost its 800 GbE data plane because one node's container lacked `--device=/dev/infiniband`; NCCL
fell back to sockets without a word. Before a launch, on every node where vLLM runs:

    interfaces   every interface the env names (NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME, TP_SOCKET_IFNAME,
                 UCX_NET_DEVICES; NCCL_IB_HCA for RDMA devices) exists there, with carrier up
    fabric IP    the node's fabric_ip sits on an interface whose carrier is up
    all-reduce   torch.distributed (gloo) across the nodes over the fabric IPs, timed: the bus rate in Gb/s
                 (ring all-reduce: 2(n-1)/n of the buffer per rank) against the declared link rate
                 (expect.fabric.link_gbps x min_link_fraction)

On the simulated cluster the "fabric" is a docker bridge of veth pairs inside one kernel: the figure
measures memory copies and the CPU time of gloo on a shared machine, not a NIC (sim-2 on a 2-core machine:
about 3.8 Gb/s for 16 MiB), so recipes/local-sim.yaml declares a low rate that only catches a broken path.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

IFNAME_VARS = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME", "UCX_NET_DEVICES")
HCA_VARS = ("NCCL_IB_HCA",)
LINKS = ("for i in /sys/class/net/*; do n=${i##*/}; printf 'net %s %s %s\\n' $n "
         "$(cat $i/operstate 2>/dev/null || echo unknown) $(cat $i/carrier 2>/dev/null || echo -); done; "
         "for i in /sys/class/infiniband/*; do [ -e $i ] && echo ib ${i##*/}; done; "
         "ip -o -4 addr show 2>/dev/null | awk '{print \"addr\", $2, $4}'; [ -d /dev/infiniband ] && echo devib")


@dataclass
class NodeLinks:
    interfaces: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {state, carrier}
    addresses: dict[str, str] = field(default_factory=dict)  # ip -> interface
    hcas: list[str] = field(default_factory=list)
    dev_infiniband: bool = False


@dataclass
class FabricReport:
    nodes: dict[str, dict[str, Any]]
    declared: dict[str, list[str]]  # var -> interfaces it names
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    allreduce: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "declared": self.declared, "problems": self.problems, "notes": self.notes,
                "allreduce": self.allreduce}


def read_links(host) -> NodeLinks:
    out = NodeLinks()
    for line in host.run(LINKS).stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["net"] and len(parts) >= 4:
            out.interfaces[parts[1]] = {"state": parts[2], "carrier": parts[3]}
        elif parts[:1] == ["addr"] and len(parts) >= 3:
            out.addresses[parts[2].split("/")[0]] = parts[1].split("@")[0]
        elif parts[:1] == ["ib"] and len(parts) >= 2:
            out.hcas.append(parts[1])
        elif parts == ["devib"]:
            out.dev_infiniband = True
    return out


def named_interfaces(value: str) -> list[str]:
    """The interface names an NCCL/GLOO/UCX variable lists ('^' excludes and prefixes are not names to check)."""
    value = value.strip()
    if not value or value.startswith("^") or value in ("all", "auto"):
        return []
    names = [v.strip().lstrip("=").split(":")[0] for v in value.split(",")]
    return [n for n in names if n]


def check(links: dict[str, NodeLinks], envs: dict[str, dict[str, str]], fabric_ips: dict[str, str]) -> FabricReport:
    """envs: node -> the env its vLLM gets (recipe env + the node's own)."""
    declared: dict[str, list[str]] = {}
    report = FabricReport({n: {"interfaces": v.interfaces, "addresses": v.addresses, "hcas": v.hcas,
                               "dev_infiniband": v.dev_infiniband} for n, v in links.items()}, declared)
    for node, found in sorted(links.items()):
        env = envs.get(node, {})
        for var in IFNAME_VARS:
            for name in named_interfaces(env.get(var, "")):
                if name not in declared.setdefault(var, []):
                    declared[var].append(name)
                state = found.interfaces.get(name)
                if state is None and var == "UCX_NET_DEVICES" and name in found.hcas:
                    continue
                if state is None:
                    report.problems.append(f"node {node}: {var}={env[var]} names interface {name!r}, which does not "
                                           f"exist there (it has {', '.join(sorted(found.interfaces))})")
                elif state["carrier"] != "1" and name != "lo":
                    report.problems.append(f"node {node}: interface {name} ({var}) has no carrier "
                                           f"(operstate {state['state']}, carrier {state['carrier']})")
        for var in HCA_VARS:
            for name in named_interfaces(env.get(var, "")):
                if name not in found.hcas:
                    report.problems.append(f"node {node}: {var} names RDMA device {name!r}, absent there "
                                           f"(/sys/class/infiniband: {found.hcas or 'none'}; "
                                           f"/dev/infiniband {'present' if found.dev_infiniband else 'MISSING'})")
        _fabric_ip(report, node, found, fabric_ips.get(node))
    if not declared:
        report.notes.append("the env names no NCCL/GLOO/TP/UCX interface: nothing declared to check")
    return report


def _fabric_ip(report: FabricReport, node: str, found: NodeLinks, ip: str | None) -> None:
    if not ip or ip.startswith("127."):
        report.notes.append(f"node {node}: fabric_ip {ip or 'unset'} is loopback; no fabric link to check")
        return
    name = found.addresses.get(ip)
    if name is None:
        report.problems.append(f"node {node}: no interface holds fabric_ip {ip} "
                               f"(addresses there: {', '.join(sorted(found.addresses)) or 'none'})")
    elif found.interfaces.get(name, {}).get("carrier") != "1":
        report.problems.append(f"node {node}: fabric_ip {ip} is on {name}, which has no carrier")


ALLREDUCE = r'''
import json, os, time, torch, torch.distributed as dist
dist.init_process_group("gloo", init_method=f"tcp://{os.environ['SG_MASTER']}", rank=int(os.environ["SG_RANK"]),
                        world_size=int(os.environ["SG_WORLD"]), timeout=__import__("datetime").timedelta(seconds=90))
t = torch.ones(int(os.environ["SG_MIB"]) * 262144, dtype=torch.float32)
dist.all_reduce(t); dist.barrier()
start = time.perf_counter()
for _ in range(int(os.environ["SG_ITERS"])):
    dist.all_reduce(t)
seconds = (time.perf_counter() - start) / int(os.environ["SG_ITERS"])
world, iters = int(os.environ["SG_WORLD"]), int(os.environ["SG_ITERS"])
ok = bool(torch.allclose(t[:4], torch.full((4,), float(world ** (iters + 1)))))
print(json.dumps({"seconds": seconds, "correct": ok}))
dist.destroy_process_group()
'''


def allreduce_command(python: str, rank: int, world: int, master: str, ifname: str | None, mib: int,
                      iters: int = 5) -> str:
    env = {"SG_MASTER": master, "SG_RANK": rank, "SG_WORLD": world, "SG_MIB": mib, "SG_ITERS": iters}
    if ifname:
        env["GLOO_SOCKET_IFNAME"] = ifname
    pairs = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())
    return f"env {pairs} timeout 150 {shlex.quote(python)} -c {shlex.quote(ALLREDUCE)}"


def allreduce_result(outputs: dict[str, Any], mib: int, world: int, link_gbps: float | None,
                     min_fraction: float) -> tuple[dict[str, Any], list[str]]:
    """Bus bandwidth from every rank's timing (ring all-reduce moves 2(n-1)/n of the buffer per rank)."""
    problems, seconds = [], {}
    for node, result in outputs.items():
        try:
            data = json.loads(result.stdout.strip().splitlines()[-1])
            seconds[node] = data["seconds"]
            if not data["correct"]:
                problems.append(f"node {node}: the all-reduce returned wrong values")
        except (ValueError, IndexError, KeyError):
            problems.append(f"node {node}: the all-reduce failed (exit {result.rc}): "
                            f"{(result.stderr or result.stdout).strip()[-300:]}")
    record: dict[str, Any] = {"mib": mib, "world": world, "seconds": seconds}
    if seconds and not problems:
        slowest = max(seconds.values())
        bus_gbps = 8 * (mib * 2**20) * 2 * (world - 1) / world / slowest / 1e9
        record["bus_gbps"] = round(bus_gbps, 3)
        if link_gbps:
            record["link_gbps"], record["floor_gbps"] = link_gbps, round(min_fraction * link_gbps, 3)
            if bus_gbps < min_fraction * link_gbps:
                problems.append(f"all-reduce of {mib} MiB over {world} nodes ran at {bus_gbps:.2f} Gb/s, under "
                                f"{min_fraction:g} x the declared link rate {link_gbps:g} Gb/s (expect.fabric)")
    return record, problems


def preflight(hosts: dict, envs: dict[str, dict[str, str]], fabric_ips: dict[str, str], pythons: dict[str, str],
              head: str, expect: dict | None, parallel) -> FabricReport:
    """The whole step: links read on every node at once, checked, then (two nodes or more) the all-reduce."""
    links = parallel(lambda name: read_links(hosts[name]))
    report = check(links, envs, fabric_ips)
    if len(hosts) < 2:
        report.notes.append("one node: no all-reduce across nodes to time")
        return report
    expect = expect or {}
    mib, names = int(expect.get("allreduce_mib") or 16), [head] + sorted(n for n in hosts if n != head)
    master = f"{fabric_ips[head]}:29531"
    ifname = {n: links[n].addresses.get(fabric_ips[n]) for n in names}
    outputs = parallel(lambda n: hosts[n].run(allreduce_command(pythons[n], names.index(n), len(names), master,
                                                                ifname[n], mib), timeout=180))
    report.allreduce, problems = allreduce_result(outputs, mib, len(names), expect.get("link_gbps"),
                                                  float(expect.get("min_link_fraction") or 0.1))
    report.problems += problems
    return report
