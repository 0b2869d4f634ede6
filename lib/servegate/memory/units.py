"""Sizes for people, and a planner finding (level, message, fix)."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
LEVELS = ("ok", "warn", "fail")


def gib(value: float) -> str:
    """Bytes for people: GiB down to 0.1 GiB, then MiB, then KiB."""
    for unit, size in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size / 10 or unit == "KiB":
            return f"{value / size:.2f} {unit}"
    return f"{value} B"


@dataclass
class Finding:
    level: str  # ok | warn | fail
    message: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.level.upper()}: {self.message}" + (f"\n    fix: {self.fix}" if self.fix else "")
