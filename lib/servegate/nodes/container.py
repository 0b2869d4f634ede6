"""The docker runtime: one long-lived vLLM container per node, started with everything it needs at start.

Env vars are given at `docker run` time and nowhere later: Ray does not carry the driver's environment to
workers on other nodes, so a var that is not in a node's container from the start is missing for every
process Ray spawns there (a missing var made rank 1 pick another kernel and crash). Every container is
labelled with the run id and owner so `servegate clean` can reap what a crashed run left.

`ContainerHost` is a NodeHost whose commands run inside the container (`docker exec` over the node's own
transport), so the deployment handle, mods and probes run unchanged on local, SSH and docker nodes.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from servegate.config.cluster import Node
from servegate.errors import Location, NodeError
from servegate.labels import OWNER_LABEL, ROLE_LABEL, RUN_LABEL, owner_tag
from servegate.nodes.host import NodeHost, Result, quote

HF_CACHE = "~/.cache/huggingface"
SHM_SIZE = "1g"
NOT_RUNNING = re.compile(r"No such container|is not running|is paused|is restarting")
# Flags the seeds use that some platforms refuse: (flag, its value, what the refusal looks like).
# This kind of machine lacks CAP_SYS_RESOURCE, so runc cannot raise RLIMIT_MEMLOCK (type 8).
OPTIONAL_FLAGS = (("--ulimit", "memlock=-1", re.compile(r"setting rlimit type 8|rlimit.*memlock", re.I)),)


@dataclass
class ContainerPlan:
    """What `docker run` gets on one node; built before anything runs, so it can be printed and checked."""

    node: Node
    image: str
    name: str
    run_id: str
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)  # paths mounted at the same path inside
    dropped: list[str] = field(default_factory=list)  # optional flags the platform refused, with why

    def flags(self) -> list[str]:
        flags = [
            "--init",
            "--network",
            "host",
            "--ipc",
            "host",
            "--shm-size",
            SHM_SIZE,
            "--ulimit",
            "stack=67108864",
        ]
        for flag, value, _ in OPTIONAL_FLAGS:
            if not any(d.startswith(f"{flag} {value}") for d in self.dropped):
                flags += [flag, value]
        flags += [
            "--label",
            f"{RUN_LABEL}={self.run_id}",
            "--label",
            f"{OWNER_LABEL}={owner_tag()}",
            "--label",
            f"{ROLE_LABEL}=vllm",
        ]
        if self.node.gpus:
            flags += ["--gpus", "all"]  # device flags only where devices exist
        for path in self.mounts:
            flags += ["-v", f"{path}:{path}"]
        return flags

    def argv(self, env_file: str) -> list[str]:
        return [
            "docker",
            "run",
            "-d",
            "--name",
            self.name,
            *self.flags(),
            "--env-file",
            env_file,
            self.image,
            "sleep",
            "infinity",
        ]


def container_name(run_id: str, node: Node) -> str:
    return f"servegate-{run_id}-{re.sub(r'[^A-Za-z0-9_.-]', '-', node.name)}"


def env_file_text(env: dict[str, str]) -> str:
    """docker --env-file format: KEY=VALUE per line, taken literally (no quotes, no expansion)."""
    bad = [k for k, v in env.items() if "\n" in v]
    if bad:
        raise NodeError(
            f"env values with newlines cannot be passed at container start: {', '.join(bad)}",
            fix="put the value on one line",
        )
    return "\n".join(f"{key}={value}" for key, value in env.items())


def start_container(host: NodeHost, plan: ContainerPlan) -> ContainerHost:
    """`docker run -d` the plan on its node; the env file is written 0600 and removed right after.

    A flag the platform refuses (OPTIONAL_FLAGS) is dropped and recorded in plan.dropped, then retried.
    """
    workdir = host.home_path(host.node.workdir)
    env_path = f"{workdir}/runs/{plan.run_id}/container.env"
    host.write_text(env_path, env_file_text(plan.env))
    try:
        for path in plan.mounts:
            host.run(f"mkdir -p {shlex.quote(path)}")
        while True:
            result = host.run(quote(plan.argv(env_path)), timeout=300)
            refused = None if result.ok else _refused_flag(result.stderr, plan)
            if refused is None:
                break
            remove_container(host, plan.name)  # a refused `docker run` leaves a created container behind
            plan.dropped.append(refused)
    finally:
        host.remove_files(env_path)  # and runs/<id>/ when that leaves it empty
    if not result.ok:
        remove_container(host, plan.name)
        raise NodeError(
            f"docker run of {plan.image} as {plan.name} failed: {result.stderr.strip()[-600:]}",
            where=Location(node=host.name),
            fix=f"command was: {quote(plan.argv('<env file>'))}",
        )
    return ContainerHost(host, plan.name)


def container_started_at(host: NodeHost, name: str) -> str | None:
    """The engine's State.StartedAt of a container (RFC 3339, the node's clock), None if it cannot tell."""
    result = host.run(f"docker inspect --format '{{{{.State.StartedAt}}}}' {shlex.quote(name)}")
    return (result.stdout.strip() or None) if result.ok else None


def _refused_flag(stderr: str, plan: ContainerPlan) -> str | None:
    for flag, value, pattern in OPTIONAL_FLAGS:
        already = any(d.startswith(f"{flag} {value}") for d in plan.dropped)
        if not already and pattern.search(stderr or ""):
            return f"{flag} {value} (refused by this platform: {pattern.search(stderr).group(0)})"
    return None


def remove_container(host: NodeHost, name: str) -> bool:
    """Remove one container by its exact name (never a prune). True when it is gone."""
    host.run(f"docker rm -f {shlex.quote(name)} >/dev/null 2>&1")
    return not host.run(f"docker container inspect {shlex.quote(name)} >/dev/null 2>&1").ok


def labelled_containers(host: NodeHost, run_id: str | None = None) -> list[str]:
    """Names of servegate's containers on the node (of one run, or of every run)."""
    selector = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
    out = host.run(f"docker ps -a --filter label={shlex.quote(selector)} --format '{{{{.Names}}}}'")
    return [line for line in out.stdout.split() if line]


class ContainerHost(NodeHost):
    """A NodeHost whose commands run inside one container on the node."""

    def __init__(self, outer: NodeHost, container: str):
        super().__init__(outer.node)
        self.outer = outer
        self.container = container

    @property
    def testinfra_host(self):
        return self.outer.testinfra_host

    def wrap(self, command: str, interactive: bool = False) -> str:
        flags = "-i " if interactive else ""
        return f"docker exec {flags}{shlex.quote(self.container)} bash -c {shlex.quote(command)}"

    def run(self, command: str, timeout: float | None = None) -> Result:
        inner = command if timeout is None else f"timeout {int(timeout)} bash -c {shlex.quote(command)}"
        result = self.outer.run(self.wrap(inner))
        if result.rc in (1, 126, 127) and NOT_RUNNING.search(result.stderr or ""):
            raise NodeError(
                f"container {self.container} is not running: {result.stderr.strip()[:200]}",
                where=Location(node=self.name),
                fix="the node's vLLM container stopped; read `docker logs` on the node, then rerun",
            )
        return Result(result.rc, result.stdout, result.stderr, command)
