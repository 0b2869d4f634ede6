"""Step 2, mods: every mod applied to the vLLM that will serve; the flags the recipe uses exist after them."""

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


def test_rendered_flags_exist_after_mods(stack, mods_applied, rendered, node):
    if not stack.uses_docker():
        pytest.skip("not applicable: host runtime (the flags scenario checks it against the manifest)")
    manifest = stack.docker.flag_manifest(node.name)
    known = {s for option in manifest["options"] for s in option["option_strings"]}
    used = {
        token.split("=", 1)[0]
        for launch in rendered.launches_for(node.node)
        if launch.role in ("serve", "headless")
        for token in launch.argv
        if token.startswith("--")
    }
    unknown = sorted(used - known)
    assert not unknown, (
        f"node {node.name}: flags {unknown} are not accepted by the vLLM in the container after "
        f"mods {stack.recipe.mods} (vLLM {manifest.get('vllm', {}).get('version')})"
    )
