"""Startup timing: time to port open, to HTTP ready and to the first token, from the start of vLLM's processes,
and on the docker runtime from each node's container start as well.

The same phases sparkrun records from container start (and `vllm bench sweep`'s startup mode): read off the
readiness probes of the launch (waits.run_steps), which start right after every node's process is spawned.
Each phase is cumulative from that start; thresholds come from `expect.startup`.

From container start: servegate's docker runtime starts one long-lived container per node before the
pre-launch steps (env probe, mods, model, weights, flags, Ray), so `container_to_process_start_s` holds those
steps, and `container_to_<phase>` is that node's container start to the moment the server reached the phase
(a follower node's too: the cluster serves when rank 0 does). Both ends are read on this machine's clock
(the time `docker run -d` returned, the readiness probes' start), so node clock skew does not enter; the
engine's own State.StartedAt is kept beside them.
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
# the same phases from the node's container start: entry key -> (label, the expect.startup key)
FROM_CONTAINER = {f"container_to_{phase}": (label, f"max_container_to_{phase}")
                  for phase, (_, label, _) in PHASES.items()}


@dataclass(frozen=True)
class Late:
    node: str
    phase: str
    seconds: float
    limit: float

    def __str__(self) -> str:
        if self.phase in FROM_CONTAINER:
            (label, key), origin = FROM_CONTAINER[self.phase], "container start"
        else:
            label, key, origin = PHASES[self.phase][1], PHASES[self.phase][2], "process start"
        return (f"node {self.node}: {label} {self.seconds:.1f} s from {origin} exceeds "
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


def from_container(timings: dict[str, dict[str, Any]], containers: dict[str, dict], spawned: dict[str, float],
                   ready_from: float | None, serving: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Add each node's container start and its phases counted from there (see the module doc).

    containers: node -> {epoch, started_at}; spawned: node -> epoch its first vLLM process was spawned;
    ready_from: epoch the readiness probes began; serving: the server's phases from process start."""
    for node, entry in timings.items():
        start = containers.get(node)
        if not start or start.get("epoch") is None:
            continue
        epoch = float(start["epoch"])
        entry["container_started_at"] = start.get("started_at")
        if node in spawned:
            entry["container_to_process_start_s"] = round(spawned[node] - epoch, 3)
        if ready_from is not None:
            for phase in PHASES:
                if phase in serving:
                    entry[f"container_to_{phase}"] = round(ready_from - epoch + serving[phase], 3)
    return timings


def of_deployment(deployment, containers: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """The whole record for run.json `startup`: per node, from process start and (docker) from container start."""
    launches = [(item.launch.node.name, item.launch.role) for item in deployment.launched]
    timings = per_node(launches, deployment.readiness)
    spawned: dict[str, float] = {}
    for item in deployment.launched:
        if item.spawned_epoch:
            spawned.setdefault(item.launch.node.name, item.spawned_epoch)
    return from_container(timings, containers, spawned, deployment.ready_from_epoch, phases(deployment.readiness))


def check(timings: dict[str, dict[str, Any]], limits: dict[str, Any] | None) -> list[Late]:
    late = []
    keys = {phase: key for phase, (_, _, key) in PHASES.items()} | {k: v[1] for k, v in FROM_CONTAINER.items()}
    for node, entry in sorted(timings.items()):
        for phase, key in keys.items():
            limit = (limits or {}).get(key)
            if limit is not None and entry.get(phase) is not None and entry[phase] > limit:
                late.append(Late(node, phase, entry[phase], float(limit)))
    return late
