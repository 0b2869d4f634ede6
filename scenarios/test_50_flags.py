"""Step 5, flags: every vLLM launch of the rendered recipe is accepted by the vLLM its node will run.

The manifest is extracted on the node from its own environment after the recipe's mods (a mod can
add a flag or a parser) and cached per environment and mod set. Docker nodes: extracted inside the node's
container (the vLLM that will run), cached by image ID. Which node and image it came from is reported
(progress line, run.json, junit property). Nothing is launched here.
`mods_applied` is the shared fixture of fixtures/multinode.py (stack.apply_mods, once per recipe).
"""

import pytest

from servegate.errors import ServegateError
from servegate.flags.node import deploy_manifest, origin_line
from servegate.flags.prelaunch import check_launches


def test_flags_accepted(node, stack, environments, mods_applied, rendered, record_property):
    if not rendered.launches_for(node.node):
        pytest.skip(f"not applicable: node {node.name} runs no launch of {stack.recipe.name}")
    try:
        with stack.phase("flags", node=node.name):
            manifest, origin = deploy_manifest(stack, node)
            result = check_launches(rendered, node.name, manifest)
    except ServegateError as exc:
        pytest.fail(f"node {node.name}: no flag manifest for {stack.recipe.name}: {exc}", pytrace=False)
    origin_text = origin_line(origin)
    record_property("flag_manifest", origin_text)
    stack.progress("flags", origin_text, node=node.name)
    for launch in rendered.launches_for(node.node):
        stack.run.redact.learn_argv(launch.argv)
        stack.run.redact.learn_env(launch.env)
    stack.run.update("flags", node.name, {**origin, **result.record()})
    for warning in result.warnings:
        stack.progress("flags", f"warning: {warning}", node=node.name)
    if result.errors:
        pytest.fail(f"{result.failure_message()}\n({origin_text})", pytrace=False)
