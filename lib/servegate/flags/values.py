"""Is each value acceptable to its option: choices, int/float/human-readable ints, JSON.

Why: argparse checks these only where vLLM runs, one error per launch; JSON-valued flags are the
usual casualty of recipe templating (`{{`/`}}` left over, Python quotes), so they get fixes that
name the templating rule rather than the JSON parser's column number.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable

from servegate.flags import findings as codes
from servegate.flags.findings import Finding
from servegate.flags.index import ManifestIndex
from servegate.flags.scan import Occurrence

# Flags that hold JSON in every vLLM version, whatever type name an old manifest recorded.
JSON_FLAGS = {
    "--speculative-config",
    "--compilation-config",
    "--model-loader-extra-config",
    "--hf-overrides",
    "--override-generation-config",
    "--kv-transfer-config",
}
HUMAN_INT = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")
TRANSFORMS = {
    "lower": str.lower,
    "lower_underscore": lambda s: s.lower().replace("-", "_"),
}
KIND_EXAMPLES = {
    "int": "an integer such as 8",
    "float": "a number such as 0.9",
    "port": "a port number such as 8000",
    "human_int": "an integer such as 4096, 32k or 1G",
    "human_int_or_auto": "an integer such as 32k or 131072, or auto",
}
Problem = tuple[str, str, str]  # (code, reason, fix)


def type_info(option: dict) -> dict:
    return option.get("type") or {}


# ---------------------------------------------------------------- scalar values


def converts(convert: Callable[[str], object], value: str) -> bool:
    """Whether convert(value) succeeds, as argparse's type=convert would."""
    try:
        convert(value)
    except ValueError:
        return False
    return True


def is_int(value: str) -> bool:
    return converts(int, value)


def is_float(value: str) -> bool:
    return converts(float, value)


def is_human_int(value: str) -> bool:
    """vLLM's human_readable_int: 25.6k is fine, 2.5K is not (no decimals with binary suffixes)."""
    match = HUMAN_INT.fullmatch(value.strip())
    if match:
        return match.group(2).islower() or "." not in match.group(1)
    return is_int(value.strip())


KIND_CHECKS = {
    "int": is_int,
    "float": is_float,
    "port": lambda v: is_int(v) and 0 < int(v) < 65536,
    "human_int": is_human_int,
    "human_int_or_auto": lambda v: v.strip() == "-1" or v.strip().lower() == "auto" or is_human_int(v),
}


def check_kind(kind: str | None, value: str) -> Problem | None:
    checker = KIND_CHECKS.get(kind or "")
    if checker is None or checker(value):
        return None
    return codes.WRONG_TYPE, f"{value!r} is not a valid {kind} value", f"write {KIND_EXAMPLES[kind]}"


def check_choice(option: dict, value: str) -> Problem | None:
    choices = option.get("choices")
    if not choices:
        return None
    transform = TRANSFORMS.get(type_info(option).get("transform"), lambda s: s)
    allowed = [str(c) for c in choices]
    if transform(value) in allowed:
        return None
    close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
    hint = f" (closest: {close[0]})" if close else ""
    return codes.INVALID_CHOICE, f"invalid choice {value!r}{hint}", f"use one of: {', '.join(allowed)}"


# ---------------------------------------------------------------- JSON values


def is_json_option(option: dict) -> bool:
    kind, name = type_info(option).get("kind"), type_info(option).get("name") or ""
    return (
        kind in ("json", "json_or_str") or bool(set(option["option_strings"]) & JSON_FLAGS) or "json" in name
    )


def takes_json(option: dict, value: str) -> bool:
    """json_or_str options (e.g. --hf-overrides) take a plain string unless the value looks like {...}."""
    if not is_json_option(option):
        return False
    return type_info(option).get("kind") != "json_or_str" or value.lstrip().startswith("{")


def expand_human_numbers(text: str) -> str:
    """vLLM's dataclass-typed flags accept bare `80g`-style numbers inside JSON; so do we."""
    parts = re.split(r'("(?:[^"\\]|\\.)*")', text)
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"\b\d+(?:\.\d+)?[kKmMgGtT]\b", "0", parts[i])
    return "".join(parts)


def parse_json_value(option: dict, value: str) -> tuple[object, Problem | None]:
    """(parsed JSON, None) or (None, problem) for a JSON-valued option."""
    text = expand_human_numbers(value) if type_info(option).get("name") == "parse_dataclass" else value
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        return None, json_problem(value, exc)
    wants_object = "dataclass" in type_info(option) or isinstance(option.get("default"), dict)
    if wants_object and not isinstance(parsed, dict):
        return None, (
            codes.BAD_JSON,
            f"expected a JSON object, got {type(parsed).__name__} {value!r}",
            "write a JSON object, e.g. '{\"key\": 1}'",
        )
    return parsed, None


def json_problem(value: str, exc: ValueError) -> Problem:
    if "{{" in value or "}}" in value:
        return (
            codes.BAD_JSON,
            f"not valid JSON after rendering: doubled braces left in {value!r}",
            (
                "a recipe v1 `command` goes through one str.format pass: write '{{' and '}}' there "
                "(they render to '{' and '}'); anywhere else (overrides, env, an already-rendered "
                "command) write single braces"
            ),
        )
    if re.search(r"'\w+'\s*:", value) or re.search(r"\b(True|False|None)\b", value):
        return (
            codes.BAD_JSON,
            f"not valid JSON ({exc}): Python syntax in {value!r}",
            "JSON needs double-quoted keys and strings and true/false/null",
        )
    return (
        codes.BAD_JSON,
        f"not valid JSON ({exc}): {value!r}",
        "quote the whole JSON value for the shell (single quotes) and check braces and commas",
    )


# ---------------------------------------------------------------- per occurrence


def check_value(occurrence: Occurrence, value: str) -> Problem | None:
    """The problem with one value of one occurrence, if any; records parsed JSON on the occurrence."""
    option = occurrence.option
    if type_info(option).get("optional") and value in ("", "None"):
        return None
    if takes_json(option, value):
        parsed, problem = parse_json_value(option, value)
        if problem is None:
            occurrence.json_value = parsed
        return problem
    if option.get("action") == "LoRAParserAction":
        return check_lora_module(value)
    if option.get("dest") == "config" and not value.endswith((".yaml", ".yml")):
        return codes.WRONG_TYPE, f"--config takes a .yaml/.yml file, got {value!r}", "pass a YAML file"
    return check_choice(option, value) or check_kind(type_info(option).get("kind"), value)


def check_lora_module(value: str) -> Problem | None:
    """--lora-modules takes `name=path` or a JSON object per module."""
    if "=" in value and not value.lstrip().startswith("{"):
        return None
    try:
        if isinstance(json.loads(value), dict):
            return None
    except ValueError:
        pass
    return (
        codes.WRONG_TYPE,
        f"{value!r} is neither name=path nor a JSON object",
        'write NAME=PATH or \'{"name": "...", "path": "..."}\'',
    )


def value_findings(occurrences: Iterable[Occurrence], index: ManifestIndex, source: str) -> list[Finding]:
    findings = []
    for occurrence in occurrences:
        for value in occurrence.values:
            problem = check_value(occurrence, value)
            if problem:
                code, reason, fix = problem
                findings.append(Finding("error", source, occurrence.flag, reason, fix, code))
        if occurrence.option.get("deprecated"):
            findings.append(
                Finding(
                    "warning",
                    source,
                    occurrence.flag,
                    f"deprecated in {index.version}",
                    "plan the replacement named in the flag's help",
                    codes.DEPRECATED,
                )
            )
    return findings
