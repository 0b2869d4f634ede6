"""Multi-turn tool use, streamed and not: ask, get a tool call, send the tool's result back, read the answer.

A wrong reasoning or tool parser can pass a one-turn, non-streamed smoke test (eugr #234) or silently
mis-split a streamed reply (TechPreacher). Here the whole conversation runs twice, once plain and once
streamed, and the two parses must be equal turn by turn: tool name and arguments, reasoning and content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import requests

from servegate.serve.chat import Reply, from_message, from_stream, leaked_markup

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "city name"}},
                       "required": ["city"]},
    },
}
QUESTION = "What is the weather in Paris right now?"
TOOL_RESULT = json.dumps({"city": "Paris", "sky": "sunny", "temperature_c": 19})


@dataclass
class Conversation:
    mode: str  # plain | streamed
    call: Reply  # turn 1: the tool call
    answer: Reply | None = None  # turn 2: after the tool result
    error: str = ""


def converse(client, stream: bool, max_tokens: int = 128) -> Conversation:
    """Two turns against client (a Deployment or an Endpoint): tool call, then the answer to the tool result."""
    mode = "streamed" if stream else "plain"
    messages = [{"role": "user", "content": QUESTION}]
    try:
        first = _ask(client, messages, stream, max_tokens)
        talk = Conversation(mode, first)
        if not first.tool_calls:
            talk.error = f"turn 1 ({mode}) parsed no tool call; content {first.content!r}"
            return talk
        call = first.tool_calls[0]
        messages += [
            {"role": "assistant", "content": first.content or "",
             "tool_calls": [{"id": call.id or "call-0", "type": "function",
                             "function": {"name": call.name, "arguments": call.arguments}}]},
            {"role": "tool", "tool_call_id": call.id or "call-0", "content": TOOL_RESULT},
        ]
        talk.answer = _ask(client, messages, stream, max_tokens)
        return talk
    except requests.HTTPError as exc:
        return Conversation(mode, Reply(), error=f"{mode}: HTTP {exc.response.status_code}: {exc.response.text[:300]}")


def _ask(client, messages: list[dict], stream: bool, max_tokens: int) -> Reply:
    params = {"tools": [WEATHER_TOOL], "temperature": 0, "max_tokens": max_tokens}
    if stream:
        return from_stream(client.stream_chat(messages, **params))
    return from_message(client.chat(messages, **params))


def problems(talk: Conversation, script: dict | None) -> list[str]:
    """What is wrong with one conversation: no call, markup in a field, no final answer, off-script text."""
    if talk.error:
        return [talk.error]
    out, answer = [], talk.answer
    if answer is None or not (answer.content or "").strip():
        out.append(f"{talk.mode}: turn 2 (after the tool result) gave no content: {answer}")
        return out
    for turn, reply in (("turn 1", talk.call), ("turn 2", answer)):
        for field_name in ("content", "reasoning"):
            tags = leaked_markup(getattr(reply, field_name))
            if tags or "<tool_call>" in (getattr(reply, field_name) or ""):
                out.append(f"{talk.mode}: {turn} {field_name} carries raw markup {tags or ['<tool_call>']}: "
                           f"{getattr(reply, field_name)!r}")
    if answer.tool_calls:
        out.append(f"{talk.mode}: turn 2 called a tool again instead of answering: {answer.tool_calls}")
    if script:
        want = (script.get("think_tool_result") or script.get("think") or {})
        if (answer.content or "").strip() != (want.get("content") or "").strip():
            out.append(f"{talk.mode}: final answer {answer.content!r}, the model's script says {want.get('content')!r}")
        if want.get("reasoning") and (answer.reasoning or "").strip() != want["reasoning"].strip():
            out.append(f"{talk.mode}: final reasoning {answer.reasoning!r}, the script says {want['reasoning']!r}")
    return out


def parity(plain: Conversation, streamed: Conversation) -> list[str]:
    """Turn by turn, the streamed parse must equal the plain one."""
    out = []
    for turn, a, b in (("turn 1", plain.call, streamed.call), ("turn 2", plain.answer, streamed.answer)):
        if a is None or b is None:
            continue
        for key in ("content", "reasoning"):
            x, y = (getattr(a, key) or "").strip(), (getattr(b, key) or "").strip()
            if x != y:
                out.append(f"{turn} {key}: plain {x!r} != streamed {y!r}")
        calls_a = [(c.name, _args(c.arguments)) for c in a.tool_calls]
        calls_b = [(c.name, _args(c.arguments)) for c in b.tool_calls]
        if calls_a != calls_b:
            out.append(f"{turn} tool calls: plain {calls_a} != streamed {calls_b}")
    return out


def _args(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
