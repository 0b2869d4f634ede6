"""Clusters (inventories): which nodes a recipe runs on, how to reach each, and its fabric IP."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from servegate.config.paths import DEFAULT_CLUSTER
from servegate.config.yamlsrc import SourceMap, load_yaml_mapping
from servegate.errors import ClusterError, Location

ROLES = ("head", "worker")
RUNTIMES = ("host", "docker")
HOST_SCHEMES = ("local", "ssh", "paramiko", "docker", "podman", "kubectl")
NODE_KEYS = {"name", "role", "host", "fabric_ip", "runtime", "python", "workdir", "env", "gpus", "ssh_options"}
CLUSTER_KEYS = {"name", "description", "nodes", "fabric", "ray_port", "solo_ray"}


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
    unknown = set(raw) - NODE_KEYS
    if unknown:
        raise _node_error(src, index, sorted(unknown)[0], f"unknown node key '{sorted(unknown)[0]}'",
                          f"accepted keys: {', '.join(sorted(NODE_KEYS))}")
    for key in ("name", "host"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            raise _node_error(src, index, key, f"node #{index + 1} needs a '{key}' string",
                              "e.g. name: spark-w1, host: ssh://root@10.0.0.2")
    name = raw["name"]
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
    fabric_ip = str(raw.get("fabric_ip", "127.0.0.1"))
    _check_ip(fabric_ip, name, index, src)
    env = raw.get("env") or {}
    if not isinstance(env, dict):
        raise _node_error(src, index, "env", f"node '{name}': env must be a mapping", "write VAR: value lines")
    return Node(name=name, role=role, host=raw["host"], fabric_ip=fabric_ip, runtime=runtime,
                python=raw.get("python"), workdir=raw.get("workdir", "~/.cache/servegate"),
                env={str(k): str(v) for k, v in env.items()}, gpus=int(raw.get("gpus", 0)))


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
    unknown = set(data) - CLUSTER_KEYS
    if unknown:
        key = sorted(unknown)[0]
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
    return Cluster(name=str(data.get("name") or path.stem), path=path, nodes=nodes,
                   ray_port=int(data.get("ray_port", 6379)), description=str(data.get("description") or ""),
                   solo_ray=solo_ray)


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
