"""Step 66, tool calls: the recipe's tool-call parser turns the model's call into `tool_calls`, also streamed."""

import json

import pytest
import requests

from servegate.serve.chat import Reply, from_message, from_stream, has_flag, leaked_markup, schema_errors

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "city name"}},
                       "required": ["city"]},
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris right now?"}]


def ask(deployment, stream: bool, **params) -> Reply:
    params = {"tools": [WEATHER_TOOL], "temperature": 0, "max_tokens": 128, **params}
    try:
        if stream:
            return from_stream(deployment.stream_chat(QUESTION, **params))
        return from_message(deployment.chat(QUESTION, **params))
    except requests.HTTPError as exc:  # e.g. tools refused without --enable-auto-tool-choice: no call parsed
        return Reply(content=f"HTTP {exc.response.status_code}: {exc.response.text[:300]}")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tool_call_is_parsed(deployment, tool_parser, serve_argv, recipe, script, stream):
    reply = ask(deployment, stream)
    auto = has_flag(serve_argv, "--enable-auto-tool-choice")
    assert reply.tool_calls, (f"no tool call was parsed (parser {tool_parser}, --enable-auto-tool-choice "
                              f"{'on' if auto else 'OFF'}); content was {reply.content!r}")
    call = reply.tool_calls[0]
    expected_tool = (recipe.expect.tool_calls or {}).get("tool", "get_weather")
    assert call.name == expected_tool, f"tool call names {call.name!r}, expected {expected_tool!r}"
    problems = schema_errors(call.arguments, WEATHER_TOOL["function"]["parameters"])
    assert not problems, f"tool call arguments do not match the schema: {problems}"
    assert reply.finish_reason == "tool_calls", f"finish_reason is {reply.finish_reason!r}, expected 'tool_calls'"
    assert not leaked_markup(reply.content)
    assert "<tool_call>" not in (reply.content or ""), f"raw tool-call markup left in content: {reply.content!r}"
    if script:
        assert json.loads(call.arguments) == script["think_tools"]["tool_call"]["arguments"]


def test_tool_choice_none_gives_no_tool_call(deployment, tool_parser):
    reply = ask(deployment, False, tool_choice="none")
    assert not reply.tool_calls, f"tool_choice=none still returned tool calls: {reply.tool_calls}"
    assert reply.finish_reason != "tool_calls"
