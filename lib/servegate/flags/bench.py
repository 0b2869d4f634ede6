"""How long checking N recipes' serve commands takes once manifests are cached.

Why: the flag check runs in preflight for every recipe of a run, on every `servegate flags check`,
and in the unit tests; it must stay far below a second per recipe. This prints the one-off cost
(read the manifest, build its index) apart from the per-command cost.

Usage: python -m servegate.flags.bench [-n 1000] [--manifest FILE | --vllm VERSION]
"""

from __future__ import annotations

import argparse
import random
import shlex
import statistics
import time

from servegate.flags import manifest
from servegate.flags.check import check_command
from servegate.flags.index import index_for

BASE_COMMAND = (
    "vllm serve /models/m --served-model-name m --host 0.0.0.0 --port 8000 -tp 2 --max-model-len 32k "
    "--gpu-memory-utilization 0.9 --enable-prefix-caching --enable-auto-tool-choice --tool-call-parser hermes "
    "--reasoning-parser qwen3 --mamba-ssm-cache-dtype float16 --kv-cache-dtype fp8 "
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="commands to check (default 1000)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--manifest", help="manifest file")
    which.add_argument("--vllm", default="0.32.0", help="stored manifest version (default 0.32.0)")
    args = parser.parse_args(argv)

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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
