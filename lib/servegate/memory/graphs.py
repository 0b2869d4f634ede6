"""The CUDA-graph term: what vLLM's graph capture takes, and where the plan charges it.

vLLM 0.21+ (gpu_model_runner.profile_cudagraph_memory) captures, before sizing the KV cache, the largest and
the second-largest graph of each mode into a scratch pool and takes the drop in free device memory:
    estimate = max over modes(first capture) + sum over modes(second capture x (graphs of the mode - 1))
and determine_available_memory subtracts it from the KV budget (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS,
on by default). Before 0.21 nothing is subtracted: the graphs are captured after the KV cache is allocated,
beyond the reservation.

Which graphs (vLLM 0.25 config/vllm.py _set_cudagraph_sizes, v1/cudagraph_dispatcher.py):
    sizes  [1, 2, 4] + range(8, min(max + 1, 256), 8) + range(256, max + 1, 16) (+ max_num_batched_tokens
           when it is within max), max = min(max_num_seqs x (1 + speculative tokens) x 2, 512, batch), or
           --compilation-config's cudagraph_capture_sizes / max_cudagraph_capture_size
    modes  FULL_AND_PIECEWISE (the default): PIECEWISE at every size, FULL at the uniform-decode sizes
           (1 + speculative tokens <= size <= max_num_seqs x (1 + speculative tokens)); PIECEWISE,
           FULL_DECODE_ONLY, FULL and NONE as --compilation-config names them; --enforce-eager: none.
What one capture holds:
    first capture   the forward's own temporaries at the mode's largest size (the MoE workspace is already
                    there from profile_run, larger) + one graph's fixed cost
    one more graph  GRAPH_BYTES_PER_LAYER x the layers it runs (a graph's kernels and their launch
                    parameters live on the device; it scales with the kernels, i.e. with the layers), at
                    least vLLM's 1 MiB floor
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from servegate.memory import flags as f
from servegate.memory import terms as t
from servegate.memory.shapes import ModelShape

MIB = 2**20
# One captured graph per layer it runs: a first figure from the bench-dense stand-in on an H100 (27 layers,
# 7 PIECEWISE + 5 FULL graphs, "Graph capturing finished ... took 0.07 GiB", results/gpu/20261205-h100-
# fidelity-c1-c8.tgz): 0.07 GiB / (12 graphs x 27 layers) = 0.22 MiB.
GRAPH_BYTES_PER_LAYER = int(0.07 * t.GIB / (12 * 27))
GRAPH_FLOOR_BYTES = MIB  # vLLM: "Use at least 1 MiB per graph for driver overhead"
MODES = ("NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE")


@dataclass
class Capture:
    """The graphs vLLM captures for one serve command."""

    mode: str
    sizes: list[int]  # every capture size
    piecewise: list[int]  # sizes captured as PIECEWISE graphs
    full: list[int]  # sizes captured as FULL graphs

    @property
    def count(self) -> int:
        return len(self.piecewise) + len(self.full)


def _compilation_config(argv: list[str]) -> dict:
    raw = f.flag(argv, "--compilation-config") or f.flag(argv, "-cc")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def capture_sizes(seqs: int, batch: int, num_spec: int, config: dict) -> list[int]:
    """vLLM 0.25 _set_cudagraph_sizes."""
    given = config.get("cudagraph_capture_sizes")
    if given:
        return sorted({int(size) for size in given if int(size) <= batch})
    largest = config.get("max_cudagraph_capture_size")
    largest = int(largest) if largest is not None else min(seqs * (1 + num_spec) * 2, 512)
    largest = min(batch, largest)
    sizes = [size for size in (1, 2, 4) if size <= largest]
    if largest >= 8:
        sizes += list(range(8, min(largest + 1, 256), 8))
    if largest >= 256:
        sizes += list(range(256, largest + 1, 16))
    if batch <= largest:
        sizes.append(batch)
    return sorted(set(sizes))


def capture(argv: list[str], seqs: int, batch: int, num_spec: int) -> Capture:
    if f.has_flag(argv, "--enforce-eager"):
        return Capture("NONE", [], [], [])
    config = _compilation_config(argv)
    mode = str(config.get("cudagraph_mode") or "FULL_AND_PIECEWISE").upper()
    if mode not in MODES or mode == "NONE":
        return Capture("NONE", [], [], [])
    sizes = capture_sizes(seqs, batch, num_spec, config)
    query = 1 + num_spec
    decode = [size for size in sizes if query <= size <= seqs * query]
    piecewise = sizes if mode in ("PIECEWISE", "FULL_AND_PIECEWISE") else []
    full = sizes if mode == "FULL" else decode if mode in ("FULL_DECODE_ONLY", "FULL_AND_PIECEWISE") else []
    return Capture(mode, sizes, piecewise, full)


def _one_graph(layers: int) -> int:
    return max(GRAPH_FLOOR_BYTES, layers * GRAPH_BYTES_PER_LAYER)


def subtracted_from_kv(vllm_version: str | None, env: dict[str, str]) -> bool:
    """vLLM 0.21+ subtracts the estimate from the KV budget unless VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0;
    an unknown version is taken as a current one."""
    version = t._version(vllm_version) if vllm_version else None
    if version is not None and version < (0, 21):
        return False
    return str(env.get("VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS", "1")).strip().lower() not in ("0", "false")


def cudagraph(shape: ModelShape, argv: list[str], seqs: int, batch: int, num_spec: int, tp: int,
              expert_parallel: bool, drafts_with_mtp: bool, backend: str) -> t.Term | None:
    """vLLM's CUDA-graph estimate for this command, or None when no graph is captured."""
    graphs = capture(argv, seqs, batch, num_spec)
    if not graphs.count:
        return None
    layers = len(t._forward_order(shape, drafts_with_mtp=False))
    one = _one_graph(layers)
    firsts = []
    for sizes in (graphs.piecewise, graphs.full):
        if sizes:
            forward = t.activation(shape, max(sizes), 0, tp, expert_parallel, False, backend)
            firsts.append(forward.bytes - forward.kept + one)
    more = one * (max(0, len(graphs.piecewise) - 1) + max(0, len(graphs.full) - 1))
    first = max(firsts)
    return t.Term(
        "CUDA graphs",
        first + more,
        f"{graphs.mode}: {len(graphs.piecewise)} PIECEWISE + {len(graphs.full)} FULL graphs (sizes "
        f"{graphs.sizes[0]}-{graphs.sizes[-1]}); first capture {first / MIB:.0f} MiB (forward at "
        f"{max(graphs.sizes)} tokens + one graph) + {graphs.count - (2 if graphs.piecewise and graphs.full else 1)} "
        f"more x {one / MIB:.1f} MiB ({layers} layers x {GRAPH_BYTES_PER_LAYER / MIB:.2f} MiB)",
        "vLLM 0.25 profile_cudagraph_memory; per-layer graph cost from the bench-dense capture on H100",
    )
