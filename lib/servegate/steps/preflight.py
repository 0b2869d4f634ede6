"""The checks a node must pass before a launch, in ONE round trip per node, every node at once.

A round trip to a node (docker exec, ssh) costs far more than what it runs (df, ss, sha256sum of a model
folder): measured on the simulated cluster, one `docker exec` is ~60 ms of CPU and a docker CLI call
inside the node ~28 ms more. So the checks of one node go out as one batch (NodeHost.run_batch, over the
node's Session where one is open), the container (the image it runs and the env it started with) is read
from the engine's socket with curl where it can (~8 ms), and the nodes are checked in parallel threads.
Each check still reads the real state and reports what it saw.
"""

from __future__ import annotations

import ipaddress
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
VIA = "servegate-via "  # first line of the port check's answer: which source it read (ss or /proc/net/tcp*)
# The tools each check runs on the node, and what to say when one is missing (never a failed check that reads
# like a finding). `ss` has a fallback (/proc/net/tcp{,6}); the others have none.
TOOLS = {"disk": ("df", "mkdir"), "weights": ("find", "sha256sum", "head", "tail"), "gpus": ("nvidia-smi",)}
MISSING = "servegate-missing "


def port_command(port: int) -> str:
    """Who listens on `port`: `ss` where the node has it, else the LISTEN rows (state 0A) of /proc/net/tcp and
    /proc/net/tcp6 read with shell builtins alone (the lent GPU image has no `ss`)."""
    hexport = f"{int(port):04X}"
    return (f"if command -v ss >/dev/null 2>&1; then echo '{VIA}ss'; ss -Htln {shlex.quote(f'sport = :{int(port)}')}; "
            f"elif [ -r /proc/net/tcp ]; then echo '{VIA}/proc/net/tcp'; "
            f'for f in /proc/net/tcp /proc/net/tcp6; do [ -r "$f" ] || continue; '
            f'while read -r sl local rem st rest; do case "$local:$st" in *:{hexport}:0A) echo "$f $local";; esac; '
            f'done < "$f"; done; '
            f"else echo 'neither ss nor a readable /proc/net/tcp on this node' >&2; exit 127; fi")


def tools_command(names: list[str]) -> str:
    """One line per tool the node lacks (`command -v`, a shell builtin)."""
    quoted = " ".join(shlex.quote(n) for n in names)
    return f"for t in {quoted}; do command -v \"$t\" >/dev/null 2>&1 || echo \"{MISSING}$t\"; done; true"


def container_command(name: str) -> str:
    """The container's inspect JSON: straight from the engine's socket with curl where it can (under half the
    docker CLI's CPU, and this runs in every check round), else `docker container inspect`."""
    quoted = shlex.quote(name)
    api = shlex.quote(f"http://docker/containers/{urllib.parse.quote(name, safe='')}/json")
    return (f'if [ -z "${{DOCKER_HOST:-}}" ] && [ -S {DOCKER_SOCKET} ] && command -v curl >/dev/null; then '
            f"curl -sS --unix-socket {DOCKER_SOCKET} {api}; "
            f"elif command -v docker >/dev/null 2>&1; then docker container inspect {quoted}; "
            f"else echo '{MISSING}docker'; exit 127; fi")


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
    gpus: int = 0  # the node declares GPUs: nvidia-smi must be on its PATH

    def needed_tools(self) -> dict[str, tuple[str, ...]]:
        """Check name -> the tools it runs on the node."""
        needed = {"disk": TOOLS["disk"]}
        if self.model_path:
            needed["weights"] = TOOLS["weights"]
        if self.gpus:
            needed["gpus"] = TOOLS["gpus"]
        return needed

    def commands(self) -> dict[str, str]:
        commands = {"reach": f"echo {PING}"}
        tools = sorted({tool for names in self.needed_tools().values() for tool in names})
        commands["tools"] = tools_command(tools)
        workdir = shell_path(self.workdir)
        commands["disk"] = f"mkdir -p {workdir} && df -Pk {workdir}"
        if self.port is not None:
            commands["port"] = port_command(self.port)
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
    port_source: str = ""  # "ss" or "/proc/net/tcp" (the node has no ss)
    missing_tools: list[str] = field(default_factory=list)
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
    skip = read_tools(report, check, results["tools"])
    if "disk" not in skip:
        read_disk(report, check, results["disk"])
    if "port" in results:
        read_port(report, check, results["port"])
        if report.listeners and report.problems:
            report.problems[-1] += f"\n{host.port_holder_text(check.port)}"
    if "container" in results:
        read_container(report, check, results["container"])
    if "weights" in results and "weights" not in skip:
        read_weights(report, check, results["weights"])
    return report


def read_tools(report: NodeCheckReport, check: NodeCheck, result: Result) -> set[str]:
    """A tool a check needs and the node lacks is its own problem, named; that check's answer is then not read
    (it would only say 'command not found' in another check's words). Returns the checks to skip."""
    report.missing_tools = [line[len(MISSING):].strip() for line in result.stdout.splitlines()
                            if line.startswith(MISSING)]
    skip = set()
    for name, tools in check.needed_tools().items():
        lacking = [tool for tool in tools if tool in report.missing_tools]
        if lacking:
            skip.add(name)
            report.problems.append(f"node {report.node}: the {name} check needs {', '.join(lacking)}, "
                                   "which is not on the node's PATH; install it there (no check was made)")
    return skip


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
    lines = result.stdout.strip().splitlines()
    if lines and lines[0].startswith(VIA):
        report.port_source = lines.pop(0)[len(VIA):]
    if not result.ok:
        tool = report.port_source or "ss and /proc/net/tcp"
        report.problems.append(f"node {report.node}: could not check port {check.port}: {tool} failed "
                               f"({failure(result)}); nothing was found listening, nothing was checked either")
        return
    if report.port_source.startswith("/proc"):
        lines = [proc_listener(line) for line in lines]
    report.listeners = "\n".join(lines).strip()
    if report.listeners:
        report.problems.append(f"node {report.node}: port {check.port} is already in use "
                               f"(read with {report.port_source}):\n{report.listeners}")


def proc_listener(line: str) -> str:
    """'/proc/net/tcp 0100007F:1F90' -> 'LISTEN 127.0.0.1:8080 (/proc/net/tcp)'."""
    source, _, address = line.partition(" ")
    host_hex, _, port_hex = address.partition(":")
    try:
        raw = bytes.fromhex(host_hex)
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host order
        host = str(ipaddress.ip_address(words))
        return f"LISTEN {host if len(raw) == 4 else f'[{host}]'}:{int(port_hex, 16)} ({source})"
    except ValueError:
        return f"LISTEN {address} ({source})"


def read_container(report: NodeCheckReport, check: NodeCheck, result: Result) -> None:
    try:
        seen = json.loads(result.stdout) if result.ok else None
    except json.JSONDecodeError:
        seen = None
    seen = seen[0] if isinstance(seen, list) and seen else seen
    if f"{MISSING}docker" in result.stdout:
        report.problems.append(f"node {report.node}: the container check needs docker (or curl and "
                               f"{DOCKER_SOCKET}), neither is on the node; no check was made")
        return
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
