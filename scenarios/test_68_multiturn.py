"""Step 68, multi-turn tool use: tool call, tool result, final answer; streamed and plain parses equal."""

import pytest

from servegate.serve.chat import flag_value
from servegate.steps import multiturn


@pytest.mark.parametrize("mode", ["plain", "streamed"])
def test_tool_result_turn_gives_the_answer(conversations, script, tool_parser, serve_argv, mode):
    found = multiturn.problems(conversations[mode], script)
    parsers = f"reasoning parser {flag_value(serve_argv, '--reasoning-parser')}, tool parser {tool_parser}"
    assert not found, f"{parsers}:\n" + "\n".join(found)


def test_streamed_and_plain_parses_are_equal(conversations, serve_argv):
    found = multiturn.parity(conversations["plain"], conversations["streamed"])
    assert not found, (f"reasoning parser {flag_value(serve_argv, '--reasoning-parser')}: streamed and plain "
                       "parses differ:\n" + "\n".join(found))
