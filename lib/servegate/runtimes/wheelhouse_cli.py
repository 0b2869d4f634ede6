"""`servegate wheelhouse` (wheels an offline node lacks, their lock, optionally a bundle) and `servegate node
install` (verify and install a bundle on the node).

    here:   servegate wheelhouse vllm==0.25.0 'ray[default]==2.60.0' --freeze NODE-FREEZE.txt \\
              --aiperf aiperf==0.13.0 --bundle /tmp/bundle --split 60M
    there:  sh bundle/install.sh --target /tmp/site     (or: servegate node install bundle --target /tmp/site)

Exit 1 while a requirement is unmet, unless the user names it as provided by the node (--provided a,b).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from servegate.errors import ServegateError
from servegate.runtimes import bundle as bundles
from servegate.runtimes import node_install
from servegate.runtimes.wheelhouse import (
    DEFAULT_EXCLUDES,
    MANIFEST_NAME,
    REPORT_NAME,
    Plan,
    Target,
    canonical,
    download,
    make_plan,
    manifest,
    node_conflicts,
    parse_freeze,
    parse_report,
    report_lines,
    resolve,
    stale_files,
    wheel_files,
)

HARNESS = "pytest-testinfra"


def add_subparsers(subparsers) -> None:
    """Register `servegate wheelhouse` and `servegate node` on the main CLI's subparsers."""
    p = subparsers.add_parser("wheelhouse", help="download the wheels an offline node lacks (e.g. for vLLM)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("requirements", nargs="+", metavar="REQ", help="e.g. vllm==0.25.0 'ray[default]==2.60.0'")
    p.add_argument("--dest", type=Path, help="folder for the wheels (created; default BUNDLE/wheels)")
    p.add_argument("--python-version", default="3.12", help="the node's Python (default 3.12)")
    p.add_argument("--glibc", default="2.35", help="the node's glibc, sets the manylinux tags (default 2.35)")
    p.add_argument("--machine", default="x86_64", help="the node's architecture (default x86_64)")
    p.add_argument("--freeze", type=Path, action="append", default=[],
                   help="the node's `pip freeze` output: what it has is not downloaded (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="leave out wheels matching this name pattern (repeatable; adds to the defaults)")
    p.add_argument("--no-default-excludes", action="store_true",
                   help="keep the optional heavy wheels: " + ", ".join(DEFAULT_EXCLUDES))
    p.add_argument("--replace", action="append", default=[], metavar="NAME[,NAME]",
                   help="carry these packages even though the node has them (another version)")
    p.add_argument("--provided", action="append", default=[], metavar="NAME[,NAME]",
                   help="the node provides these (any version): a requirement on them is not a problem")
    p.add_argument("--from-report", type=Path, help="reuse a pip --report JSON instead of resolving again")
    p.add_argument("--locked", action="store_true",
                   help="fail when the resolved set differs from the lock an earlier run wrote in --dest")
    p.add_argument("--dry-run", action="store_true", help="print the plan; download nothing")
    p.add_argument("--strict", action="store_true", help=argparse.SUPPRESS)  # now the default; kept for old scripts
    p.add_argument("--bundle", type=Path, help="write a bundle for an air-gapped node here: wheels + "
                   f"{HARNESS} (wheels/), --aiperf's set (aiperf/), locks, manifest.json, install.sh")
    p.add_argument("--aiperf", metavar="REQ", help="with --bundle: AIPerf's own set, e.g. aiperf==0.13.0")
    p.add_argument("--no-harness", action="store_true", help=f"with --bundle: leave {HARNESS} out")
    p.add_argument("--split", help="with --bundle: pack into parts of at most this size (e.g. 60M)")
    p.set_defaults(func=cmd_wheelhouse)
    node = subparsers.add_parser("node", help="on an air-gapped node: `node install BUNDLE`")
    verbs = node.add_subparsers(dest="node_command", required=True, metavar="VERB")
    install = verbs.add_parser("install", help="verify every checksum of a bundle and install it with --no-index")
    install.add_argument("bundle", type=Path)
    install.add_argument("--python", default=sys.executable, help="interpreter whose pip installs")
    install.add_argument("--target", help="install the main set into this folder (default: the python's env)")
    install.add_argument("--aiperf-target", default="/tmp/aiperf-site", help="AIPerf's own site")
    install.add_argument("--verify-only", action="store_true", help="check every checksum, install nothing")
    install.set_defaults(func=cmd_node_install)


def cmd_node_install(args) -> int:
    try:
        lines = node_install.install(args.bundle, args.python, args.target, args.aiperf_target, args.verify_only)
    except node_install.BundleError as exc:
        raise ServegateError(f"node install {args.bundle}: {exc}") from None
    print("\n".join(lines))
    return 0


def cmd_wheelhouse(args) -> int:
    if not args.dest and not args.bundle:
        raise ServegateError("wheelhouse: give --dest DIR (the wheels) or --bundle DIR (a bundle for the node)")
    if (args.aiperf or args.split) and not args.bundle:
        raise ServegateError("wheelhouse: --aiperf and --split belong to --bundle DIR")
    target = Target(args.python_version, args.glibc, args.machine)
    split = bundles.parse_size(args.split) if args.split else None
    installed: dict[str, str | None] = {}
    for path in args.freeze:
        installed.update(parse_freeze(path.read_text()))
    provided = tuple(name for text in args.provided for name in text.split(",") if name.strip())
    requirements = list(args.requirements)
    if args.bundle and not args.no_harness:
        requirements.append(HARNESS)
    dest = args.dest or args.bundle / "wheels"
    code = one_set(args, requirements, dest, target, installed, provided)
    if not args.bundle or args.dry_run:
        return code
    sets = [{"name": "wheels", "folder": str(dest.relative_to(args.bundle)), "lock": "", "own_site": False}]
    if args.aiperf:
        # AIPerf gets its own site, which shadows the node's: carry what the node has at a version it rejects
        code = max(code, one_set(args, [args.aiperf], args.bundle / "aiperf", target, installed, provided,
                                 own_site=True))
        sets.append({"name": "aiperf", "folder": "aiperf", "lock": "", "own_site": True, "console": "aiperf"})
    for wheel_set in sets:
        wheel_set["lock"] = f"{wheel_set['folder']}/{bundles.LOCK_NAME}"
    if code:
        print(f"no bundle written to {args.bundle}: fix the PROBLEMS above first", file=sys.stderr)
        return code
    print("\n".join(bundles.summary_lines(args.bundle, bundles.build_bundle(args.bundle, sets, split))))
    return 0


def one_set(args, requirements: list[str], dest: Path, target: Target, installed: dict, provided: tuple,
            own_site: bool = False) -> int:
    """Resolve, plan, download and lock one wheel set into `dest`; 1 when a requirement stays unmet.
    own_site: the set is installed into a site of its own, put before the node's, so a node package at a
    version the set rejects is carried (as --replace would) instead of being a problem."""
    dest.mkdir(parents=True, exist_ok=True)
    if args.from_report:
        wheels = parse_report(json.loads(args.from_report.read_text()))
    else:
        print(f"resolving {' '.join(requirements)} for cp{target.python_version.replace('.', '')} "
              f"manylinux (glibc {target.glibc}) {target.machine} ...", file=sys.stderr)
        wheels = resolve(requirements, target, dest / REPORT_NAME)
    excludes = (() if args.no_default_excludes else DEFAULT_EXCLUDES) + tuple(args.exclude)
    replace = tuple(name.strip() for text in args.replace for name in text.split(",") if name.strip())
    plan = make_plan(wheels, installed, target, excludes, replace, provided)
    if own_site and plan.problems:
        plan = make_plan(wheels, installed, target, excludes, replace + node_conflicts(plan, installed, target),
                         provided)
    check_lock(args, dest, plan)
    if not args.dry_run:
        for path in stale_files(dest, plan):
            print(f"removing {path.name}: not in this plan", file=sys.stderr)
            path.unlink()
        download(plan.fetch, target, dest)
    files = wheel_files(dest)
    print("\n".join(report_lines(plan, files)))
    if not args.dry_run:
        (dest / MANIFEST_NAME).write_text(json.dumps(manifest(plan, target, requirements, files), indent=1) + "\n")
        lock = bundles.write_lock(dest)
        print(f"lock: {lock} ({len(plan.fetch)} pins with sha256)")
    return 1 if plan.problems else 0


def check_lock(args, dest: Path, plan: Plan) -> None:
    lock = dest / bundles.LOCK_NAME
    if not args.locked:
        return
    if not lock.is_file():
        raise ServegateError(f"--locked: {lock} does not exist; run once without --locked to write it")
    drift = bundles.lock_drift(bundles.read_lock(lock), {canonical(w.name): w.version for w in plan.fetch})
    if drift:
        raise ServegateError(f"--locked: the resolution differs from {lock}:\n  " + "\n  ".join(drift)
                             + "\n  fix: pin the changed requirements, or drop --locked to accept and rewrite it")
