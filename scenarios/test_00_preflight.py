"""Step 00, preflight: every node answers, its software is known, the port is free, the disk has room."""

import pytest

from servegate.config.recipe import check_command_text
from servegate.errors import NodeError, RecipeError


def test_node_reachable(node, stack):
    seconds = node.ping()
    stack.run.update("nodes", node.name, {**stack.run.data["nodes"].get(node.name, {}),
                                          "ping_s": round(seconds, 3)})


def test_recipe_fits_cluster(recipe, cluster):
    try:  # bash would end the command early at a blank line after a `\` (issue 16 item 7)
        check_command_text(recipe)
    except RecipeError as exc:
        pytest.fail(str(exc), pytrace=False)
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


def test_serve_port_free(node, rendered, preflight):
    if not any(launch.role == "serve" for launch in rendered.launches_for(node.node)):
        pytest.skip(f"not applicable: node {node.name} runs no API server")
    found = preflight[node.name]
    assert not found.listeners, f"node {node.name}: port {rendered.port} is already in use:\n{found.listeners}"
    assert not [p for p in found.problems if "did not answer" in p or "ss failed" in p], found.problems


def test_disk_for_model(node, recipe, preflight):
    found = preflight[node.name]
    if found.free_gib is None:
        raise NodeError(f"node {node.name}: free disk unknown: {found.problems}")
    floor = recipe.expect.min_free_disk_gib
    assert found.free_gib >= floor, \
        f"node {node.name}: {found.free_gib:.1f} GiB free at {node.node.workdir}, recipe needs {floor} GiB"
