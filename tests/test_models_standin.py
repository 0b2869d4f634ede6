"""The real-width stand-in writer: BF16 and ModelOpt NVFP4 checkpoints as vLLM's loaders read them.

Writing needs tokenizers, so folders are written by `python -m servegate.models` in the provisioned vLLM
CPU venv (tests/conftest.py), which also answers, with vLLM's own ModelOptNvFp4Config, which modules the
checkpoint's exclude_modules leave BF16. vLLM on the CPU has no NVFP4 kernel: serving it is the GPU run's.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from servegate.memory import terms
from servegate.memory.shapes import load_shape_file
from servegate.models.standin import (
    checkpoint_bytes,
    count_params,
    load_standin,
    nvfp4_excluded,
    nvfp4_quantized,
    plan_tensors,
)
from servegate.models.standin_write import config_json, write_standin

ROOT = Path(__file__).resolve().parents[1]
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], np.float32)
TINY = {"hidden_size": 256, "n_routed_experts": 8, "moe_intermediate_size": 64,
        "moe_shared_expert_intermediate_size": 128, "mamba_num_heads": 8, "mamba_head_dim": 32, "n_groups": 2,
        "ssm_state_size": 16, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "vocab_size": 1024, "max_position_embeddings": 4096}


def tiny_spec(tmp_path: Path, quant: str, layers: int = 8) -> Path:
    spec = tmp_path / f"tiny-{quant}.yaml"
    spec.write_text(json.dumps({"name": f"tiny-{quant}", "kind": "nemotron_h_standin", "shape": "nemotron-3-nano",
                                "seed": 7, "quant": quant, "layers": layers, "overrides": TINY, "shard_gib": 0.001}))
    return spec


def run_venv(python: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    result = subprocess.run([python, *args], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def write(vllm_python: str, spec_path: Path, folder: Path) -> Path:
    run_venv(vllm_python, "-m", "servegate.models", str(spec_path), str(folder))
    return folder


def headers(folder: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
            base = 8 + length
        for name, info in header.items():
            if name != "__metadata__":
                out[name] = {**info, "file": path, "base": base}
    return out


def read(info: dict) -> bytes:
    begin, end = info["data_offsets"]
    with open(info["file"], "rb") as handle:
        handle.seek(info["base"] + begin)
        return handle.read(end - begin)


def test_full_depth_nano_nvfp4_is_the_checkpoint_the_planner_sizes():
    spec = load_standin(ROOT / "recipes/models/nemotron-3-nano-nvfp4-standin.yaml")
    shape = load_shape_file(ROOT / "recipes/models/shapes/nemotron-3-nano.yaml")
    assert len(spec.pattern) == 52
    # the planner's layout term leaves out the norms, biases, Mamba D/A/dt and the FP32 global scales: 0.5 MB
    assert abs(checkpoint_bytes(spec) - terms.nvfp4_selective_bytes(shape)) < 2**20
    assert round(count_params(spec) / 1e9, 1) == 18.2  # the hub's safetensors element count
    quantized_mamba = {int(t.name.split(".")[2]) for t in plan_tensors(spec)
                       if t.dtype == "U8" and ".in_proj." in t.name}
    assert len(quantized_mamba) == 17
    assert {i for i, c in enumerate(spec.pattern) if c == "M"} - quantized_mamba == {4, 11, 18, 25, 32, 41}


def test_nvfp4_layout_keeps_attention_and_the_mamba_layer_feeding_it_bf16():
    pattern = "MEM*E"
    assert nvfp4_quantized("backbone.layers.0.mixer.in_proj.weight", pattern)
    assert not nvfp4_quantized("backbone.layers.2.mixer.in_proj.weight", pattern)  # feeds attention
    assert not nvfp4_quantized("backbone.layers.3.mixer.q_proj.weight", pattern)
    assert nvfp4_quantized("backbone.layers.1.mixer.experts.5.up_proj.weight", pattern)
    assert nvfp4_quantized("backbone.layers.4.mixer.shared_experts.down_proj.weight", pattern)
    assert not nvfp4_quantized("backbone.layers.1.mixer.gate.weight", pattern)
    assert not nvfp4_quantized("lm_head.weight", pattern)


def test_vllm_reads_the_full_depth_layout_from_the_config(vllm_python):
    """vLLM's own ModelOptNvFp4Config, mapped as NemotronH maps it: what it quantizes is the published layout."""
    code = """
import json, sys
from vllm.model_executor.layers.quantization.modelopt import ModelOptNvFp4Config
from vllm.model_executor.models.nemotron_h import NemotronHForCausalLM as M
cfg = json.load(open(sys.argv[1]))
q = ModelOptNvFp4Config.from_config(cfg["quantization_config"])
q.packed_modules_mapping = M.packed_modules_mapping
q.apply_vllm_mapper(M.hf_to_vllm_mapper)
mods = {"M": ["in_proj", "out_proj"], "*": ["qkv_proj", "o_proj"], "E": ["experts", "shared_experts.up_proj",
        "shared_experts.down_proj", "gate"]}
out = {f"{i}.{m}": q.is_layer_excluded(f"model.layers.{i}.mixer.{m}")
       for i, c in enumerate(cfg["hybrid_override_pattern"]) for m in mods[c]}
print(json.dumps({"name": type(q).__name__, "group": q.group_size, "bf16": sorted(k for k, v in out.items() if v),
                  "lm_head": q.is_layer_excluded("lm_head")}))
"""
    spec = load_standin(ROOT / "recipes/models/nemotron-3-nano-nvfp4-standin.yaml")
    config = Path(os.environ.get("TMPDIR", "/tmp")) / f"sg-nvfp4-config-{os.getpid()}.json"
    config.write_text(json.dumps(config_json(spec, 0, 0)))
    try:
        result = json.loads(run_venv(vllm_python, "-c", code, str(config)).stdout.strip().splitlines()[-1])
    finally:
        config.unlink()
    assert result["name"] == "ModelOptNvFp4Config" and result["group"] == 16 and result["lm_head"]
    bf16 = set(result["bf16"])
    pattern = spec.pattern
    attention = {i for i, c in enumerate(pattern) if c == "*"}
    assert {f"{i}.{m}" for i in attention for m in ("qkv_proj", "o_proj")} <= bf16
    assert {int(k.split(".")[0]) for k in bf16 if k.endswith("in_proj")} == {4, 11, 18, 25, 32, 41}
    assert not {k for k in bf16 if "experts" in k}
    assert {f"{i}.gate" for i, c in enumerate(pattern) if c == "E"} <= bf16


def test_nvfp4_folder_has_modelopt_tensors_scales_and_config(tmp_path, vllm_python):
    spec = load_standin(tiny_spec(tmp_path, "nvfp4"))
    folder = write(vllm_python, tiny_spec(tmp_path, "nvfp4"), tmp_path / "out")
    written = checkpoint_bytes(spec)
    found = headers(folder)
    assert written == sum(i["data_offsets"][1] - i["data_offsets"][0]
                                                    for i in found.values())
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(found)
    packed = {n: i for n, i in found.items() if i["dtype"] == "U8"}
    assert packed and all(n.endswith(".weight") for n in packed)
    for name, info in packed.items():
        module = name.removesuffix(".weight")
        rows, half = info["shape"]
        assert found[f"{module}.weight_scale"]["dtype"] == "F8_E4M3"
        assert found[f"{module}.weight_scale"]["shape"] == [rows, 2 * half // 16]
        assert found[f"{module}.weight_scale_2"] == {**found[f"{module}.weight_scale_2"], "dtype": "F32", "shape": []}
        assert found[f"{module}.input_scale"]["shape"] == []
    assert all(i["dtype"] == "F32" for n, i in found.items() if n.endswith(".mixer.gate.weight"))
    # every BF16 Linear is named in exclude_modules, no NVFP4 one is
    excluded = set(nvfp4_excluded(spec))
    assert {n.removesuffix(".weight") for n in packed}.isdisjoint(excluded)
    attention = f"backbone.layers.{spec.pattern.index('*')}.mixer"
    assert {"lm_head", f"{attention}.q_proj", f"{attention}.o_proj"} <= excluded
    hf = json.loads((folder / "hf_quant_config.json").read_text())["quantization"]
    assert hf["quant_algo"] == "NVFP4" and hf["group_size"] == 16 and "kv_cache_quant_algo" in hf
    assert sorted(hf["exclude_modules"]) == sorted(excluded)
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "modelopt"
    assert config["quantization_config"]["quantization"] == hf


def test_nvfp4_weights_dequantize_to_the_bf16_weights_rms(tmp_path, vllm_python):
    folder = write(vllm_python, tiny_spec(tmp_path, "nvfp4"), tmp_path / "out")
    found = headers(folder)
    module = next(n for n in found if n.endswith(".experts.0.up_proj.weight")).removesuffix(".weight")
    codes = np.frombuffer(read(found[f"{module}.weight"]), np.uint8)
    values = np.stack([E2M1[codes & 0xF], E2M1[codes >> 4]], axis=1).ravel()
    assert set(read(found[f"{module}.weight_scale"])) == {0x38}  # E4M3 1.0
    (scale_2,) = struct.unpack("<f", read(found[f"{module}.weight_scale_2"]))
    rms = float(np.sqrt(np.mean((values * scale_2) ** 2)))
    assert 0.018 < rms < 0.022
    assert len(np.unique(codes)) > 200  # random codes, not a constant


def test_bf16_folder_is_all_bf16(tmp_path, vllm_python):
    spec = load_standin(tiny_spec(tmp_path, "bf16"))
    folder = write(vllm_python, tiny_spec(tmp_path, "bf16"), tmp_path / "out")
    found = headers(folder)
    assert sum(i["data_offsets"][1] - i["data_offsets"][0] for i in found.values()) == 2 * count_params(spec)
    assert 2 * count_params(spec) == checkpoint_bytes(spec)
    assert {i["dtype"] for i in found.values()} == {"BF16"}
    assert not (folder / "hf_quant_config.json").exists()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())


def test_fp8_is_served_online_not_written(tmp_path):
    spec = load_standin(tiny_spec(tmp_path, "fp8"))
    with pytest.raises(ValueError, match="--quantization fp8"):
        write_standin(spec, tmp_path, log=lambda _: None)
