"""What a report shows, read from run folders: verdicts, phases, provenance, throughput, memory plots."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servegate.errors import ServegateError
from servegate.results.schema import load_run as load_run_json
from servegate.throughput import baseline as baselines
from servegate.throughput import store
from servegate.throughput.schema import LevelResult


@dataclass
class RunView:
    path: Path
    data: dict[str, Any]
    throughput: dict[str, Any] | None
    memory_pngs: list[Path] = field(default_factory=list)
    deltas: list[baselines.Delta] = field(default_factory=list)
    baseline_file: Path | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def recipe(self) -> str:
        return self.data.get("recipe", {}).get("name", "?")

    @property
    def verdict(self) -> str:
        return str(self.data.get("verdict", "?"))

    def levels(self) -> dict[str, list[LevelResult]]:
        if not self.throughput:
            return {}
        return {name: store.levels_of(self.throughput, name) for name in self.throughput["workloads"]}

    def provenance_rows(self) -> list[tuple[str, str]]:
        prov = (self.throughput or {}).get("provenance") or self.data.get("provenance") or {}
        suite = self.data.get("suite", {})
        rows = [
            ("recipe", f"{self.recipe} ({self.data.get('recipe', {}).get('file', '?')})"),
            ("recipe sha256", str(self.data.get("recipe", {}).get("sha256", "?"))[:16]),
            ("container", str(prov.get("container") or "?")),
            ("suite commit", str(suite.get("commit") or prov.get("suite_commit") or "?")),
            ("started (UTC)", str(self.data.get("started_utc", "?"))),
        ]
        for node, info in (self.data.get("nodes") or {}).items():
            versions = ", ".join(f"{k} {v}" for k, v in sorted((info.get("versions") or {}).items()))
            rows.append((f"node {node}", versions or "?"))
        for node, driver in (prov.get("drivers") or {}).items():
            rows.append((f"driver {node}", driver or "no NVIDIA driver"))
        for node, image in (prov.get("images") or {}).items():
            rows.append((f"image {node}", json.dumps(image)))
        if prov.get("server"):
            rows.append(("server /version", json.dumps(prov["server"])))
        if prov.get("tools"):
            rows.append(("load generator", ", ".join(f"{k} {v}" for k, v in prov["tools"].items())))
        endpoint = self.data.get("endpoint")
        if endpoint:
            rows.append(("external endpoint", f"{endpoint.get('url')} ({endpoint.get('model')})"))
        return rows


def load_run(path: Path, baseline_file: Path | None = None) -> RunView:
    path = Path(path)
    run_json = path / "run.json"
    if not run_json.is_file():
        raise ServegateError(
            f"{path} is not a run folder (no run.json)\n  fix: pass results/<stamp>-<recipe>/"
        )
    data = load_run_json(run_json.parent)
    view = RunView(path, data, store.load(path), sorted((path / "memory").glob("**/*.png")))
    candidate = baseline_file or baselines.baseline_path(view.recipe)
    if view.throughput and candidate.is_file():
        view.baseline_file = candidate
        view.deltas = baselines.compare(view.throughput, baselines.load(candidate))
    return view
