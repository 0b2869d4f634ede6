"""Env parity: every recipe var present and equal on every node, seen from where the work really runs.

Two checks. Before launch, `missing_vars` reads each node's container environment (the probe the seeds
added after rank 1 crashed: a var absent at container start cannot be added later, because Ray-spawned
workers inherit only the container's env). After Ray is up, `parity` compares the environments that a
Ray task pinned to each node saw. Vars named in expect.per_node_env may differ (NCCL/UCX interface
names, VLLM_HOST_IP); every other difference is reported. Values of secret-looking vars are compared by
hash and never printed.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field

from servegate.nodes.container import ContainerHost
from servegate.nodes.host import NodeHost
from servegate.results.run import SECRET_NAME

# Reported when they differ across nodes (RAY_* is left out: Ray sets per-node ids like RAY_RAYLET_PID).
REPORTED_PREFIXES = ("VLLM_", "NCCL_", "UCX_", "GLOO_", "TORCH_", "PYTORCH_", "CUDA_", "OMP_", "HF_")
MISSING = "<missing>"


def shown(name: str, value: str | None) -> str:
    if value is None:
        return MISSING
    if SECRET_NAME.search(name):
        return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:10]
    return repr(value)


def read_env(host: NodeHost) -> dict[str, str]:
    """The environment a fresh process gets on the host; for a container, the env it was started with
    (`docker inspect` .Config.Env: what every process in it inherits, read without entering it)."""
    if isinstance(host, ContainerHost):
        fmt = shlex.quote("{{json .Config.Env}}")
        out = host.outer.check(f"docker inspect --format {fmt} {shlex.quote(host.container)}",
                               f"reading the start env of container {host.container}").stdout
        items = json.loads(out)
    else:
        items = host.check("env -0", "reading the environment").stdout.split("\0")
    return dict(item.split("=", 1) for item in items if "=" in item)


@dataclass
class EnvFinding:
    node: str
    var: str
    expected: str
    seen: str

    def __str__(self) -> str:
        return f"node {self.node}: {self.var} expected {self.expected}, seen {self.seen}"


def missing_vars(host: NodeHost, expected: dict[str, str]) -> list[EnvFinding]:
    """Vars absent from (or different in) the node's environment, against what servegate started it with."""
    return env_findings(host.name, read_env(host), expected)


def env_findings(node: str, env: dict[str, str], expected: dict[str, str]) -> list[EnvFinding]:
    return [
        EnvFinding(node, name, shown(name, value), shown(name, env.get(name)))
        for name, value in expected.items()
        if env.get(name) != value
    ]


@dataclass
class ParityReport:
    recipe_vars: list[str]
    per_node: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> {var: shown value}
    missing: list[str] = field(default_factory=list)
    unequal: list[str] = field(default_factory=list)
    allowed_differences: list[str] = field(default_factory=list)
    other_differences: list[str] = field(default_factory=list)  # not recipe vars: reported, not failed

    @property
    def problems(self) -> list[str]:
        return self.missing + self.unequal

    def as_dict(self) -> dict:
        return {
            "recipe_vars": self.recipe_vars,
            "missing": self.missing,
            "unequal": self.unequal,
            "allowed_differences": self.allowed_differences,
            "other_differences": self.other_differences,
            "per_node": self.per_node,
        }


def parity(envs: dict[str, dict[str, str]], recipe_env: dict[str, str], per_node: list[str]) -> ParityReport:
    """Compare node environments (node name -> env as a Ray task saw it)."""
    report = ParityReport(sorted(recipe_env), per_node={node: {} for node in envs})
    names = set(recipe_env) | {k for env in envs.values() for k in env if k.startswith(REPORTED_PREFIXES)}
    for var in sorted(names):
        values = {node: envs[node].get(var) for node in sorted(envs)}  # stable order in every message
        for node, value in values.items():
            report.per_node.setdefault(node, {})[var] = shown(var, value)
        distinct = set(values.values())
        line = f"{var}: " + ", ".join(f"{node}={shown(var, value)}" for node, value in values.items())
        if var in recipe_env and None in distinct and var not in per_node:
            absent = [node for node, value in values.items() if value is None]
            report.missing.append(
                f"{var} is missing on node(s) {', '.join(absent)} ({line}); it must be in "
                "every node's container env at start (Ray workers inherit only that)"
            )
        elif len(distinct) > 1 and var in per_node:
            report.allowed_differences.append(line)
        elif len(distinct) > 1 and var in recipe_env:
            report.unequal.append(
                f"{var} differs across nodes ({line}); list it in expect.per_node_env only "
                "if it may legitimately differ (interface names)"
            )
        elif len(distinct) > 1:
            report.other_differences.append(line)
    return report
