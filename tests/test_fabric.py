"""Fabric preflight (issue 18, item 8): this machine's real interfaces read and checked against the env a
recipe declares; a name no node has, an RDMA device that is absent and a fabric IP on no interface are named.
The timed all-reduce runs for real with torch.distributed (gloo) between two processes on this machine, and on
the simulated 2-node cluster across its fabric, where one node is given a missing interface and a link without
carrier."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from multinode_support import census, cluster_variant, new_stack, simulation

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


@pytest.mark.slow
@pytest.mark.multinode
@pytest.mark.container
def test_on_the_sim_a_missing_interface_and_a_link_without_carrier_are_named(tmp_path):
    """sim-w1 declares TP_SOCKET_IFNAME=eth7 (absent there) and NCCL_SOCKET_IFNAME=sgv0, a veth end set up whose
    peer is down (no carrier); the all-reduce still crosses the real fabric and meets local-sim's declared rate."""
    worker = "sim-w1"
    with simulation() as sim:
        before = census(sim)
        cluster = cluster_variant(tmp_path, {worker: {"NCCL_SOCKET_IFNAME": "sgv0", "TP_SOCKET_IFNAME": "eth7"}})
        stack = new_stack(tmp_path, cluster=cluster)
        node = stack.hosts[worker]  # the node itself: the vLLM container shares its network (--network host)
        try:
            node.check("ip link add sgv0 type veth peer name sgv1 && ip link set sgv0 up", "adding a veth pair")
            report = stack.fabric()
        finally:
            node.run("ip link del sgv0 2>/dev/null")
            assert stack.close() == []
        assert census(sim) == before
    assert len(report.problems) == 2, report.problems
    assert report.problems[0].startswith(f"node {worker}: interface sgv0 (NCCL_SOCKET_IFNAME) has no carrier "
                                         "(operstate "), report.problems
    assert report.problems[1].startswith(f"node {worker}: TP_SOCKET_IFNAME=eth7 names interface 'eth7', which "
                                         "does not exist there (it has eth0, lo, sgv0, sgv1)"), report.problems
    reduce = report.allreduce
    assert reduce["world"] == 2 and reduce["floor_gbps"] == 0.2 and reduce["bus_gbps"] > 0.2, reduce
    print("sim all-reduce:", reduce)
