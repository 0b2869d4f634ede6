"""How long flag checks take: synthetic commands, every real recipe, and one live extraction.

Why: the flag check runs before every deploy, on every `servegate flags check|matrix`, and in the
unit tests; validating all recipes against the stored manifests must stay under 2 s. Extracting a
manifest imports vLLM, so it is timed on its own (and cached per env + mods by the scenario).

Usage: python -m servegate.flags.bench [-n 1000] [--manifest FILE | --vllm VERSION] [--extract PYTHON]
"""

from __future__ import annotations

import argparse
import random
import shlex
import statistics
import tempfile
import time
from pathlib import Path

from servegate.config.cluster import load_cluster
from servegate.config.paths import FLAGS_DIR, RECIPES_DIR, REPO_ROOT
from servegate.config.recipe import find_recipes
from servegate.errors import ServegateError
from servegate.flags import manifest
from servegate.flags.check import check_command
from servegate.flags.index import index_for
from servegate.flags.node import node_manifest
from servegate.flags.recipes import rendered_commands
from servegate.nodes.host import NodeHost
from servegate.runtimes.pyenv import existing_environment

BASE_COMMAND = (
    "vllm serve /models/m --served-model-name m --host 0.0.0.0 --port 8000 -tp 2 --max-model-len 32k "
    "--gpu-memory-utilization 0.9 --enable-prefix-caching --enable-auto-tool-choice "
    "--tool-call-parser hermes --reasoning-parser qwen3 --mamba-ssm-cache-dtype float16 --kv-cache-dtype fp8 "
    '--speculative-config \'{"method": "ngram", "num_speculative_tokens": 3}\' '
    '--compilation-config \'{"pass_config": {"fuse_allreduce_rms": false}}\''
)
FAULTS = [
    "--swap-space 4",
    "--kv-cache-memory 1G",
    "--mamba-ssm-cache-dtype fp8",
    "--reasoning-parser no_such_parser",
    "--hf-overrides '{{\"a\": 1}}'",
    "--port 8001",
    "",
]
ENV = {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1", "VLLM_NO_SUCH_VAR": "1"}


def synthetic_commands(count: int, seed: int = 0) -> list[list[str]]:
    """Recipe-sized serve commands, each with zero or one typical fault appended."""
    rng = random.Random(seed)
    return [shlex.split(f"{BASE_COMMAND} {rng.choice(FAULTS)}") for _ in range(count)]


RECIPE_DIRS = (RECIPES_DIR, REPO_ROOT / "tests" / "data" / "recipes")
VALIDATE_TARGET_S = 2.0


def bench_synthetic(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    path = args.manifest or manifest.find_manifest(args.vllm)
    flag_manifest = manifest.load_cached(path)
    index_for(flag_manifest)
    setup = time.perf_counter() - started

    commands = synthetic_commands(args.n)
    timings, findings = [], 0
    for command in commands:
        one = time.perf_counter()
        findings += len(check_command(command, ENV, flag_manifest, source="bench"))
        timings.append(time.perf_counter() - one)
    total = sum(timings)
    print(f"manifest {path}: load + index {setup * 1000:.1f} ms (once)")
    print(
        f"checked {len(commands)} commands in {total * 1000:.1f} ms: "
        f"mean {statistics.mean(timings) * 1e6:.0f} us, "
        f"p99 {sorted(timings)[int(len(timings) * 0.99) - 1] * 1e6:.0f} us, {findings} findings"
    )


def bench_recipes() -> float:
    """Every recipe (recipes/ and the fault recipes) against every stored manifest, cold: files read here."""
    started, cpu_started = time.perf_counter(), time.process_time()
    manifests = [manifest.load(p) for p in sorted(FLAGS_DIR.glob("*.json"))]
    loaded = time.perf_counter()
    commands, unloadable = [], 0
    for path in (p for folder in RECIPE_DIRS for p in find_recipes(folder)):
        try:
            commands += rendered_commands(path, [], None)
        except ServegateError:
            unloadable += 1  # e.g. the fault recipe whose braces fail at render time
    rendered = time.perf_counter()
    findings = sum(
        len(check_command(argv, env, m, source=source)) for m in manifests for source, argv, env in commands
    )
    finished, cpu = time.perf_counter(), time.process_time() - cpu_started
    total = finished - started
    verdict = "met" if total <= VALIDATE_TARGET_S else "MISSED"
    print(
        f"validated {len(commands)} recipe commands (+{unloadable} that do not render) x {len(manifests)} "
        f"stored manifests in {total * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU "
        f"(target <= {VALIDATE_TARGET_S:.0f} s wall: {verdict}): "
        f"read manifests {(loaded - started) * 1000:.0f} ms, load+render recipes "
        f"{(rendered - loaded) * 1000:.0f} ms, checks {(finished - rendered) * 1000:.0f} ms; "
        f"{findings} findings"
    )
    return total


def bench_extract(python: str) -> None:
    """One live extraction, as `flags dump` does it (help text) and as the scenario does it (node, cached)."""
    started = time.perf_counter()
    dumped = manifest.dump(python)
    print(f"extract (servegate flags dump, with help text): {time.perf_counter() - started:.1f} s wall, "
          f"{dumped['extraction_seconds']['total']:.1f} s inside the interpreter "
          f"({manifest.filename_for(dumped['vllm'])}, {len(dumped['options'])} options)")
    host = NodeHost(load_cluster().head)
    env = existing_environment(host, python)
    with tempfile.TemporaryDirectory() as cache:
        first = node_manifest(host, env, [], REPO_ROOT, cache_dir=Path(cache))
        again = node_manifest(host, env, [], REPO_ROOT, cache_dir=Path(cache))
    print(f"extract on a node (scenario, no help text): {first.seconds:.1f} s; "
          f"cached again: {again.seconds * 1000:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="commands to check (default 1000)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--manifest", help="manifest file")
    which.add_argument("--vllm", default="0.32.0", help="stored manifest version (default 0.32.0)")
    parser.add_argument("--extract", metavar="PYTHON", help="also time a live extraction with this Python")
    args = parser.parse_args(argv)
    bench_synthetic(args)
    bench_recipes()
    if args.extract:
        bench_extract(args.extract)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
