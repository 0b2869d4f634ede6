"""Read a rendered serve command the way vLLM's FlexibleArgumentParser and argparse would.

Why not just call argparse: the parser lives with vLLM (another venv, container or node) and
argparse stops at the first error, silently accepts abbreviations and keeps the last of repeated
flags. This scanner walks the arguments once with the same rules (underscores as dashes,
`-O3`, dotted `--x.key value`, `--flag=value`, `-tp`, `--no-x`, nargs) and reports every problem
it meets, leaving value and whole-command checks to values.py and check.py.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from servegate.flags import findings as codes
from servegate.flags.findings import Finding
from servegate.flags.index import ManifestIndex

SHELL_OPERATORS = {";", "&&", "||", "|", "&"}
API_SERVER_MODULES = {"vllm.entrypoints.openai.api_server"}
CLI_MODULES = {"vllm.entrypoints.cli.main"}
NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
OPTIMIZATION_LEVELS = {"0", "1", "2", "3"}


@dataclass
class ServeCommand:
    args: list[str]  # everything after `serve` / the api_server module
    env: dict[str, str]  # `env K=V` / `K=V` assignments before the program
    takes_model_positional: bool  # `vllm serve MODEL`; the api_server module wants --model


@dataclass
class Occurrence:
    """One option as written in the command, resolved against the manifest."""

    written: str  # as written, with its values: "--port 8000", "--kv-cache-memory=1G"
    flag: str  # the option string it resolved to, e.g. "--kv-cache-memory-bytes"
    option: dict
    values: list[str] = field(default_factory=list)
    negated: bool = False  # written as --no-x
    json_value: object = None  # the parsed JSON, once a JSON-valued option's value parsed


# ---------------------------------------------------------------- where the serve arguments start


def locate_serve_args(argv: Sequence[str]) -> ServeCommand | None:
    """The arguments after `vllm serve`, `-m vllm.entrypoints.cli.main serve` or the api_server module."""
    prefix_env = leading_env(argv)
    for i, token in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else None
        if os.path.basename(token) == "vllm" and following == "serve":
            return ServeCommand(cut_at_shell_operator(argv[i + 2 :]), prefix_env, True)
        if token == "-m" and following in CLI_MODULES and argv[i + 2 : i + 3] == ["serve"]:
            return ServeCommand(cut_at_shell_operator(argv[i + 3 :]), prefix_env, True)
        if token == "-m" and following in API_SERVER_MODULES:
            return ServeCommand(cut_at_shell_operator(argv[i + 2 :]), prefix_env, False)
    return None


def leading_env(argv: Sequence[str]) -> dict[str, str]:
    """`env A=1 B=2 vllm serve ...` or `A=1 vllm serve ...`: the assignments."""
    env = {}
    for token in argv:
        if token == "env":
            continue
        name, eq, value = token.partition("=")
        if not eq or not name.isidentifier():
            break
        env[name] = value
    return env


def cut_at_shell_operator(args: Sequence[str]) -> list[str]:
    for i, token in enumerate(args):
        if token in SHELL_OPERATORS or re.match(r"^\d?>", token):
            return list(args[:i])
    return list(args)


# ---------------------------------------------------------------- token rules


def looks_like_option(token: str) -> bool:
    """argparse's 'O' (option) vs 'A' (value) call, for a parser without negative-number options."""
    return token.startswith("-") and token != "-" and not NEGATIVE_NUMBER.match(token) and " " not in token


def other_quantity(name: str, candidate: str) -> bool:
    """`--gpu-memory-utilization-gb` vs `--gpu-memory-utilization`: one name is the other plus a `-word`, a
    different quantity (GiB vs a fraction); suggesting it would pass a value in the wrong units."""
    return name.startswith(candidate + "-") or candidate.startswith(name + "-")


def normalize_name(name: str) -> str:
    """FlexibleArgumentParser turns underscores into dashes between `--` and the first `.`."""
    if not name.startswith("--"):
        return name
    head, dot, rest = name[2:].partition(".")
    return "--" + head.replace("_", "-") + dot + rest


def merge_dotted(target: dict, key_path: str, raw_value: str) -> None:
    """As FlexibleArgumentParser does: `a.b+ x,y` appends to a list; values are JSON when they parse."""
    append = key_path.endswith("+")
    keys = key_path.rstrip("+").split(".")
    value: object = raw_value.split(",") if append else json_or_text(raw_value)
    for key in keys[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    if append and isinstance(target.get(keys[-1]), list):
        target[keys[-1]] += value
    else:
        target[keys[-1]] = value


def json_or_text(raw: str) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def describe_nargs(option: dict) -> str:
    nargs = option.get("nargs")
    known = {
        None: "one value",
        "?": "an optional value",
        "+": "one or more values",
        "*": "any number of values",
    }
    return known.get(nargs, f"{nargs} values")


def nargs_bounds(nargs: object, available: int) -> tuple[int, int]:
    """(at least, at most) values an option consumes."""
    if isinstance(nargs, int):
        return nargs, nargs
    return {None: (1, 1), "?": (0, 1), "*": (0, available), "+": (1, available)}.get(nargs, (0, available))


# ---------------------------------------------------------------- the scanner


class Scanner:
    """Walks the serve arguments once, collecting occurrences and the findings met on the way."""

    def __init__(self, command: ServeCommand, index: ManifestIndex, source: str):
        self.args, self.index, self.source = command.args, index, source
        self.takes_model = command.takes_model_positional
        self.model: str | None = None  # the positional MODEL of `vllm serve MODEL`
        self.occurrences: list[Occurrence] = []
        self.findings: list[Finding] = []
        self.dotted: dict[str, tuple[dict, dict, list[str]]] = {}  # base flag -> (option, merged, written)
        self.pos = 0

    def report(self, code: str, flag: str, reason: str, fix: str, severity: str = "error") -> None:
        self.findings.append(Finding(severity, self.source, flag, reason, fix, code))

    def run(self) -> Scanner:
        while self.pos < len(self.args):
            token = self.args[self.pos]
            self.pos += 1
            if token == "--":
                self.stray_positionals(self.args[self.pos :])
                break
            if looks_like_option(token):
                self.option(token)
            elif self.takes_model and self.model is None:
                self.model = token
            else:
                self.stray_positionals([token])
        self.flush_dotted()
        return self

    def next_is_value(self) -> bool:
        return self.pos < len(self.args) and not looks_like_option(self.args[self.pos])

    def stray_positionals(self, tokens: list[str]) -> None:
        for token in tokens:
            self.report(
                codes.STRAY_POSITIONAL,
                token,
                f"unexpected positional argument {token!r}: vLLM exits with 'unrecognized arguments'",
                "quote values that contain spaces, give values only to flags that take them, "
                "and name the model once, as the first argument after `serve`",
            )

    def option(self, token: str) -> None:
        name, eq, inline = token.partition("=")
        name = normalize_name(name)
        inline = inline if eq else None
        if "." in name:
            self.dotted_option(name, inline)
            return
        resolved = self.resolve(name, inline)
        if resolved is not None:
            self.record(*resolved)

    def resolve(self, name: str, inline: str | None) -> tuple[str, dict, str | None] | None:
        """(option string, option, inline value) for a written name; reports abbreviations and unknowns."""
        by_string = self.index.by_string
        if name in by_string:
            return name, by_string[name], inline
        special = self.optimization_level(name, inline) or self.attached_short_value(name, inline)
        if special:
            return special
        matches = self.index.prefix_matches(name)
        if len(matches) == 1:
            self.report(
                codes.ABBREVIATION,
                name,
                f"abbreviation: argparse silently reads {name} as {matches[0]} ({self.index.version})",
                f"spell it out: {matches[0]}",
            )
            return matches[0], by_string[matches[0]], inline
        if matches:
            self.report(
                codes.AMBIGUOUS_FLAG,
                name,
                f"ambiguous abbreviation, could be {', '.join(matches)}",
                "spell the flag out exactly",
            )
        else:
            self.unknown(name)
        if inline is None and self.next_is_value():
            self.pos += 1  # most likely its value; do not report it again as a stray positional
        return None

    def optimization_level(self, name: str, inline: str | None) -> tuple[str, dict, str | None] | None:
        """FlexibleArgumentParser rewrites `-O3`, `-O=3` and `-O 3` into `--optimization-level`."""
        target = self.index.by_string.get("--optimization-level")
        if target is None or not name.startswith("-O"):
            return None
        if name != "-O":
            return "--optimization-level", target, name[2:]
        if inline is not None:
            return "--optimization-level", target, inline
        if self.pos < len(self.args) and self.args[self.pos] in OPTIMIZATION_LEVELS:
            return "--optimization-level", target, None
        return None

    def attached_short_value(self, name: str, inline: str | None) -> tuple[str, dict, str | None] | None:
        """argparse reads `-q4` as `-q 4` when `-q` is a two-character option."""
        short = name[:2]
        if name.startswith("--") or len(name) <= 2 or inline is not None or short not in self.index.by_string:
            return None
        return short, self.index.by_string[short], name[2:]

    def unknown(self, name: str) -> None:
        close = difflib.get_close_matches(name, self.index.option_strings, n=3, cutoff=0.75)
        units = {self.index.by_string[c].get("dest") for c in self.index.option_strings if other_quantity(name, c)}
        close = [c for c in close if self.index.by_string[c].get("dest") not in units]
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        self.report(
            codes.UNKNOWN_FLAG,
            name,
            f"unknown flag: {self.index.version} has no {name} (removed, renamed or misspelt)",
            f"{hint}remove it, or gate it on the vLLM version (`servegate flags diff A B` lists changes)",
        )

    def record(self, name: str, option: dict, inline: str | None) -> None:
        if option.get("nargs") == 0 and inline is not None:
            self.report(
                codes.UNEXPECTED_VALUE,
                name,
                f"{name} takes no value, got {inline!r} (argparse: ignored explicit argument)",
                no_value_fix(name, option),
            )
            return
        start = self.pos - 1
        values = self.take_values(option, inline)
        if values is None:
            self.report(
                codes.MISSING_VALUE,
                name,
                f"missing value: {name} expects {describe_nargs(option)}",
                f"give {name} a value; one that starts with '-' must be written {name}=VALUE",
            )
            return
        negated = name in (option.get("negated_option_strings") or [])
        self.occurrences.append(
            Occurrence(" ".join(self.args[start : self.pos]), name, option, values, negated)
        )

    def take_values(self, option: dict, inline: str | None) -> list[str] | None:
        """The option's values per its nargs; None when fewer than it requires."""
        if inline is not None:
            return [inline]
        least, most = nargs_bounds(option.get("nargs"), len(self.args))
        taken = []
        while len(taken) < most and self.next_is_value():
            taken.append(self.args[self.pos])
            self.pos += 1
        return taken if len(taken) >= least else None

    def dotted_option(self, name: str, inline: str | None) -> None:
        """`--speculative-config.method ngram`: merged into one JSON value that vLLM appends last."""
        base, _, key_path = name.partition(".")
        value, start = inline, self.pos - 1
        if value is None and self.pos < len(self.args):
            value = self.args[self.pos]  # always the next token, even one starting with '-'
            self.pos += 1
        resolved = self.resolve(base, "" if value is None else value)
        if resolved is None:
            return
        base, option, _ = resolved
        if value is None:
            self.report(
                codes.MISSING_VALUE, name, f"missing value: {name} expects one value", f"write {name} VALUE"
            )
            return
        _, merged, written = self.dotted.setdefault(base, (option, {}, []))
        merge_dotted(merged, key_path, value)
        written.append(" ".join(self.args[start : self.pos]))

    def flush_dotted(self) -> None:
        for base, (option, merged, written) in self.dotted.items():
            occurrence = Occurrence(" ".join(written), base, option, [json.dumps(merged)])
            occurrence.json_value = merged
            self.occurrences.append(occurrence)


def no_value_fix(name: str, option: dict) -> str:
    negated = option.get("negated_option_strings") or []
    if option.get("negatable") and negated:
        plain = [s for s in option["option_strings"] if s.startswith("--") and s not in negated]
        return f"write {plain[0]} to enable or {negated[0]} to disable"
    return f"write {name} alone"
