"""The planner's memory terms: each one a formula over the model's shape and the serve flags, with the
place its numbers come from. Nothing here is fitted to the seeds' outcomes.

Inside the GPU reservation (vLLM 0.18-0.34 gpu_worker.determine_available_memory):
    KV = requested - (weights + torch peak during profile_run + non-torch increase)
  - weights:     the checkpoint split over TP x PP ranks; a NemotronH checkpoint's MTP layers are loaded
                 only when --speculative-config drafts with them, so they are charged only then.
  - activation:  the torch peak of profile_run, one dummy forward of max_num_batched_tokens tokens and
                 one dummy sampler run over max_num_seqs rows. Layers run one after another, so the peak is
                 the residual stream plus the largest single layer's workspace:
                   MoE  M x topk x (max(N_act, K) + max(N, K)) x 2 B   (vLLM 0.25 experts/triton_moe.py
                        workspace_shapes: workspace1 + workspace2; N = the expert's w1 rows on this rank,
                        N_act = N/2 when gated, K = hidden or the LatentMoE latent width)
                   MLP  M x I_rank x (2 if gated else 1) x 2 B
                   Mamba-2  in_proj, conv, SSM and norm outputs (M x widths x 2 B) + chunk states in fp32
                        and their state-passing copy + CB in fp32 (mamba_mixer2.py, ops/ssd_combined.py)
                   residual stream  3 x M x hidden x 2 B
                 and the sampler: max_num_seqs x vocab x 20 B (fp32 logits, probs and sorted values,
                 int64 sort indices for top-k/top-p: _dummy_sampler_run).
  - non-torch:   what vLLM's profiler counts as non-torch growth (cuBLAS workspaces and the like; the CUDA
                 context is already there when it starts counting): 0.22-0.23 GiB logged by vLLM 0.25 in
                 all six H200 runs (results/gpu/20261205-h200-memory-planner.md); cuBLAS alone measured
                 0.15 GiB (memory/measure_cuda.py).
Beyond the reservation, on the node (unified-memory nodes only: there the reservation and the OS share
one pool; on a discrete GPU these land in host RAM, which the plan does not budget):
  - os:          the OS and desktop of a DGX Spark before vLLM starts (seed 002 "Memory Comparison":
                 inference GB minus its "Delta from Baseline" = 32.8 - 27.2 and 38.6 - 33.0 GB).
  - engine:      vLLM's own processes beyond its reservation (seed 002, Marlin rows: delta minus the
                 reservation = 27.2 - 24.3 at util 0.2 and 39.5 - 36.5 at 0.3).
  - ray:         Ray's daemons on a node (raylet, GCS, agents), measured here (memory/measure_ray.py).
  - transient:   the per-chunk activation peak again, outside the reservation, while a long prompt is
                 prefilled (seed 000: "16384 OOMs the NVRM driver during large-context prefill ... Halve so
                 the per-chunk activation peak fits inside the headroom the driver needs for transient
                 allocations"; the same size vLLM profiles, so the same formula).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from servegate.memory.shapes import ModelShape

GIB = 2**30
GATED = ("silu", "swiglu", "gelu_and_mul", "geglu", "swigluoai")

# Measured figures, each with where it was measured. GiB unless named _bytes.
SEED002_OS_GIB = (32.8 - 27.2 + 38.6 - 33.0) / 2  # seed 002 Memory Comparison, rows 1-2 (5.6 GB)
SEED002_ENGINE_GIB = (27.2 - 24.3 + 39.5 - 36.5) / 2  # seed 002 Marlin rows at util 0.2 and 0.3 (2.95 GB)
RAY_DAEMONS_BYTES = 367_923_200  # memory/measure_ray.py, Ray 2.60.0 head (raylet, GCS, agents), 2026-12-05
# vLLM 0.25's "GiB for non-torch memory" on an H200, six launches of the Nano stand-in: 0.23, 0.22 x 5
# (results/gpu/20261205-h200-memory-planner.json).
NON_TORCH_BYTES: int | None = int(0.22 * GIB)
# The CUDA context a process holds on the device before vLLM starts counting (outside the reservation):
# memory/measure_cuda.py on an H200, torch 2.11.0+cu130, driver 580 (results/gpu/20261205-h200-memory-planner.md).
CUDA_CONTEXT_BYTES = 552_402_944


@dataclass
class Term:
    name: str
    bytes: int
    formula: str
    source: str

    def line(self) -> str:
        return f"{self.name}: {self.bytes / GIB:.2f} GiB = {self.formula} [{self.source}]"


def gated(shape: ModelShape) -> bool:
    return shape.hidden_act.lower() in GATED


def _layer_params(shape: ModelShape, kind: str) -> float:
    h = shape.hidden_size
    if kind == "attention":
        return h * (shape.num_attention_heads + 2 * shape.num_kv_heads) * shape.head_dim + (
            shape.num_attention_heads * shape.head_dim * h
        )
    if kind == "mamba":
        inner = shape.mamba_num_heads * shape.mamba_head_dim
        groups = shape.n_groups * shape.ssm_state_size
        conv = (inner + 2 * groups) * shape.conv_kernel
        return h * (2 * inner + 2 * groups + shape.mamba_num_heads) + inner * h + conv
    mats = 3 if gated(shape) else 2
    if kind == "mlp":
        return h * shape.intermediate_size * mats
    if kind == "moe":
        width = shape.moe_latent_size or h
        routed = shape.experts * width * shape.moe_intermediate_size * mats
        shared = h * shape.shared_expert_intermediate_size * mats
        latent = 2 * h * shape.moe_latent_size
        return routed + shared + latent + h * shape.experts
    return 0.0


def mtp_share(shape: ModelShape) -> float:
    """The MTP layers' share of the checkpoint's parameters (embeddings included in the total)."""
    if not shape.mtp_layer_kinds:
        return 0.0
    body = sum(_layer_params(shape, k) for k in shape.layer_kinds)
    mtp = sum(_layer_params(shape, k) for k in shape.mtp_layer_kinds)
    embeddings = 2 * shape.vocab_size * shape.hidden_size
    total = body + mtp + embeddings
    return mtp / total if total else 0.0


def weights(shape: ModelShape, checkpoint_bytes: int, world: int, drafts_with_mtp: bool) -> Term:
    share = mtp_share(shape)
    loaded = checkpoint_bytes if drafts_with_mtp else int(checkpoint_bytes * (1 - share))
    how = "(no MTP layers)" if not share else "with its MTP layers (drafting)" if drafts_with_mtp else (
        f"less its MTP layers ({100 * share:.1f} % of parameters, loaded only when drafting)"
    )
    return Term(
        "weights per rank",
        ceil(loaded / world),
        f"checkpoint {checkpoint_bytes / GIB:.2f} GiB {how} / {world} rank(s)",
        "checkpoint size; MTP share from the shape's layer parameter counts",
    )


def _moe(shape: ModelShape, tokens: int, tp: int, expert_parallel: bool) -> int:
    if not shape.experts or not shape.experts_per_token:
        return 0
    n = shape.moe_intermediate_size * (2 if gated(shape) else 1)
    n_rank = n if expert_parallel else ceil(n / tp)
    n_act = n_rank // 2 if gated(shape) else n_rank
    k = shape.moe_latent_size or shape.hidden_size
    return tokens * shape.experts_per_token * (max(n_act, k) + max(n_rank, k)) * 2


def _mlp(shape: ModelShape, tokens: int, tp: int) -> int:
    return tokens * ceil(shape.intermediate_size / tp) * (2 if gated(shape) else 1) * 2


def _mamba(shape: ModelShape, tokens: int, tp: int, state_bytes: int = 4) -> int:
    """A Mamba-2 layer's prefill workspaces, alive together around the chunk scan (vLLM 0.25
    mamba_mixer2.forward and ops/ssd_combined._mamba_chunk_scan_combined_fwd): in_proj output, conv
    output, the preallocated SSM output, chunk states in fp32 and the state-passing output, CB in fp32,
    and the gated norm's output."""
    if not shape.mamba_layers:
        return 0
    inner, heads = ceil(shape.mamba_num_heads * shape.mamba_head_dim / tp), ceil(shape.mamba_num_heads / tp)
    groups = shape.n_groups * shape.ssm_state_size
    proj = tokens * (2 * inner + ceil(2 * groups / tp) + heads) * 2
    conv = tokens * (inner + ceil(2 * groups / tp)) * 2
    chunks = ceil(tokens / max(1, shape.mamba_chunk_size))
    states = chunks * heads * shape.mamba_head_dim * shape.ssm_state_size * (4 + state_bytes)
    cb = chunks * max(1, shape.n_groups // tp) * shape.mamba_chunk_size**2 * 4
    return proj + conv + 2 * tokens * inner * 2 + states + cb


def activation(shape: ModelShape, tokens: int, seqs: int, tp: int, expert_parallel: bool) -> Term:
    kinds = set(shape.layer_kinds) | set(shape.mtp_layer_kinds)
    layer = {
        "MoE dispatch": _moe(shape, tokens, tp, expert_parallel) if "moe" in kinds else 0,
        "MLP": _mlp(shape, tokens, tp) if "mlp" in kinds else 0,
        "Mamba-2 scan": _mamba(shape, tokens, tp),
    }
    largest = max(layer, key=layer.get)
    residual = 3 * tokens * shape.hidden_size * 2
    sampler = seqs * shape.vocab_size * 20
    forward = residual + layer[largest]
    peak = max(forward, sampler)
    return Term(
        "activation peak",
        peak,
        f"max(forward {forward / GIB:.2f} GiB = residual {residual / GIB:.2f} + {largest} "
        f"{layer[largest] / GIB:.2f} at {tokens} tokens, sampler {sampler / GIB:.2f} at {seqs} rows)",
        "vLLM profile_run: fused_moe workspace, Mamba-2 chunked scan, _dummy_sampler_run",
    )


def non_torch() -> Term:
    if NON_TORCH_BYTES is None:
        return Term("non-torch (cuBLAS workspaces)", 0, "not yet measured: counted as 0", "none")
    return Term("non-torch (cuBLAS workspaces)", NON_TORCH_BYTES, "vLLM's logged non-torch memory per rank",
                "results/gpu/20261205-h200-memory-planner.md (vLLM 0.25, H200)")


def node_terms(ray: bool, transient: int) -> list[Term]:
    """What a unified-memory node needs beside the GPU reservation."""
    out = [
        Term("OS and desktop", int(SEED002_OS_GIB * GIB), "inference GB - delta from baseline",
             "seed 002, DGX Spark"),
        Term("vLLM processes beyond the reservation", int(SEED002_ENGINE_GIB * GIB),
             "delta from baseline - gpu_memory_utilization x total", "seed 002, DGX Spark, Marlin rows"),
    ]
    if ray:
        out.append(Term("Ray daemons", RAY_DAEMONS_BYTES, "raylet + GCS + agents RSS",
                        "memory/measure_ray.py, Ray 2.60.0"))
    out.append(Term("prefill transient", transient, "the per-chunk activation peak, outside the reservation",
                    "seed 000 attempt 8 (NVRM NV_ERR_NO_MEMORY during a 200K prefill)"))
    return out


def _version(vllm_version: str | None) -> tuple[int, int] | None:
    try:
        major, minor = (int(p) for p in str(vllm_version).split(".")[:2])
    except ValueError:
        return None
    return major, minor


def prefix_caching_default(hybrid: bool, vllm_version: str | None) -> bool:
    """vLLM 0.18.1-0.25.0 turn prefix caching off by default for hybrid models ("Hybrid models do not
    support prefix caching since the feature is still experimental", config/model.py); 0.26.0 on, on."""
    version = _version(vllm_version) if vllm_version else None
    return not (hybrid and version is not None and version < (0, 26))


def reports_groups(vllm_version: str | None) -> bool:
    """vLLM before 0.21 logs 'KV cache size' as num_blocks // groups x block_size (kv_cache_utils.py
    _report_kv_cache_config, 0.18.1-0.20.0); from 0.21 on as max_concurrency x max_model_len."""
    version = _version(vllm_version) if vllm_version else None
    return version is not None and version < (0, 21)
