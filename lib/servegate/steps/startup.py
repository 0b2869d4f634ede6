"""Startup timing: time to port open, to HTTP ready and to the first token, from the start of vLLM's processes.

The same phases sparkrun records from container start (and `vllm bench sweep`'s startup mode): read off the
readiness probes of the launch (waits.run_steps), which start right after every node's process is spawned.
Each phase is cumulative from that start; thresholds come from `expect.startup`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# phase -> (the readiness step that ends it, its label, the expect.startup key)
PHASES = {
    "port_open_s": ("port ", "time to port open", "max_port_open_s"),
    "http_ready_s": ("/v1/models", "time to HTTP ready (/health 200, model listed)", "max_http_ready_s"),
    "first_token_s": ("a streamed chat", "time to first token", "max_first_token_s"),
}


@dataclass(frozen=True)
class Late:
    node: str
    phase: str
    seconds: float
    limit: float

    def __str__(self) -> str:
        label, key = PHASES[self.phase][1], PHASES[self.phase][2]
        return (f"node {self.node}: {label} {self.seconds:.1f} s from process start exceeds "
                f"expect.startup.{key} = {self.limit:g} s")


def phases(readiness: list[Any]) -> dict[str, float]:
    """Cumulative seconds from process start at the end of each phase (readiness: StepTimings or dicts)."""
    out, elapsed = {}, 0.0
    for step in readiness:
        name = step["name"] if isinstance(step, dict) else step.name
        elapsed += float(step["seconds"] if isinstance(step, dict) else step.seconds)
        for phase, (prefix, _, _) in PHASES.items():
            if name.startswith(prefix):
                out[phase] = round(elapsed, 3)
    return out


def per_node(launches: list[tuple[str, str]], readiness: list[Any]) -> dict[str, dict[str, Any]]:
    """node -> its phases: the serving node's from readiness; a follower's are those of the server it joins."""
    serving = phases(readiness)
    out: dict[str, dict[str, Any]] = {}
    for node, role in launches:
        entry = out.setdefault(node, {"roles": []})
        entry["roles"].append(role)
        if role == "serve":
            entry.update(serving)
    for entry in out.values():
        if "first_token_s" not in entry and serving:
            entry["joined_server_ready_s"] = serving.get("first_token_s")  # a follower is ready when rank 0 is
    return out


def check(timings: dict[str, dict[str, Any]], limits: dict[str, Any] | None) -> list[Late]:
    late = []
    for node, entry in sorted(timings.items()):
        for phase, (_, _, key) in PHASES.items():
            limit = (limits or {}).get(key)
            if limit is not None and entry.get(phase) is not None and entry[phase] > limit:
                late.append(Late(node, phase, entry[phase], float(limit)))
    return late
