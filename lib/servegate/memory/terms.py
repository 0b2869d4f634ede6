"""The planner's memory terms: each one a formula over the model's shape and the serve flags, with the
place its numbers come from. Nothing here is fitted to the seeds' outcomes.

Inside the GPU reservation (vLLM 0.18-0.34 gpu_worker.determine_available_memory):
    KV = requested - (weights + torch peak during profile_run + non-torch increase)
  - weights:     the checkpoint split over TP x PP ranks; a NemotronH checkpoint's MTP layers are loaded
                 only when --speculative-config drafts with them, so they are charged only then.
  - activation:  the torch peak of profile_run, one dummy forward of max_num_batched_tokens (M) tokens and
                 one dummy sampler run over max_num_seqs rows. Layers run in order; each one's peak is the
                 residual stream (hidden + residual, 2 x M x hidden x 2 B) + its own temporaries + the fused-MoE
                 workspace once the first MoE layer has made it: the WorkspaceManager keeps it for the
                 engine's life (vLLM 0.25 v1/worker/workspace.py), so a Mamba layer after a MoE layer peaks
                 on top of it. Measured with memory/trace_peak.py (the allocator trace at the torch peak).
                   MoE workspace  M x topk x (max(N_act, K) + max(N, K)) x 2 B (experts/triton_moe.py
                        workspace_shapes; N = the expert's w1 rows on this rank, N_act = N/2 when gated,
                        K = hidden or the LatentMoE latent width)
                   Mamba-2  in_proj output M x (2 I + 2 G S + H) x 2 B, ssm_output M x I x 2 B, the gated
                        norm's fp32 temporaries 2 x M x I x 4 B, a GEMM output of M x 2 G S x 2 B
                        (profile path of mamba_mixer2: no chunk scan runs without attention metadata)
                   attention  qkv, attention output and o_proj output;  MLP  up, act, down outputs
                   MoE (beside the workspace)  shared output, latent in/out, shared + routed sum
                 and the sampler: max_num_seqs x vocab x 20 B (fp32 logits, probs and sorted values,
                 int64 sort indices for top-k/top-p: _dummy_sampler_run).
  - non-torch:   what vLLM's profiler counts as non-torch growth (cuBLAS workspaces and the like; the CUDA
                 context is already there when it starts counting): 0.22-0.23 GiB logged by vLLM 0.25 in
                 all six H200 runs (results/gpu/20261205-h200-memory-planner.md); cuBLAS alone measured
                 0.15 GiB (memory/measure_cuda.py).
  - UMA host:    on a unified-memory GPU (GB10, GH200) vLLM's MemorySnapshot reads psutil's MemAvailable
                 instead of cudaMemGetInfo (vllm/utils/mem_utils.py, is_integrated_gpu; a capability list with
                 (12, 1) before), so its non-torch increase from the worker's init snapshot to the end of
                 profile_run also holds what the host took meanwhile (the worker's heap: Triton compiles,
                 loader buffers; torch.compile when not eager). Measured on H100 by memory/uma_probe.py:
                 eager 0.34-0.36 GiB in five untraced launches of the Nano stand-ins, bf16 and NVFP4; compiled
                 0.69 GiB in one (results/gpu/20261206-h100-nano-nvfp4.md).
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
from servegate.render.argv import flag_value

GIB = 2**30
GATED = ("silu", "swiglu", "gelu_and_mul", "geglu", "swigluoai")

# Measured figures, each with where it was measured. GiB unless named _bytes.
SEED002_OS_GIB = (32.8 - 27.2 + 38.6 - 33.0) / 2  # seed 002 Memory Comparison, rows 1-2 (5.6 GB)
SEED002_ENGINE_GIB = (27.2 - 24.3 + 39.5 - 36.5) / 2  # seed 002 Marlin rows at util 0.2 and 0.3 (2.95 GB)
RAY_DAEMONS_BYTES = 367_923_200  # memory/measure_ray.py, Ray 2.60.0 head (raylet, GCS, agents), 2026-12-05
# vLLM 0.25's "GiB for non-torch memory" on an H200, six launches of the Nano stand-in: 0.23, 0.22 x 5
# (results/gpu/20261205-h200-memory-planner.json).
NON_TORCH_BYTES: int | None = int(0.22 * GIB)
# What the host takes between vLLM's init snapshot and the end of profile_run, counted as non-torch memory
# on a unified-memory GPU: (MemTotal - MemAvailable) after - before, memory/uma_probe.py, vLLM 0.25 on an
# H100: 0.36, 0.36, 0.36, 0.34 GiB (NVFP4 Nano, eager, util 0.25/0.24/0.2/0.9) and 0.34 (bf16 Nano), mean 0.35
# (results/gpu/20261206-h100-nano-nvfp4.md; traced launches excluded: the allocator trace itself takes host).
# Compiled (no --enforce-eager), torch.compile's Inductor and Triton compiles run inside that window: 0.69 GiB
# in the one compiled launch (NVFP4 Nano, util 0.3, same file).
UMA_HOST_BYTES = int(0.35 * GIB)
UMA_HOST_COMPILED_BYTES = int(0.69 * GIB)
# ModelOpt NVFP4 served by Marlin, as loaded over the checkpoint: vLLM 0.25 logged "Model loading took
# 18.23 GiB" in all six launches of the full-depth Nano NVFP4 stand-in (18.01 GiB of safetensors) on an H100
# (results/gpu/20261206-h100-nano-nvfp4.md), where the bf16 stand-ins load within 0.4 % of their bytes.
# Reading 0.25's Marlin repack (marlin_utils_fp4.py) finds no padding at Nano's widths: the mechanism is
# not yet found, so this is the measured ratio, applied only to NVFP4 on Marlin.
NVFP4_MARLIN_LOADED_RATIO = 18.23 / 18.01
# The CUDA context a process holds on the device before vLLM starts counting (outside the reservation):
# memory/measure_cuda.py on an H200, torch 2.11.0+cu130, driver 580 (results/gpu/20261205-h200-memory-planner.md).
CUDA_CONTEXT_BYTES = 552_402_944


@dataclass
class Term:
    name: str
    bytes: int
    formula: str
    source: str
    kept: int = 0  # of bytes, what stays allocated after the step that peaked (a persistent workspace)

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


NVFP4_BYTES_PER_PARAM = 0.5 + 1 / 16  # E2M1 packed two per byte + one FP8 E4M3 scale per 16 (ModelOpt NVFP4)


def nvfp4_selective_bytes(shape: ModelShape) -> int:
    """A ModelOpt NVFP4 checkpoint with the Nemotron-3 Nano selective layout (its tech report, section 4, as
    the republished recipe lists it): the routed and shared experts of every MoE layer and the in/out
    projections of every Mamba layer NVFP4, except the Mamba layer right before each attention layer; those,
    the attention layers, the Mamba conv1d and norms, the embeddings and lm_head BF16; router weights FP32."""
    h, kinds = shape.hidden_size, shape.layer_kinds
    inner = shape.mamba_num_heads * shape.mamba_head_dim
    groups = shape.n_groups * shape.ssm_state_size
    projections = h * (2 * inner + 2 * groups + shape.mamba_num_heads) + inner * h
    mats = 3 if gated(shape) else 2
    experts = (shape.experts * h * shape.moe_intermediate_size + h * shape.shared_expert_intermediate_size) * mats
    total = 2 * shape.vocab_size * h * 2.0
    for index, kind in enumerate(kinds):
        if kind == "mamba":
            before_attention = index + 1 < len(kinds) and kinds[index + 1] == "attention"
            small = (inner + 2 * groups) * shape.conv_kernel + inner + h
            total += projections * (2 if before_attention else NVFP4_BYTES_PER_PARAM) + small * 2
        elif kind == "moe":
            total += experts * NVFP4_BYTES_PER_PARAM + h * shape.experts * 4
        else:
            total += _layer_params(shape, kind) * 2
    return int(total)


def mtp_share(shape: ModelShape) -> float:
    """The MTP layers' share of the checkpoint's parameters (embeddings included in the total)."""
    if not shape.mtp_layer_kinds:
        return 0.0
    body = sum(_layer_params(shape, k) for k in shape.layer_kinds)
    h = shape.hidden_size
    # each MTP step fuses the embedding with the hidden state: eh_proj (2h -> h), enorm, hnorm, final norm
    mtp = sum(_layer_params(shape, k) for k in shape.mtp_layer_kinds) + shape.mtp_steps * (2 * h * h + 3 * h)
    embeddings = 2 * shape.vocab_size * shape.hidden_size
    total = body + mtp + embeddings
    return mtp / total if total else 0.0


def marlin_nvfp4_loaded(weights_term: Term) -> Term:
    """The weights term of an NVFP4 checkpoint on the Marlin kernels, as vLLM 0.25 loaded one."""
    return Term(weights_term.name, ceil(weights_term.bytes * NVFP4_MARLIN_LOADED_RATIO),
                f"{weights_term.formula} x {NVFP4_MARLIN_LOADED_RATIO:.4f} (NVFP4 on Marlin, as loaded)",
                "results/gpu/20261206-h100-nano-nvfp4.md (vLLM 0.25, H100)")


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


MOE_BACKENDS = ("triton", "marlin", "flashinfer_cutlass")


def moe_backend(argv: list[str], env: dict[str, str], model: str, capability: float | None = None) -> str:
    """Which fused-MoE kernel vLLM picks, as far as the workspace is concerned: --moe-backend when given;
    else Marlin where the recipe forces it (VLLM_TEST_FORCE_FP8_MARLIN for FP8, and for NVFP4 too from
    vLLM 0.25, fused_moe/oracle/nvfp4.py; VLLM_USE_FLASHINFER_MOE_FP4=0 or VLLM_NVFP4_GEMM_BACKEND=marlin
    for NVFP4 in the versions that read them, seed 002's 0.18.1) or where the GPU has no FP4 MoE kernel
    (compute capability below 10: every NVFP4 backend ahead of Marlin in 0.25's oracle, FlashInfer TRTLLM,
    CuteDSL and CUTLASS, needs sm_100 or newer); else Triton's workspace (unquantized and FP8 on Hopper;
    also NVFP4 on Blackwell with no backend named, where 0.25 picks FlashInfer's TRTLLM MoE, not modelled)."""
    named = (flag_value(argv, "--moe-backend") or "").strip().lower()
    if named in MOE_BACKENDS:
        return named
    quant = ((flag_value(argv, "--quantization") or "") + " " + model).lower()
    forced = env.get("VLLM_TEST_FORCE_FP8_MARLIN") == "1"
    if "fp4" in quant and (forced or env.get("VLLM_USE_FLASHINFER_MOE_FP4") == "0"
                           or env.get("VLLM_NVFP4_GEMM_BACKEND", "").lower() == "marlin"
                           or (capability is not None and capability < 10)):
        return "marlin"
    if "fp8" in quant and forced:
        return "marlin"
    return "triton"


def _moe_widths(shape: ModelShape, tp: int, expert_parallel: bool) -> tuple[int, int, int]:
    """(N: w1 rows on this rank, N_act: the activation's output width, K: the experts' input width)."""
    n = shape.moe_intermediate_size * (2 if gated(shape) else 1)
    n_rank = n if expert_parallel else ceil(n / tp)
    return n_rank, n_rank // 2 if gated(shape) else n_rank, shape.moe_latent_size or shape.hidden_size


def _moe_workspace(shape: ModelShape, tokens: int, tp: int, expert_parallel: bool,
                   backend: str = "triton") -> tuple[int, int]:
    """(kept, per call) bytes of the fused-MoE workspace. The modular kernel's buffers come from the
    WorkspaceManager (vLLM 0.25 v1/worker/workspace.py), which grows them to the largest request and keeps
    them for the engine's life; a kernel's own scratch is allocated per call and freed.
      triton  (M, topk, max(N_act, K)) [shared with the (M, K) output] + (M, topk, max(N, K)), bf16
              (experts/triton_moe.py workspace_shapes): measured 0.492 GiB on the Nano stand-in at 8192
      marlin  (M topk, max(N, K)) + (M topk max(2N, K)), bf16 (experts/marlin_moe.py): measured 0.586 GiB
      flashinfer_cutlass  kept: (M, K/2) + (M, K) (experts/flashinfer_cutlass_moe.py, NVFP4 packed);
              per call, FlashInfer's CUTLASS MoE runner (TensorRT-LLM getWorkspaceDeviceBufferSizes):
              permuted input / fc2 output overlap max(R K q, 2 R K, R N q) + fc1 / GLU output overlap
              max(2 R N g, 2 R K) + FP4 scales R max(K, N)/16, R = M topk, q = 0.5 B (NVFP4),
              g = 2 when gated; not measured here (no FlashInfer on the lent GPU)"""
    if not shape.experts or not shape.experts_per_token:
        return 0, 0
    n, n_act, k = _moe_widths(shape, tp, expert_parallel)
    rows = tokens * shape.experts_per_token
    if backend == "marlin":
        return rows * max(n, k) * 2 + rows * max(2 * n, k) * 2, 0
    if backend == "flashinfer_cutlass":
        glu = 2 if gated(shape) else 1
        n_up = n // glu  # the expert width on this rank (N counts a gated w1 twice)
        inputs = max(rows * k // 2, 2 * rows * k, rows * n_up // 2)
        outputs = max(2 * rows * n_up * glu, 2 * rows * k)
        return tokens * k * 3, inputs + outputs + rows * max(k, n_up) // 16
    return rows * (max(n_act, k) + max(n, k)) * 2, 0


def _layer_live(shape: ModelShape, kind: str, tokens: int, tp: int) -> int:
    """What one layer holds at its own peak during profile_run, beyond the residual stream and the MoE
    workspace (vLLM 0.25, no attention metadata: the profile path of each mixer)."""
    m, h = tokens, shape.hidden_size
    if kind == "mamba":
        # mamba_mixer2.forward: in_proj output (alive to the end: the gate is a view of it), the
        # preallocated ssm_output (line 541), and the gated RMSNorm's fp32 temporaries when
        # n_groups != 1 (forward_native lines 112 and 138: x * silu(gate) and the normalised copy),
        # plus one more GEMM output the width of B and C, seen at the peak in both traces.
        inner = ceil(shape.mamba_num_heads * shape.mamba_head_dim / tp)
        bc = ceil(2 * shape.n_groups * shape.ssm_state_size / tp)
        heads = ceil(shape.mamba_num_heads / tp)
        proj = m * (2 * inner + bc + heads) * 2
        norm = 2 * m * inner * 4 if shape.n_groups != 1 else m * inner * 4
        return proj + m * inner * 2 + norm + m * bc * 2
    if kind == "attention":
        # qkv output, the attention output, o_proj's output
        q = ceil(shape.num_attention_heads / tp) * shape.head_dim
        kv = max(1, ceil(shape.num_kv_heads / tp)) * shape.head_dim
        return m * (q + 2 * kv) * 2 + m * q * 2 + m * h * 2
    if kind == "mlp":
        inter = ceil(shape.intermediate_size / tp)
        return m * inter * (2 if gated(shape) else 1) * 2 + m * inter * 2 + m * h * 2
    if kind == "moe":
        # beside the workspace: the shared expert's output, the routed output brought back to hidden
        # width and their sum (moe_runner.forward), and the latent input of a LatentMoE
        shared = m * h * 2 if shape.shared_expert_intermediate_size else 0
        latent = m * h * 2 + m * shape.moe_latent_size * 2 if shape.moe_latent_size else 0
        return shared + latent + m * h * 2
    return 0


def _mtp_inputs(shape: ModelShape, tokens: int, first_of_step: bool) -> int:
    """What the MTP drafter holds beside an MTP layer's own temporaries (vLLM 0.25 nemotron_h_mtp.py): the
    target model's last hidden states and the drafter's input embeddings, each M x hidden; in the first layer
    of a step, whose start projection keeps its locals alive while the layer runs, also enorm(embeddings),
    hnorm(hidden) and their concatenation (M x 2 hidden): 6 x M x hidden x 2 B then, 2 x otherwise."""
    widths = 6 if first_of_step else 2
    return widths * tokens * shape.hidden_size * 2


def _forward_order(shape: ModelShape, drafts_with_mtp: bool) -> list[str]:
    """The layers one forward runs, in order. A NemotronH pattern names its MLP/MoE layers ('-', 'E'); a
    config that does not (a plain transformer, or layers_block_type of mixers only) has an FFN after every
    mixer: its MoE when the config has experts, else its dense MLP."""
    order = list(shape.layer_kinds) + (list(shape.mtp_layer_kinds) if drafts_with_mtp else [])
    if {"mlp", "moe"} & set(order) or not (shape.experts or shape.intermediate_size):
        return order
    ffn = "moe" if shape.experts and shape.experts_per_token else "mlp"
    return [kind for mixer in order for kind in (mixer, ffn)]


def activation(shape: ModelShape, tokens: int, seqs: int, tp: int, expert_parallel: bool,
               drafts_with_mtp: bool = False, backend: str = "triton") -> Term:
    """The torch peak of profile_run's dummy forward: layers run in order, each adds its own temporaries
    to the residual stream (hidden + residual, 2 x M x hidden x 2 B) and to the MoE workspace once the
    first MoE layer has created it (it is never freed, so every later layer's peak sits on top of it).
    Measured on H100 (results/gpu/20261205-h100-planner-standins.md, memory/trace_peak.py)."""
    order = _forward_order(shape, drafts_with_mtp)
    stream = 2 * tokens * shape.hidden_size * 2
    kept_ws, per_call = _moe_workspace(shape, tokens, tp, expert_parallel, backend)
    workspace, peak, where = 0, 0, "none"
    body = len(order) - (len(shape.mtp_layer_kinds) if drafts_with_mtp else 0)
    for index, kind in enumerate(order):
        if kind == "moe":
            workspace = kept_ws
        live = workspace + stream + _layer_live(shape, kind, tokens, tp) + (per_call if kind == "moe" else 0)
        if index >= body:
            live += _mtp_inputs(shape, tokens, first_of_step=(index - body) % max(1, len(shape.mtp_layer_kinds)) == 0)
        if live > peak:
            peak, where = live, f"{kind} layer {index}"
    sampler = seqs * shape.vocab_size * 20
    forward = peak
    scratch = f" + {backend} per-call scratch {per_call / GIB:.2f}" if per_call else ""
    return Term(
        "activation peak",
        max(forward, sampler),
        f"max(forward {forward / GIB:.2f} GiB at the {where} = {backend} MoE workspace {workspace / GIB:.2f} "
        f"(kept){scratch} + residual stream {stream / GIB:.2f} + that layer's temporaries, at {tokens} tokens; "
        f"sampler {sampler / GIB:.2f} at {seqs} rows)",
        "vLLM 0.25 profile_run as traced on H100 (memory/trace_peak.py): persistent fused-MoE workspace, "
        "Mamba-2 in_proj + gated-norm fp32 temporaries, _dummy_sampler_run",
        kept=workspace if forward >= sampler else 0,
    )


def non_torch() -> Term:
    if NON_TORCH_BYTES is None:
        return Term("non-torch (cuBLAS workspaces)", 0, "not yet measured: counted as 0", "none")
    return Term("non-torch (cuBLAS workspaces)", NON_TORCH_BYTES, "vLLM's logged non-torch memory per rank",
                "results/gpu/20261205-h200-memory-planner.md (vLLM 0.25, H200)")


def uma_host(compiled: bool) -> Term:
    return Term("host growth counted as non-torch (unified memory)",
                UMA_HOST_COMPILED_BYTES if compiled else UMA_HOST_BYTES,
                "(MemTotal - MemAvailable) from vLLM's init snapshot to the end of profile_run, "
                + ("compiled (torch.compile runs in it)" if compiled else "eager")
                + ": vLLM reads MemAvailable on an integrated GPU",
                "memory/uma_probe.py on H100, results/gpu/20261206-h100-nano-nvfp4.md")


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
    out.append(Term("prefill transient", transient,
                    "the per-chunk activation peak less the workspace vLLM keeps, outside the reservation",
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


def refuses_below_one_request(vllm_version: str | None) -> bool:
    """vLLM 0.19 on refuses to start when the KV budget cannot hold one max_model_len request in its own
    blocks: kv_cache_utils._max_memory_usage_bytes_from_groups sums, over every KV cache group, the pages
    one request needs, times the group size and the page (0.19.0, 0.20.0, 0.21.0, 0.22.1, 0.25.0 sdists).
    0.18.1 counts only the first group's pages (a Mamba group on a NemotronH, whose first layer is Mamba),
    so it starts with fewer blocks than one request needs. Unknown versions: the current rule."""
    version = _version(vllm_version) if vllm_version else None
    return version is None or version >= (0, 19)


def reports_groups(vllm_version: str | None) -> bool:
    """vLLM before 0.21 logs 'KV cache size' as num_blocks // groups x block_size (kv_cache_utils.py
    _report_kv_cache_config, 0.18.1-0.20.0); from 0.21 on as max_concurrency x max_model_len."""
    version = _version(vllm_version) if vllm_version else None
    return version is not None and version < (0, 21)
