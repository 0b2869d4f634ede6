"""The `servegate` command: the non-test verbs (render, plan, clean, flags, ...) over lib/."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from servegate.config.cluster import load_cluster
from servegate.config.expect import describe_schema
from servegate.config.paths import RESULTS_DIR
from servegate.config.recipe import load_recipe, parse_override
from servegate.errors import ServegateError
from servegate.flags import cli as flags_cli
from servegate.gate import cli as gate_cli
from servegate.memory import cli as memory_cli
from servegate.redact import RedactingStream, Redactor
from servegate.render.command import render
from servegate.report import cli as report_cli
from servegate.results import collect
from servegate.runtimes import wheelhouse_cli
from servegate.sim import cli as sim_cli
from servegate.stack import default_cluster_path
from servegate.steps.plan import plan_lines, render_lines
from servegate.throughput import cli as throughput_cli

# Every verb group that lives in its own package, in `servegate --help` order; each registers only its own verbs.
SUBCOMMANDS = (flags_cli, wheelhouse_cli, collect, memory_cli, throughput_cli, report_cli, gate_cli, sim_cli)


def _overrides(values: list[str]) -> dict:
    return dict(parse_override(text) for text in values or [])


def _targets(args) -> tuple:
    recipe = load_recipe(args.recipe)
    cluster = load_cluster(args.cluster or default_cluster_path(recipe))
    return recipe, cluster


def cmd_render(args) -> int:
    recipe, cluster = _targets(args)
    model = f"~/.cache/servegate/models/{recipe.generated_model}" if recipe.generated_model else None
    rendered = render(recipe, cluster, _overrides(args.set), model_path=model, force=args.force,
                      multinode=args.multinode)
    print("\n".join(render_lines(rendered)))
    return 0


def cmd_plan(args) -> int:
    recipe, cluster = _targets(args)
    print("\n".join(plan_lines(recipe, cluster, _overrides(args.set), force=args.force,
                               multinode=args.multinode)))
    return 0


def cmd_clean(args) -> int:
    from servegate.runtimes.reaper import mark_killed_runs, reap
    cluster = load_cluster(args.cluster)
    report = reap(cluster, only_stale=args.stale)
    roots = [Path(p) for p in args.results] or [RESULTS_DIR, Path(os.environ.get("SERVEGATE_RESULTS", RESULTS_DIR))]
    report += mark_killed_runs(list(dict.fromkeys(roots)))
    for line in report:
        print(line)
    return 0


def cmd_summary(args) -> int:
    from servegate.results.summary import runs_since, summary_lines
    runs = [Path(p) for p in args.runs] or runs_since(args.since or "")
    if not runs:
        print("no runs found", file=sys.stderr)
        return 1
    failed = False
    for run in runs:
        lines = summary_lines(run)
        failed |= "PASSED" not in lines[0]
        print("\n".join(lines))
    return 1 if failed and args.strict else 0


def cmd_expect_keys(args) -> int:  # noqa: ARG001
    print(describe_schema())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="servegate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def target(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("recipe", help="recipe YAML file")
        p.add_argument("--cluster", help="cluster file (default: the recipe's own, else the local machine)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a default")
        p.add_argument("--force", action="store_true",
                       help="render a cluster_only recipe on one node (or solo_only on many): upstream refuses")
        p.add_argument("--multinode", choices=("ray", "no-ray"),
                       help="multi-node launcher (default: the recipe's, the cluster's, else from the command)")
        p.set_defaults(func=func)
        return p

    target("render", "print, per node, the exact env and command that would run", cmd_render)
    target("plan", "print every step the suite would take (dry run; touches nothing)", cmd_plan)
    clean = sub.add_parser("clean", help="kill every process/container a servegate run left on a cluster")
    clean.add_argument("--cluster", help="cluster file (default: the local machine)")
    clean.add_argument("--stale", action="store_true", help="only what belongs to runs whose owner has exited")
    clean.add_argument("--results", action="append", default=[], metavar="DIR",
                       help="results folder whose `running` runs with a dead owner are marked killed "
                            "(default: results/ and $SERVEGATE_RESULTS)")
    clean.set_defaults(func=cmd_clean)
    summary = sub.add_parser("summary", help="print verdict and phase tables of finished runs")
    summary.add_argument("runs", nargs="*", help="run folders (default: those since --since)")
    summary.add_argument("--since", help="UTC stamp YYYYmmddTHHMMSSZ: runs started at or after it")
    summary.add_argument("--strict", action="store_true", help="exit 1 unless every run passed")
    summary.set_defaults(func=cmd_summary)
    keys = sub.add_parser("expect-keys", help="list every key of a recipe's expect: block")
    keys.set_defaults(func=cmd_expect_keys)
    for group in SUBCOMMANDS:
        group.add_subparsers(sub)
    return parser


def _learn_recipe_secrets(args, redactor: Redactor) -> None:
    """Learn the secret values of every recipe the verb names (env under secret names, --api-key, URL
    passwords), so the redacting stdout masks them wherever a verb prints them."""
    paths = [getattr(args, "recipe", None), *(getattr(args, "recipes", None) or [])]
    for path in paths:
        if not path or not str(path).endswith((".yaml", ".yml")):
            continue
        try:
            recipe = load_recipe(path)
        except (ServegateError, OSError):
            continue  # the verb itself reports it
        redactor.learn_env({**recipe.env, **recipe.defaults})
        try:
            redactor.learn_argv(recipe.render_command(_overrides(getattr(args, "set", None) or []),
                                                      builtins={"model": "MODEL"}).split())
        except (ServegateError, ValueError):
            redactor.learn_argv(recipe.command.split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    redactor = Redactor()
    _learn_recipe_secrets(args, redactor)
    real_out, real_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(real_out, redactor), RedactingStream(real_err, redactor)
    try:
        return int(args.func(args) or 0)
    except ServegateError as exc:
        print(f"servegate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("servegate: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = real_out, real_err


if __name__ == "__main__":
    sys.exit(main())

