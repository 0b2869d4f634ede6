"""The blocks a report is made of; render.py writes them as HTML and markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: Path
    caption: str


@dataclass
class Text:
    text: str
