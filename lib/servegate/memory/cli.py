"""`servegate memory plan RECIPE`: predict a recipe's memory before anything launches.

Exit status: 0 when the plan fits (warnings allowed), 1 when it cannot fit, 2 for unusable input.
"""

from __future__ import annotations

import argparse
import json

from servegate.config.cluster import load_cluster
from servegate.config.paths import cache_root
from servegate.config.recipe import load_recipe, parse_override
from servegate.memory.recipe_plan import plan_for
from servegate.nodes.host import NodeHost
from servegate.render.command import render
from servegate.stack import default_cluster_path


def add_subparsers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    memory = subparsers.add_parser("memory", help="memory planner: will the recipe fit before it launches")
    verbs = memory.add_subparsers(dest="memory_command", metavar="{plan}", required=True)
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
    plan.set_defaults(func=run_plan)
    return memory


def run_plan(args) -> int:
    recipe = load_recipe(args.recipe)
    cluster = load_cluster(args.cluster or default_cluster_path(recipe))
    overrides = dict(parse_override(text) for text in args.set)
    hosts = None if args.offline else {node.name: NodeHost(node) for node in cluster.nodes}
    model = str(cache_root() / "models" / recipe.generated_model) if recipe.generated_model else None
    plan = plan_for(render(recipe, cluster, overrides, model_path=model), hosts)
    print(json.dumps(plan.as_dict(), indent=2, default=str) if args.json else "\n".join(plan.lines()))
    return 1 if plan.verdict == "fail" else 0
