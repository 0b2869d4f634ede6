"""The `script:` block of a model spec: what the scripted model answers in each chat mode.

The chat template ends every prompt with one *mode token*, chosen from the request:

    think              enable_thinking on (the default), no tools
    think_tools        thinking on, tools offered, last message not a tool result
    think_tool_result  thinking on, last message is a tool result
    plain / plain_tools / plain_tool_result   the same with enable_thinking false

A mode left out of the script behaves like its fallback (`think_tools` -> `think`, ...);
`think` and `plain` are required. The reply texts written here are exactly what the
OpenAI-compatible server must return (`message.reasoning`, `message.content`,
`tool_calls[0].function`), so scenarios assert against this block, not against copies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MODES = ("think", "think_tools", "think_tool_result", "plain", "plain_tools", "plain_tool_result")
FALLBACK = {
    "think_tools": "think",
    "think_tool_result": "think",
    "plain_tools": "plain",
    "plain_tool_result": "plain",
}
REPLY_KEYS = ("reasoning", "content", "tool_call")
TOOL_CALL_KEYS = ("name", "arguments")

THINK_START, THINK_END = "<think>", "</think>"
TOOL_CALL_START, TOOL_CALL_END = "<tool_call>", "</tool_call>"
# Text the tool-call chunks are made of (qwen3_coder format); one token each, see tokenizer.py.
FUNCTION_OPEN, PARAMETER_OPEN, PARAMETER_VALUE = "\n<function=", ">\n<parameter=", ">\n"
PARAMETER_CLOSE, FUNCTION_CLOSE = "\n</parameter>\n", "</function>\n"
RESERVED_TEXT = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<function=", "<parameter=", "<|")


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, str]

    def text(self) -> str:
        """The call in qwen3_coder XML, exactly as the model emits it."""
        (key, value), = self.arguments.items()
        return (f"{TOOL_CALL_START}{FUNCTION_OPEN}{self.name}{PARAMETER_OPEN}{key}{PARAMETER_VALUE}"
                f"{value}{PARAMETER_CLOSE}{FUNCTION_CLOSE}{TOOL_CALL_END}")

    def arguments_json(self) -> str:
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class Reply:
    mode: str
    reasoning: str | None = None
    content: str | None = None
    tool_call: ToolCall | None = None

    def output_text(self) -> str:
        """Everything the model generates in this mode, before the end-of-turn token."""
        text = f"{THINK_START}{self.reasoning}{THINK_END}" if self.reasoning is not None else ""
        text += self.content or ""
        if self.tool_call is not None:
            text += self.tool_call.text()
        return text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reasoning": self.reasoning, "content": self.content}
        if self.tool_call is not None:
            out["tool_call"] = {"name": self.tool_call.name, "arguments": dict(self.tool_call.arguments)}
        return out


@dataclass(frozen=True)
class Script:
    replies: dict[str, Reply]  # only the modes written in the spec

    def source_mode(self, mode: str) -> str:
        """The written mode that `mode` behaves like."""
        return mode if mode in self.replies else FALLBACK[mode]

    def reply(self, mode: str) -> Reply:
        return self.replies[self.source_mode(mode)]


def parse_script(data: Any, checker) -> Script:
    """Validate the `script:` mapping (checker: spec._Checker, which knows file and lines)."""
    if not isinstance(data, dict):
        raise checker.error("script", "expected a mapping of chat modes",
                            f"use keys among {', '.join(MODES)}")
    checker.unknown_keys(data, MODES, prefix="script.")
    for required in ("think", "plain"):
        if required not in data:
            raise checker.error("script", f"missing mode '{required}'",
                                "every script answers at least `think` and `plain`; other modes fall back")
    replies = {mode: _parse_reply(mode, data[mode], checker) for mode in MODES if mode in data}
    return Script(replies)


def _parse_reply(mode: str, data: Any, checker) -> Reply:
    prefix = f"script.{mode}."
    if not isinstance(data, dict):
        raise checker.error(f"script.{mode}", "expected a mapping", "use keys reasoning, content, tool_call")
    checker.unknown_keys(data, REPLY_KEYS, prefix=prefix)
    thinking = mode.startswith("think")
    if thinking != ("reasoning" in data):
        need = "needs a `reasoning:` text" if thinking else "must not have `reasoning:` (thinking is off)"
        raise checker.error(f"script.{mode}", f"mode '{mode}' {need}", "add or remove `reasoning:`")
    if "content" not in data and "tool_call" not in data:
        raise checker.error(f"script.{mode}", "a reply needs `content:`, `tool_call:` or both",
                            "add `content: \"...\"`")
    texts = {key: _plain_text(checker, data, key, prefix) for key in ("reasoning", "content") if key in data}
    tool_call = _parse_tool_call(data["tool_call"], checker, prefix) if "tool_call" in data else None
    return Reply(mode, texts.get("reasoning"), texts.get("content"), tool_call)


def _plain_text(checker, data: dict, key: str, prefix: str) -> str:
    value = checker.text(data, key, prefix)
    for reserved in RESERVED_TEXT:
        if reserved in value:
            raise checker.error(f"{prefix}{key}", f"text contains markup {reserved!r}",
                                "script texts are plain prose; the generator adds the markup")
    return value


def _parse_tool_call(data: Any, checker, prefix: str) -> ToolCall:
    key = f"{prefix}tool_call"
    if not isinstance(data, dict):
        raise checker.error(key, "expected a mapping with name and arguments",
                            "write `tool_call: {name: get_weather, arguments: {city: Paris}}`")
    checker.unknown_keys(data, TOOL_CALL_KEYS, prefix=f"{key}.")
    name = checker.text(data, "name", f"{key}.") if "name" in data else ""
    arguments = data.get("arguments")
    if not name or not name.replace("_", "").isalnum():
        raise checker.error(f"{key}.name", f"tool name {name!r} is not an identifier",
                            "use letters, digits and '_' only, e.g. get_weather")
    if not isinstance(arguments, dict) or len(arguments) != 1:
        raise checker.error(f"{key}.arguments", "expected exactly one argument",
                            "a bigram script cannot repeat the parameter markup; write e.g. {city: Paris}")
    (arg_name, arg_value), = arguments.items()
    if not isinstance(arg_name, str) or not arg_name.replace("_", "").isalnum():
        raise checker.error(f"{key}.arguments", f"argument name {arg_name!r} is not an identifier",
                            "use letters, digits and '_' only")
    if not isinstance(arg_value, str) or not arg_value or "<" in arg_value or "\n" in arg_value:
        raise checker.error(f"{key}.arguments.{arg_name}", f"expected a one-line string without '<', "
                            f"got {arg_value!r}", "quote the value, e.g. city: \"Paris\"")
    return ToolCall(name, {arg_name: arg_value})
