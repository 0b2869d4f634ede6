"""What runs on each node, per multi-node mode: vLLM launches (solo | ray | multinode) and the ONE Ray spec.

- solo: one `vllm serve` on the head.
- ray: a Ray head on the head's fabric IP and a Ray worker per other node (`ray_launches`, the only place
  a Ray command line is written; the runtime starts Ray from it), then `vllm serve` on the head with
  `--distributed-executor-backend ray`.
- multinode: vLLM's own multi-node mode, `--nnodes/--node-rank/--master-addr/--master-port` on every
  node, followers `--headless`.
Every launch carries its node's environment (`node_env`): the recipe env, the node's own, forwarded secrets.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

from servegate.config.bashwords import expand_value, runs_code
from servegate.config.cluster import Cluster, Node
from servegate.config.recipe import Recipe
from servegate.errors import Location, RecipeError
from servegate.labels import env_exports
from servegate.redact import Redactor, secret_name

FORWARDED_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "VLLM_API_KEY")
MASTER_PORT = 29501
RAY_ROLES = ("ray-head", "ray-worker")
VLLM_ROLES = ("serve", "headless")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class NodeLaunch:
    node: Node
    role: str  # "serve" (the API server), "headless" (a vLLM follower), "ray-head", "ray-worker"
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv)


def node_env(recipe: Recipe, node: Node) -> dict[str, str]:
    """What a node's processes get: the recipe env (`${VAR}` expanded as bash would from the launching
    environment), then the node's own vars, then forwarded secrets."""
    env = expand_env(recipe.env, node.env, str(recipe.path))
    env.update(node.env)
    for name in FORWARDED_SECRETS:
        if os.environ.get(name) and name not in env:
            env[name] = os.environ[name]
    return env


def expand_env(env: dict[str, str], node_vars: dict[str, str], source: str | None = None) -> dict[str, str]:
    """Upstream writes `export K="{value}"` into a bash script, so `${HF_TOKEN}` takes the launching shell's
    value: earlier exports first, then the node's vars, then this process's environment (unset -> "").
    Values that hold `$(...)` or backticks stay as written for bash on the node. A value read from a secret
    is taught to the Redactor, so it is never printed."""
    out: dict[str, str] = {}
    redact = Redactor()
    for key, value in env.items():
        if runs_code(value):
            out[key] = value
            continue
        def lookup(name: str) -> str | None:
            return out.get(name, node_vars.get(name, os.environ.get(name)))
        try:
            out[key], names = expand_value(value, lookup)
        except ValueError as exc:
            raise RecipeError(f"env {key}: {exc}", where=Location(file=source, key=f"env.{key}"),
                              fix=f"upstream writes export {key}=\"<value>\": escape the value's double quotes "
                                  "(\\\") or quote it so the whole value stays one word") from None
        if any(secret_name(n) for n in names) or secret_name(key):
            redact.learn(out[key])
    return out


def ray_launches(recipe: Recipe, cluster: Cluster) -> list[NodeLaunch]:
    """`ray start --block` on every node: the head on its fabric IP, workers joined to it."""
    head = cluster.head
    address = f"{head.fabric_ip}:{cluster.ray_port}"
    common = ["--disable-usage-stats", "--block"]
    launches = [NodeLaunch(head, "ray-head", ["ray", "start", "--head", "--node-ip-address", head.fabric_ip,
                                              "--port", str(cluster.ray_port), "--include-dashboard=false",
                                              *_ray_gpus(head), *common], node_env(recipe, head))]
    for worker in cluster.workers:
        argv = ["ray", "start", "--address", address, "--node-ip-address", worker.fabric_ip, *_ray_gpus(worker),
                *common]
        launches.append(NodeLaunch(worker, "ray-worker", argv, node_env(recipe, worker)))
    return launches


def vllm_launches(recipe: Recipe, cluster: Cluster, argv: list[str], mode: str) -> list[NodeLaunch]:
    head = cluster.head
    if mode in ("solo", "ray"):
        return [NodeLaunch(head, "serve", argv, node_env(recipe, head))]
    launches = []
    for rank, node in enumerate([head, *cluster.workers]):
        extra = ["--nnodes", str(len(cluster.nodes)), "--node-rank", str(rank),
                 "--master-addr", head.fabric_ip, "--master-port", str(MASTER_PORT)]
        role = "serve" if rank == 0 else "headless"
        launches.append(NodeLaunch(node, role, argv + extra + (["--headless"] if rank else []),
                                   node_env(recipe, node)))
    return launches


def _ray_gpus(node: Node) -> list[str]:
    """The cluster file's GPU count, given to Ray rather than left to its autodetection."""
    return ["--num-gpus", str(node.gpus)] if node.gpus else []


def env_script(env: dict[str, str], run_id: str, bin_dir: str | None = None) -> str:
    """A launch's env file, like upstream's generated launch script: `${VAR}` was expanded by node_env, so
    values are written literally; a value with `$(...)` or backticks is written `export K="v"` for bash to
    run, as upstream's would: a recipe is code. Names must be identifiers."""
    lines = []
    for key, value in env.items():
        if not ENV_NAME.match(key):
            raise RecipeError(f"env var name {key!r} is not a shell identifier", fix="use [A-Za-z_][A-Za-z0-9_]*")
        # expand_env already expanded ${VAR}: write the result literally, unless bash must still run code
        lines.append(f'export {key}="{value}"' if runs_code(value) else f"export {key}={shlex.quote(value)}")
    if bin_dir:
        lines.append(f'export PATH={shlex.quote(bin_dir)}:"$PATH"')
    return "\n".join(lines + env_exports(run_id))
