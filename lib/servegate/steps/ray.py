"""Ray over the fabric: a head on the head node's fabric IP, workers joined with --node-ip-address.

Each `ray start --block` runs as its own process group in the node's container (or on the node), carrying
SERVEGATE_RUN_ID like every servegate process. Ray is stopped on every node at teardown: the process
groups are killed, then `ray stop --force` sweeps what Ray daemonized.

Probes run a short Python script on the head through the node transport: the node table and a task
pinned to each node (NodeAffinitySchedulingStrategy) that reports that node's environment.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from servegate.config.cluster import Cluster, Node
from servegate.errors import Location, NodeError
from servegate.labels import owner_tag
from servegate.lifecycle import Managed
from servegate.nodes.host import NodeHost
from servegate.render.launches import NodeLaunch, env_script
from servegate.waits import wait_until

RAY_WAIT_S = 180
RAY_DAEMONS = "'[g]cs_server|[r]aylet'"  # brackets: the pattern must not match the shell running pgrep
NODES_SCRIPT = r"""
import json, ray
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
print("SERVEGATE-RAY " + json.dumps([{"ip": n["NodeManagerAddress"], "alive": n["Alive"], "id": n["NodeID"],
                                       "resources": n["Resources"]} for n in ray.nodes()]))
"""
ENV_SCRIPT = r"""
import json, os, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=0)
def node_env():
    return {"ip": ray.util.get_node_ip_address(), "env": dict(os.environ)}

nodes = [n for n in ray.nodes() if n["Alive"]]
pinned = {n["NodeID"]: NodeAffinitySchedulingStrategy(n["NodeID"], soft=False) for n in nodes}
refs = {node_id: node_env.options(scheduling_strategy=rule).remote() for node_id, rule in pinned.items()}
print("SERVEGATE-RAY " + json.dumps({node_id: ray.get(ref, timeout=120) for node_id, ref in refs.items()}))
"""


@dataclass
class RayNode:
    ip: str
    alive: bool
    node_id: str
    resources: dict = field(default_factory=dict)


def node_on(ray_nodes: list[RayNode], fabric_ip: str) -> RayNode | None:
    """The alive Ray node on this fabric IP. Ray reports a head started on a loopback address under the
    machine's own address, so a loopback fabric IP matches the one alive node of a one-node Ray."""
    alive = [n for n in ray_nodes if n.alive]
    match = next((n for n in alive if n.ip == fabric_ip), None)
    if match is None and fabric_ip.startswith("127.") and len(alive) == 1:
        return alive[0]
    return match


def node_name(cluster: Cluster, ray_ip: str, ray_ips: list[str]) -> str:
    """The cluster node Ray reports under this address (the address itself when none matches)."""
    ray_nodes = [RayNode(ip, True, ip) for ip in ray_ips]
    for node in cluster.nodes:
        found = node_on(ray_nodes, node.fabric_ip)
        if found is not None and found.ip == ray_ip:
            return node.name
    return ray_ip


@dataclass
class RayCluster(Managed):
    """Ray head + workers across a cluster's nodes, started from the rendered Ray launches
    (render.launches.ray_launches, the one Ray spec). Use as a context manager or call start()/stop()."""

    cluster: Cluster
    hosts: dict[str, NodeHost]  # where Ray runs on each node (a ContainerHost for the docker runtime)
    run_id: str
    launches: list[NodeLaunch]
    bin_dirs: dict[str, str] = field(default_factory=dict)  # node -> dir holding `ray` (host runtime)
    export_env: bool = True  # False where the node's env is fixed at container start (docker): not masked here
    log: Callable[[str, str | None], None] = lambda message, node=None: None
    started: dict[str, int] = field(default_factory=dict)  # node -> pgid of `ray start --block`
    bring_up_s: float | None = None
    python: str = "python3"  # a python with ray on the head (the node's environment on the host runtime)

    @property
    def address(self) -> str:
        return f"{self.cluster.head.fabric_ip}:{self.cluster.ray_port}"

    def _ray(self, name: str) -> str:
        bin_dir = self.bin_dirs.get(name)
        return f"{bin_dir}/ray" if bin_dir else "ray"

    def launch_for(self, node: Node) -> NodeLaunch:
        return next(launch for launch in self.launches if launch.node.name == node.name)

    def start(self) -> None:
        began = time.monotonic()
        head = self.cluster.head
        self._refuse_taken_port(head)
        self._spawn(head)
        self._wait_port(head)
        with ThreadPoolExecutor(max_workers=max(1, len(self.cluster.workers))) as pool:
            list(pool.map(self._spawn, self.cluster.workers))
        want = len(self.cluster.nodes)
        self._wait(lambda nodes: len(nodes) >= want, f"{want} alive Ray nodes", head.name)
        self.bring_up_s = time.monotonic() - began
        self.log(f"Ray up: {want} node(s) at {self.address} in {self.bring_up_s:.1f}s", None)

    def _spawn(self, node: Node) -> None:
        host = self.hosts[node.name]
        self._sweep(host)
        base = f"{host.home_path(node.workdir)}/runs/{self.run_id}/ray"
        launch = self.launch_for(node)
        env = launch.env if self.export_env else {}
        host.write_text(f"{base}.env", env_script(env, self.run_id, self.bin_dirs.get(node.name)))
        host.write_text(f"{base.rsplit('/', 1)[0]}/owner", owner_tag())  # a dead node's folder: clean removes it
        argv = [self._ray(node.name), *launch.argv[1:]]
        self.log(" ".join(shlex.quote(a) for a in argv), node.name)
        self.started[node.name] = host.spawn(argv, env_file=f"{base}.env", log_path=f"{base}.log")

    def _sweep(self, host: NodeHost) -> None:
        """A Ray left from an earlier run would make `ray start --head` refuse (stale GCS session)."""
        host.run(
            f"if pgrep -f {RAY_DAEMONS} >/dev/null; then {self._ray(host.name)} stop --force >/dev/null 2>&1; fi; true",
            timeout=60,
        )

    def _refuse_taken_port(self, head: Node) -> None:
        """A Ray left by another run (another container on the node, same host network) holds the GCS port:
        `ray start --head` would die on it. Say so instead (the seeds met this as a stale GCS session)."""
        host = self.hosts[head.name]
        if host.port_open(head.fabric_ip, self.cluster.ray_port):
            raise NodeError(
                f"the Ray GCS port {self.address} is already taken before this run's head started",
                where=Location(node=head.name),
                fix="a Ray from an earlier or concurrent run is still up there: servegate clean --stale "
                "--cluster CLUSTER, or set ray_port in the cluster file",
            )

    def _wait_port(self, head: Node) -> None:
        """The head's GCS port answers on the fabric IP (cheap to poll; workers can join from then on)."""
        host = self.hosts[head.name]
        wait_until(f"Ray head answers on {self.address}",
                   lambda: (host.port_open(head.fabric_ip, self.cluster.ray_port), f"GCS port {self.address}"),
                   RAY_WAIT_S, 0.5, **self._watch(head.name))

    def _wait(self, done: Callable[[list[RayNode]], bool], what: str, node: str) -> None:
        def probe() -> tuple[bool, str]:
            seen = [n for n in self.nodes() if n.alive]
            return done(seen), f"{len(seen)} alive: {', '.join(n.ip for n in seen)}"

        wait_until(what, probe, RAY_WAIT_S, 1.0, **self._watch(node))

    def _watch(self, node: str) -> dict:
        return {"still_running": self._all_alive, "log_tail": lambda: self.log_tail(node),
                "subject": f"`ray start` on node {node}"}

    def _all_alive(self) -> bool:
        return all(self.hosts[name].group_alive(pgid) for name, pgid in self.started.items())

    def log_tail(self, node: str, lines: int = 30) -> str:
        host = self.hosts[node]
        path = f"{host.home_path(host.node.workdir)}/runs/{self.run_id}/ray.log"
        return host.run(f"tail -n {lines} {shlex.quote(path)} 2>/dev/null").stdout

    def run_script(self, script: str, timeout: float = 180) -> object:
        """Run a Python script on the head that prints one 'SERVEGATE-RAY <json>' line; return the JSON."""
        head = self.hosts[self.cluster.head.name]
        result = head.run(f"{shlex.quote(self.python)} -c {shlex.quote(script)}", timeout=timeout)
        line = next((x for x in result.stdout.splitlines() if x.startswith("SERVEGATE-RAY ")), None)
        if line is None:
            tail = (result.stderr or result.stdout).strip().splitlines()[-6:]
            raise NodeError(
                f"Ray probe failed (exit {result.rc}): {' | '.join(tail)}",
                where=Location(node=self.cluster.head.name),
                fix="read the Ray logs on the head",
            )
        return json.loads(line.removeprefix("SERVEGATE-RAY "))

    def nodes(self) -> list[RayNode]:
        return [RayNode(n["ip"], n["alive"], n["id"], n["resources"]) for n in self.run_script(NODES_SCRIPT)]

    def node_envs(self) -> dict[str, dict[str, str]]:
        """{fabric ip: environment} read by a Ray task pinned to each alive node."""
        answers = self.run_script(ENV_SCRIPT)
        return {answer["ip"]: answer["env"] for answer in answers.values()}

    def logs(self) -> dict[str, str]:
        """node -> its `ray start` log (read before stop() removes it with the run's folder); a gone node: none."""
        out = {}
        for name in self.started:
            host = self.hosts[name]
            try:
                out[name] = host.read_text(f"{host.home_path(host.node.workdir)}/runs/{self.run_id}/ray.log")
            except NodeError:
                continue
        return out

    def stop(self) -> list[str]:
        """Stop Ray on every node; return what survived (empty when all is gone)."""
        survivors = []

        def stop_one(name: str) -> None:
            try:
                stop_on(name)
            except NodeError as exc:  # a dead node stops nobody else's teardown
                survivors.append(f"{name}: unreachable, Ray not stopped there: {str(exc).splitlines()[0]}")

        def stop_on(name: str) -> None:
            host = self.hosts[name]
            pgid = self.started.get(name)
            host.run(f"{self._ray(name)} stop --force >/dev/null 2>&1; true", timeout=60)  # --block exits with it
            if pgid and host.group_alive(pgid):
                host.kill_group(pgid, grace_s=5)
            node = next(n for n in self.cluster.nodes if n.name == name)
            base = f"{host.home_path(node.workdir)}/runs/{self.run_id}/ray"
            host.remove_files(f"{base}.env", f"{base}.log", f"{base.rsplit('/', 1)[0]}/owner")  # env may hold secrets
            leftover = host.run(f"pgrep -f {RAY_DAEMONS}").stdout.split()
            if (pgid and host.group_alive(pgid)) or leftover:
                survivors.append(f"{name}: Ray still running (pgid {pgid}, daemons {leftover})")

        with ThreadPoolExecutor(max_workers=max(1, len(self.hosts))) as pool:
            list(pool.map(stop_one, [n for n in self.hosts if n in self.started]))
        self.started.clear()
        return survivors
