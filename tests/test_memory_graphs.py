"""The CUDA-graph term (memory/graphs.py): vLLM 0.25's capture sizes and modes, its estimate against what vLLM
logged on the H100 (results/gpu/20261205-h100-planner-graphs.md), and where the plan charges it."""

from pathlib import Path

import pytest

from servegate.memory import graphs
from servegate.memory.plan import PlanContext, build_plan
from servegate.memory.shapes import shape_from_config
from servegate.models.standin import checkpoint_bytes, load_standin
from servegate.models.standin_write import config_json

ROOT = Path(__file__).resolve().parents[1]
GIB, MIB = 2**30, 2**20


def standin(name: str):
    spec = load_standin(ROOT / f"recipes/models/nemotron-3-{name}-standin.yaml")
    return spec, shape_from_config(config_json(spec, 0, 0), name=spec.name)


@pytest.mark.parametrize("seqs,spec,batch,sizes", [
    (1, 0, 8192, [1, 2]),  # vLLM logged cudagraph_capture_sizes [1, 2] (n-u030-graphs-s1)
    (8, 0, 8192, [1, 2, 4, 8, 16]),  # [1, 2, 4, 8, 16] (n-u030-graphs)
    (64, 0, 8192, [1, 2, 4] + list(range(8, 129, 8))),  # 19 sizes up to 128 (n-u030-graphs-s64)
    (6, 3, 8192, [1, 2, 4] + list(range(8, 49, 8))),  # MTP-3: decode query of 4 tokens x 6 seqs x 2
    (256, 0, 8192, [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, 513, 16))),
    (256, 0, 300, [1, 2, 4] + list(range(8, 256, 8)) + [256, 272, 288, 300]),  # the batch is captured too
])
def test_capture_sizes_follow_vllm(seqs, spec, batch, sizes):
    assert graphs.capture_sizes(seqs, batch, spec, {}) == sizes


def test_modes_and_the_decode_sizes():
    base = ["vllm", "serve", "m"]
    default = graphs.capture(base, 8, 8192, 0)
    assert (default.mode, len(default.piecewise), default.full) == ("FULL_AND_PIECEWISE", 5, [1, 2, 4, 8])
    mtp = graphs.capture(base, 6, 8192, 3)
    assert mtp.full == [4, 8, 16, 24]  # uniform decode: 1 + 3 <= size <= 6 x 4
    assert graphs.capture(base + ["--enforce-eager"], 8, 8192, 0).count == 0
    only = graphs.capture(base + ["--compilation-config", '{"cudagraph_mode": "PIECEWISE"}'], 8, 8192, 0)
    assert only.full == [] and len(only.piecewise) == 5
    given = graphs.capture(base + ["--compilation-config", '{"cudagraph_capture_sizes": [4, 1, 4, 32]}'], 8, 16, 0)
    assert given.sizes == [1, 4]  # de-duplicated, sorted, none above the batch


def test_the_capture_size_flags_win():
    argv = ["vllm", "serve", "m", "--max-cudagraph-capture-size", "128"]
    assert graphs.capture(argv, 8, 8192, 0).sizes[-1] == 128  # the Super / Ultra stand-in recipes (seed 004)
    listed = graphs.capture(["vllm", "serve", "m", "--cudagraph-capture-sizes", "1", "2", "64", "--x"], 8, 8192, 0)
    assert listed.sizes == [1, 2, 64]


# (stand-in, max_num_seqs, the recipe's --max-cudagraph-capture-size, vLLM's "Estimated CUDA graph memory"
# in GiB as logged, 2 decimals)
LOGGED = [("nano", 1, None, 0.07), ("nano", 8, None, 0.08), ("nano", 64, None, 0.12), ("super", 8, 128, 0.13),
          ("ultra", 8, 128, 0.15)]


@pytest.mark.parametrize("name,seqs,largest,logged", LOGGED, ids=[f"{m[0]}-s{m[1]}" for m in LOGGED])
def test_estimate_is_within_50_mib_of_what_vllm_logged(name, seqs, largest, logged):
    _, shape = standin(name)
    argv = ["vllm", "serve", "m"] + (["--max-cudagraph-capture-size", str(largest)] if largest else [])
    term = graphs.cudagraph(shape, argv, seqs, 8192, 0, 1, False, False, "triton")
    assert abs(term.bytes / GIB - logged) <= 50 * MIB / GIB + 0.005, term.formula


def test_from_vllm_021_the_graphs_come_out_of_the_kv_budget():
    spec, shape = standin("nano")
    argv = ["vllm", "serve", "m", "--gpu-memory-utilization", "0.3", "--max-model-len", "8192",
            "--max-num-seqs", "8", "--kv-cache-dtype", "fp8"]

    def plan(extra, version, env=None):
        ctx = PlanContext(argv=argv + extra, env=env or {}, platform="gpu", node_names=["gpu0"],
                          node_total_bytes=128 * GIB, node_total_source="test", gpu_total_bytes=int(79.19 * GIB),
                          vllm_version=version)
        return build_plan(shape, checkpoint_bytes(spec), "bf16 stand-in", ctx)

    eager, graphed = plan(["--enforce-eager"], "0.25.0"), plan([], "0.25.0")
    names = [term.name for term in graphed.terms]
    assert "CUDA graphs" in names and "CUDA graphs" not in [term.name for term in eager.terms]
    assert 0 < eager.kv_budget_bytes - graphed.kv_budget_bytes < 0.2 * GIB
    # opted out, or before 0.21: the KV budget is the eager one, the graphs are noted beyond the reservation
    opted_out = plan([], "0.25.0", {"VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS": "0"})
    old = plan([], "0.18.1")
    for other in (opted_out, old):
        assert other.kv_budget_bytes == eager.kv_budget_bytes
        assert any("beyond the reservation" in note for note in other.notes)
