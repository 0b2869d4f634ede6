"""`servegate sim up|down|status CLUSTER` and `servegate image build|sync RECIPE`."""

from __future__ import annotations

import argparse

from servegate.config.cluster import load_cluster
from servegate.config.recipe import load_recipe
from servegate.errors import ServegateError
from servegate.runtimes.images import build_image, build_spec
from servegate.sim.cluster import container_state, sim_down, sim_spec, sim_up


def _sim(args):
    return sim_spec(load_cluster(args.cluster))


def cmd_sim(args) -> int:
    sim = _sim(args)
    if args.action == "up":
        sim_up(sim)
    elif args.action == "down":
        sim_down(sim, volumes=args.volumes)
    else:
        for node in sim.nodes:
            print(f"{node.name}: {node.container} {container_state(node.container) or 'absent'} ip {node.ip}")
    return 0


def cmd_image(args) -> int:
    recipe = load_recipe(args.recipe)
    spec = build_spec(recipe.container, recipe.build_args, recipe.path.parent, recipe.where("container"))
    if spec is None:
        raise ServegateError(
            f"recipe {recipe.name}: image {recipe.container} has no Dockerfile folder "
            f"(recipes/images/<name>/ or build_args.dockerfile); nothing to build"
        )
    outcome = build_image(spec)
    print(
        f"{outcome.tag} {outcome.image_id} content {outcome.content} "
        f"{'cached' if outcome.cached else 'built'} in {outcome.seconds:.1f} s"
    )
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser(
        "sim", help="a simulated cluster on this machine (containers with their own docker engine)"
    )
    sim.add_argument("action", choices=("up", "down", "status"))
    sim.add_argument("cluster", help="cluster file declaring fabric: {network, subnet, simulated: true}")
    sim.add_argument("--volumes", action="store_true", help="with down: also remove the nodes' image stores")
    sim.set_defaults(func=cmd_sim)
    image = sub.add_parser("image", help="build a recipe's image on this machine (cached by content hash)")
    image.add_argument("action", choices=("build",))
    image.add_argument("recipe", help="recipe YAML whose container has recipes/images/<name>/Dockerfile")
    image.set_defaults(func=cmd_image)
