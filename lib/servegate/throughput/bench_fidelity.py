"""Fidelity: does the suite's load generator (AIPerf) measure what vLLM's own `vllm bench serve` measures?

Same server, same workload, one run: the two tools take turns (A B A B ...) so drift in the machine's load
hits both alike; the medians over rounds of output tok/s and TTFT p50 are compared, at each --concurrency
level in turn (one server for all). Warm-up turns (one per tool by default) are run and printed but left out:
on a GPU the first turn pays kernel JIT. Prints the figures; exit 0 when both agree within --within %
(default 3) at every level, 1 otherwise. The default (one level, 2 kept rounds + 1 warm-up, 16 requests) fits
beside the suite in a 30-minute visit; the time it will take is printed first, from the per-turn time of the
last run under --results (else an assumption, said as such). TTFT is servegate's one definition
(schema.TTFT_DEFINITION) for both tools.

    python -m servegate.throughput.bench_fidelity --endpoint http://127.0.0.1:8000 --vllm-python ENV/python
    python -m servegate.throughput.bench_fidelity --recipe recipes/local-hybrid.yaml --set port=18300
    python -m servegate.throughput.bench_fidelity --from-run RUN_DIR --warmup 1   (report a past run again)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from servegate.config.recipe import parse_override
from servegate.errors import ServegateError
from servegate.results.run import RunDir
from servegate.stack import Stack
from servegate.throughput import aiperf, arrivals, vllm_bench
from servegate.throughput.endpoint import Endpoint
from servegate.throughput.runner import run_level, summary_line
from servegate.throughput.schema import LevelResult
from servegate.throughput.target import target_for
from servegate.throughput.workload import Workload

TOOLS = ("aiperf", "vllm-bench")
COMPARED = (("output_tps", "output tok/s"), ("ttft_ms_p50", "TTFT p50 ms"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_fidelity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--endpoint", help="a running server's base URL")
    where.add_argument("--recipe", type=Path, help="deploy this recipe with servegate for the measurement")
    where.add_argument("--from-run", type=Path, help="report the turns a past run saved (its tools' raw files)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="recipe default override"
    )
    parser.add_argument(
        "--vllm-python", help="interpreter with vLLM for vllm bench (default: the recipe's env)"
    )
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the served model's root)")
    parser.add_argument("--isl", type=int, default=64)
    parser.add_argument("--osl", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2], help="one or more levels")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="kept turns per tool (A B A B ...)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="leading turns per tool left out of the medians (JIT, graphs, caches warm up)")
    parser.add_argument("--within", type=float, default=3.0, help="agreement required, in %%")
    parser.add_argument("--results", type=Path, help="results root")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_run:
        return report_run(args.from_run, args.warmup, args.within)
    print(estimate(args), flush=True)
    with ExitStack() as cleanup:
        client, vllm_python, run = _server(args, cleanup)
        target = target_for(client, args.tokenizer, args.vllm_python or vllm_python)
        if not target.vllm_python:
            raise ServegateError("no interpreter with vLLM for vllm bench serve\n  fix: pass --vllm-python")
        prompts = write_prompts(
            target.vllm_python, target.tokenizer, args.isl, args.requests, run.path / "fidelity" / "prompts"
        )
        by_level, code, started = {}, 0, time.monotonic()
        for concurrency in args.concurrency:
            results = take_turns(args, concurrency, target, prompts, run.path / "fidelity")
            level_code, by_level[str(concurrency)] = report(results, args.within, run.path, concurrency)
            code = code or level_code
            turns = 2 * (args.warmup + args.rounds) * (args.concurrency.index(concurrency) + 1)
            run.update("fidelity", value={"concurrency": by_level, "agree": code == 0, "within_pct": args.within,
                                          "turn_seconds": round((time.monotonic() - started) / turns, 1)})
        run.finish("passed" if code == 0 else "failed")
        return code


ASSUMED_TURN_S = 70.0  # one turn of the old H100/H200 default (isl 128, osl 64, 96 requests): 27 min / 24 turns


def estimate(args) -> str:
    """The run's expected length: turns x the last run's seconds per turn (run.json fidelity.turn_seconds)."""
    turns = 2 * (args.warmup + args.rounds) * len(args.concurrency)
    per_turn, source = ASSUMED_TURN_S, f"assumed {ASSUMED_TURN_S:g} s per turn: no earlier fidelity run found"
    root = args.results or Path("results")
    for path in sorted(root.glob("*/run.json"), reverse=True) if root.is_dir() else []:
        try:
            seconds = (json.loads(path.read_text()).get("fidelity") or {}).get("turn_seconds")
        except (OSError, json.JSONDecodeError):
            continue
        if seconds:
            per_turn, source = float(seconds), f"{seconds} s per turn in {path.parent.name}"
            break
    return (f"fidelity: {turns} turns (2 tools x {args.warmup + args.rounds} rounds x {len(args.concurrency)} "
            f"level(s)), about {turns * per_turn / 60:.0f} min plus the server start ({source})")


TURN = re.compile(r"^fidelity-c(\d+)-(aiperf|vllm-bench)-r(\d+)$")


def saved_turns(run_dir: Path, warmup: int) -> dict[int, dict[str, list[LevelResult]]]:
    """The kept (post-warm-up) turns a run saved under RUN_DIR/fidelity, by concurrency and tool, read again
    from the tools' own files."""
    found: dict[int, dict[str, list[tuple[int, LevelResult]]]] = {}
    for folder in sorted((run_dir / "fidelity").glob("fidelity-c*-*-r*")):
        match = TURN.match(folder.name)
        if not match or int(match.group(3)) <= warmup:
            continue
        concurrency, tool, index = int(match.group(1)), match.group(2), int(match.group(3))
        level_dir = folder / f"c{concurrency}"
        workload = Workload(name=folder.name, tool=tool, isl=0, osl=0, concurrency=[concurrency], requests=None)
        level = (aiperf.parse if tool == "aiperf" else vllm_bench.parse)(level_dir, workload, concurrency)
        level.raw = str(level_dir.relative_to(run_dir))
        found.setdefault(concurrency, {t: [] for t in TOOLS})[tool].append((index, level))
    return {c: {t: [lv for _, lv in sorted(turns)] for t, turns in tools.items()} for c, tools in sorted(found.items())}


def report_run(run_dir: Path, warmup: int, within: float) -> int:
    turns = saved_turns(run_dir, warmup)
    if not turns:
        raise ServegateError(f"{run_dir}/fidelity holds no fidelity turns after {warmup} warm-up round(s)")
    codes = [report(results, within, run_dir, concurrency)[0] for concurrency, results in turns.items()]
    return max(codes)


def take_turns(args, concurrency: int, target, prompts: Path, folder: Path) -> dict[str, list[LevelResult]]:
    """The tools in turn (A B A B ...) at one concurrency; warm-up turns printed, not kept."""
    results = {tool: [] for tool in TOOLS}
    for round_index in range(args.warmup + args.rounds):
        warmup = round_index < args.warmup
        for tool in TOOLS:
            workload = Workload(
                name=f"fidelity-c{concurrency}-{tool}-r{round_index + 1}",
                tool=tool,
                isl=args.isl,
                osl=args.osl,
                concurrency=[concurrency],
                requests=args.requests,
                prompts=prompts,
            )
            level = run_level(workload, concurrency, target, folder, gpus=0)
            label = "warm-up" if warmup else f"round {round_index + 1 - args.warmup}"
            print(f"c={concurrency:<3} {label:8} {tool:10} {summary_line(level)}", flush=True)
            if not warmup:
                results[tool].append(level)
    return results


PROMPTS_SCRIPT = r"""
import json, random, sys
from transformers import AutoTokenizer
path, isl, count, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tok = AutoTokenizer.from_pretrained(path)
rng = random.Random(42)
special = set(tok.all_special_ids)
vocab = [i for i in range(len(tok)) if i not in special and tok.decode([i]).strip().isalpha()]
texts = [tok.decode([rng.choice(vocab) for _ in range(isl)]) for _ in range(count)]
with open(out + "/aiperf.jsonl", "w") as a:
    a.writelines(json.dumps({"text": text}) + "\n" for text in texts)
pairs = [{"conversations": [{"from": "human", "value": t}, {"from": "gpt", "value": "."}]} for t in texts]
with open(out + "/sharegpt.json", "w") as v:
    json.dump(pairs, v)
print(len(tok.encode(texts[-1], add_special_tokens=False)))
"""


def write_prompts(python: str, tokenizer: str, isl: int, count: int, folder: Path) -> Path:
    """The same prompts for both tools: isl random words of the served model's own vocabulary each (the
    tools' own generators differ: AIPerf draws from a text corpus, vLLM from token ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [python, "-c", PROMPTS_SCRIPT, tokenizer, str(isl), str(count), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise ServegateError(f"writing the shared prompts failed: {out.stderr.strip()[-400:]}")
    print(f"{count} shared prompts of {out.stdout.strip()} tokens in {folder}", flush=True)
    return folder


def _server(args, cleanup: ExitStack):
    """The server to measure, a vLLM interpreter for vllm bench, and a results folder."""
    if args.endpoint:
        endpoint = cleanup.enter_context(Endpoint(args.endpoint))
        return endpoint, None, RunDir("fidelity", args.results)
    overrides = dict(parse_override(text) for text in args.set)
    stack = cleanup.enter_context(Stack.from_files(args.recipe, None, overrides, results_root=args.results))
    deployment = cleanup.enter_context(stack.deployment())
    python = stack.environments()[stack.cluster.head.name].python
    return deployment, python, stack.run


def report(results: dict[str, list[LevelResult]], within: float, folder: Path,
           concurrency: int | None = None) -> tuple[int, dict]:
    """Per metric and tool: the median of the round figures, the pooled figure (what the tool reports over all
    its kept rounds at once: output tokens over time, TTFT p50 of every request) and the median of the paired
    (same-round) differences, which drift in the server's own speed between rounds does not move. Agreement
    needs the pooled (or, without the tools' raw files, the median) and the paired difference within `within` %:
    a median of round medians is no figure either tool reports, and it carries the drift between turns."""
    agree = True
    figures: dict[str, dict] = {}
    print(
        f"\nfidelity{f' at concurrency {concurrency}' if concurrency else ''} over {len(results['aiperf'])} "
        f"round(s) per tool, results in {folder}/fidelity"
    )
    print(f"{'metric':14} {'aiperf':>8} {'vllm bench':>11} {'diff %':>7} | {'pooled: aiperf':>14} "
          f"{'vllm bench':>11} {'diff %':>7} | {'paired diff %':>13}")
    for key, label in COMPARED:
        ours = [getattr(lv, key) for lv in results["aiperf"]]
        theirs = [getattr(lv, key) for lv in results["vllm-bench"]]
        a, b = _median(ours), _median(theirs)
        diff = _pct(a, b)
        paired = _median([100.0 * (x - y) / y for x, y in zip(ours, theirs, strict=False) if x is not None and y])
        pa, pb = pooled(key, results["aiperf"], folder), pooled(key, results["vllm-bench"], folder)
        pooled_diff = _pct(pa, pb)
        level_diff = pooled_diff if pooled_diff is not None else diff
        agree &= _within(level_diff, within) and _within(paired, within)
        figures[key] = {"aiperf": ours, "vllm_bench": theirs, "median_aiperf": a, "median_vllm_bench": b,
                        "diff_pct": diff, "pooled_aiperf": pa, "pooled_vllm_bench": pb,
                        "pooled_diff_pct": pooled_diff, "paired_diff_pct": paired}
        print(f"{label:14} {_fmt(a):>8} {_fmt(b):>11} {_fmt(diff, '+.1f'):>7} | {_fmt(pa):>14} {_fmt(pb):>11} "
              f"{_fmt(pooled_diff, '+.1f'):>7} | {_fmt(paired, '+.1f'):>13}")
    figures["arrivals"] = {}
    for tool in ("aiperf", "vllm-bench"):
        rounds = [arrivals.requests(tool, folder / lv.raw) for lv in results[tool] if lv.raw]
        figures["arrivals"][tool] = arrivals.bursts(rounds)
        print(arrivals.describe(tool, figures["arrivals"][tool]))
    print(f"agree within {within:g} % (pooled and paired): {'yes' if agree else 'NO'}")
    figures["within_pct"], figures["agree"] = within, agree
    return (0 if agree else 1), figures


def pooled(key: str, levels: list[LevelResult], folder: Path) -> float | None:
    """The tool's figure over all its rounds at once; None without the duration or the per-request files."""
    if key == "output_tps":
        pairs = [(lv.output_tps, lv.duration_s) for lv in levels]
        if not pairs or any(tps is None or not seconds for tps, seconds in pairs):
            return None
        return sum(tps * seconds for tps, seconds in pairs) / sum(seconds for _, seconds in pairs)
    if key == "ttft_ms_p50":
        values: list[float] = []
        for lv in levels:
            raw = folder / lv.raw if lv.raw else None
            found = (aiperf.request_ttfts_ms if lv.tool == "aiperf" else vllm_bench.request_ttfts_ms)(raw) \
                if raw and raw.is_dir() else []
            if not found:
                return None
            values += found
        return statistics.median(values) if values else None
    return None


def _pct(a: float | None, b: float | None) -> float | None:
    return 100.0 * (a - b) / b if a is not None and b else None


def _within(value: float | None, within: float) -> bool:
    return value is not None and abs(value) <= within


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ServegateError as exc:
        print(f"bench_fidelity: {exc}", file=sys.stderr)
        sys.exit(2)
