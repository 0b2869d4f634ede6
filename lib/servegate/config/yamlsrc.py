"""YAML loading that remembers where every key came from, so errors can name file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from servegate.errors import Location, RecipeError


class SourceMap:
    """Maps a dotted key path ("defaults.port", "mods.1") to the 1-based line it was written on."""

    def __init__(self, file: str, root: yaml.Node | None):
        self.file = file
        self._lines: dict[str, int] = {}
        if root is not None:
            self._walk(root, "")

    def _walk(self, node: yaml.Node, prefix: str) -> None:
        self._lines.setdefault(prefix, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                self._lines[path] = key_node.start_mark.line + 1
                self._walk(value_node, path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, f"{prefix}.{index}" if prefix else str(index))

    def line(self, key: str) -> int | None:
        while key:
            if key in self._lines:
                return self._lines[key]
            key = key.rpartition(".")[0]
        return self._lines.get("")

    def at(self, key: str, node: str | None = None) -> Location:
        return Location(file=self.file, line=self.line(key), key=key, node=node)


def load_yaml_mapping(path: str | Path, error: type[RecipeError] = RecipeError) -> tuple[dict, SourceMap]:
    """Read a YAML file that must hold a mapping; return it with its source map."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error("file not found", where=Location(file=file), fix="check the path") from None
    except OSError as exc:
        raise error(f"cannot read file: {exc.strerror}", where=Location(file=file)) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        raise error(f"malformed YAML: {problem}", where=Location(file=file, line=line),
                    fix="fix the YAML syntax at that line (indentation, quotes, a ':' after each key)") from None
    except yaml.YAMLError as exc:
        raise error(f"malformed YAML: {exc}", where=Location(file=file)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"the file must hold a mapping of keys, found a {type(data).__name__}",
                    where=Location(file=file, line=1), fix="start the file with 'key: value' lines")
    return data, SourceMap(file, root)
