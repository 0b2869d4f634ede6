"""Judging a memory plan: each finding says what does not fit, where, and what to change.

Levels: fail (vLLM will not start, or the node runs out), warn (it starts but something queues or the
margin is thin), ok.
"""

from __future__ import annotations

from servegate.memory import terms as t
from servegate.memory.plan_types import MemoryPlan, PlanContext
from servegate.memory.units import Finding, gib


def judge(plan: MemoryPlan, ctx: PlanContext) -> list[Finding]:
    where = f"recipe {ctx.recipe}" if ctx.recipe else "the recipe"
    out: list[Finding] = []
    if plan.budget_bytes is not None and plan.weight_bytes_per_rank + plan.overhead_bytes > plan.budget_bytes:
        out.append(
            Finding(
                "fail",
                f"{where}: weights {gib(plan.weight_bytes_per_rank)} + activation and runtime "
                f"{gib(plan.overhead_bytes)} per rank exceed the budget "
                f"{gib(plan.budget_bytes)} ({plan.budget_source})",
                "raise the memory budget, lower --max-num-batched-tokens, quantize the weights, "
                "or add tensor-parallel ranks",
            )
        )
    if plan.kv_budget_bytes < plan.kv_need_one_bytes:
        out.append(
            Finding(
                "fail",
                f"{where}: KV budget {gib(plan.kv_budget_bytes)} per rank cannot hold one "
                f"sequence of {plan.max_model_len} tokens ({gib(plan.kv_need_one_bytes)})",
                "lower --max-model-len, use --kv-cache-dtype fp8, or raise the budget",
            )
        )
    elif plan.capacity.num_blocks < plan.capacity.blocks_per_request and t.refuses_below_one_request(
            ctx.vllm_version):
        out.append(
            Finding(
                "fail",
                f"{where}: KV budget {gib(plan.kv_budget_bytes)} per rank makes {plan.capacity.num_blocks} "
                f"blocks; one request of {plan.max_model_len} tokens needs {plan.capacity.blocks_per_request} "
                "(vLLM's start-up check counts whole blocks in every KV cache group)",
                "lower --max-model-len, or raise the budget: Mamba page padding and block rounding eat it",
            )
        )
    elif plan.capacity.max_concurrency < 1:
        out.append(
            Finding(
                "warn",
                f"{where}: raw bytes fit, but vLLM's paged allocator holds "
                f"{plan.capacity.max_concurrency:.2f} sequences of {plan.max_model_len}",
                "raise the KV budget a little: Mamba page padding and block rounding eat it",
            )
        )
    elif plan.kv_budget_bytes < plan.kv_need_bytes:
        out.append(
            Finding(
                "warn",
                f"{where}: KV budget {gib(plan.kv_budget_bytes)} holds "
                f"{plan.capacity.max_concurrency:.2f} full-length sequences, "
                f"fewer than --max-num-seqs {plan.max_num_seqs}; the rest will queue",
                "fine for mixed lengths; raise the budget if every sequence can be long",
            )
        )
    out += _node_findings(plan, ctx, where)
    return out or [Finding("ok", f"{where}: fits with {gib(plan.headroom_bytes_per_node)} headroom per node")]


def _node_findings(plan: MemoryPlan, ctx: PlanContext, where: str) -> list[Finding]:
    out = []
    nodes = ", ".join(ctx.node_names)
    if ctx.gpu_total_bytes is not None and plan.footprint_bytes_per_rank > ctx.gpu_total_bytes:
        out.append(
            Finding(
                "fail",
                f"{where}: {gib(plan.footprint_bytes_per_rank)} per GPU exceeds the GPU's "
                f"{gib(ctx.gpu_total_bytes)}",
                "lower the budget or add GPUs",
            )
        )
    headroom = plan.headroom_bytes_per_node
    peak = plan.prefill_peak_bytes_per_node
    if plan.node_terms and headroom >= 0 and peak > plan.node_total_bytes:
        out.append(
            Finding(
                "fail",
                f"{where}: node(s) {nodes} hold {gib(plan.footprint_bytes_per_node)} once serving, and "
                f"{gib(peak)} while a prompt of {plan.max_num_batched_tokens}+ tokens is prefilled "
                f"(the per-chunk activation again outside the reservation), more than their "
                f"{gib(plan.node_total_bytes)}",
                "lower --max-num-batched-tokens or the memory budget until the prefill peak fits",
            )
        )
        out.append(
            Finding(
                "fail",
                f"{where}: node(s) {nodes} need {gib(plan.footprint_bytes_per_node)}, "
                f"more than their {gib(plan.node_total_bytes)} ({plan.node_total_source})",
                "lower the memory budget or spread the model over more nodes",
            )
        )
    if ctx.floor_bytes is not None and ctx.floor_bytes >= plan.node_total_bytes:
        out.append(
            Finding(  # a warning: the headroom scenario measures it and fails, naming the minimum seen
                "warn",
                f"{where}: expect.memory.floor_gib {gib(ctx.floor_bytes)} is not below the "
                f"node's total {gib(plan.node_total_bytes)}; the floor can never hold",
                "set expect.memory.floor_gib below the node's memory",
            )
        )
    elif ctx.margin_bytes is not None and 0 <= headroom < ctx.margin_bytes:
        out.append(
            Finding(
                "warn",
                f"{where}: leaves {gib(headroom)} per node on {nodes}, under the margin "
                f"{gib(ctx.margin_bytes)}"
                + (" (after the OS, vLLM's processes and Ray counted above)" if plan.node_terms
                   else " (OS, driver, transient spikes)"),
                "lower the budget until expect.memory.margin_gib is left",
            )
        )
    return out
