"""What a mod folder says about itself: the vLLM versions it is for and the flags it adds.

A mod folder may hold `servegate-mod.yaml`:

    vllm: ">=0.30,<0.33"          # PEP 440 specifier: the releases the mod is for
    adds_flags: [--gpu-memory-utilization-gb]

Flags a mod adds are also learned without that file: `--long-flags` on the `+` lines of its patches (and
argparse dests turned flags, `gpu_memory_utilization_gb: float` in an EngineArgs dataclass), and any
`--flag` its run.sh prints or mentions (upstream's gpu-mem-util-gb run.sh prints "You can now use
--gpu-memory-utilization-gb parameter").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from servegate.config.yamlsrc import load_yaml_mapping
from servegate.errors import Location, ServegateError

SPEC_FILE = "servegate-mod.yaml"
SPEC_KEYS = {"vllm", "adds_flags", "description"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)+")
DATACLASS_FIELD = re.compile(r"^\s+([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\s*:\s*[\w\[\]|. ]+=", re.MULTILINE)


class ModSpecError(ServegateError):
    pass


@dataclass
class ModSpec:
    folder: Path
    vllm: SpecifierSet | None = None
    declared_flags: list[str] = field(default_factory=list)
    learned_flags: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def adds_flags(self) -> list[str]:
        return list(dict.fromkeys(self.declared_flags + self.learned_flags))

    def applies_to(self, version: str | None) -> bool | None:
        """Whether the mod is for this vLLM version (None: the mod does not say, or the version is unknown)."""
        if self.vllm is None or not version:
            return None
        try:
            return Version(version.split("+")[0]) in self.vllm
        except InvalidVersion:
            return None


def load_spec(folder: Path) -> ModSpec:
    spec = ModSpec(folder, learned_flags=learned_flags(folder))
    path = folder / SPEC_FILE
    if not path.is_file():
        return spec
    data, src = load_yaml_mapping(path)
    unknown = sorted(set(map(str, data)) - SPEC_KEYS)
    if unknown:
        raise ModSpecError(f"unknown key '{unknown[0]}' in {path}", where=src.at(unknown[0]),
                           fix=f"accepted keys: {', '.join(sorted(SPEC_KEYS))}")
    if data.get("vllm") is not None:
        try:
            spec.vllm = SpecifierSet(str(data["vllm"]))
        except InvalidSpecifier:
            raise ModSpecError(f"vllm: {data['vllm']!r} is not a version specifier", where=src.at("vllm"),
                               fix='write e.g. vllm: ">=0.30,<0.33"') from None
    flags = data.get("adds_flags") or []
    if not isinstance(flags, list) or not all(isinstance(f, str) and f.startswith("--") for f in flags):
        raise ModSpecError("adds_flags must be a list of --flags", where=src.at("adds_flags"),
                           fix="adds_flags: [--gpu-memory-utilization-gb]")
    spec.declared_flags = list(flags)
    return spec


def learned_flags(folder: Path) -> list[str]:
    """--flags added on the + lines of the folder's patches, or named by its run.sh."""
    found: list[str] = []
    for patch in sorted([*folder.glob("*.patch"), *folder.glob("*.diff")]):
        added = "\n".join(line[1:] for line in _read(patch).splitlines()
                          if line.startswith("+") and not line.startswith("+++"))
        removed = "\n".join(line[1:] for line in _read(patch).splitlines()
                            if line.startswith("-") and not line.startswith("---"))
        fields = {"--" + name.replace("_", "-") for name in DATACLASS_FIELD.findall(added)}
        fields -= {"--" + name.replace("_", "-") for name in DATACLASS_FIELD.findall(removed)}
        found += [f for f in FLAG.findall(added) if f not in removed] + sorted(fields)
    run_sh = folder / "run.sh"
    if run_sh.is_file():
        found += FLAG.findall(_read(run_sh))
    return list(dict.fromkeys(found))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def version_refusal(spec: ModSpec, version: str | None, node: str | None) -> tuple[str, str, Location] | None:
    """(cause, fix, where) when the mod declares it is not for this vLLM version."""
    if spec.applies_to(version) is not False:
        return None
    where = Location(file=str(spec.folder / SPEC_FILE), key="vllm", node=node)
    return (f"is for vLLM {spec.vllm}, the node runs vLLM {version}",
            f"drop the mod from the recipe (vLLM {version} is outside its range) or widen 'vllm:' in "
            f"{spec.folder.name}/{SPEC_FILE} once the mod is checked against it", where)
