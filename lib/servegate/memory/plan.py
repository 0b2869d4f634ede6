"""The memory plan: weights, KV per token, Mamba state per sequence, against the budget and the node.

All sizes are per rank (one GPU, or the one CPU engine) unless a name says per node. Budgets follow
vLLM: --kv-cache-memory-bytes is the KV cache itself; on the CPU, VLLM_CPU_KVCACHE_SPACE GiB is;
on a GPU the reservation is --gpu-memory-utilization-gb GiB (a mod's flag) or --gpu-memory-utilization
x the device's memory (the node's memory on unified-memory machines), and KV gets what weights and
runtime overhead leave of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from servegate.memory import flags as f
from servegate.memory import graphs as g
from servegate.memory import terms as t
from servegate.memory.allocator import CPU_BLOCK_SIZE, GPU_BLOCK_SIZE, Capacity, vllm_capacity
from servegate.memory.judge import judge
from servegate.memory.plan_types import MemoryPlan, PlanContext  # noqa: F401 - re-exported
from servegate.memory.shapes import ModelShape
from servegate.memory.units import GIB, LEVELS, Finding, gib  # noqa: F401 - re-exported

DEFAULT_GPU_UTILIZATION = 0.9
DEFAULT_CPU_KVCACHE_GIB = 4.0  # vLLM CPU's default when VLLM_CPU_KVCACHE_SPACE is unset or 0
CPU_OVERHEAD_GIB = 0.5  # the CPU engine beside weights and its explicit KV space (footprint only)
LARGE_GPU = 70 * GIB  # vLLM arg_utils: at or above it the API server defaults to 8192 tokens / 1024 seqs


def mamba_state_bytes(shape: ModelShape, tp: int, conv_bytes: float, ssm_bytes: float, num_spec: int) -> int:
    """Conv + SSM state of one Mamba-2 layer, one sequence, one rank (vLLM's MambaStateShapeCalculator)."""
    if not shape.mamba_layers:
        return 0
    groups = shape.n_groups if shape.n_groups % tp == 0 else tp  # vLLM extends groups to shard with heads
    conv_dim = shape.mamba_num_heads * shape.mamba_head_dim + 2 * groups * shape.ssm_state_size
    conv = ceil(conv_dim / tp) * (shape.conv_kernel - 1 + num_spec) * conv_bytes
    ssm = ceil(shape.mamba_num_heads / tp) * shape.mamba_head_dim * shape.ssm_state_size * ssm_bytes
    return int(conv + ssm)


@dataclass
class _Layout:
    """What the argv makes of the model on one rank: parallelism, lengths, KV dtype and per-layer state sizes."""

    tp: int
    pp: int
    max_len: int
    seqs: int
    batch: int  # max_num_batched_tokens: the profiled chunk
    kv_dtype: str  # as reported, e.g. "fp8 (1 B)"
    num_spec: int  # speculative tokens per step
    attn_layers: int  # this rank's, plus the MTP drafter's
    draft_attention: int  # the MTP drafter's attention layers
    mamba_layers: int
    per_token_layer: float  # KV bytes of one token in one attention layer
    mamba_layer: int  # conv + SSM state bytes of one sequence in one Mamba layer

    @property
    def kv_per_token(self) -> float:
        return self.attn_layers * self.per_token_layer

    @property
    def one_sequence(self) -> int:
        """KV + Mamba state of one sequence at max_len."""
        return int(self.max_len * self.kv_per_token + self.mamba_layers * self.mamba_layer)


def _cache_dtypes(argv: list[str], shape: ModelShape) -> tuple[str, str, str, str]:
    """(model, KV cache, Mamba conv state, Mamba SSM state) dtypes, resolving vLLM's "auto"."""
    model_dtype = f.flag(argv, "--dtype") or shape.dtype
    if model_dtype == "auto":
        model_dtype = shape.dtype
    kv_dtype = f.flag(argv, "--kv-cache-dtype") or "auto"
    conv_dtype = f.flag(argv, "--mamba-cache-dtype") or "auto"
    ssm_dtype = f.flag(argv, "--mamba-ssm-cache-dtype") or "auto"
    if ssm_dtype == "auto":
        ssm_dtype = shape.mamba_ssm_cache_dtype or ("float32" if shape.is_hybrid else conv_dtype)
    return model_dtype, kv_dtype, conv_dtype, ssm_dtype


def _layout(shape: ModelShape, ctx: PlanContext) -> _Layout:
    argv = ctx.argv
    tp, pp = f.int_flag(argv, "--tensor-parallel-size", 1), f.int_flag(argv, "--pipeline-parallel-size", 1)
    max_len = f.int_flag(argv, "--max-model-len", int(shape.max_position_embeddings or 8192))
    large = ctx.platform == "gpu" and ctx.device_bytes >= LARGE_GPU
    seqs = f.int_flag(argv, "--max-num-seqs", (1024 if large else 256) if ctx.platform == "gpu" else 128)
    batch = f.int_flag(argv, "--max-num-batched-tokens", 8192 if large else 2048)
    model_dtype, kv_dtype, conv_dtype, ssm_dtype = _cache_dtypes(argv, shape)
    num_spec = f.speculative_tokens(argv)
    kv_heads = max(1, shape.num_kv_heads // tp)
    # The MTP drafter's attention layers hold KV in the same cache (on the last pipeline rank).
    draft_attention = shape.mtp_layer_kinds.count("attention") if f.drafts_with_mtp_layers(argv) else 0
    per_token_layer = 2 * kv_heads * shape.head_dim * f.dtype_bytes(kv_dtype, model_dtype)
    mamba_layer = mamba_state_bytes(
        shape, tp, f.dtype_bytes(conv_dtype, model_dtype), f.dtype_bytes(ssm_dtype, model_dtype), num_spec
    )
    return _Layout(
        tp=tp, pp=pp, max_len=max_len, seqs=seqs, batch=batch,
        kv_dtype=f"{kv_dtype} ({f.dtype_bytes(kv_dtype, model_dtype)} B)",
        num_spec=num_spec, attn_layers=ceil(shape.attention_layers / pp) + draft_attention,
        draft_attention=draft_attention, mamba_layers=ceil(shape.mamba_layers / pp),
        per_token_layer=per_token_layer, mamba_layer=mamba_layer,
    )


def _capacity(layout: _Layout, kv_budget: int, ctx: PlanContext) -> Capacity:
    """What vLLM's paged allocator makes of the KV budget (block size from the argv or the platform)."""
    block = f.int_flag(ctx.argv, "--block-size", CPU_BLOCK_SIZE if ctx.platform == "cpu" else GPU_BLOCK_SIZE)
    return vllm_capacity(
        kv_budget_bytes=max(0, kv_budget),
        max_model_len=layout.max_len,
        attention_layers=layout.attn_layers,
        mamba_layers=layout.mamba_layers,
        attn_bytes_per_token_layer=layout.per_token_layer,
        mamba_bytes_per_layer=layout.mamba_layer,
        block_size=block,
        prefix_caching=f.prefix_caching(ctx.argv, t.prefix_caching_default(layout.mamba_layers > 0, ctx.vllm_version)),
        num_spec=layout.num_spec,
        report_groups=t.reports_groups(ctx.vllm_version),
    )


def _notes(shape: ModelShape, layout: _Layout) -> list[str]:
    """What the plan does not model: speculative decoding's draft layers, shape numbers marked unsure."""
    notes = []
    if layout.num_spec and layout.draft_attention:
        notes.append(
            f"speculative decoding ({layout.num_spec} tokens): the MTP drafter's {layout.draft_attention} "
            "attention layer(s) counted in KV, its weights in the weights term"
        )
    elif layout.num_spec:
        notes.append(f"speculative decoding ({layout.num_spec} tokens): a separate draft model is not modelled")
    if shape.unsure:
        notes.append(f"shape numbers marked unsure in {shape.source}: {', '.join(shape.unsure)}")
    return notes


def _runtime_terms(shape: ModelShape, weight_bytes: int, layout: _Layout, ctx: PlanContext,
                   hint: str = "") -> list[t.Term]:
    """Weights, activation peak and non-torch memory per rank (the recipe's overhead_gib replaces the last two)."""
    world = layout.tp * layout.pp
    if ctx.platform == "cpu":
        weights = t.Term("weights per rank", ceil(weight_bytes / world), "checkpoint / ranks", "checkpoint")
    else:
        weights = t.weights(shape, weight_bytes, world, f.drafts_with_mtp_layers(ctx.argv))
    if ctx.overhead_bytes is not None:
        return [weights, t.Term("runtime", ctx.overhead_bytes, "expect.memory.overhead_gib", "the recipe")]
    if ctx.platform == "cpu":
        return [weights, t.Term("runtime", int(CPU_OVERHEAD_GIB * GIB), "CPU engine beside weights", "default")]
    ep = f.has_flag(ctx.argv, "--enable-expert-parallel")
    backend = t.moe_backend(ctx.argv, ctx.env, hint, ctx.gpu_capability)
    weights = _as_loaded(weights, backend, hint)
    activation = t.activation(shape, layout.batch, layout.seqs, layout.tp, ep, f.drafts_with_mtp_layers(ctx.argv),
                              backend)
    graphs = g.cudagraph(shape, ctx.argv, layout.seqs, layout.batch, layout.num_spec, layout.tp, ep,
                         f.drafts_with_mtp_layers(ctx.argv), backend)
    # vLLM 0.21+ takes the graphs out of the KV budget; before, they land beyond the reservation (node_terms)
    inside = [graphs] if graphs and g.subtracted_from_kv(ctx.vllm_version, ctx.env) else []
    if ctx.unified and not (ctx.profile or {}).get("calibration", {}).get("unified"):
        # (a calibration on a unified node already holds it in its residual)
        inside.append(t.uma_host(compiled=not f.has_flag(ctx.argv, "--enforce-eager")))
    if ctx.profile is None:
        return [weights, activation, t.non_torch(), *inside]
    return [*_calibrated(shape, weight_bytes, layout, ctx, weights, activation, backend, hint), *inside]


def _as_loaded(weights: t.Term, backend: str, hint: str) -> t.Term:
    """The checkpoint's share as vLLM holds it after loading (NVFP4 on Marlin: measured above its bytes)."""
    return t.marlin_nvfp4_loaded(weights) if backend == "marlin" and "fp4" in hint.lower() else weights


def _graphs_beside(shape: ModelShape, layout: _Layout, ctx: PlanContext, hint: str) -> t.Term | None:
    """Before vLLM 0.21 the graphs are captured after the KV cache, beyond the reservation."""
    if ctx.platform != "gpu" or ctx.overhead_bytes is not None or g.subtracted_from_kv(ctx.vllm_version, ctx.env):
        return None
    ep = f.has_flag(ctx.argv, "--enable-expert-parallel")
    term = g.cudagraph(shape, ctx.argv, layout.seqs, layout.batch, layout.num_spec, layout.tp, ep,
                       f.drafts_with_mtp_layers(ctx.argv), t.moe_backend(ctx.argv, ctx.env, hint, ctx.gpu_capability))
    if term:
        term.name = "CUDA graphs (captured after the KV cache, vLLM < 0.21)"
    return term


def _calibrated(shape, weight_bytes, layout, ctx, weights: t.Term, activation: t.Term, backend: str,
                hint: str) -> list[t.Term]:
    """Weights, activation and residual from a calibration run (memory/profile.py)."""
    cal, measured, where = ctx.profile["calibration"], ctx.profile["measured"], ctx.profile.get("path", "profile")
    ep = f.has_flag(ctx.argv, "--enable-expert-parallel")
    cal_weights = _as_loaded(t.weights(shape, weight_bytes, int(cal["ranks"]), bool(cal["drafts_with_mtp"])),
                             backend, hint)
    if measured.get("weights_gib") is not None:
        loaded = int(measured["weights_gib"] * GIB)
        weights = t.Term("weights per rank", int(loaded * weights.bytes / max(1, cal_weights.bytes)),
                         f"{measured['weights_gib']:g} GiB as loaded at calibration x planner ratio "
                         f"new/calibration ({weights.formula})", where)
    else:
        loaded = cal_weights.bytes
    cal_act = t.activation(shape, int(cal["max_num_batched_tokens"]), int(cal["max_num_seqs"]), layout.tp, ep,
                           bool(cal["drafts_with_mtp"]), backend)
    scale = 1.0
    if measured.get("peak_activation_gib") is not None and cal_act.bytes:
        scale = measured["peak_activation_gib"] * GIB / cal_act.bytes
    act = t.Term("activation peak", int(activation.bytes * scale),
                 f"{activation.formula} x {scale:.3f} (measured / formula at calibration)", where,
                 kept=int(activation.kept * scale))
    non_kv = cal["budget_gib"] * GIB - measured["kv_cache_gib"] * GIB
    cal_graphs = (measured.get("cudagraph_estimate_gib") or 0) * GIB
    residual = int(non_kv - loaded - cal_act.bytes * scale - cal_graphs)
    return [weights, act, t.Term(
        "residual (non-torch, allocator slack)", residual,
        f"(reservation {cal['budget_gib']:g} - KV {measured['kv_cache_gib']:g} GiB) - weights - activation "
        f"at batch {cal['max_num_batched_tokens']}"
        + (f" - CUDA graphs {measured['cudagraph_estimate_gib']:g} GiB" if cal_graphs else ""), where)]


def _node_terms(ctx: PlanContext, runtime: list[t.Term], late_graphs: t.Term | None,
                ranks_per_node: int) -> list[t.Term]:
    """On unified memory, what the node holds beside the reservations; the last term is the prefill transient."""
    if not ctx.unified:
        return []
    # what a prefill chunk allocates again: the activation peak less the workspace vLLM keeps
    transient = next((term.bytes - term.kept for term in runtime if term.name == "activation peak"), 0)
    node_terms = t.node_terms(ctx.uses_ray, ranks_per_node * transient)
    if late_graphs:
        late_graphs.bytes *= ranks_per_node
        node_terms.insert(len(node_terms) - 1, late_graphs)
    return node_terms


def build_plan(
    shape: ModelShape, weight_bytes: int, weight_source: str, ctx: PlanContext, model: str = ""
) -> MemoryPlan:
    layout = _layout(shape, ctx)
    world = layout.tp * layout.pp
    ranks_per_node = ceil(world / max(1, len(ctx.node_names)))
    runtime = _runtime_terms(shape, weight_bytes, layout, ctx, f"{model} {weight_source}")
    weights_rank, overhead = runtime[0].bytes, sum(term.bytes for term in runtime[1:])
    budget, kv_budget, source = _budget(ctx, weights_rank, overhead)
    footprint = budget if budget is not None else weights_rank + kv_budget + overhead
    late_graphs = _graphs_beside(shape, layout, ctx, f"{model} {weight_source}")
    node_terms = _node_terms(ctx, runtime, late_graphs, ranks_per_node)
    beside = sum(term.bytes for term in node_terms[:-1])
    node_footprint = ranks_per_node * footprint + beside if ctx.gpu_total_bytes is None else 0
    one = layout.one_sequence
    plan = MemoryPlan(
        model=model or shape.name,
        model_source=shape.source,
        weight_source=weight_source,
        platform=ctx.platform,
        tensor_parallel=layout.tp,
        pipeline_parallel=layout.pp,
        ranks_per_node=ranks_per_node,
        max_model_len=layout.max_len,
        max_num_seqs=layout.seqs,
        max_num_batched_tokens=layout.batch,
        drafts_with_mtp=f.drafts_with_mtp_layers(ctx.argv),
        kv_cache_dtype=layout.kv_dtype,
        weight_bytes_total=weight_bytes,
        weight_bytes_per_rank=weights_rank,
        attention_layers=layout.attn_layers,
        mamba_layers=layout.mamba_layers,
        kv_bytes_per_token=layout.kv_per_token,
        mamba_state_bytes_per_seq=layout.mamba_layers * layout.mamba_layer,
        mamba_state_bytes_per_layer=layout.mamba_layer,
        kv_need_bytes=layout.seqs * one,
        kv_need_one_bytes=one,
        budget_source=source,
        budget_bytes=budget,
        kv_budget_bytes=kv_budget,
        overhead_bytes=overhead,
        footprint_bytes_per_rank=footprint,
        footprint_bytes_per_node=node_footprint,
        node_total_bytes=ctx.node_total_bytes,
        node_total_source=ctx.node_total_source,
        headroom_bytes_per_node=ctx.node_total_bytes - node_footprint,
        capacity=_capacity(layout, kv_budget, ctx),
        terms=runtime,
        node_terms=node_terms,
        unified=ctx.unified,
        prefill_peak_bytes_per_node=node_footprint + (node_terms[-1].bytes if node_terms else 0),
    )
    plan.notes += _notes(shape, layout) + _runtime_notes(shape, ctx, runtime, late_graphs)
    plan.findings = judge(plan, ctx)
    return plan


def _runtime_notes(shape: ModelShape, ctx: PlanContext, runtime: list[t.Term], late_graphs: t.Term | None) -> list[str]:
    """What the runtime terms leave out: torch.compile's activation, graphs beyond the reservation, non-torch."""
    notes = []
    if shape.mamba_layers and (late_graphs or any(term.name == "CUDA graphs" for term in runtime)):
        notes.append("torch.compile (no --enforce-eager): the activation term is the eager one; vLLM 0.25 "
                     "measured +0.01 / +0.78 / +0.76 GiB above eager on the Nano / Super / Ultra stand-ins "
                     "(results/gpu/20261205-h100-planner-graphs.md), +0.66 on the NVFP4 Nano on Marlin "
                     "(results/gpu/20261206-h100-nano-nvfp4.md): --profile a compiled run to carry it")
    if late_graphs and not ctx.unified:
        notes.append(f"{late_graphs.name}: {late_graphs.bytes / GIB:.2f} GiB per rank on the GPU beyond the "
                     "reservation")
    if ctx.platform == "gpu" and ctx.overhead_bytes is None and ctx.profile is None and t.NON_TORCH_BYTES is None:
        notes.append("non-torch memory (CUDA context, cuBLAS) not yet measured: counted as 0")
    return notes


def _budget(ctx: PlanContext, weights_rank: int, overhead: int) -> tuple[int | None, int, str]:
    """(GPU reservation per rank or None, KV budget per rank, where the numbers come from)."""
    argv, env = ctx.argv, ctx.env
    explicit = f.flag(argv, "--kv-cache-memory-bytes")
    if explicit:
        return None, f.parse_bytes(explicit), f"--kv-cache-memory-bytes {explicit}"
    if ctx.platform == "cpu":
        space = float(env.get("VLLM_CPU_KVCACHE_SPACE") or 0) or DEFAULT_CPU_KVCACHE_GIB
        named = "VLLM_CPU_KVCACHE_SPACE" if env.get("VLLM_CPU_KVCACHE_SPACE") else "vLLM CPU default"
        return None, int(space * GIB), f"{named} = {space:g} GiB"
    device = ctx.gpu_total_bytes or ctx.node_total_bytes
    in_gib = f.float_flag(argv, "--gpu-memory-utilization-gb")
    if in_gib is not None:
        budget, source = int(in_gib * GIB), f"--gpu-memory-utilization-gb {in_gib:g}"
    else:
        util = f.float_flag(argv, "--gpu-memory-utilization") or DEFAULT_GPU_UTILIZATION
        budget = int(util * device)
        source = f"--gpu-memory-utilization {util:g} x {gib(device)}"
    return budget, budget - weights_rank - overhead, source
