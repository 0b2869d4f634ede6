"""What the image-bump gate records: one Check per step and target, and the gate's configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Check:
    step: str
    target: str
    outcome: str = "passed"  # passed | failed | skipped
    message: str = ""
    detail: str = ""
    seconds: float = 0.0


@dataclass
class GateConfig:
    image: str
    baseline_image: str | None = None
    recipes: list[Path] = field(default_factory=list)
    cluster: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    results: Path | None = None
    tolerances: dict[str, float] = field(default_factory=dict)
    skip_deploy: bool = False
