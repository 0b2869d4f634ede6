"""Benchmark (prints numbers, asserts nothing): planner time and sampler overhead on this machine.

    python -m servegate.memory.bench [--seconds 20] [--hz 2]

Planner: the local recipe (config.json + safetensors headers read through NodeHost) and the seed shapes
(no node touched). Sampler: CPU seconds the node-side loop and its children used per wall second (from
/proc/<pid>/stat utime+stime+cutime+cstime), bytes appended per sample, achieved rate, and the time one
controller-side read of the timeline takes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from servegate.config.cluster import load_cluster
from servegate.config.paths import RECIPES_DIR, cache_root
from servegate.config.recipe import load_recipe
from servegate.memory.plan import GIB, PlanContext, build_plan
from servegate.memory.recipe_plan import model_shape, plan_for
from servegate.memory.sampler import MemorySampler, sample_rate
from servegate.nodes.host import NodeHost
from servegate.render.command import render

SEED_ULTRA = [
    "--tensor-parallel-size",
    "4",
    "--kv-cache-dtype",
    "fp8",
    "--gpu-memory-utilization-gb",
    "105",
    "--max-model-len",
    "262144",
    "--max-num-seqs",
    "6",
    "--mamba-ssm-cache-dtype",
    "float16",
]


def timed(func, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def bench_planner(repeat: int) -> None:
    recipe, cluster = load_recipe(RECIPES_DIR / "local-hybrid.yaml"), load_cluster()
    hosts = {node.name: NodeHost(node) for node in cluster.nodes}
    model = cache_root() / "models" / (recipe.generated_model or "")
    if (model / "config.json").is_file():
        rendered = render(recipe, cluster, {}, model_path=str(model))
        seconds, plan = timed(lambda: plan_for(rendered, hosts), repeat)
        print(
            f"planner, local recipe (reads config + headers via NodeHost, MemTotal): {seconds * 1000:.1f} ms "
            f"median of {repeat}; verdict {plan.verdict}, {plan.capacity.tokens:,} KV tokens predicted"
        )
    else:
        print(f"planner, local recipe: skipped, {model} not generated yet (run the suite once)")
    model_id = "nvidia/NVIDIA-Nemotron-3-Ultra-550B-A55B-NVFP4"

    def seed():
        shape, weights, source = model_shape(model_id, None)
        ctx = PlanContext(
            argv=["vllm", "serve", model_id, *SEED_ULTRA],
            env={},
            platform="gpu",
            node_names=["a", "b", "c", "d"],
            node_total_bytes=int(121.7 * GIB),
            node_total_source="x",
        )
        return build_plan(shape, weights, source, ctx)

    seconds, plan = timed(seed, repeat)
    print(
        f"planner, seed Ultra shape (shape files only): {seconds * 1000:.2f} ms median of {repeat}; "
        f"verdict {plan.verdict}"
    )


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def bench_sampler(seconds: float, hz: float) -> None:
    cluster = load_cluster()
    host = NodeHost(cluster.head)
    sampler = MemorySampler({host.name: host}, hz=hz)
    with sampler:
        node = sampler.nodes[host.name]
        started, cpu_before = time.time(), cpu_seconds(node.pgid)
        time.sleep(seconds)
        cpu_after, wall = cpu_seconds(node.pgid), time.time() - started
        read_s, samples = timed(lambda: node.samples(), 5)
        size = int(host.run(f"stat -c %s {node.path}").stdout.strip() or 0)
    print(
        f"sampler at {hz:g} Hz for {wall:.1f}s: {len(samples)} samples, "
        f"achieved {sample_rate(samples):.2f} Hz, "
        f"{size / max(1, len(samples)):.0f} bytes/sample"
    )
    print(
        f"sampler CPU: {cpu_after - cpu_before:.3f} CPU-s over {wall:.1f}s wall = "
        f"{100 * (cpu_after - cpu_before) / wall:.2f}% of one core (loop + sleep children)"
    )
    print(f"one timeline read through NodeHost ({len(samples)} lines): {read_s * 1000:.1f} ms median")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--hz", type=float, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    bench_planner(args.repeat)
    bench_sampler(args.seconds, args.hz)


if __name__ == "__main__":
    main()
