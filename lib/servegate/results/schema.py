"""run.json's layout, declared: every top-level section a run may write, and what it holds.

RunDir.update refuses a section not declared here, so the layout has one definition. Readers
(`servegate summary`, `report`, `compare`, `baseline`) open runs with `load_run`, which reads every
schema version servegate has written.

Version history: 1 (to 2026-12): sections as below, written from scattered call sites.
2: the same sections, declared; `cluster.runtime` added; `flags.<node>` carries `runtime` on every runtime;
`multinode` recorded on every runtime (was docker-only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from servegate.errors import ServegateError

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)

SECTIONS: dict[str, str] = {
    "schema_version": "this layout's version",
    "recipe": "name, file, sha256 and --set overrides of the recipe",
    "cluster": "name, file, runtime and nodes of the cluster",
    "suite": "servegate's commit and the machine it ran on",
    "started_utc": "when the run began", "finished_utc": "when it ended", "verdict": "running|passed|failed|...",
    "wall_s": "the run's wall time",
    "phases": "seconds per phase (phase[node] for per-node phases)",
    "scenarios": "per test id: scenario, outcome, seconds, message",
    "nodes": "per node: versions, python, ping",
    "node_checks": "per node: preflight check seconds and problems (step 00)",
    "image": "tag, build, per-node image IDs and versions, problems (step 10)",
    "containers": "per node: container name, image, flags, dropped flags, env (redacted)",
    "env_probe": "vars missing or different in the containers at start",
    "mods": "per node: mod outcomes (step 20)",
    "model": "model path and the generated spec", "weights": "distribution and check of the model folder (step 30)",
    "ray": "Ray address and bring-up seconds (step 40)", "env_parity": "env parity report (step 45)",
    "flags": "per node: manifest origin, errors, warnings (step 50)",
    "flag_manifests": "per node: where the manifest was extracted (docker runtime)",
    "memory": "plan (step 55), heavy phase and timeline (step 80)",
    "rendered": "mode, command, notes and launches (redacted)", "multinode": "vLLM mode and how Ray is used",
    "launch": "run id, mode and the processes started", "readiness": "readiness steps with their seconds",
    "timings": "start-to-first-token and similar", "endpoint": "an external endpoint's URL and model",
    "spec_decode": "drafted/accepted tokens (step 67)", "throughput": "throughput summary (step 90)",
    "provenance": "what the throughput figures were measured on", "teardown": "what survived teardown",
    "checks": "image gate: its checks", "gate": "image gate: the gate run this run belongs to",
    "fidelity": "load-generator fidelity benchmark results",
    "stack_parity": "per-node fingerprint (driver, CUDA, kernel, NCCL, packages, freeze hash, image), differences",
    "fabric": "declared interfaces, carrier, fabric IPs per node, the timed all-reduce, problems (step 47)",
    "startup": "per node: seconds from process start to port open, HTTP ready, first token (step 62)",
    "multiturn": "tool call -> tool result -> answer, plain and streamed, and their parity (step 68)",
    "ladder": "context ladder: per rung prompt tokens, TTFT, MemAvailable per node; the rung that broke (step 85)",
}


def check_section(section: str) -> None:
    if section not in SECTIONS:
        raise ServegateError(f"run.json section {section!r} is not declared in results/schema.py",
                             fix="declare it in SECTIONS with what it holds")


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """A finished (or killed) run's run.json, of any readable schema version."""
    path = Path(run_dir) / "run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ServegateError(f"cannot read {path}: {exc}") from None
    version = data.get("schema_version", 1) if isinstance(data, dict) else None
    if version not in READABLE_VERSIONS:
        raise ServegateError(f"{path}: schema_version {version!r} is not one this servegate reads "
                             f"({', '.join(map(str, READABLE_VERSIONS))})")
    data.setdefault("cluster", {}).setdefault("runtime", "docker" if data.get("containers") else "host")
    return data
