"""What changed in `vllm serve` between two vLLM versions, from their flag manifests.

Why: flags move between releases (`--swap-space` gone, `--mamba-ssm-cache-dtype` choices grown,
parsers added) and a recipe written against one image breaks on the next. Reading two manifests
side by side answers "what must this recipe change to move from A to B" before anyone tries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class ManifestDiff:
    a_version: str
    b_version: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    aliases_changed: dict[str, tuple[list, list]] = field(default_factory=dict)
    choices_changed: dict[str, tuple[list | None, list | None]] = field(default_factory=dict)
    defaults_changed: dict[str, tuple[object, object]] = field(default_factory=dict)
    types_changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    registries_changed: dict[str, tuple[list, list]] = field(default_factory=dict)  # name -> (added, removed)

    def is_empty(self) -> bool:
        return not any(
            (
                self.added,
                self.removed,
                self.aliases_changed,
                self.choices_changed,
                self.defaults_changed,
                self.types_changed,
                self.registries_changed,
            )
        )


def version_of(manifest: dict) -> str:
    vllm = manifest.get("vllm") or {}
    return f"{vllm.get('distribution') or 'vllm'} {vllm.get('version') or '?'}"


def primary_flag(option: dict) -> str:
    """The name a flag is known by: its first long, non-negated option string."""
    negated = set(option.get("negated_option_strings") or [])
    long_names = [s for s in option["option_strings"] if s.startswith("--") and s not in negated]
    return (long_names or option["option_strings"])[0]


def options_by_flag(manifest: dict) -> dict[str, dict]:
    return {primary_flag(o): o for o in manifest.get("options") or []}


def type_signature(option: dict) -> str:
    kind = (option.get("type") or {}).get("kind")
    return f"{option.get('action')} kind={kind} nargs={option.get('nargs')}"


def diff(a: dict, b: dict) -> ManifestDiff:
    """Differences from manifest `a` (old) to manifest `b` (new)."""
    result = ManifestDiff(version_of(a), version_of(b))
    old, new = options_by_flag(a), options_by_flag(b)
    result.added = sorted(set(new) - set(old))
    result.removed = sorted(set(old) - set(new))
    for flag in sorted(set(old) & set(new)):
        compare_option(flag, old[flag], new[flag], result)
    result.registries_changed = registry_changes(a.get("registries") or {}, b.get("registries") or {})
    return result


def compare_option(flag: str, old: dict, new: dict, result: ManifestDiff) -> None:
    if sorted(old["option_strings"]) != sorted(new["option_strings"]):
        result.aliases_changed[flag] = (old["option_strings"], new["option_strings"])
    if old.get("choices") != new.get("choices"):
        result.choices_changed[flag] = (old.get("choices"), new.get("choices"))
    if old.get("default") != new.get("default"):
        result.defaults_changed[flag] = (old.get("default"), new.get("default"))
    if type_signature(old) != type_signature(new):
        result.types_changed[flag] = (type_signature(old), type_signature(new))


def registry_changes(old: dict, new: dict) -> dict[str, tuple[list, list]]:
    changes = {}
    for name in sorted(set(old) | set(new)):
        before = set((old.get(name) or {}).get("names") or [])
        after = set((new.get(name) or {}).get("names") or [])
        if before != after:
            changes[name] = (sorted(after - before), sorted(before - after))
    return changes


def short(value: object, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render(result: ManifestDiff) -> str:
    """A plain-text report, one section per kind of change."""
    lines = [f"vllm serve flags: {result.a_version} -> {result.b_version}"]
    if result.is_empty():
        return lines[0] + "\nno differences\n"
    section(lines, "removed flags", [f"- {f}" for f in result.removed])
    section(lines, "added flags", [f"+ {f}" for f in result.added])
    section(lines, "aliases changed", [f"{f}: {a} -> {b}" for f, (a, b) in result.aliases_changed.items()])
    section(lines, "choices changed", [choice_line(f, a, b) for f, (a, b) in result.choices_changed.items()])
    section(lines, "types changed", [f"{f}: {a} -> {b}" for f, (a, b) in result.types_changed.items()])
    section(
        lines,
        "defaults changed",
        [f"{f}: {short(a)} -> {short(b)}" for f, (a, b) in result.defaults_changed.items()],
    )
    section(
        lines,
        "registries changed",
        [registry_line(n, a, r) for n, (a, r) in result.registries_changed.items()],
    )
    return "\n".join(lines) + "\n"


def section(lines: list[str], title: str, body: list[str]) -> None:
    if body:
        lines.append(f"\n{title} ({len(body)}):")
        lines.extend(f"  {line}" for line in body)


def choice_line(flag: str, old: list | None, new: list | None) -> str:
    if old is None or new is None:
        return f"{flag}: choices {short(old)} -> {short(new)}"
    added = [c for c in new if c not in old]
    removed = [c for c in old if c not in new]
    return f"{flag}: +{short(added)} -{short(removed)}"


def registry_line(name: str, added: list, removed: list) -> str:
    return f"{name}: +{short(added, 200)} -{short(removed, 200)}"
