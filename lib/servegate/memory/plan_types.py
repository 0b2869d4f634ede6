"""What a memory plan is made of: its context (argv, env, nodes, limits) and the plan itself, as data.

plan.py builds a MemoryPlan; judge.py turns one into findings; both read these types.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from servegate.memory import flags as f
from servegate.memory import terms as t
from servegate.memory.allocator import Capacity
from servegate.memory.units import LEVELS, Finding, gib


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
    gpu_capability: float | None = None  # CUDA compute capability (9.0 Hopper, 10.0 B200, 12.1 GB10)
    overhead_bytes: int | None = None
    margin_bytes: int | None = None
    floor_bytes: int | None = None
    recipe: str = ""
    vllm_version: str | None = None  # decides how vLLM reports KV tokens (terms.reports_groups)
    profile: dict | None = None  # a calibration run (memory/profile.py) replacing the unmeasured terms

    @property
    def unified(self) -> bool:
        """A GPU sharing the node's memory (GB10): the reservation and the OS draw on one pool."""
        return self.platform == "gpu" and self.gpu_total_bytes is None

    @property
    def device_bytes(self) -> int:
        return self.gpu_total_bytes or self.node_total_bytes

    @property
    def uses_ray(self) -> bool:
        return f.flag(self.argv, "--distributed-executor-backend") == "ray" or len(self.node_names) > 1


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
    max_num_batched_tokens: int
    drafts_with_mtp: bool
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
    terms: list[t.Term] = field(default_factory=list)  # inside the reservation, before KV
    node_terms: list[t.Term] = field(default_factory=list)  # beside it, on a unified-memory node
    prefill_peak_bytes_per_node: int = 0  # the node at a full-size prefill chunk (unified memory)
    unified: bool = False  # a GPU sharing the node's memory: vLLM counts the host's growth as non-torch
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
            f"beside weights {gib(self.overhead_bytes)} (max_num_batched_tokens {self.max_num_batched_tokens})",
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
        out += [f"  in the reservation: {term.line()}" for term in self.terms]
        out += [f"  beside it, per node: {term.line()}" for term in self.node_terms]
        if self.node_terms:
            out.append(
                f"node at a full prefill chunk: {gib(self.prefill_peak_bytes_per_node)} of "
                f"{gib(self.node_total_bytes)}"
            )
        out += [f"note: {note}" for note in self.notes]
        out += [str(finding) for finding in self.findings]
        out.append(f"verdict: {self.verdict.upper()}")
        return out
