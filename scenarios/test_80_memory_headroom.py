"""Step 80, memory headroom: under a heavy phase (long concurrent prompts) every request succeeds, every node
keeps MemAvailable above the recipe's floor and GPUs stay within budget; vLLM's KV cache matches the plan."""

import pytest

from servegate.memory.recipe_plan import memory_expect
from servegate.memory.vllm_log import compare, parse_kv_log

GIB = 2**30
MAX_PLAN_ERROR_PCT = 5.0  # allocator-model prediction vs vLLM's logged KV capacity


def test_heavy_phase_succeeds(heavy_run):
    spec, failed = heavy_run.spec, heavy_run.failures
    assert not failed, (
        f"{len(failed)}/{len(heavy_run.outcomes)} heavy requests failed "
        f"(~{spec.prompt_tokens} prompt tokens, {spec.concurrency} concurrent); first: "
        f"{failed[0].error}. Lower expect.memory.heavy or the recipe's load, or raise memory."
    )
    short = [
        o
        for o in heavy_run.outcomes
        if o.completion_tokens != spec.output_tokens or o.prompt_tokens < 0.9 * spec.prompt_tokens
    ]
    assert not short, (
        f"heavy requests were not heavy: expected ~{spec.prompt_tokens} prompt and "
        f"{spec.output_tokens} output tokens, saw "
        f"{[(o.prompt_tokens, o.completion_tokens) for o in short]}"
    )


def test_memory_floor_held(node, heavy_run, memory_sampler, recipe):
    memory = memory_expect(recipe)
    floor = memory.floor_gib
    samples = memory_sampler.samples_in(node.name, "heavy", pad_s=1.0 / memory.sample_hz)
    assert len(samples) >= 2, (
        f"node {node.name}: {len(samples)} memory sample(s) around the heavy phase "
        f"({heavy_run.ended - heavy_run.started:.1f}s long), "
        f"{len(memory_sampler.samples(node.name))} in all; expected one every "
        f"{1 / memory.sample_hz:g}s: is the sampler loop running on the node?"
    )
    lowest = min(samples, key=lambda s: s.kib["MemAvailable"])
    seen, total = lowest.gib("MemAvailable"), lowest.gib("MemTotal")
    impossible = " The floor is above the node's total memory: it can never hold." if floor >= total else ""
    assert seen >= floor, (
        f"node {node.name}: MemAvailable fell to {seen:.2f} GiB during the heavy phase, "
        f"below the floor expect.memory.floor_gib = {floor:g} GiB (MemTotal {total:.2f} GiB)."
        f"{impossible} Lower the memory budget (--gpu-memory-utilization, KV space) or the "
        f"heavy load, or lower the floor."
    )


def test_gpu_memory_within_budget(node, heavy_run, memory_sampler, recipe):
    budget = memory_expect(recipe).gpu_budget_gib
    if budget is None:
        pytest.skip("not applicable: expect.memory.gpu_budget_gib is not set")
    samples = memory_sampler.samples(node.name)
    used = [(g[1] / 1024, g[0]) for s in samples for g in s.gpus]
    assert used, (
        f"node {node.name}: expect.memory.gpu_budget_gib is {budget:g} but nvidia-smi gave no "
        f"memory readings (unified memory reports none: use floor_gib there)"
    )
    peak, index = max(used)
    assert peak <= budget, (
        f"node {node.name}: GPU{index} used {peak:.2f} GiB, over the budget "
        f"expect.memory.gpu_budget_gib = {budget:g} GiB. Lower --gpu-memory-utilization."
    )


def test_kv_cache_matches_plan(deployment, memory_plan, stack):
    if not hasattr(deployment, "server"):
        pytest.skip("not applicable: an external endpoint; servegate has no server log to read")
    log = deployment.hosts[deployment.server.launch.node.name].read_text(deployment.server.log_path)
    logged = parse_kv_log(log)
    assert "kv_tokens" in logged, (
        "the server log has no 'KV cache size: N tokens' line; cannot check the "
        f"plan against vLLM (log tail: {log[-1500:]})"
    )
    rows = compare(memory_plan, logged)
    for row in rows:
        stack.progress("memory plan vs vLLM", str(row))
        print(row)
    stack.run.update(
        "memory",
        "plan_vs_vllm",
        [
            {
                "quantity": r.quantity,
                "predicted": r.predicted,
                "logged": r.logged,
                "error_pct": round(r.error_pct, 3),
            }
            for r in rows
        ],
    )
    tokens = next(r for r in rows if r.quantity.startswith("KV cache tokens (allocator"))
    assert abs(tokens.error_pct) <= MAX_PLAN_ERROR_PCT, (
        f"planner predicted {tokens.predicted:,.0f} KV tokens, vLLM logged {tokens.logged:,.0f} "
        f"({tokens.error_pct:+.1f}%, allowed ±{MAX_PLAN_ERROR_PCT}%); the planner's model of vLLM's "
        "allocator "
        f"is off for this vLLM version: see servegate/memory/allocator.py"
    )
