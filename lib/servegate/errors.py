"""Typed errors that a person can act on: where, what was expected, what was seen, what to do.

The hierarchy (every error servegate reports without a traceback is a ServegateError):

    ServegateError
    ├── LocatedError            tied to a place: file, line, key, node (Location)
    │   ├── RecipeError         a recipe file is malformed, incomplete or inconsistent
    │   ├── ClusterError        a cluster (inventory) file is malformed
    │   └── NodeError           a node could not be reached, or a command on it failed
    ├── WaitTimeout             a wait strategy (waits.py) ran out of time
    ├── ServerExited            the process waited on died
    └── LaunchRefused           a pre-launch step found errors; nothing was launched
"""

from __future__ import annotations

from dataclasses import dataclass

from servegate.redact import redact


class ServegateError(Exception):
    """Base for every error servegate reports without a traceback. Its text is redacted (servegate.redact):
    a message reaches the terminal, pytest.fail and junit, so a secret in a command it quotes must not."""

    def __str__(self) -> str:
        return redact(super().__str__())


@dataclass
class Location:
    file: str | None = None
    line: int | None = None
    key: str | None = None
    node: str | None = None

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file if self.line is None else f"{self.file}:{self.line}")
        if self.key:
            parts.append(f"key '{self.key}'")
        if self.node:
            parts.append(f"node '{self.node}'")
        return ", ".join(parts) or "<unknown>"


class LocatedError(ServegateError):
    """An error tied to a place in an input file (or a node)."""

    def __init__(self, cause: str, *, where: Location | None = None, fix: str | None = None):
        self.cause = cause
        self.where = where or Location()
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.cause}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class RecipeError(LocatedError):
    """A recipe file is malformed, incomplete or inconsistent."""


class ClusterError(LocatedError):
    """A cluster (inventory) file is malformed or names something that cannot work."""


class NodeError(LocatedError):
    """A node could not be reached or a command on it failed."""


class WaitTimeout(ServegateError):
    """A wait strategy ran out of time."""


class ServerExited(ServegateError):
    """The server process died while we were waiting on it."""


class LaunchRefused(ServegateError):
    """A pre-launch step (flags, env parity, model folder) found errors: nothing was launched."""
