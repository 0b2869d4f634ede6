"""Reading chat responses the same way across vLLM versions: reasoning field names, streamed deltas, tools.

vLLM 0.18+ answers `message.reasoning` / `delta.reasoning`; older versions `reasoning_content`. Empty
`tool_calls` are omitted. A streamed tool call arrives as deltas keyed by index whose `arguments` pieces must
be concatenated.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from servegate.render.argv import flag_value, has_flag  # noqa: F401 - re-exported for the scenarios

REASONING_FIELDS = ("reasoning", "reasoning_content")
THINK_MARKUP = ("<think>", "</think>")
SCRIPT_STAMP = "servegate-model.json"


@dataclass
class ToolCall:
    name: str = ""
    arguments: str = ""
    id: str | None = None


@dataclass
class Reply:
    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    chunks: int = 0


def reasoning_of(message: dict) -> str | None:
    for name in REASONING_FIELDS:
        if message.get(name):
            return message[name]
    return None


def from_message(response: dict) -> Reply:
    choice = response["choices"][0]
    message = choice.get("message") or {}
    calls = [ToolCall(call["function"]["name"], call["function"].get("arguments") or "", call.get("id"))
             for call in message.get("tool_calls") or []]
    return Reply(message.get("content"), reasoning_of(message), calls, choice.get("finish_reason"))


def from_stream(chunks: Iterable[dict]) -> Reply:
    """Reassemble a streamed reply: content and reasoning concatenated, tool calls rebuilt by index."""
    content, reasoning, calls = [], [], {}
    reply = Reply()
    for chunk in chunks:
        reply.chunks += 1
        for choice in chunk.get("choices", []):
            delta = choice.get("delta") or {}
            if delta.get("content"):
                content.append(delta["content"])
            piece = reasoning_of(delta)
            if piece:
                reasoning.append(piece)
            for call in delta.get("tool_calls") or []:
                entry = calls.setdefault(call.get("index", 0), ToolCall())
                function = call.get("function") or {}
                entry.name += function.get("name") or ""
                entry.arguments += function.get("arguments") or ""
                entry.id = entry.id or call.get("id")
            if choice.get("finish_reason"):
                reply.finish_reason = choice["finish_reason"]
    reply.content = "".join(content) or None
    reply.reasoning = "".join(reasoning) or None
    reply.tool_calls = [calls[i] for i in sorted(calls)]
    return reply


def leaked_markup(text: str | None) -> list[str]:
    return [tag for tag in THINK_MARKUP if text and tag in text]


def schema_errors(arguments: str, schema: dict) -> list[str]:
    """Check tool-call arguments (a JSON string) against a JSON-schema object of simple typed properties."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        return [f"arguments are not valid JSON ({exc.msg}): {arguments!r}"]
    if not isinstance(value, dict):
        return [f"arguments must be a JSON object, got {type(value).__name__}"]
    errors = [f"required argument '{name}' is missing" for name in schema.get("required", []) if name not in value]
    types = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list}
    for name, item in value.items():
        declared = (schema.get("properties") or {}).get(name)
        if declared is None:
            errors.append(f"argument '{name}' is not in the tool's schema")
        elif declared.get("type") in types and not isinstance(item, types[declared["type"]]):
            errors.append(f"argument '{name}' should be {declared['type']}, got {item!r}")
    return errors


def model_script(run_command, model_path: str) -> dict[str, Any] | None:
    """The expected replies of a scripted tiny model (from its stamp), or None for any other model."""
    result = run_command(f"cat {shlex.quote(model_path)}/{SCRIPT_STAMP} 2>/dev/null")
    if not getattr(result, "ok", False) or not result.stdout.strip():
        return None
    return json.loads(result.stdout).get("script")

