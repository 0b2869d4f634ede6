"""Step 50, flags: every vLLM launch of the rendered recipe is accepted by the vLLM its node will run.

The manifest is extracted on the node from its own environment after the recipe's mods (a mod can
add a flag or a parser) and cached per environment and mod set. Docker nodes: extracted inside the node's
container (the vLLM that will run), cached by image ID. Which node and image it came from is reported
(progress line, run.json, junit property). Nothing is launched here; the launch itself asks the same step
(Stack.flags), so a run of any subset of scenarios refuses to launch on these errors too.
"""

import pytest

from servegate.flags.node import origin_line


def test_flags_accepted(node, stack, flag_results, rendered, record_property):
    if node.name not in flag_results:
        pytest.skip(f"not applicable: node {node.name} runs no launch of {stack.recipe.name}")
    result = flag_results[node.name]
    origin_text = origin_line(result.origin)
    record_property("flag_manifest", origin_text)
    stack.progress("flags", origin_text, node=node.name)
    for warning in result.warnings:
        stack.progress("flags", f"warning: {warning}", node=node.name)
    if result.errors:
        pytest.fail(f"{result.failure_message()}\n({origin_text})", pytrace=False)
