"""A simulated cluster on this machine: each node is a container with its own docker engine,
its own fixed IP on a docker "fabric" network, and sshd; its testinfra URL is docker://<container>.

The cluster file says what to create: nodes with `host: docker://NAME` and `fabric_ip`, plus
`fabric: {network: NAME, subnet: CIDR}`. `sim_up` is idempotent and keeps each node's image store on a
labelled volume (an image loaded once stays loaded); `sim_down` removes containers and the network by
label, and the volumes only when asked.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from servegate.config.cluster import Cluster, Node
from servegate.config.paths import cache_root
from servegate.errors import ClusterError, Location, ServegateError
from servegate.labels import SIM_LABEL, owner_tag
from servegate.labels import SIM_OWNER_LABEL as OWNER_LABEL
from servegate.runtimes.images import IMAGES_DIR, ImageBuild, build_image
from servegate.sim.engine import ensure_engine
from servegate.waits import wait_until

NODE_IMAGE = "servegate-sim-node:1"
# What a node container needs to run its own docker engine. Not --privileged: that asks for every
# capability, and this kind of machine lacks CAP_SYS_RESOURCE (runc: "unable to apply caps").
NODE_FLAGS = (
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--security-opt",
    "systempaths=unconfined",
    "--device-cgroup-rule",
    "a *:* rwm",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--shm-size",
    "4g",
)
ENGINE_WAIT_S = 90
LOCK_WAIT_S = 3600


@dataclass
class SimNode:
    name: str
    container: str
    ip: str

    @property
    def volume(self) -> str:
        return f"{self.container}-docker"


@dataclass
class SimCluster:
    name: str
    network: str
    subnet: str
    nodes: list[SimNode]

    def running(self) -> bool:
        """Every node container is running and its engine answers."""
        return all(container_state(n.container) == "running" and _engine_answers(n) for n in self.nodes)


def simulated(cluster: Cluster) -> SimCluster | None:
    """The simulation a cluster file declares (`fabric: {..., simulated: true}`), else None."""
    if cluster.path is None or not Path(cluster.path).is_file():
        return None
    fabric = (yaml.safe_load(Path(cluster.path).read_text()) or {}).get("fabric") or {}
    return sim_spec(cluster) if isinstance(fabric, dict) and fabric.get("simulated") else None


def sim_spec(cluster: Cluster) -> SimCluster:
    """Read the simulated cluster's layout from its cluster file (fabric network + docker:// nodes)."""
    raw = yaml.safe_load(Path(cluster.path).read_text()) if cluster.path else {}
    fabric = (raw or {}).get("fabric") or {}
    if not fabric.get("network") or not fabric.get("subnet"):
        raise ClusterError(
            "a simulated cluster needs 'fabric: {network: NAME, subnet: CIDR}'",
            where=Location(file=str(cluster.path), key="fabric"),
            fix="e.g. fabric: {network: servegate-fabric, subnet: 172.31.200.0/24}",
        )
    subnet = ipaddress.ip_network(str(fabric["subnet"]))
    nodes = []
    for node in cluster.nodes:
        if not node.host.startswith("docker://"):
            raise ClusterError(
                f"node '{node.name}': a simulated node needs host docker://<container>",
                where=Location(file=str(cluster.path), node=node.name),
                fix="host: docker://sg-n1",
            )
        if ipaddress.ip_address(node.fabric_ip) not in subnet:
            raise ClusterError(
                f"node '{node.name}': fabric_ip {node.fabric_ip} is outside {subnet}",
                where=Location(file=str(cluster.path), node=node.name),
                fix="pick an IP in the subnet",
            )
        nodes.append(
            SimNode(node.name, node.host.removeprefix("docker://").rpartition("@")[2], node.fabric_ip)
        )
    return SimCluster(cluster.name, str(fabric["network"]), str(subnet), nodes)


def make_cluster(
    count: int, name: str, subnet: str = "172.31.210.0/24", runtime: str = "docker"
) -> tuple[Cluster, SimCluster]:
    """A cluster of `count` simulated nodes built in code (the benchmark uses 1, 2, 4, 8)."""
    net = ipaddress.ip_network(subnet)
    sim_nodes, nodes = [], []
    for index in range(count):
        node_name = "head" if index == 0 else f"w{index}"
        ip = str(net.network_address + 11 + index)
        sim_nodes.append(SimNode(node_name, f"{name}-{node_name}", ip))
        nodes.append(
            Node(
                name=node_name,
                role="head" if index == 0 else "worker",
                host=f"docker://{name}-{node_name}",
                fabric_ip=ip,
                runtime=runtime,
            )
        )
    return Cluster(name=name, path=None, nodes=nodes), SimCluster(name, f"{name}-fabric", subnet, sim_nodes)


def _docker(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)


def _ensure_network(sim: SimCluster) -> None:
    found = _docker("network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", sim.network)
    if found.returncode == 0:
        if found.stdout.strip() != sim.subnet:
            raise ServegateError(
                f"docker network {sim.network} exists with subnet {found.stdout.strip()}, "
                f"the cluster wants {sim.subnet}\n  fix: servegate sim down, or pick another name"
            )
        return
    made = _docker(
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        sim.subnet,
        "--label",
        f"{SIM_LABEL}={sim.name}",
        sim.network,
    )
    if made.returncode != 0:
        raise ServegateError(
            f"creating the fabric network {sim.network} ({sim.subnet}) failed: {made.stderr.strip()}"
        )


def container_state(name: str) -> str | None:
    out = _docker("container", "inspect", "--format", "{{.State.Status}}", name)
    return out.stdout.strip() if out.returncode == 0 else None


def _ensure_node(sim: SimCluster, node: SimNode) -> None:
    state = container_state(node.container)
    if state == "running":
        return
    if state is not None and _image_of(node.container) == _image_id(NODE_IMAGE):
        started = _docker("start", node.container)
        if started.returncode == 0:
            return
    if state is not None:  # a stopped node of an older node image is made anew (its volume keeps the images)
        _docker("rm", "-f", node.container)
    argv = [
        "run",
        "-d",
        *NODE_FLAGS,
        "--name",
        node.container,
        "--hostname",
        node.name,
        "--network",
        sim.network,
        "--ip",
        node.ip,
        "--label",
        f"{SIM_LABEL}={sim.name}",
        "--label",
        f"{OWNER_LABEL}={owner_tag()}",
        "-v",
        f"{node.volume}:/var/lib/docker",
        NODE_IMAGE,
    ]
    _docker("volume", "create", "--label", f"{SIM_LABEL}={sim.name}", node.volume)
    made = _docker(*argv)
    if made.returncode != 0:
        raise ServegateError(
            f"starting simulated node {node.name} ({node.container}) failed: {made.stderr.strip()}"
        )


def _image_of(container: str) -> str | None:
    out = _docker("container", "inspect", "--format", "{{.Image}}", container)
    return out.stdout.strip() if out.returncode == 0 else None


def _image_id(tag: str) -> str | None:
    out = _docker("image", "inspect", "--format", "{{.Id}}", tag)
    return out.stdout.strip() if out.returncode == 0 else None


def _engine_answers(node: SimNode) -> bool:
    return (
        _docker(
            "exec", node.container, "docker", "info", "--format", "{{.ServerVersion}}", timeout=30
        ).returncode
        == 0
    )


def _wait_engine(node: SimNode) -> None:
    def probe() -> tuple[bool, str]:
        answer = _docker("exec", node.container, "docker", "info", "--format", "{{.ServerVersion}}", timeout=30)
        return answer.returncode == 0, (answer.stderr or answer.stdout).strip()[-200:]

    wait_until(f"the docker engine of simulated node {node.name} answers", probe, ENGINE_WAIT_S, 0.5,
               subject=f"dockerd on simulated node {node.name}",
               log_tail=lambda: _docker("exec", node.container, "tail", "-n", "20", "/var/log/dockerd.log").stdout)


def sim_up(sim: SimCluster, log=print) -> dict[str, float]:
    """Create (or restart) every node; return seconds per step."""
    timings = {}
    started = time.monotonic()
    ensure_engine(log)
    outcome = build_image(ImageBuild(NODE_IMAGE, IMAGES_DIR / "servegate-sim-node"), log=log)
    timings["node image"] = outcome.seconds
    _ensure_network(sim)
    step = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, len(sim.nodes))) as pool:
        list(pool.map(lambda n: _ensure_node(sim, n), sim.nodes))
        list(pool.map(_wait_engine, sim.nodes))
    timings["nodes up"] = time.monotonic() - step
    timings["total"] = time.monotonic() - started
    log(
        f"simulated cluster {sim.name}: {len(sim.nodes)} node(s) up on {sim.network} ({sim.subnet}) "
        f"in {timings['total']:.1f} s"
    )
    return timings


def sim_down(sim: SimCluster, volumes: bool = False, log=print) -> list[str]:
    """Remove the nodes and the network (by name and label); the image stores too when volumes=True."""
    removed = []
    for node in sim.nodes:
        if (
            container_state(node.container) is not None
            and _docker("rm", "-f", "-v", node.container).returncode == 0
        ):
            removed.append(f"container {node.container}")
        if volumes and _docker("volume", "rm", node.volume).returncode == 0:
            removed.append(f"volume {node.volume}")
    if _docker("network", "inspect", sim.network).returncode == 0:
        if _docker("network", "rm", sim.network).returncode == 0:
            removed.append(f"network {sim.network}")
    log(f"simulated cluster {sim.name}: removed {', '.join(removed) or 'nothing'}")
    return removed


_HELD: dict[str, list[int]] = {}  # lock file -> [fd, depth]: re-entrant within this process
LENT_FD_VAR = "SERVEGATE_SIM_LOCK_FD"  # a holder lends its lock to a child run: the fd, passed down (lend_lock)


def lend_lock(sim: SimCluster) -> tuple[int, dict[str, str]]:
    """(fd, env) for a child process of the lock's holder (Popen pass_fds=(fd,), env) that runs on the same
    simulation, e.g. a test holding it around a child run: the child sees the lock as held by itself."""
    path = str(cache_root() / f"sim-{sim.name}.lock")
    if path not in _HELD:
        raise ServegateError(f"simulated cluster {sim.name}: this process does not hold its lock, none to lend")
    return _HELD[path][0], {LENT_FD_VAR: str(_HELD[path][0])}


def _lent_fd(path: str) -> int | None:
    """The fd of the lock file inherited from a holder that lent it (the same open file, so the same flock)."""
    raw = os.environ.get(LENT_FD_VAR, "")
    try:
        return int(raw) if raw.isdigit() and os.path.samestat(os.fstat(int(raw)), os.stat(path)) else None
    except OSError:
        return None


@contextmanager
def sim_lock(sim: SimCluster, wait_s: float = LOCK_WAIT_S, log=print) -> Iterator[None]:
    """One run at a time per simulated cluster: a second run waits (nodes, census and reaping are shared)."""
    path = str(cache_root() / f"sim-{sim.name}.lock")
    if path not in _HELD and _lent_fd(path) is not None:
        _HELD[path] = [_lent_fd(path), 0]  # lent by the parent holding it: never unlocked here
    if path in _HELD:
        _HELD[path][1] += 1
        try:
            yield
        finally:
            _HELD[path][1] -= 1
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, sim.name, wait_s, log)
        os.ftruncate(fd, 0)
        os.write(fd, owner_tag().encode())
        _HELD[path] = [fd, 1]
        try:
            yield
        finally:
            del _HELD[path]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: str, name: str, wait_s: float, log) -> None:
    told: list[str] = []

    def probe() -> tuple[bool, str]:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True, "locked"
        except BlockingIOError:
            holder = Path(path).read_text(errors="replace").strip() or "?"
            if not told:
                log(f"simulated cluster {name} is in use by {holder}; waiting (up to {wait_s:.0f} s)")
                told.append(holder)
            return False, f"simulated cluster {name} is still in use by {holder} (wait for that run, or stop " \
                          f"it; lock {path})"

    wait_until(f"the lock of simulated cluster {name}", probe, wait_s, 2.0)


@contextmanager
def simulated_cluster(cluster: Cluster, log=print) -> Iterator[SimCluster | None]:
    """For a run on `cluster`: if its file declares a simulation, hold it (sim_lock), bring it up when it is
    down and take it down afterwards (volumes kept). Yields None for a real cluster."""
    sim = simulated(cluster)
    if sim is None:
        yield None
        return
    with sim_lock(sim, log=log):
        started_here = not sim.running()
        try:
            if started_here:
                sim_up(sim, log=log)
            yield sim
        finally:
            if started_here:
                sim_down(sim, log=log)


def stop_node(node: SimNode) -> None:
    """Take one node down (fault tests): its container stops; `sim_up` brings it back."""
    _docker("stop", "-t", "5", node.container)
