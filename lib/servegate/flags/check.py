"""Check a rendered `vllm serve` command against the flag manifest of the vLLM that will run it.

Why: argparse's "it parsed" proves little. `allow_abbrev` silently turns `--kv-cache-memory` into
`--kv-cache-memory-bytes`, a repeated flag silently keeps the last value, a dotted
`--speculative-config.x` silently replaces a whole JSON `--speculative-config`, and parser names,
speculative methods and backends are only looked up minutes into engine start, on the GPU node.
check_command reports all of it at once, offline, each with its fix, before anything is deployed.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Sequence

from servegate.flags import findings as codes
from servegate.flags.findings import Finding
from servegate.flags.index import ManifestIndex, describe_version, index_for
from servegate.flags.scan import Occurrence, Scanner, locate_serve_args
from servegate.flags.values import value_findings

__all__ = ["Finding", "check_command", "describe_version"]

# Options naming a runtime registry entry: dest -> (registry, plugin flag, case-insensitive).
REGISTRY_FLAGS = {
    "reasoning_parser": ("reasoning_parsers", "--reasoning-parser-plugin", False),
    "tool_call_parser": ("tool_call_parsers", "--tool-parser-plugin", False),
    "attention_backend": ("attention_backends", None, True),
    "mamba_backend": ("mamba_backends", None, True),
}
NO_NAME_VALUES = {"", "None", "auto"}
MULTI_USE_ACTIONS = {"_AppendAction", "_ExtendAction", "_CountAction", "_AppendConstAction"}


def duplicate_findings(occurrences: list[Occurrence], source: str) -> list[Finding]:
    """The same option twice: argparse keeps the last and drops the others without a word."""
    by_dest: dict[str, list[Occurrence]] = defaultdict(list)
    for occurrence in occurrences:
        if occurrence.option.get("action") not in MULTI_USE_ACTIONS:
            by_dest[occurrence.option["dest"]].append(occurrence)
    findings = []
    for group in by_dest.values():
        if len(group) < 2:
            continue
        spellings = ", ".join(o.written for o in group)
        if len({(o.negated, tuple(o.values)) for o in group}) == 1:
            findings.append(
                Finding(
                    "warning",
                    source,
                    group[-1].flag,
                    f"given {len(group)} times: {spellings}",
                    "keep one",
                    codes.DUPLICATE,
                )
            )
            continue
        findings.append(
            Finding(
                "error",
                source,
                group[-1].flag,
                f"given {len(group)} times with different values ({spellings}); vLLM keeps only the last",
                "keep one; for JSON flags merge the keys into one value (dotted --x.key options are applied "
                "after, and replace, a whole --x JSON)",
                codes.DUPLICATE,
            )
        )
    return findings


def last_occurrence(occurrences: list[Occurrence], dest: str) -> Occurrence | None:
    matching = [o for o in occurrences if o.option.get("dest") == dest]
    return matching[-1] if matching else None


def name_findings(
    flag: str,
    value: str,
    registry: str,
    index: ManifestIndex,
    source: str,
    plugins: Sequence[str],
    case_insensitive: bool,
    hint: str,
) -> list[Finding]:
    """Is `value` a name in the manifest's `registry` (or one the plugins add)?"""
    names = index.registry_names(registry)
    if names is None:
        return [
            Finding(
                "warning",
                source,
                flag,
                f"cannot verify {value!r}: the manifest has no {registry} ({index.registry_error(registry)})",
                "re-extract the manifest with a servegate that can read this vLLM's registry",
                codes.UNVERIFIABLE,
            )
        ]
    known = sorted({*names, *plugins})
    fold = str.casefold if case_insensitive else str
    if fold(value) in {fold(n) for n in known}:
        return []
    close = difflib.get_close_matches(value, known, n=3, cutoff=0.6)
    closest = f"closest: {', '.join(close)}; " if close else ""
    if len(known) <= 12:
        closest = f"one of: {', '.join(known)}; "
    kind = registry.replace("_", " ").removesuffix("s")
    return [
        Finding(
            "error",
            source,
            flag,
            f"{value!r} is not a registered {kind} in {index.version}",
            f"{closest}use a registered name{hint}",
            codes.UNREGISTERED,
        )
    ]


def registry_findings(
    occurrences: list[Occurrence], index: ManifestIndex, source: str, plugins: Sequence[str]
) -> list[Finding]:
    """Parser, backend and speculative-method names that vLLM only looks up at engine start."""
    findings = []
    written = {o.flag for o in occurrences}
    for dest, (registry, plugin_flag, case_insensitive) in REGISTRY_FLAGS.items():
        occurrence = last_occurrence(occurrences, dest)
        if occurrence is None or not occurrence.values or occurrence.values[0] in NO_NAME_VALUES:
            continue
        if occurrence.option.get("choices") or plugin_flag in written:
            continue  # argparse choices were checked with the values; a plugin file may add the name
        hint = f", or load the parser's file with {plugin_flag} FILE" if plugin_flag else ""
        findings += name_findings(
            occurrence.flag, occurrence.values[0], registry, index, source, plugins, case_insensitive, hint
        )
    return findings + speculative_method_findings(occurrences, index, source, plugins)


def speculative_method_findings(
    occurrences: list[Occurrence], index: ManifestIndex, source: str, plugins: Sequence[str]
) -> list[Finding]:
    occurrence = last_occurrence(occurrences, "speculative_config")
    if occurrence is None or not isinstance(occurrence.json_value, dict):
        return []
    method = occurrence.json_value.get("method")
    if not isinstance(method, str):
        return []
    return name_findings(
        occurrence.flag,
        method,
        "speculative_methods",
        index,
        source,
        plugins,
        False,
        ' as the JSON\'s "method"',
    )


def env_findings(env: dict[str, str], index: ManifestIndex, source: str) -> list[Finding]:
    """VLLM_* variables this vLLM does not read: typos, or settings of another release."""
    wanted = sorted(k for k in env if k.startswith("VLLM_"))
    names = index.registry_names("env_vars")
    if not wanted:
        return []
    if names is None:
        return [
            Finding(
                "warning",
                source,
                wanted[0],
                "cannot verify VLLM_* variables: the manifest has none",
                "re-extract the manifest",
                codes.UNVERIFIABLE,
            )
        ]
    findings = []
    for name in (n for n in wanted if n not in names):
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
        hint = f"did you mean {close[0]}? " if close else ""
        findings.append(
            Finding(
                "warning",
                source,
                name,
                f"{index.version} does not read {name}",
                f"{hint}drop it, unless something else reads it (a mod, a launcher script)",
                codes.UNKNOWN_ENV,
            )
        )
    return findings


def model_findings(scanner: Scanner, source: str) -> list[Finding]:
    """`vllm serve` moves `--model X` to the front, so a positional model as well is one too many."""
    model_option = last_occurrence(scanner.occurrences, "model")
    if not scanner.takes_model or model_option is None:
        return []
    if scanner.model is not None:
        reason = (
            f"model named twice: {scanner.model!r} and {model_option.written!r}; vLLM moves --model to "
            f"the front and exits with 'unrecognized arguments: {scanner.model}'"
        )
        return [
            Finding("error", source, "--model", reason, "keep only the positional model", codes.MODEL_TWICE)
        ]
    return [
        Finding(
            "warning",
            source,
            "--model",
            "`vllm serve --model X` is deprecated in favour of `vllm serve X`",
            "give the model as the first argument after `serve`",
            codes.DEPRECATED,
        )
    ]


def check_command(
    argv: list[str], env: dict[str, str], manifest: dict, *, source: str, plugins: Sequence[str] = ()
) -> list[Finding]:
    """Every finding for one rendered serve command (split with shlex) and its environment.

    `plugins` are parser, method or backend names that mods or plugins register at runtime;
    they count as known.
    """
    index = index_for(manifest)
    command = locate_serve_args(argv)
    if command is None:
        words = " ".join(argv[:3])[:80]
        return [
            Finding(
                "warning",
                source,
                "",
                f"not a vLLM command (`{words} ...`: no `vllm serve` or `python -m "
                "vllm.entrypoints.openai.api_server`): skipped, nothing to check against a vLLM manifest",
                "nothing to do if the recipe serves with another program (a diffusion or SGLang recipe)",
                codes.NOT_A_SERVE_COMMAND,
            )
        ]
    if not index.by_string:
        error = (manifest.get("parser") or {}).get("error")
        return [
            Finding(
                "error",
                source,
                "",
                f"the manifest of {index.version} lists no options ({error})",
                "re-extract the manifest",
                codes.EMPTY_MANIFEST,
            )
        ]
    scanner = Scanner(command, index, source).run()
    occurrences = scanner.occurrences
    return [
        *scanner.findings,
        *model_findings(scanner, source),
        *value_findings(occurrences, index, source),
        *duplicate_findings(occurrences, source),
        *registry_findings(occurrences, index, source, plugins),
        *env_findings({**command.env, **env}, index, source),
    ]
