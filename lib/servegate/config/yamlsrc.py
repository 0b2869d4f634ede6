"""YAML loading that remembers where every key came from, so errors can name file and line."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from servegate.errors import LocatedError, Location, RecipeError

# Hostile-input limits: a recipe or cluster file is a few KiB; anything near these is an attack or a mistake.
MAX_FILE_BYTES = 1024 * 1024  # 1 MiB
MAX_DEPTH = 64  # nesting of mappings/lists
MAX_ALIASES = 1000  # '*alias' references
MAX_NODES = 100_000  # nodes after every alias is expanded ("billion laughs" are refused here)
MAX_INT_CHARS = 100  # an integer written with more characters is refused (int->str limits, slow parsing)
INT_TAG = "tag:yaml.org,2002:int"


class LimitExceeded(yaml.MarkedYAMLError):
    """Well-formed YAML that breaks one of the limits above (depth, aliases, expanded size, integer length)."""


class _HardenedLoader(yaml.SafeLoader):
    """SafeLoader with bounded nesting and alias use, and values that cannot crash the constructor."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise LimitExceeded(None, None, f"more than {MAX_ALIASES} alias references",
                                    self.peek_event().start_mark)
        else:
            self._nodes += 1
            if self._nodes > MAX_NODES:
                raise LimitExceeded(None, None, f"more than {MAX_NODES} values", self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise LimitExceeded(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        if isinstance(node, yaml.ScalarNode) and node.tag == INT_TAG and len(node.value) > MAX_INT_CHARS:
            raise LimitExceeded(
                None, None, f"integer written with {len(node.value)} characters (limit {MAX_INT_CHARS})",
                node.start_mark)
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError, ArithmeticError) as exc:
            raise yaml.constructor.ConstructorError(None, None, f"cannot read value {node.value!r:.60}: {exc}",
                                                    node.start_mark) from None


def _expanded_size(root: yaml.Node) -> int:
    """Node count once every alias is expanded (shared nodes counted per use); refuses alias cycles."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise LimitExceeded(None, None, "an alias refers to the node that contains it", node.start_mark)
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        sizes[key] = total = min(total, MAX_NODES + 1)
        if total > MAX_NODES:
            raise LimitExceeded(None, None, f"more than {MAX_NODES} values once aliases are expanded "
                                "(an alias bomb)", node.start_mark)
        return total

    return size(root)


def load_yaml_text(text: str) -> tuple[yaml.Node | None, Any]:
    """Compose and construct one YAML document with the limits above; raises yaml.YAMLError."""
    loader = _HardenedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _expanded_size(root)
        return root, loader.construct_document(root)
    finally:
        loader.dispose()


def safe_load_value(text: str) -> Any:
    """One YAML value (a `--set` value) under the same limits; raises yaml.YAMLError."""
    return load_yaml_text(text)[1]


class SourceMap:
    """Maps a dotted key path ("defaults.port", "mods.1") to the 1-based line it was written on."""

    def __init__(self, file: str, root: yaml.Node | None, sha256: str = ""):
        self.file = file
        self.sha256 = sha256
        self._lines: dict[str, int] = {}
        if root is not None:
            self._walk(root, "")

    def _walk(self, node: yaml.Node, prefix: str) -> None:
        self._lines.setdefault(prefix, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                label = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                path = f"{prefix}.{label}" if prefix else str(label)
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


def load_yaml_mapping(path: str | Path, error: type[LocatedError] = RecipeError) -> tuple[dict, SourceMap]:
    """Read a YAML file that must hold a mapping; return it with its source map."""
    file = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise error("file not found", where=Location(file=file), fix="check the path") from None
    except IsADirectoryError:
        raise error("is a folder, not a file", where=Location(file=file), fix="name a YAML file") from None
    except OSError as exc:
        raise error(f"cannot read file: {exc.strerror or exc}", where=Location(file=file)) from None
    except ValueError as exc:  # e.g. an embedded NUL byte in the path
        raise error(f"cannot read file: {exc}", where=Location(file=file.replace("\0", "\\0")),
                    fix="check the path") from None
    if len(raw) > MAX_FILE_BYTES:
        raise error(f"file is larger than the limit of {MAX_FILE_BYTES} bytes ({MAX_FILE_BYTES // 1024} KiB)",
                    where=Location(file=file), fix="a recipe or cluster file is a few KiB; check the path")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise error(f"file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                    where=Location(file=file, line=line), fix="save the file as UTF-8") from None
    try:
        root, data = load_yaml_text(text)
    except LimitExceeded as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise error(f"refused: {exc.problem}", where=Location(file=file, line=line),
                    fix="recipe and cluster files are small, plain YAML; remove the construct at that line") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        raise error(f"malformed YAML: {problem}", where=Location(file=file, line=line),
                    fix="fix the YAML syntax at that line (indentation, quotes, a ':' after each key)") from None
    except yaml.YAMLError as exc:
        raise error(f"malformed YAML: {exc}", where=Location(file=file)) from None
    except RecursionError:
        raise error(f"malformed YAML: nested too deeply (limit {MAX_DEPTH} levels)",
                    where=Location(file=file)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"the file must hold a mapping of keys, found a {type(data).__name__}",
                    where=Location(file=file, line=1), fix="start the file with 'key: value' lines")
    return data, SourceMap(file, root, hashlib.sha256(raw).hexdigest())
