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
from servegate.memory.terms import CUDA_CONTEXT_BYTES
from servegate.memory.uma_probe import read, window
from servegate.memory.vllm_log import parse_kv_log
from servegate.nodes.host import NodeHost
from servegate.render.command import render
from servegate.stack import default_cluster_path

LIB = Path(__file__).resolve().parents[2]
TRACE_HOOK = Path(__file__).resolve().parent / "tracehook"


def parse_case(text: str) -> dict:
    """NAME:K=V,K=V (recipe settings), or a JSON object {"name", "set", "argv", "trace"}: "argv" edits the
    rendered command (seeds.edit_argv: a value sets the flag, null drops it with its value, "drop-switch"
    drops a bare switch), "trace" records what is alive at profile_run's peak (memory/trace_peak.py)."""
    if text.lstrip().startswith("{"):
        case = json.loads(text)
        unknown = set(case) - {"name", "set", "argv", "trace"}
        if unknown or not isinstance(case.get("name"), str):
            raise SystemExit(f"--case {text}: needs a string 'name'; unknown keys {sorted(unknown)}")
        return {"set": {}, **case}
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
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TRACE_HOOK), str(LIB), env.get("PYTHONPATH")]))
    probe = out / f"{case['name']}-host.jsonl"
    probe.unlink(missing_ok=True)
    env["SERVEGATE_HOST_PROBE"] = str(probe)  # every case: what a unified-memory node would count (uma_probe)
    if case.get("trace"):
        env["SERVEGATE_TRACE_PROFILE"] = str(out / f"{case['name']}-peak.json")
    ran = launch(["bash", "-c", shlex.join(rendered.serve_argv)], env,
                 log_path, rendered.port, recipe.expect.ready_timeout_s or 600)
    text = log_path.read_text(errors="replace")
    logged = {**parse_log(text), **parse_kv_log(text)}
    peak = out / f"{case['name']}-peak.json"
    row = {"case": case["name"], "set": case.get("set", {}), "argv": case.get("argv") or {}, **ran, "logged": logged,
           "peak_trace": json.loads(peak.read_text()) if peak.exists() else None,
           "uma_window": uma_window(probe),
           "plan": {"verdict": plan.verdict, "kv_gib": plan.kv_budget_bytes / GIB, "kv_tokens": plan.capacity.tokens,
                    "weights_gib": plan.weight_bytes_per_rank / GIB,
                    "terms": {t.name: t.bytes / GIB for t in plan.terms}}}
    if calibrated:
        row["calibrated"] = {"verdict": calibrated.verdict, "kv_gib": calibrated.kv_budget_bytes / GIB,
                             "kv_tokens": calibrated.capacity.tokens}
    return row


def uma_window(probe: Path) -> dict | None:
    try:
        return window(read(probe)) if probe.exists() else None
    except (ValueError, KeyError) as exc:
        return {"error": f"{probe}: {exc}"}


def uma_text(found: dict | None) -> str:
    if not found or "uma_non_torch_bytes" not in found:
        return ""
    return (f" | UMA non-torch {found['uma_non_torch_bytes'] / GIB:.2f} GiB (host {found['host_bytes'] / GIB:.2f}, "
            f"worker RssAnon {found['worker_rss_anon_bytes'] / GIB:+.2f})")


def profile_from(row: dict, recipe, cluster, base_set: dict, hosts) -> dict | None:
    logged = row["logged"]
    if "kv_cache_gib" not in logged:
        return None
    rendered = render(recipe, cluster, {**base_set, **row["set"]})
    rendered.serve_argv[:] = edit_argv(rendered.serve_argv, row.get("argv") or {})
    plan = plan_for(rendered, hosts)
    return {"path": f"case {row['case']}", "calibration": {
        "budget_gib": plan.budget_bytes / GIB, "max_num_batched_tokens": plan.max_num_batched_tokens,
        "max_num_seqs": plan.max_num_seqs, "drafts_with_mtp": plan.drafts_with_mtp,
        "ranks": plan.tensor_parallel * plan.pipeline_parallel},
        "measured": {k: logged.get(k) for k in ("kv_cache_gib", "weights_gib", "peak_activation_gib",
                                                "non_torch_gib")}}


def replay_record(recorded: Path, spec_path: str, gpu_total_gib: float, recipe_path: str) -> list[tuple[str, list]]:
    """A recorded session, offline: either gpu-runs.json as written (one recipe, the arguments name the
    stand-in spec and the GPU total) or a grouped record {"groups": [{"name", "recipe", "spec",
    "gpu_total_gib", "rows"}]} (one group per stand-in, as results/gpu/20261205-h100-planner-standins.json)."""
    data = json.loads(Path(recorded).read_text())
    if isinstance(data, list):
        return [(Path(recipe_path).stem, replay(data, spec_path, int(gpu_total_gib * GIB), recipe_path))]
    repo = Path(recorded).resolve().parents[2]  # results/gpu/NAME.json: paths in it are the repository's

    def at(path: str) -> str:
        return path if Path(path).is_absolute() or Path(path).exists() else str(repo / path)

    return [(group["name"], replay(group["rows"], at(group["spec"]), int(group["gpu_total_gib"] * GIB),
                                   at(group["recipe"]))) for group in data["groups"]]


def replay(recorded: Path | list, spec_path: str, gpu_total_bytes: int, recipe_path: str) -> list[dict]:
    """The planner of this checkout against a recorded run, offline: the stand-in's config from its spec,
    its bf16 weight bytes from the tensor plan, the GPU's CUDA-visible total as vLLM logged it."""
    from servegate.memory.plan import PlanContext, build_plan
    from servegate.memory.shapes import shape_from_config
    from servegate.models.standin import checkpoint_bytes, load_standin
    from servegate.models.standin_write import config_json

    spec = load_standin(spec_path)
    shape = shape_from_config(config_json(spec, 0, 0), name=spec.name, source=spec_path)
    recipe = load_recipe(recipe_path)
    cluster = load_cluster(default_cluster_path(recipe))
    rows = recorded if isinstance(recorded, list) else json.loads(Path(recorded).read_text())
    profile = None
    out = []
    for row in rows:
        rendered = render(recipe, cluster, row["set"])
        rendered.serve_argv[:] = edit_argv(rendered.serve_argv, row.get("argv") or {})
        serve = next(launch for launch in rendered.launches if launch.role == "serve")

        def plan(with_profile, rendered=rendered, serve=serve):
            ctx = PlanContext(argv=rendered.serve_argv, env=dict(serve.env), platform="gpu", node_names=["gpu0"],
                              node_total_bytes=128 * GIB, node_total_source="the lent machine's 128 GiB",
                              gpu_total_bytes=gpu_total_bytes, vllm_version=recipe.expect.memory.get("vllm"),
                              profile=with_profile)
            return build_plan(shape, checkpoint_bytes(spec), f"{spec.quant} stand-in", ctx, model=spec.name)

        terms, calibrated = plan(None), plan(profile) if profile else None
        logged = row["logged"]
        out.append({"case": row["case"], "vllm": row["outcome"], "logged": logged,
                    "gpu_used_gib": row["gpu_used_mib"] / 1024 if row.get("gpu_used_mib") else None,
                    "gpu_used_plan_gib": (terms.budget_bytes + CUDA_CONTEXT_BYTES) / GIB,
                    "terms": {"verdict": terms.verdict, "kv_gib": terms.kv_budget_bytes / GIB,
                              "kv_tokens": terms.capacity.tokens, "weights_gib": terms.weight_bytes_per_rank / GIB,
                              "activation_gib": sum(t.bytes for t in terms.terms if t.name == "activation peak") / GIB,
                              "cudagraph_gib": sum(t.bytes for t in terms.terms if t.name == "CUDA graphs") / GIB},
                    "calibrated": calibrated and {"verdict": calibrated.verdict,
                                                  "kv_gib": calibrated.kv_budget_bytes / GIB,
                                                  "kv_tokens": calibrated.capacity.tokens}})
        if profile is None and "kv_cache_gib" in logged:
            profile = {"path": f"case {row['case']}", "calibration": {
                "budget_gib": terms.budget_bytes / GIB, "max_num_batched_tokens": terms.max_num_batched_tokens,
                "max_num_seqs": terms.max_num_seqs, "drafts_with_mtp": terms.drafts_with_mtp, "ranks": 1},
                "measured": {k: logged.get(k) for k in ("kv_cache_gib", "weights_gib", "peak_activation_gib",
                                                        "non_torch_gib")}}
    return out


def print_replay(rows: list[dict]) -> None:
    def pct(a, b):
        return f"{100 * (a - b) / b:+.1f}%" if b else "-"

    print(f"{'case':9} {'vLLM':9} {'KV GiB vLLM':>11} {'terms':>13} {'calibrated':>13} "
          f"{'tokens vLLM':>12} {'terms':>18} {'calibrated':>18}")
    for r in rows:
        lg, tm, cb = r["logged"], r["terms"], r["calibrated"] or {}
        kv, tok = lg.get("kv_cache_gib"), lg.get("kv_tokens")
        start = "starts" if r["vllm"] == "ready" else "no-start"
        plan_start = "starts" if tm["verdict"] != "fail" else "no-start"
        print(f"{r['case']:9} {start:9} {kv if kv is not None else '-':>11} "
              f"{tm['kv_gib']:6.2f} {pct(tm['kv_gib'], kv) if kv else plan_start:>6} "
              f"{cb.get('kv_gib', float('nan')):6.2f} {pct(cb['kv_gib'], kv) if kv and cb else '':>6} "
              f"{int(tok) if tok else '-':>12} {tm['kv_tokens']:>10,} {pct(tm['kv_tokens'], tok) if tok else '':>7} "
              f"{cb.get('kv_tokens', 0):>10,} {pct(cb['kv_tokens'], tok) if tok and cb else '':>7}"
              f"  start: plan {plan_start}"
              + (f"; act {tm['activation_gib']:.2f} vs {lg['peak_activation_gib']}"
                 if lg.get("peak_activation_gib") is not None else "")
              + (f"; weights {tm['weights_gib']:.2f} vs {lg['weights_gib']}" if lg.get("weights_gib") else "")
              + (f"; graphs {tm['cudagraph_gib']:.2f} vs {lg['cudagraph_estimate_gib']}"
                 if lg.get("cudagraph_estimate_gib") is not None else "")
              + (f"; GPU used {r['gpu_used_gib']:.2f} GiB, plan {r['gpu_used_plan_gib']:.2f} "
                 f"({pct(r['gpu_used_plan_gib'], r['gpu_used_gib'])})" if r["gpu_used_gib"] else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--out", help="folder for the runs (required unless --replay)")
    parser.add_argument("--replay", metavar="GPU_RUNS_JSON", help="replay a recorded run with this planner, offline")
    parser.add_argument("--spec", default="recipes/models/nemotron-3-nano-standin.yaml", help="with --replay")
    parser.add_argument("--gpu-total-gib", type=float, default=139.8, help="with --replay (vLLM's logged total)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--case", action="append", default=[], metavar="NAME:K=V,K=V")
    args = parser.parse_args(argv)
    if args.replay:
        for name, rows in replay_record(Path(args.replay), args.spec, args.gpu_total_gib, args.recipe):
            print(f"== {name}")
            print_replay(rows)
        return 0
    if not args.out:
        parser.error("--out is required")
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
              f"act vLLM {logged.get('peak_activation_gib')} non-torch {logged.get('non_torch_gib')}"
              + uma_text(row.get("uma_window")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
