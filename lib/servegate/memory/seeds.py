"""The planner against what the seeds lived through: `python -m servegate.memory.seeds [--json]`.

Each case of seed_cases.yaml is a seed recipe at the settings a seed reports, planned offline (shape files,
expect.memory.node_total_gib), next to the seed's outcome. Outcomes:
  no-start      vLLM refuses or fails before serving (KV cache allocation)
  node-oom      the node runs out (at start-up warm-up or at the first full-size prefill chunk)
  starts        serves (the seed reports no heavy load for it)
  memavailable  the seed's MemAvailable during inference, against the plan's
A profile (--profile FILE) replaces the measured-on-the-GPU terms by one calibration run's figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from servegate.config.cluster import load_cluster
from servegate.config.paths import REPO_ROOT
from servegate.config.recipe import load_recipe
from servegate.memory.plan import GIB, MemoryPlan
from servegate.memory.recipe_plan import plan_for
from servegate.render.command import render
from servegate.stack import default_cluster_path

CASES = Path(__file__).with_name("seed_cases.yaml")


@dataclass
class Row:
    model: str
    case: str
    seed_outcome: str
    predicted: str
    agrees: bool
    detail: str
    plan: MemoryPlan
    known_miss: str = ""  # seed_cases.yaml's planner_misses: why the terms disagree here


def edit_argv(argv: list[str], edits: dict) -> list[str]:
    """Set, drop (None) or drop a switch ('drop-switch') in a rendered argv."""
    out = list(argv)
    for name, value in (edits or {}).items():
        if value == "drop-switch":
            out = [token for token in out if token != name]
            continue
        while name in out:
            index = out.index(name)
            del out[index:index + 2]
        if value is not None:
            out += [name, str(value)]
    return out


def predicted_outcome(plan: MemoryPlan) -> str:
    fails = [fd.message for fd in plan.findings if fd.level == "fail"]
    if any("KV budget" in m or "exceed the budget" in m for m in fails):
        return "no-start"
    if fails:
        return "node-oom"
    return "starts"


def plan_case(recipe_path: str, case: dict, profile: dict | None = None) -> MemoryPlan:
    recipe = load_recipe(REPO_ROOT / recipe_path)
    cluster = load_cluster(default_cluster_path(recipe))
    rendered = render(recipe, cluster, dict(case.get("set") or {}))
    rendered.serve_argv[:] = edit_argv(rendered.serve_argv, case.get("argv") or {})
    return plan_for(rendered, None, profile=profile)


def judge_case(model: str, recipe_path: str, case: dict, profile: dict | None = None) -> Row:
    plan = plan_case(recipe_path, case, profile)
    outcome, predicted = case["outcome"], predicted_outcome(plan)
    detail = ""
    if outcome == "memavailable":
        available = (plan.node_total_bytes - plan.prefill_peak_bytes_per_node) / GIB
        predicted = f"{available:.1f} GiB"
        agrees = abs(available - case["memavailable_gib"]) <= 3
        detail = f"seed {case['memavailable_gib']} GiB, plan {available:.1f} GiB"
    else:
        agrees = predicted == outcome
        if "kv_tokens" in case:
            error = 100 * (plan.capacity.tokens - case["kv_tokens"]) / case["kv_tokens"]
            detail = f"KV tokens {plan.capacity.tokens:,} vs seed ~{case['kv_tokens']:,} ({error:+.1f} %)"
            agrees = agrees and abs(error) <= 10
        else:
            detail = (f"KV {plan.kv_budget_bytes / GIB:.2f} GiB/rank, node peak "
                      f"{plan.prefill_peak_bytes_per_node / GIB:.1f} of {plan.node_total_bytes / GIB:.1f} GiB")
    return Row(model, case["name"], outcome, predicted, agrees, detail, plan, case.get("planner_misses", ""))


def all_rows(profiles: dict[str, dict] | None = None) -> list[Row]:
    data = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    rows = []
    for model, block in data.items():
        profile = (profiles or {}).get(model)
        rows += [judge_case(model, block["recipe"], case, profile) for case in block["cases"]]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="append", default=[], metavar="MODEL=FILE",
                        help="calibrate MODEL's cases (ultra, nano, super) with a memory profile")
    args = parser.parse_args(argv)
    from servegate.memory.profile import load_profile

    profiles = {}
    for item in args.profile:
        model, _, path = item.partition("=")
        profiles[model] = load_profile(Path(path))
    rows = all_rows(profiles)
    if args.json:
        print(json.dumps([{k: v for k, v in vars(r).items() if k != "plan"} for r in rows], indent=1))
    else:
        print(f"{'model':6} {'case':58} {'seed':13} {'plan':13} ok  detail")
        for r in rows:
            print(f"{r.model:6} {r.case[:58]:58} {r.seed_outcome:13} {r.predicted:13} "
                  f"{'yes' if r.agrees else 'NO ':3} {r.detail}")
        print(f"{sum(r.agrees for r in rows)}/{len(rows)} cases agree")
        for r in rows:
            if r.known_miss and not r.agrees:
                print(f"known miss, {r.model} {r.case}: {r.known_miss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
