"""Write a real-width stand-in (models/standin.py's tensor plan) as a Hugging Face folder vLLM loads.

BF16, or ModelOpt NVFP4 in the published selective layout (`quant: nvfp4`, models/standin.py): config.json's
quantization_config and hf_quant_config.json as ModelOpt writes them (quant_algo NVFP4, group_size 16,
exclude_modules naming every BF16 Linear). FP8 is served from the BF16 folder with vLLM's online
`--quantization fp8` (same shapes). Values: normal(0, 0.02) drawn from one seeded pool and read at a
per-tensor offset (a 19-60 GB checkpoint must write at disk speed; the memory planner needs the shapes,
not independent values), norms 1, Mamba A_log / dt_bias in their usual ranges; NVFP4 weights are uniform
random e2m1 codes (from a seeded byte pool) with block scales 1.0 and a global weight scale that gives
them the BF16 weights' 0.02 RMS. Shards of `shard_gib`,
with model.safetensors.index.json; the tokenizer is a small word-level one (the embedding keeps the
config's vocab_size). Needs numpy and tokenizers.

    python -m servegate.models recipes/models/nemotron-3-nano-standin.yaml OUT_DIR
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from servegate.models.safetensors_io import to_dtype_bytes, write_framed
from servegate.models.standin import NVFP4_GROUP, StandinSpec, Tensor, nvfp4_excluded, plan_tensors
from servegate.models.tokenizer import EOS, PAD, UNK, build_tokenizer, tokenizer_config, vocab_tokens

POOL = 1 << 24  # 16M values (32 MiB as bf16)
TOKENIZER_VOCAB = 4096
E2M1_RMS = (sum(v * v for v in (0, 0.5, 1, 1.5, 2, 3, 4, 6)) / 8) ** 0.5  # uniform random e2m1 codes: 2.93
E4M3_ONE = b"\x38"  # 1.0 in float8_e4m3fn
NVFP4_SCALES = {"weight_scale_2": 0.02 / E2M1_RMS,  # block scale 1.0 x this = the BF16 weights' RMS
                "input_scale": 1.0 / 448}  # activations' amax / (6 x 448) for |x| <= 6: only W4A4 kernels read it
CONFIG_DEFAULTS = {
    "attention_bias": False, "mlp_bias": False, "mlp_hidden_act": "relu2", "mamba_hidden_act": "silu",
    "use_conv_bias": True, "use_bias": False, "mamba_proj_bias": False, "layer_norm_epsilon": 1e-5,
    "residual_in_fp32": False, "rescale_prenorm_residual": True, "tie_word_embeddings": False,
    "use_cache": True, "time_step_min": 0.001, "time_step_max": 0.1, "time_step_floor": 1e-4,
    "time_step_limit": [0.0, float("inf")], "n_group": 1, "topk_group": 1, "norm_topk_prob": True,
    "routed_scaling_factor": 1.0,
}


class Pool:
    """Seeded normal values, bf16-encoded once (and uniform bytes for packed e2m1 codes); a tensor is a
    window into its pool at its own offset."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.bytes = to_dtype_bytes(rng.normal(0.0, 0.02, POOL).astype(np.float32), "bfloat16")
        self.codes = rng.integers(0, 256, POOL, dtype=np.uint8).tobytes()
        self.offset = 0

    def take(self, count: int, source: bytes | None = None, width: int = 2) -> bytes:
        source = self.bytes if source is None else source
        out, need = bytearray(), width * count
        while need:
            start = self.offset % len(source)
            chunk = source[start:start + need]
            out += chunk
            need -= len(chunk)
            self.offset += len(chunk) + width * 7919  # a prime stride: neighbouring tensors differ
        return bytes(out)


def values(tensor: Tensor, pool: Pool) -> bytes:
    if tensor.init == "normal" and tensor.dtype == "F32":  # the NVFP4 layout's FP32 router
        halves = np.frombuffer(pool.take(tensor.numel), dtype="<u2").astype(np.uint32)
        return (halves << 16).astype("<u4").tobytes()
    if tensor.init == "normal":
        return pool.take(tensor.numel)
    if tensor.init == "fp4":
        return pool.take(tensor.numel, pool.codes, width=1)
    if tensor.init == "block_scale":
        return E4M3_ONE * tensor.numel
    if tensor.init in NVFP4_SCALES:
        return to_dtype_bytes(np.full(tensor.numel, NVFP4_SCALES[tensor.init], np.float32), "float32")
    if tensor.init == "ones":
        array = np.ones(tensor.numel, np.float32)
    elif tensor.init == "zeros":
        array = np.zeros(tensor.numel, np.float32)
    elif tensor.init == "a_log":
        array = np.log(np.linspace(1.0, 16.0, tensor.numel, dtype=np.float32))
    elif tensor.init == "dt_bias":
        dt = np.exp(np.linspace(np.log(0.001), np.log(0.1), tensor.numel)).astype(np.float32)
        array = dt + np.log(-np.expm1(-dt))  # inverse softplus
    else:
        raise ValueError(f"unknown init {tensor.init!r} for {tensor.name}")
    return to_dtype_bytes(array, "float32" if tensor.dtype == "F32" else "bfloat16")


def shards(tensors: list[Tensor], limit: int) -> list[list[Tensor]]:
    out, current, size = [], [], 0
    for tensor in tensors:
        if current and size + tensor.nbytes > limit:
            out.append(current)
            current, size = [], 0
        current.append(tensor)
        size += tensor.nbytes
    return out + ([current] if current else [])


def write_shard(path: Path, tensors: list[Tensor], pool: Pool) -> None:
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for tensor in tensors:
        header[tensor.name] = {"dtype": tensor.dtype, "shape": list(tensor.shape),
                               "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    write_framed(path, header, (values(tensor, pool) for tensor in tensors))


def config_json(spec: StandinSpec, eos: int, pad: int) -> dict:
    config = {**CONFIG_DEFAULTS, **spec.config}
    kinds = {"M": "linear_attention", "*": "full_attention", "E": "moe", "-": "mlp"}  # transformers 5 names
    config.update(architectures=["NemotronHForCausalLM"], model_type="nemotron_h", torch_dtype="bfloat16",
                  layers_block_type=[kinds[c] for c in spec.pattern], eos_token_id=eos, pad_token_id=pad,
                  bos_token_id=None)
    if config.get("mtp_hybrid_override_pattern"):
        config["mtp_layers_block_type"] = [kinds[c] for c in config["mtp_hybrid_override_pattern"]]
    if spec.quant == "nvfp4":
        config["quantization_config"] = {"quant_method": "modelopt", **hf_quant_config(spec)}
    return config


def hf_quant_config(spec: StandinSpec) -> dict:
    """ModelOpt's hf_quant_config.json for the NVFP4 layout (vLLM's ModelOptNvFp4Config reads this form:
    group_size, kv_cache_quant_algo and exclude_modules are required; the KV cache dtype is the recipe's)."""
    return {"producer": {"name": "modelopt", "version": "servegate stand-in"},
            "quantization": {"quant_algo": "NVFP4", "group_size": NVFP4_GROUP, "kv_cache_quant_algo": None,
                             "exclude_modules": nvfp4_excluded(spec)}}


def write_standin(spec: StandinSpec, folder: Path, log=print) -> int:
    """Every file into `folder` (which exists); returns the bytes of weights written."""
    if spec.quant == "fp8":
        raise ValueError(f"{spec.source}: quant 'fp8': write quant: bf16 and serve it with --quantization fp8 "
                         "(vLLM's online FP8, the same shapes)")
    tokens = vocab_tokens(min(TOKENIZER_VOCAB, spec.config["vocab_size"]), None)
    vocab = {token: i for i, token in enumerate(tokens)}
    build_tokenizer(tokens).save(str(folder / "tokenizer.json"))
    dump = lambda name, data: (folder / name).write_text(json.dumps(data, indent=2) + "\n")  # noqa: E731
    dump("config.json", config_json(spec, vocab[EOS], vocab[PAD]))
    dump("generation_config.json", {"eos_token_id": [vocab[EOS]], "pad_token_id": vocab[PAD]})
    dump("tokenizer_config.json", tokenizer_config(int(spec.config.get("max_position_embeddings") or 8192)))
    dump("special_tokens_map.json", {"eos_token": EOS, "pad_token": PAD, "unk_token": UNK})
    if spec.quant == "nvfp4":
        dump("hf_quant_config.json", hf_quant_config(spec))
    pool, weight_map, total = Pool(spec.seed), {}, 0
    parts = shards(plan_tensors(spec), spec.shard_bytes)
    for index, part in enumerate(parts, 1):
        name = f"model-{index:05d}-of-{len(parts):05d}.safetensors"
        write_shard(folder / name, part, pool)
        weight_map.update({t.name: name for t in part})
        total += sum(t.nbytes for t in part)
        log(f"stand-in {spec.name}: shard {index}/{len(parts)} written ({total / 2**30:.1f} GiB so far)")
    dump("model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
    return total
