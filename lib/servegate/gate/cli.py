"""`servegate gate --image NEW [--baseline-image OLD] [--recipe R ...]`: the image-bump gate from the shell."""

from __future__ import annotations

import argparse
from pathlib import Path

from servegate.config.paths import RECIPES_DIR
from servegate.config.recipe import find_recipes, parse_override
from servegate.errors import ServegateError
from servegate.gate.image_bump import Gate
from servegate.gate.model import GateConfig
from servegate.gate.pins import image_family, uses_family
from servegate.results.run import DEFAULT_RESULTS
from servegate.throughput.cli import parse_tolerances


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    gate = sub.add_parser("gate", help="image-bump gate: pins, flags, mods, smoke deploy, throughput vs baseline")
    gate.add_argument("--image", required=True, help="new image tag, or pip:<requirements> for the host runtime")
    gate.add_argument("--baseline-image", help="old image; measured in this run unless the stored baseline was")
    gate.add_argument(
        "--recipe",
        action="append",
        default=[],
        type=Path,
        help="recipe to deploy and measure (repeatable; default: the local-*.yaml ones on this image)",
    )
    gate.add_argument("--cluster", type=Path, help="cluster file (default: the recipe's own)")
    gate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe default")
    gate.add_argument("--results", type=Path, help=f"results root (default: {DEFAULT_RESULTS})")
    gate.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="METRIC=PCT",
        help="regression tolerance in %% for one metric (repeatable)",
    )
    gate.add_argument("--skip-deploy", action="store_true", help="pins, environment, flags and mods only")
    gate.set_defaults(func=cmd_gate)


def cmd_gate(args) -> int:
    family = image_family(args.image)
    recipes = args.recipe or [p for p in find_recipes(RECIPES_DIR, "local-*.yaml") if uses_family(p, family)]
    if not recipes:
        raise ServegateError(
            f"no recipes/local-*.yaml uses the image family {family!r}\n  fix: name them with --recipe"
        )
    config = GateConfig(
        image=args.image,
        baseline_image=args.baseline_image,
        recipes=recipes,
        cluster=args.cluster,
        overrides=dict(parse_override(text) for text in args.set),
        results=args.results,
        tolerances=parse_tolerances(args.tolerance),
        skip_deploy=args.skip_deploy,
    )
    return Gate(config).execute()
