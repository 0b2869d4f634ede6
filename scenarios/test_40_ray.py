"""Step 40, Ray: one head on the head's fabric IP, every node joined, resources as the nodes have them."""

import pytest

from servegate.steps.ray import node_on


def test_ray_node_count(ray_cluster, cluster):
    alive = [n for n in ray_cluster.nodes() if n.alive]
    assert len(alive) == len(cluster.nodes), (
        f"Ray at {ray_cluster.address} has {len(alive)} alive node(s) ({[n.ip for n in alive]}), "
        f"cluster {cluster.name} has {len(cluster.nodes)}"
    )


def test_ray_node_on_fabric_ip_with_resources(ray_cluster, node):
    ray_nodes = ray_cluster.nodes()
    joined = node_on(ray_nodes, node.node.fabric_ip)
    assert joined, (
        f"node {node.name}: no alive Ray node on fabric IP {node.node.fabric_ip}; "
        f"Ray has {sorted(n.ip for n in ray_nodes if n.alive)}"
    )
    if node.node.gpus:
        assert joined.resources.get("GPU") == node.node.gpus, (
            f"node {node.name}: Ray sees {joined.resources.get('GPU')} GPU(s), "
            f"the cluster file says {node.node.gpus}"
        )
    else:
        cpus = int(ray_cluster.hosts[node.name].check("nproc", "counting CPUs").stdout.strip())
        assert joined.resources.get("CPU") == cpus, (
            f"node {node.name}: Ray sees {joined.resources.get('CPU')} CPU(s), the node has {cpus}"
        )
        if "GPU" in joined.resources:
            pytest.fail(
                f"node {node.name}: Ray reports GPUs {joined.resources['GPU']} on a node without GPUs"
            )
