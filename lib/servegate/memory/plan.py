"""The memory plan: weights, KV per token, Mamba state per sequence, against the budget and the node.

All sizes are per rank (one GPU, or the one CPU engine) unless a name says per node. Budgets follow
vLLM: --kv-cache-memory-bytes is the KV cache itself; on the CPU, VLLM_CPU_KVCACHE_SPACE GiB is;
on a GPU the reservation is --gpu-memory-utilization-gb GiB (a mod's flag) or --gpu-memory-utilization
x the device's memory (the node's memory on unified-memory machines), and KV gets what weights and
runtime overhead leave of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import ceil

from servegate.memory import flags as f
from servegate.memory.allocator import CPU_BLOCK_SIZE, GPU_BLOCK_SIZE, Capacity, vllm_capacity
from servegate.memory.shapes import ModelShape

GIB = 2**30
DEFAULT_GPU_UTILIZATION = 0.9
DEFAULT_CPU_KVCACHE_GIB = 4.0  # vLLM CPU's default when VLLM_CPU_KVCACHE_SPACE is unset or 0
DEFAULT_OVERHEAD_GIB = {"gpu": 4.0, "cpu": 0.5}
LEVELS = ("ok", "warn", "fail")


def gib(value: float) -> str:
    """Bytes for people: GiB down to 0.1 GiB, then MiB, then KiB."""
    for unit, size in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size / 10 or unit == "KiB":
            return f"{value / size:.2f} {unit}"
    return f"{value} B"


@dataclass
class Finding:
    level: str  # ok | warn | fail
    message: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.level.upper()}: {self.message}" + (f"\n    fix: {self.fix}" if self.fix else "")


@dataclass
class PlanContext:
    """What the plan needs beyond the model: the rendered argv, env, nodes and the recipe's memory limits."""

    argv: list[str]
    env: dict[str, str]
    platform: str  # "cpu" or "gpu"
    node_names: list[str]
    node_total_bytes: int
    node_total_source: str
    gpu_total_bytes: int | None = None
    overhead_bytes: int | None = None
    margin_bytes: int | None = None
    floor_bytes: int | None = None
    recipe: str = ""


@dataclass
class MemoryPlan:
    model: str
    model_source: str
    weight_source: str
    platform: str
    tensor_parallel: int
    pipeline_parallel: int
    ranks_per_node: int
    max_model_len: int
    max_num_seqs: int
    kv_cache_dtype: str
    weight_bytes_total: int
    weight_bytes_per_rank: int
    attention_layers: int
    mamba_layers: int
    kv_bytes_per_token: float  # per rank, every attention layer
    mamba_state_bytes_per_seq: int  # per rank, every Mamba layer (conv + SSM)
    mamba_state_bytes_per_layer: int
    kv_need_bytes: int  # max_num_seqs full sequences
    kv_need_one_bytes: int  # one sequence at max_model_len
    budget_source: str
    budget_bytes: int | None  # the per-rank reservation on a GPU
    kv_budget_bytes: int
    overhead_bytes: int
    footprint_bytes_per_rank: int
    footprint_bytes_per_node: int
    node_total_bytes: int
    node_total_source: str
    headroom_bytes_per_node: int
    capacity: Capacity
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return max((fd.level for fd in self.findings), key=LEVELS.index, default="ok")

    def as_dict(self) -> dict:
        data = asdict(self)
        data["verdict"] = self.verdict
        return data

    def lines(self) -> list[str]:
        cap = self.capacity
        out = [
            f"model: {self.model} ({self.model_source}); weights: {self.weight_source}",
            f"platform {self.platform}, TP {self.tensor_parallel} x PP {self.pipeline_parallel}, "
            f"{self.ranks_per_node} rank(s) per node; max_model_len {self.max_model_len}, "
            f"max_num_seqs {self.max_num_seqs}, kv dtype {self.kv_cache_dtype}",
            f"weights: {gib(self.weight_bytes_total)} total, {gib(self.weight_bytes_per_rank)} per rank",
            f"KV per token (attention layers only, {self.attention_layers} of them): "
            f"{self.kv_bytes_per_token:,.0f} B per rank",
            f"Mamba state per sequence ({self.mamba_layers} layers x "
            f"{self.mamba_state_bytes_per_layer:,} B): "
            f"{self.mamba_state_bytes_per_seq:,} B per rank",
            f"KV + state needed: one sequence {gib(self.kv_need_one_bytes)}, "
            f"{self.max_num_seqs} sequences {gib(self.kv_need_bytes)} per rank",
            f"budget: {self.budget_source}; KV budget {gib(self.kv_budget_bytes)} per rank, "
            f"runtime overhead {gib(self.overhead_bytes)}",
            f"vLLM allocator: block {cap.block_size} tokens, {cap.num_blocks} blocks, "
            f"{cap.blocks_per_request} blocks/request -> {cap.tokens:,} tokens, "
            f"max concurrency {cap.max_concurrency:.2f}x"
            + (
                f", Mamba page padded {cap.mamba_padding_pct:.2f}%"
                if cap.mamba_padding_pct is not None
                else ""
            ),
            f"node: {gib(self.footprint_bytes_per_node)} of {gib(self.node_total_bytes)} "
            f"({self.node_total_source}) -> headroom {gib(self.headroom_bytes_per_node)}",
        ]
        out += [f"note: {note}" for note in self.notes]
        out += [str(finding) for finding in self.findings]
        out.append(f"verdict: {self.verdict.upper()}")
        return out


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
    seqs = f.int_flag(argv, "--max-num-seqs", 256 if ctx.platform == "gpu" else 128)
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
        tp=tp, pp=pp, max_len=max_len, seqs=seqs, kv_dtype=f"{kv_dtype} ({f.dtype_bytes(kv_dtype, model_dtype)} B)",
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
        prefix_caching=f.prefix_caching(ctx.argv),
        num_spec=layout.num_spec,
    )


def _notes(shape: ModelShape, layout: _Layout) -> list[str]:
    """What the plan does not model: speculative decoding's draft layers, shape numbers marked unsure."""
    notes = []
    if layout.num_spec and layout.draft_attention:
        notes.append(
            f"speculative decoding ({layout.num_spec} tokens): the MTP drafter's {layout.draft_attention} "
            "attention layer(s) counted in KV; draft weights are not modelled"
        )
    elif layout.num_spec:
        notes.append(f"speculative decoding ({layout.num_spec} tokens): draft-layer KV and weights are not modelled")
    if shape.unsure:
        notes.append(f"shape numbers marked unsure in {shape.source}: {', '.join(shape.unsure)}")
    return notes


def build_plan(
    shape: ModelShape, weight_bytes: int, weight_source: str, ctx: PlanContext, model: str = ""
) -> MemoryPlan:
    layout = _layout(shape, ctx)
    world = layout.tp * layout.pp
    ranks_per_node = ceil(world / max(1, len(ctx.node_names)))
    weights_rank = ceil(weight_bytes / world)
    overhead = ctx.overhead_bytes if ctx.overhead_bytes is not None else int(DEFAULT_OVERHEAD_GIB[ctx.platform] * GIB)
    budget, kv_budget, source = _budget(ctx, weights_rank, overhead)
    footprint = budget if budget is not None else weights_rank + kv_budget + overhead
    node_footprint = ranks_per_node * footprint if ctx.gpu_total_bytes is None else 0
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
    )
    plan.notes += _notes(shape, layout)
    plan.findings = judge(plan, ctx)
    return plan


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


def judge(plan: MemoryPlan, ctx: PlanContext) -> list[Finding]:
    where = f"recipe {ctx.recipe}" if ctx.recipe else "the recipe"
    out: list[Finding] = []
    if plan.budget_bytes is not None and plan.weight_bytes_per_rank + plan.overhead_bytes > plan.budget_bytes:
        out.append(
            Finding(
                "fail",
                f"{where}: weights {gib(plan.weight_bytes_per_rank)} + runtime "
                f"{gib(plan.overhead_bytes)} per rank exceed the budget "
                f"{gib(plan.budget_bytes)} ({plan.budget_source})",
                "raise the memory budget, quantize the weights, or add tensor-parallel ranks",
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
    if headroom < 0:
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
                f"{gib(ctx.margin_bytes)} (OS, driver, transient spikes)",
                "lower the budget until expect.memory.margin_gib is left",
            )
        )
    return out
