"""`servegate compare | baseline`: a run's throughput against a baseline, and keeping a run as the baseline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from servegate.errors import ServegateError
from servegate.results.schema import load_run
from servegate.throughput import baseline as baselines
from servegate.throughput import store


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    compare = sub.add_parser("compare", help="throughput of a run against a baseline, metric by metric")
    compare.add_argument("run", type=Path, help="run folder (results/<stamp>-<recipe>)")
    compare.add_argument(
        "--baseline", type=Path, help="baseline file (default: results/baselines/<recipe>.json)"
    )
    compare.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="METRIC=PCT",
        help="tolerance in %% for one metric, e.g. output_tps=15 (repeatable)",
    )
    compare.set_defaults(func=cmd_compare)
    keep = sub.add_parser(
        "baseline", help="keep a run's throughput as the recipe's baseline (tracked in git)"
    )
    keep.add_argument("run", type=Path, help="run folder whose throughput scenario passed")
    keep.add_argument("--out", type=Path, help="baseline file (default: results/baselines/<recipe>.json)")
    keep.add_argument("--force", action="store_true", help="replace an existing baseline")
    keep.set_defaults(func=cmd_baseline)


def parse_tolerances(texts: list[str]) -> dict[str, float]:
    out = {}
    for text in texts:
        key, _, value = text.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ServegateError(f"--tolerance expects METRIC=PCT like output_tps=15, got {text!r}") from None
    baselines.tolerances(overrides=out)
    return out


def cmd_compare(args) -> int:
    summary = store.load(args.run)
    if summary is None:
        raise ServegateError(
            f"{args.run} has no {store.FOLDER}/{store.SUMMARY}: its throughput scenario did not run"
        )
    recipe = _recipe_name(args.run)
    path = args.baseline or baselines.baseline_path(recipe)
    baseline = baselines.load(path)
    deltas = baselines.compare(summary, baseline, parse_tolerances(args.tolerance))
    print(f"{recipe}: {args.run} vs {path} (baseline from run {baseline.get('source_run')})")
    print("\n".join(baselines.delta_lines(deltas)))
    worse = baselines.regressions(deltas)
    if not deltas:
        print("no workload and concurrency level in common", file=sys.stderr)
        return 1
    for delta in worse:
        print(f"REGRESSION: {delta}", file=sys.stderr)
    return 1 if worse else 0


def cmd_baseline(args) -> int:
    path = baselines.write(args.run, args.out, force=args.force)
    print(f"wrote {path} from {args.run}")
    return 0


def _recipe_name(run: Path) -> str:
    return load_run(run)["recipe"]["name"]
