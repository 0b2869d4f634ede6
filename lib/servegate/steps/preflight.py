"""The checks a node must pass before a launch, in ONE round trip per node, every node at once.

A round trip to a node (docker exec, ssh) costs far more than what it runs (df, ss, sha256sum of a model
folder): measured on the simulated cluster, one `docker exec` is ~60 ms of CPU and a docker CLI call
inside the node ~28 ms more. So the checks of one node go out as one batch (NodeHost.run_batch, over the
node's Session where one is open), the container (the image it runs and the env it started with) is read
from the engine's socket with curl where it can (~8 ms), and the nodes are checked in parallel threads.
Each check still reads the real state and reports what it saw.
"""

from __future__ import annotations

import json
import shlex
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from servegate.errors import NodeError
from servegate.nodes.host import NodeHost, Result
from servegate.steps.env_parity import EnvFinding, env_findings
from servegate.steps.model_folder import Manifest, manifest_script, parse_manifest

PING = "servegate-ping"
DOCKER_SOCKET = "/var/run/docker.sock"


def container_command(name: str) -> str:
    """The container's inspect JSON: straight from the engine's socket with curl where it can (under half the
    docker CLI's CPU, and this runs in every check round), else `docker container inspect`."""
    quoted = shlex.quote(name)
    api = shlex.quote(f"http://docker/containers/{urllib.parse.quote(name, safe='')}/json")
    return (f'if [ -z "${{DOCKER_HOST:-}}" ] && [ -S {DOCKER_SOCKET} ] && command -v curl >/dev/null; then '
            f"curl -sS --unix-socket {DOCKER_SOCKET} {api}; "
            f"else docker container inspect {quoted}; fi")


@dataclass
class NodeCheck:
    """What one node must show; built before anything runs."""

    workdir: str  # free disk is measured here (created when absent); `~/` is the node user's home
    min_free_gib: float = 0.0
    port: int | None = None  # nothing may listen on it
    container: str | None = None  # the node's vLLM container: runs image_id, started with env
    image_id: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    model_path: str | None = None  # its manifest (file list, sizes, sha256) is taken

    def commands(self) -> dict[str, str]:
        commands = {"reach": f"echo {PING}"}
        workdir = shell_path(self.workdir)
        commands["disk"] = f"mkdir -p {workdir} && df -Pk {workdir}"
        if self.port is not None:
            commands["port"] = f"ss -Htln {shlex.quote(f'sport = :{int(self.port)}')}"
        if self.container:
            commands["container"] = container_command(self.container)
        if self.model_path:
            commands["weights"] = manifest_script(self.model_path)
        return commands


@dataclass
class NodeCheckReport:
    node: str
    seconds: float
    free_gib: float | None = None
    listeners: str = ""
    image_id: str | None = None
    env: list[EnvFinding] = field(default_factory=list)
    weights: Manifest | None = None
    problems: list[str] = field(default_factory=list)


def shell_path(path: str) -> str:
    """A path quoted for the node's shell, with a leading `~/` left to the node ("$HOME")."""
    return '"$HOME"/' + shlex.quote(path[2:]) if path.startswith("~/") else shlex.quote(path)


def check_node(host: NodeHost, check: NodeCheck, timeout: float = 600) -> NodeCheckReport:
    """Run one node's checks as one batch and read every answer; problems say node, what and what was seen."""
    started = time.monotonic()
    results = host.run_batch(check.commands(), timeout=timeout)
    report = NodeCheckReport(host.name, time.monotonic() - started)
    if PING not in results["reach"].stdout:
        report.problems.append(f"node {host.name} did not answer: {failure(results['reach'])}")
        return report
    read_disk(report, check, results["disk"])
    if "port" in results:
        read_port(report, check, results["port"])
    if "container" in results:
        read_container(report, check, results["container"])
    if "weights" in results:
        read_weights(report, check, results["weights"])
    return report


def check_nodes(hosts: dict[str, NodeHost], checks: dict[str, NodeCheck]) -> dict[str, NodeCheckReport]:
    """check_node on every node at once (one thread per node)."""
    with ThreadPoolExecutor(max_workers=max(1, len(checks))) as pool:
        futures = {name: pool.submit(check_node, hosts[name], check) for name, check in checks.items()}
        return {name: future.result() for name, future in futures.items()}


def failure(result: Result) -> str:
    return f"exit {result.rc}: {(result.stderr or result.stdout).strip()[-300:]}"


def read_disk(report: NodeCheckReport, check: NodeCheck, result: Result) -> None:
    fields = (result.stdout.strip().splitlines() or [""])[-1].split()
    if not result.ok or len(fields) < 4 or not fields[3].isdigit():
        report.problems.append(f"node {report.node}: df of {check.workdir} failed ({failure(result)})")
        return
    report.free_gib = int(fields[3]) / 2**20
    if report.free_gib < check.min_free_gib:
        report.problems.append(f"node {report.node}: {report.free_gib:.1f} GiB free at {check.workdir}, "
                               f"needs {check.min_free_gib} GiB")


def read_port(report: NodeCheckReport, check: NodeCheck, result: Result) -> None:
    if not result.ok:
        report.problems.append(f"node {report.node}: ss failed ({failure(result)})")
    report.listeners = result.stdout.strip()
    if report.listeners:
        report.problems.append(f"node {report.node}: port {check.port} is already in use:\n{report.listeners}")


def read_container(report: NodeCheckReport, check: NodeCheck, result: Result) -> None:
    try:
        seen = json.loads(result.stdout) if result.ok else None
    except json.JSONDecodeError:
        seen = None
    seen = seen[0] if isinstance(seen, list) and seen else seen
    if not isinstance(seen, dict) or "Config" not in seen:
        why = seen.get("message") if isinstance(seen, dict) else failure(result)
        report.problems.append(f"node {report.node}: container {check.container} not found ({why})")
        return
    image_id = report.image_id = seen.get("Image", "")
    if check.image_id and image_id != check.image_id:
        report.problems.append(f"node {report.node}: container {check.container} runs image {image_id[:19]}, "
                               f"expected {check.image_id[:19]}")
    env = dict(item.split("=", 1) for item in seen["Config"].get("Env") or [] if "=" in item)
    report.env = env_findings(report.node, env, check.env)
    report.problems += [str(finding) for finding in report.env]


def read_weights(report: NodeCheckReport, check: NodeCheck, result: Result) -> None:
    try:
        report.weights = parse_manifest(report.node, check.model_path, result)
    except NodeError as exc:
        report.problems.append(str(exc))
        return
    if report.weights is None:
        report.problems.append(f"node {report.node}: model folder {check.model_path} is absent")
