"""Shared by the multi-node tests: the simulated cluster, stacks on it, and a census of what runs there."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from servegate.config.cluster import load_cluster
from servegate.nodes.host import NodeHost
from servegate.runtimes.images import build_image, build_spec
from servegate.sim.cluster import SIM_LABEL, SimCluster, sim_down, sim_lock, sim_spec, sim_up
from servegate.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
SIM_CLUSTER = ROOT / "recipes" / "clusters" / "sim-2.yaml"
SIM_RECIPE = ROOT / "recipes" / "local-sim.yaml"
IMAGE = "servegate-vllm-cpu:0.32.0"


def docker_answers() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    )


def need_docker() -> None:
    if not docker_answers():
        pytest.skip("needs a docker engine: PYTHONPATH=lib python3 -m servegate.sim.engine")


@contextmanager
def simulation() -> Iterator[SimCluster]:
    """sim-2 up (the nodes deploy-sim uses; their image stores persist on volumes) and the image built, held
    for this test module alone (sim_lock); taken down afterwards unless it was already up."""
    need_docker()
    sim = sim_spec(load_cluster(SIM_CLUSTER))
    with sim_lock(sim):
        was_running = sim.running()
        sim_up(sim)
        build_image(build_spec(IMAGE))
        try:
            yield sim
        finally:
            if not was_running:
                sim_down(sim)


def recipe_variant(tmp_path: Path, name: str, **changes) -> Path:
    """local-sim.yaml with some top-level keys replaced, written as tmp_path/<name>.yaml."""
    data = yaml.safe_load(SIM_RECIPE.read_text())
    data.update({"name": name, **changes})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cluster_variant(tmp_path: Path, node_env: dict[str, dict[str, str]]) -> Path:
    """sim-2.yaml with extra per-node env (same nodes, same fabric)."""
    data = yaml.safe_load(SIM_CLUSTER.read_text())
    for node in data["nodes"]:
        node.setdefault("env", {}).update(node_env.get(node["name"], {}))
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def new_stack(tmp_path: Path, recipe: Path = SIM_RECIPE, cluster: Path = SIM_CLUSTER) -> Stack:
    return Stack.from_files(recipe, cluster, {}, results_root=tmp_path / "results")


def census(sim: SimCluster) -> dict[str, object]:
    """What runs on the simulation: containers, Ray/vLLM processes and `<workdir>/runs/` folders (env files may
    hold secrets) per node, fabric networks here."""
    seen: dict[str, object] = {}
    cluster = load_cluster(SIM_CLUSTER)
    for node in cluster.nodes:
        host = NodeHost(node)
        seen[f"{node.name} containers"] = sorted(
            host.run("docker ps -a --format '{{.Names}}'").stdout.split()
        )
        seen[f"{node.name} ray processes"] = len(
            host.run("pgrep -f '[g]cs_server|[r]aylet|[r]ay::'").stdout.split()
        )
        seen[f"{node.name} vllm processes"] = len(
            host.run("pgrep -f '[v]llm serve|[E]ngineCore'").stdout.split()
        )
        runs = shlex.quote(f"{host.home_path(node.workdir)}/runs")
        seen[f"{node.name} run folders"] = sorted(host.run(f"ls -A {runs} 2>/dev/null").stdout.split())
    out = subprocess.run(
        ["docker", "network", "ls", "--filter", f"label={SIM_LABEL}", "--format", "{{.Name}}"],
        capture_output=True,
        text=True,
    ).stdout
    seen["fabric networks"] = sorted(out.split())
    seen["sim nodes"] = sorted(
        subprocess.run(
            ["docker", "ps", "-a", "--filter", f"label={SIM_LABEL}", "--format", "{{.Names}}"],
            capture_output=True,
            text=True,
        ).stdout.split()
    )
    return seen
