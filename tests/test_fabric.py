"""Fabric preflight (issue 18, item 8): this machine's real interfaces read and checked against the env a
recipe declares; a name no node has, an RDMA device that is absent and a fabric IP on no interface are named.
The timed all-reduce runs for real with torch.distributed (gloo) between two processes on this machine."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from servegate.config.cluster import Node
from servegate.nodes.host import NodeHost
from servegate.steps import fabric


@pytest.fixture(scope="module")
def local():
    return NodeHost(Node("head", "head", "local://", "127.0.0.1"))


@pytest.fixture(scope="module")
def links(local):
    return fabric.read_links(local)


def test_real_interfaces_are_read(links):
    assert "lo" in links.interfaces and links.addresses.get("127.0.0.1") == "lo"


def test_declared_interfaces_that_exist_pass(links):
    report = fabric.check({"head": links}, {"head": {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "^docker"}},
                          {"head": "127.0.0.1"})
    assert report.problems == [] and report.declared == {"GLOO_SOCKET_IFNAME": ["lo"]}


def test_a_missing_interface_and_rdma_device_are_named(links):
    env = {"NCCL_SOCKET_IFNAME": "enp1s0f1np1", "NCCL_IB_HCA": "rocep1s0f1"}
    report = fabric.check({"head": links}, {"head": env}, {"head": "127.0.0.1"})
    assert report.problems[0].startswith("node head: NCCL_SOCKET_IFNAME=enp1s0f1np1 names interface 'enp1s0f1np1', "
                                         "which does not exist there (it has ")
    assert "node head: NCCL_IB_HCA names RDMA device 'rocep1s0f1', absent there" in report.problems[1]
    assert "/dev/infiniband" in report.problems[1]


def test_a_fabric_ip_on_no_interface_is_named(links):
    report = fabric.check({"head": links}, {"head": {}}, {"head": "192.0.2.77"})
    assert report.problems == [f"node head: no interface holds fabric_ip 192.0.2.77 (addresses there: "
                               f"{', '.join(sorted(links.addresses))})"]
    assert "nothing declared to check" in report.notes[0]


def test_allreduce_between_two_real_processes_is_timed(local, vllm_python):
    mib = 4
    commands = {n: fabric.allreduce_command(vllm_python, rank, 2, "127.0.0.1:29541", "lo", mib, iters=3)
                for rank, n in enumerate(("head", "worker"))}
    with ThreadPoolExecutor(2) as pool:
        outputs = dict(zip(commands, pool.map(lambda c: local.run(c, timeout=180), commands.values()), strict=True))
    record, problems = fabric.allreduce_result(outputs, mib, 2, None, 0.1)
    assert problems == [] and record["bus_gbps"] > 0, (record, outputs)
    _, slow = fabric.allreduce_result(outputs, mib, 2, record["bus_gbps"] * 1000, 0.5)
    assert slow and "under 0.5 x the declared link rate" in slow[0]
    print("loopback all-reduce:", record)
