"""Clusters (inventories): which nodes a recipe runs on, how to reach each, and its fabric IP."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from servegate.config.paths import DEFAULT_CLUSTER
from servegate.config.yamlsrc import SourceMap, load_yaml_mapping
from servegate.errors import ClusterError, Location

ROLES = ("head", "worker")
RUNTIMES = ("host", "docker")
HOST_SCHEMES = ("local", "ssh", "paramiko", "docker", "podman", "kubectl")
NODE_KEYS = {"name", "role", "host", "fabric_ip", "runtime", "python", "workdir", "env", "gpus", "ssh_options"}
CLUSTER_KEYS = {"name", "description", "nodes", "fabric", "ray_port", "solo_ray", "multinode"}
# Node and cluster names end up in log file names, paths and shell commands: one safe path component.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_GPUS = 1024


@dataclass
class Node:
    name: str
    role: str
    host: str
    fabric_ip: str
    runtime: str = "host"
    python: str | None = None
    workdir: str = "~/.cache/servegate"
    env: dict[str, str] = field(default_factory=dict)
    gpus: int = 0

    @property
    def is_head(self) -> bool:
        return self.role == "head"


@dataclass
class Cluster:
    name: str
    path: Path | None
    nodes: list[Node]
    ray_port: int = 6379
    description: str = ""
    # A one-node cluster that still runs Ray: keep a recipe's `--distributed-executor-backend ray` (upstream
    # drops it in solo mode) and start a Ray head on the node, so the Ray executor is tested on one machine.
    solo_ray: bool = False
    multinode: str | None = None  # "ray" | "no-ray": how a multi-node run starts vLLM (render/upstream.py)

    @property
    def head(self) -> Node:
        return next(n for n in self.nodes if n.is_head)

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if not n.is_head]

    def node(self, name: str) -> Node:
        for candidate in self.nodes:
            if candidate.name == name:
                return candidate
        raise ClusterError(f"no node named '{name}'", where=Location(file=str(self.path)),
                           fix=f"nodes: {', '.join(n.name for n in self.nodes)}")


def _node_error(src: SourceMap, index: int, key: str, cause: str, fix: str) -> ClusterError:
    return ClusterError(cause, where=src.at(f"nodes.{index}.{key}" if key else f"nodes.{index}"), fix=fix)


def _parse_node(raw: object, index: int, src: SourceMap) -> Node:
    if not isinstance(raw, dict):
        raise _node_error(src, index, "", f"node #{index + 1} must be a mapping", "write '- name: n1' then keys")
    unknown = sorted(map(str, set(raw) - NODE_KEYS))
    if unknown:
        raise _node_error(src, index, unknown[0], f"unknown node key '{unknown[0][:80]}'",
                          f"accepted keys: {', '.join(sorted(NODE_KEYS))}")
    for key in ("name", "host"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            raise _node_error(src, index, key, f"node #{index + 1} needs a '{key}' string",
                              "e.g. name: spark-w1, host: ssh://root@10.0.0.2")
    name = raw["name"]
    if not SAFE_NAME.fullmatch(name):
        raise _node_error(src, index, "name", f"node name {name[:80]!r} is not a safe name",
                          "letters, digits, '_', '.', '-', starting with a letter or digit, at most 63 "
                          "characters (e.g. spark-w1)")
    if CONTROL.search(raw["host"]):
        raise _node_error(src, index, "host", f"node '{name}': host holds a control character", "remove it")
    for key in ("python", "workdir"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip() or CONTROL.search(value)):
            raise _node_error(src, index, key, f"node '{name}': {key} must be a path string, found {value!r:.80}",
                              f"write {key}: /path/on/the/node")
    role = raw.get("role", "worker")
    if role not in ROLES:
        raise _node_error(src, index, "role", f"node '{name}': role {role!r} is not one of {ROLES}",
                          "write role: head (exactly one node) or role: worker")
    scheme = raw["host"].split("://", 1)[0] if "://" in raw["host"] else ""
    if scheme not in HOST_SCHEMES:
        raise _node_error(src, index, "host", f"node '{name}': host {raw['host']!r} is not a testinfra host URL",
                          "use local://, ssh://user@host, docker://container (schemes: "
                          + ", ".join(HOST_SCHEMES) + ")")
    runtime = raw.get("runtime", "host")
    if runtime not in RUNTIMES:
        raise _node_error(src, index, "runtime", f"node '{name}': runtime {runtime!r} is not one of {RUNTIMES}",
                          "host = vLLM in a Python environment on the node; docker = vLLM in a container")
    fabric_ip = raw.get("fabric_ip", "127.0.0.1")
    if not isinstance(fabric_ip, str) or CONTROL.search(fabric_ip):
        raise _node_error(src, index, "fabric_ip", f"node '{name}': fabric_ip {fabric_ip!r:.80} is not an IP "
                          "address", "write the node's address on the fabric network, e.g. 192.168.100.11")
    _check_ip(fabric_ip, name, index, src)
    env = raw.get("env") or {}
    if not isinstance(env, dict):
        raise _node_error(src, index, "env", f"node '{name}': env must be a mapping", "write VAR: value lines")
    for var, value in env.items():
        if not isinstance(var, str) or not ENV_NAME.fullmatch(var):
            raise _node_error(src, index, f"env.{var}", f"node '{name}': env var name {str(var)[:80]!r} is not "
                              "a valid variable name", "env names are letters, digits and '_', not starting "
                              "with a digit")
        if isinstance(value, (dict, list)) or "\x00" in str(value):
            raise _node_error(src, index, f"env.{var}", f"node '{name}': env var {var} must be a plain scalar",
                              "quote the value as a string")
    gpus = raw.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= MAX_GPUS:
        raise _node_error(src, index, "gpus", f"node '{name}': gpus must be an integer 0-{MAX_GPUS}, found "
                          f"{gpus!r:.80}", "write the number of GPUs on the node, e.g. gpus: 8 (0 on CPU)")
    return Node(name=name, role=role, host=raw["host"], fabric_ip=fabric_ip, runtime=runtime,
                python=raw.get("python"), workdir=raw.get("workdir", "~/.cache/servegate"),
                env={k: "" if v is None else str(v) for k, v in env.items()}, gpus=gpus)


def _check_ip(value: str, name: str, index: int, src: SourceMap) -> None:
    if value.startswith("<") and value.endswith(">"):
        return  # a placeholder in a template cluster file; caught before anything connects
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise _node_error(src, index, "fabric_ip", f"node '{name}': fabric_ip {value!r} is not an IP address",
                          "write the node's address on the fabric network, e.g. 192.168.100.11") from None


def load_cluster(path: str | Path | None = None) -> Cluster:
    path = Path(path) if path else DEFAULT_CLUSTER
    data, src = load_yaml_mapping(path, ClusterError)
    unknown = sorted(map(str, set(data) - CLUSTER_KEYS))
    if unknown:
        key = unknown[0][:80]
        raise ClusterError(f"unknown cluster key '{key}'", where=src.at(key),
                           fix=f"accepted keys: {', '.join(sorted(CLUSTER_KEYS))}")
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ClusterError("'nodes' must be a non-empty list", where=src.at("nodes"),
                           fix="list nodes as '- name: ...' entries")
    nodes = [_parse_node(raw, i, src) for i, raw in enumerate(raw_nodes)]
    _check_unique(nodes, src)
    heads = [n for n in nodes if n.is_head]
    if len(heads) != 1:
        raise ClusterError(f"a cluster needs exactly one head node, found {len(heads)}", where=src.at("nodes"),
                           fix="mark one node 'role: head' and the others 'role: worker'")
    solo_ray = data.get("solo_ray", False)
    if not isinstance(solo_ray, bool):
        raise ClusterError(f"solo_ray must be true or false, found {solo_ray!r}", where=src.at("solo_ray"),
                           fix="solo_ray: true keeps the Ray executor on a one-node cluster")
    name = data.get("name") or path.stem
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise ClusterError(f"cluster name {str(name)[:80]!r} is not a safe name", where=src.at("name"),
                           fix="letters, digits, '_', '.', '-', starting with a letter or digit (e.g. spark-2)")
    ray_port = data.get("ray_port", 6379)
    if isinstance(ray_port, bool) or not isinstance(ray_port, int) or not 1 <= ray_port <= 65535:
        raise ClusterError(f"ray_port must be an integer 1-65535, found {ray_port!r:.80}", where=src.at("ray_port"),
                           fix="write ray_port: 6379")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ClusterError("description must be a string", where=src.at("description"), fix="quote it")
    multinode = data.get("multinode")
    if multinode is not None and multinode not in ("ray", "no-ray"):
        raise ClusterError(f"multinode must be ray or no-ray, found {multinode!r:.80}", where=src.at("multinode"),
                           fix="multinode: ray (upstream's default) or multinode: no-ray")
    return Cluster(name=name, path=path, nodes=nodes, ray_port=ray_port, description=description,
                   solo_ray=solo_ray, multinode=multinode)


def _check_unique(nodes: list[Node], src: SourceMap) -> None:
    seen: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if node.name in seen:
            raise _node_error(src, index, "name", f"node name '{node.name}' is used twice",
                              "give every node its own name")
        seen[node.name] = index


def placeholder_addresses(cluster: Cluster) -> list[str]:
    """Nodes whose fabric IP or host is still a <placeholder>: they must be filled before a deploy."""
    return [n.name for n in cluster.nodes if "<" in n.fabric_ip or "<" in n.host]
