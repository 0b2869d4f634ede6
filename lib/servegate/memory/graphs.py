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
           --compilation-config's cudagraph_capture_sizes / max_cudagraph_capture_size, or the flags
           --cudagraph-capture-sizes / --max-cudagraph-capture-size
    modes  FULL_AND_PIECEWISE (the default): PIECEWISE at every size, FULL at the uniform-decode sizes
           (1 + speculative tokens <= size <= max_num_seqs x (1 + speculative tokens)); PIECEWISE,
           FULL_DECODE_ONLY, FULL and NONE as --compilation-config names them; --enforce-eager: none.
What one capture holds (measured: results/gpu/20261205-h100-planner-graphs.md, vLLM 0.25 DEBUG lines
"Estimated PIECEWISE CUDA graph memory: 72.00 MiB first-capture + (2-1) x 1.00 MiB per-graph"):
    first capture   CAPTURE_FIXED_BYTES, paid once by the first mode captured (PIECEWISE when there is one):
                    72 and 72 MiB for the Nano stand-in at 2 and 16 tokens, where its forward temporaries
                    are 0.1 and 1.2 MiB (cuBLAS / cuBLASLt workspaces for the capture stream and the pool's
                    first segments), + the forward's own temporaries at the mode's largest size (the MoE
                    workspace is already there from profile_run, larger)
    one more graph  vLLM's 1 MiB floor: the second capture added no measurable memory in all ten
                    modes measured (Nano 13 layers, Super 9, Ultra 3; 1 to 128 tokens)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from servegate.memory import flags as f
from servegate.memory import terms as t
from servegate.memory.shapes import ModelShape

MIB = 2**20
CAPTURE_FIXED_BYTES = 70 * MIB  # first PIECEWISE capture less forward temporaries: 71.9 / 70.8 MiB (Nano)
GRAPH_FLOOR_BYTES = MIB  # vLLM: "Use at least 1 MiB per graph for driver overhead"; every second capture measured <= it
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
    """--compilation-config's JSON, with vLLM's own shorthands on top: --max-cudagraph-capture-size N and
    --cudagraph-capture-sizes N [N ...] (EngineArgs writes both into the compilation config)."""
    raw = f.flag(argv, "--compilation-config") or f.flag(argv, "-cc")
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        value = {}
    config = dict(value) if isinstance(value, dict) else {}
    largest = f.flag(argv, "--max-cudagraph-capture-size")
    if largest is not None and str(largest).isdigit():
        config["max_cudagraph_capture_size"] = int(largest)
    sizes = _listed(argv, "--cudagraph-capture-sizes")
    if sizes:
        config["cudagraph_capture_sizes"] = sizes
    return config


def _listed(argv: list[str], name: str) -> list[int]:
    """The integers after the last NAME (nargs="+"; also NAME=1,2 or a JSON list)."""
    values: list[int] = []
    for index, token in enumerate(argv):
        if token == name:
            values = []
            for item in argv[index + 1:]:
                if item.startswith("-"):
                    break
                values += [int(part) for part in item.strip("[]").split(",") if part.strip().isdigit()]
        elif token.startswith(name + "="):
            values = [int(part) for part in token.split("=", 1)[1].strip("[]").split(",") if part.strip().isdigit()]
    return values


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
    firsts = []
    for sizes in (graphs.piecewise, graphs.full):
        if sizes:
            forward = t.activation(shape, max(sizes), 0, tp, expert_parallel, False, backend)
            firsts.append(forward.bytes - forward.kept)
    first = CAPTURE_FIXED_BYTES + max(firsts)
    more = max(0, len(graphs.piecewise) - 1) + max(0, len(graphs.full) - 1)
    return t.Term(
        "CUDA graphs",
        first + more * GRAPH_FLOOR_BYTES,
        f"{graphs.mode}: {len(graphs.piecewise)} PIECEWISE + {len(graphs.full)} FULL graphs (sizes "
        f"{graphs.sizes[0]}-{graphs.sizes[-1]}); first capture {CAPTURE_FIXED_BYTES / MIB:.0f} MiB + forward "
        f"temporaries at {max(graphs.sizes)} tokens {(first - CAPTURE_FIXED_BYTES) / MIB:.1f} MiB; {more} more "
        f"graphs x {GRAPH_FLOOR_BYTES / MIB:.0f} MiB",
        "vLLM 0.25 profile_cudagraph_memory, as measured on H100 (results/gpu/20261205-h100-planner-graphs.md)",
    )
