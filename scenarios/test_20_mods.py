"""Step 20, mods: every mod applied to the vLLM that will serve (step 50 then checks every flag against the
vLLM as the mods left it, on every runtime)."""

import pytest


def test_mods_applied(mods_applied, recipe, node):
    if not recipe.mods:
        pytest.skip(f"not applicable: recipe {recipe.name} lists no mods")
    outcomes = mods_applied[node.name]
    applied = {o["mod"] for o in outcomes}
    wanted = {m.rstrip("/").rsplit("/", 1)[-1] for m in recipe.mods}
    assert applied == wanted, (
        f"node {node.name}: mods applied {sorted(applied)}, recipe lists {sorted(wanted)}"
    )
    bad = [o for o in outcomes if o["status"] not in ("applied", "already-applied", "ran")]
    assert not bad, f"node {node.name}: mod outcomes {bad}"
