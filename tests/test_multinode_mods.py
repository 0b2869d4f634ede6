"""Mods inside the containers: a flag that a mod adds is in the flag manifest extracted there after the mods,
and absent without the mod; the manifest comes from the node's container and is cached by image ID. On the
simulated cluster, with the real image."""

from __future__ import annotations

import pytest
from multinode_support import new_stack, recipe_variant, simulation

from servegate.flags.node import image_cache_path, image_manifest, mods_digest, origin_line

pytestmark = [pytest.mark.slow, pytest.mark.multinode, pytest.mark.container]
PROBE_FLAG = "--servegate-mod-probe"


@pytest.fixture(scope="module")
def sim():
    """sim-2 for this module alone, up with the image built (see multinode_support.simulation)."""
    with simulation() as running:
        yield running


def options(manifest: dict) -> set[str]:
    return {s for option in manifest["options"] for s in option["option_strings"]}


@pytest.mark.parametrize("with_mod", [True, False], ids=["with-probe-mod", "without"])
def test_flag_added_by_a_mod_reaches_the_manifest(sim, tmp_path, with_mod):
    mods = ["mods/vllm-cpu-console-script"] + (["mods/test-probe-flag"] if with_mod else [])
    stack = new_stack(tmp_path, recipe_variant(tmp_path, f"local-sim-mods-{with_mod}", mods=mods))
    try:
        outcomes = stack.apply_mods()
        assert {o["mod"] for o in outcomes["sim-w1"]} == {m.split("/")[-1] for m in mods}
        manifest = stack.runtime.flag_manifest("sim-w1", refresh=True).manifest
        assert "--served-model-name" in options(manifest)
        assert (PROBE_FLAG in options(manifest)) is with_mod, (
            f"{PROBE_FLAG} {'missing from' if with_mod else 'present in'} the manifest extracted after {mods}"
        )
    finally:
        assert stack.close() == []


def test_manifest_comes_from_the_node_container_and_is_cached_by_image_id(sim, tmp_path):
    """Docker nodes: extract.py runs in each node's container (the vLLM that serves, not this machine's), and
    a node holding the same image ID reuses the head's extraction; the record names node, image and origin."""
    stack = new_stack(tmp_path)
    cache = tmp_path / "flag-cache"
    try:
        stack.apply_mods()
        envs, containers = stack.environments(), stack.runtime.containers
        image = stack.runtime.plans["sim-head"].image

        def found(name: str):
            return image_manifest(containers[name], image, envs[name].python, stack.recipe.mods,
                                  stack.recipe.path.parent, cache_dir=cache)

        head, worker = found("sim-head"), found("sim-w1")
        report = stack.runtime.image_report
        assert not head.cached and worker.cached
        assert head.image["id"] == worker.image["id"] == report.nodes["sim-w1"]["id"]
        assert worker.image == {"tag": image, "id": head.image["id"], "container": containers["sim-w1"].container,
                                "extracted_on": "sim-head"}
        assert head.manifest["vllm"]["version"] == report.nodes["sim-head"]["versions"]["vllm"]
        assert head.manifest["python"]["executable"] == envs["sim-head"].python  # the container's interpreter
        line = origin_line(worker.record())
        assert f"image {image}" in line and "on node sim-w1" in line and "extracted on node sim-head" in line
        other = image_cache_path("sha256:" + "0" * 64, mods_digest(stack.recipe.mods, stack.recipe.path.parent),
                                 cache)
        assert other != head.path  # another image is extracted again
    finally:
        assert stack.close() == []
