"""`servegate memory plan RECIPE`: predict a recipe's memory before anything launches.
`servegate memory profile RUN`: store what vLLM measured in a finished run, to calibrate later plans.

Exit status: 0 when the plan fits (warnings allowed), 1 when it cannot fit, 2 for unusable input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from servegate.config.cluster import load_cluster
from servegate.config.paths import REPO_ROOT, cache_root
from servegate.config.recipe import load_recipe, parse_override
from servegate.memory.profile import load_profile, profile_from_run
from servegate.memory.recipe_plan import plan_for
from servegate.nodes.host import NodeHost
from servegate.render.command import render
from servegate.stack import default_cluster_path


def add_subparsers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    memory = subparsers.add_parser("memory", help="memory planner: will the recipe fit before it launches")
    verbs = memory.add_subparsers(dest="memory_command", metavar="{plan,profile}", required=True)
    plan = verbs.add_parser(
        "plan", help="weights, KV per token, Mamba state and budget vs node memory", description=__doc__
    )
    plan.add_argument("recipe", help="recipe YAML file")
    plan.add_argument("--cluster", help="cluster file (default: the recipe's own, else the local machine)")
    plan.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a default")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument(
        "--offline",
        action="store_true",
        help="touch no node: model from recipes/models/shapes/, memory from expect.memory.node_total_gib",
    )
    plan.add_argument(
        "--profile",
        metavar="FILE|RUN",
        help="calibrate with a memory profile (servegate memory profile) or straight from a run folder",
    )
    plan.set_defaults(func=run_plan)
    profile = verbs.add_parser("profile", help="store a finished run's measured memory as a profile")
    profile.add_argument("run", help="a run folder (results/<run>)")
    profile.add_argument("--out", help="where to write it (default: results/baselines/<recipe>.memory-profile.json)")
    profile.set_defaults(func=run_profile)
    return memory


def run_profile(args) -> int:
    data = profile_from_run(Path(args.run))
    out = Path(args.out) if args.out else REPO_ROOT / "results" / "baselines" / f"{data['recipe']}.memory-profile.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"memory profile of {args.run} -> {out}")
    return 0


def _profile(arg: str | None) -> dict | None:
    if not arg:
        return None
    path = Path(arg)
    return profile_from_run(path) if path.is_dir() else load_profile(path)


def run_plan(args) -> int:
    recipe = load_recipe(args.recipe)
    cluster = load_cluster(args.cluster or default_cluster_path(recipe))
    overrides = dict(parse_override(text) for text in args.set)
    hosts = None if args.offline else {node.name: NodeHost(node) for node in cluster.nodes}
    model = str(cache_root() / "models" / recipe.generated_model) if recipe.generated_model else None
    plan = plan_for(render(recipe, cluster, overrides, model_path=model), hosts, profile=_profile(args.profile))
    print(json.dumps(plan.as_dict(), indent=2, default=str) if args.json else "\n".join(plan.lines()))
    return 1 if plan.verdict == "fail" else 0
