"""Step 0, preflight: every node answers, its software is known, the port is free, the disk has room."""

import shlex

import pytest

from servegate.errors import NodeError


def test_node_reachable(node, stack):
    seconds = node.ping()
    stack.run.update("nodes", node.name, {**stack.run.data["nodes"].get(node.name, {}),
                                          "ping_s": round(seconds, 3)})


def test_recipe_fits_cluster(recipe, cluster):
    nodes = len(cluster.nodes)
    assert not (recipe.cluster_only and nodes == 1), \
        f"{recipe.path}: cluster_only recipe on the single-node cluster {cluster.name}"
    assert not (recipe.solo_only and nodes > 1), \
        f"{recipe.path}: solo_only recipe on the {nodes}-node cluster {cluster.name}"
    assert recipe.expect.nodes == nodes, \
        f"{recipe.path}: expect.nodes is {recipe.expect.nodes} but cluster {cluster.name} has {nodes} node(s)"


def test_versions_recorded(node, environments, stack):
    versions = environments[node.name].versions
    assert versions.get("vllm"), f"node {node.name}: vLLM is not installed in {environments[node.name].python}"
    assert versions.get("torch"), f"node {node.name}: torch is not installed"
    assert stack.run.data["nodes"][node.name]["versions"] == versions


def test_serve_port_free(node, rendered):
    if not any(launch.role == "serve" for launch in rendered.launches_for(node.node)):
        pytest.skip(f"not applicable: node {node.name} runs no API server")
    port = rendered.port
    listeners = node.run(f"ss -Htln 'sport = :{port}'").stdout.strip()
    assert not listeners, f"node {node.name}: port {port} is already in use:\n{listeners}"


def test_disk_for_model(node, recipe):
    workdir = node.home_path(node.node.workdir)
    node.run(f"mkdir -p {shlex.quote(workdir)}")
    result = node.run(f"df -Pk {shlex.quote(workdir)} | tail -1")
    if not result.ok:
        raise NodeError(f"df failed on {workdir}: {result.stderr}")
    free_gib = int(result.stdout.split()[3]) / 2**20
    floor = recipe.expect.min_free_disk_gib
    assert free_gib >= floor, f"node {node.name}: {free_gib:.1f} GiB free at {workdir}, recipe needs {floor} GiB"
