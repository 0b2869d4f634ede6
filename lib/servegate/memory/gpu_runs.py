"""Planner vs vLLM on a GPU: for each setting, the plan made before the launch, then vLLM's own figures.

    python -m servegate.memory.gpu_runs RECIPE --out DIR [--set K=V ...] [--case NAME:K=V,K=V ...]

Runs where the recipe's cluster is (the lent H200: recipes/gpu-nano-standin.yaml). Per case: render, plan
(terms alone; and calibrated by the first case that started, memory/profile.py), launch the command in
its own process group with DEBUG logging, wait for /health, the process's end or the deadline, read
nvidia-smi's memory.used and the log's memory lines, stop the group. Writes DIR/gpu-runs.json and one log
per case; prints a table (KV GiB and tokens predicted vs logged, start/no-start).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from servegate.config.cluster import load_cluster
from servegate.config.recipe import load_recipe, parse_override
from servegate.memory.plan import GIB
from servegate.memory.profile import parse_log
from servegate.memory.recipe_plan import plan_for
from servegate.memory.seeds import edit_argv
from servegate.memory.vllm_log import parse_kv_log
from servegate.nodes.host import NodeHost
from servegate.render.command import render
from servegate.stack import default_cluster_path


def parse_case(text: str) -> dict:
    name, _, rest = text.partition(":")
    overrides = dict(parse_override(item) for item in rest.split(",") if item)
    return {"name": name, "set": overrides}


def launch(argv: list[str], env: dict, log_path: Path, port: int, deadline_s: float) -> dict:
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    outcome = "timeout"
    while time.monotonic() - started < deadline_s:
        if proc.poll() is not None:
            outcome = f"exited {proc.returncode}"
            break
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                outcome = "ready"
                break
        except requests.RequestException:
            pass
        time.sleep(1)
    seconds = time.monotonic() - started
    used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True).stdout.strip().splitlines()
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return {"outcome": outcome, "seconds": round(seconds, 1),
            "gpu_used_mib": int(used[0]) if used and used[0].isdigit() else None}


def run_case(recipe, cluster, hosts, case: dict, base_set: dict, out: Path, profile: dict | None) -> dict:
    rendered = render(recipe, cluster, {**base_set, **case.get("set", {})})
    rendered.serve_argv[:] = edit_argv(rendered.serve_argv, case.get("argv") or {})
    plan = plan_for(rendered, hosts)
    calibrated = plan_for(rendered, hosts, profile=profile) if profile else None
    log_path = out / f"{case['name']}.log"
    serve = next(launch for launch in rendered.launches if launch.role == "serve")
    env = {**os.environ, **serve.env, "VLLM_LOGGING_LEVEL": "DEBUG"}
    ran = launch(["bash", "-c", shlex.join(rendered.serve_argv)], env,
                 log_path, rendered.port, recipe.expect.ready_timeout_s or 600)
    text = log_path.read_text(errors="replace")
    logged = {**parse_log(text), **parse_kv_log(text)}
    row = {"case": case["name"], "set": case.get("set", {}), **ran, "logged": logged,
           "plan": {"verdict": plan.verdict, "kv_gib": plan.kv_budget_bytes / GIB, "kv_tokens": plan.capacity.tokens,
                    "weights_gib": plan.weight_bytes_per_rank / GIB,
                    "terms": {t.name: t.bytes / GIB for t in plan.terms}}}
    if calibrated:
        row["calibrated"] = {"verdict": calibrated.verdict, "kv_gib": calibrated.kv_budget_bytes / GIB,
                             "kv_tokens": calibrated.capacity.tokens}
    return row


def profile_from(row: dict, recipe, cluster, base_set: dict, hosts) -> dict | None:
    logged = row["logged"]
    if "kv_cache_gib" not in logged:
        return None
    rendered = render(recipe, cluster, {**base_set, **row["set"]})
    plan = plan_for(rendered, hosts)
    return {"path": f"case {row['case']}", "calibration": {
        "budget_gib": plan.budget_bytes / GIB, "max_num_batched_tokens": plan.max_num_batched_tokens,
        "max_num_seqs": plan.max_num_seqs, "drafts_with_mtp": plan.drafts_with_mtp,
        "ranks": plan.tensor_parallel * plan.pipeline_parallel},
        "measured": {k: logged.get(k) for k in ("kv_cache_gib", "weights_gib", "peak_activation_gib",
                                                "non_torch_gib")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--out", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--case", action="append", default=[], metavar="NAME:K=V,K=V")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(args.recipe)
    cluster = load_cluster(default_cluster_path(recipe))
    hosts = {node.name: NodeHost(node) for node in cluster.nodes}
    base_set = dict(parse_override(text) for text in args.set)
    rows, profile = [], None
    for case in [parse_case(text) for text in args.case] or [{"name": "default", "set": {}}]:
        row = run_case(recipe, cluster, hosts, case, base_set, out, profile)
        rows.append(row)
        profile = profile or profile_from(row, recipe, cluster, base_set, hosts)
        (out / "gpu-runs.json").write_text(json.dumps(rows, indent=1, default=str))
        logged, plan = row["logged"], row["plan"]
        print(f"{row['case']:14} {row['outcome']:10} {row['seconds']:6.1f}s gpu {row['gpu_used_mib']} MiB | "
              f"KV GiB plan {plan['kv_gib']:.2f} calib {row.get('calibrated', {}).get('kv_gib', float('nan')):.2f} "
              f"vLLM {logged.get('kv_cache_gib')} | tokens plan {plan['kv_tokens']:,} "
              f"calib {row.get('calibrated', {}).get('kv_tokens', 0):,} vLLM {logged.get('kv_tokens')} | "
              f"weights plan {plan['weights_gib']:.2f} vLLM {logged.get('weights_gib')} | "
              f"act vLLM {logged.get('peak_activation_gib')} non-torch {logged.get('non_torch_gib')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
