"""Write a real-width stand-in (models/standin.py's tensor plan) as a Hugging Face folder vLLM loads.

BF16 weights only: FP8 is served from them with vLLM's online `--quantization fp8` (same shapes), and an
NVFP4 (ModelOpt) writer is not done. Values: normal(0, 0.02) drawn from one seeded pool and read at a
per-tensor offset (a 19-60 GB checkpoint must write at disk speed; the memory planner needs the shapes,
not independent values), norms 1, Mamba A_log / dt_bias in their usual ranges. Shards of `shard_gib`,
with model.safetensors.index.json; the tokenizer is a small word-level one (the embedding keeps the
config's vocab_size). Needs numpy and tokenizers.

    python -m servegate.models recipes/models/nemotron-3-nano-standin.yaml OUT_DIR
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from servegate.models.safetensors_io import to_dtype_bytes, write_framed
from servegate.models.standin import StandinSpec, Tensor, plan_tensors
from servegate.models.tokenizer import EOS, PAD, UNK, build_tokenizer, tokenizer_config, vocab_tokens

POOL = 1 << 24  # 16M values (32 MiB as bf16)
TOKENIZER_VOCAB = 4096
CONFIG_DEFAULTS = {
    "attention_bias": False, "mlp_bias": False, "mlp_hidden_act": "relu2", "mamba_hidden_act": "silu",
    "use_conv_bias": True, "use_bias": False, "mamba_proj_bias": False, "layer_norm_epsilon": 1e-5,
    "residual_in_fp32": False, "rescale_prenorm_residual": True, "tie_word_embeddings": False,
    "use_cache": True, "time_step_min": 0.001, "time_step_max": 0.1, "time_step_floor": 1e-4,
    "time_step_limit": [0.0, float("inf")], "n_group": 1, "topk_group": 1, "norm_topk_prob": True,
    "routed_scaling_factor": 1.0,
}


class Pool:
    """Seeded normal values, bf16-encoded once; a tensor is a window into the pool at its own offset."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.bytes = to_dtype_bytes(rng.normal(0.0, 0.02, POOL).astype(np.float32), "bfloat16")
        self.offset = 0

    def take(self, count: int) -> bytes:
        out, need = bytearray(), 2 * count
        while need:
            start = self.offset % len(self.bytes)
            chunk = self.bytes[start:start + need]
            out += chunk
            need -= len(chunk)
            self.offset += len(chunk) + 2 * 7919  # a prime stride: neighbouring tensors differ
        return bytes(out)


def values(tensor: Tensor, pool: Pool) -> bytes:
    if tensor.init == "normal":
        return pool.take(tensor.numel)
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
    return to_dtype_bytes(array, "bfloat16")


def shards(tensors: list[Tensor], limit: int) -> list[list[Tensor]]:
    out, current, size = [], [], 0
    for tensor in tensors:
        if current and size + 2 * tensor.numel > limit:
            out.append(current)
            current, size = [], 0
        current.append(tensor)
        size += 2 * tensor.numel
    return out + ([current] if current else [])


def write_shard(path: Path, tensors: list[Tensor], pool: Pool) -> None:
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for tensor in tensors:
        header[tensor.name] = {"dtype": "BF16", "shape": list(tensor.shape),
                               "data_offsets": [offset, offset + 2 * tensor.numel]}
        offset += 2 * tensor.numel
    write_framed(path, header, (values(tensor, pool) for tensor in tensors))


def config_json(spec: StandinSpec, eos: int, pad: int) -> dict:
    config = {**CONFIG_DEFAULTS, **spec.config}
    kinds = {"M": "linear_attention", "*": "full_attention", "E": "moe", "-": "mlp"}  # transformers 5 names
    config.update(architectures=["NemotronHForCausalLM"], model_type="nemotron_h", torch_dtype="bfloat16",
                  layers_block_type=[kinds[c] for c in spec.pattern], eos_token_id=eos, pad_token_id=pad,
                  bos_token_id=None)
    if config.get("mtp_hybrid_override_pattern"):
        config["mtp_layers_block_type"] = [kinds[c] for c in config["mtp_hybrid_override_pattern"]]
    return config


def write_standin(spec: StandinSpec, folder: Path, log=print) -> int:
    """Every file into `folder` (which exists); returns the bytes of weights written."""
    if spec.quant != "bf16":
        raise ValueError(f"{spec.source}: quant {spec.quant!r}: only bf16 is written; serve it with "
                         "--quantization fp8 for FP8")
    tokens = vocab_tokens(min(TOKENIZER_VOCAB, spec.config["vocab_size"]), None)
    vocab = {token: i for i, token in enumerate(tokens)}
    build_tokenizer(tokens).save(str(folder / "tokenizer.json"))
    dump = lambda name, data: (folder / name).write_text(json.dumps(data, indent=2) + "\n")  # noqa: E731
    dump("config.json", config_json(spec, vocab[EOS], vocab[PAD]))
    dump("generation_config.json", {"eos_token_id": [vocab[EOS]], "pad_token_id": vocab[PAD]})
    dump("tokenizer_config.json", tokenizer_config(int(spec.config.get("max_position_embeddings") or 8192)))
    dump("special_tokens_map.json", {"eos_token": EOS, "pad_token": PAD, "unk_token": UNK})
    pool, weight_map, total = Pool(spec.seed), {}, 0
    parts = shards(plan_tensors(spec), spec.shard_bytes)
    for index, part in enumerate(parts, 1):
        name = f"model-{index:05d}-of-{len(parts):05d}.safetensors"
        write_shard(folder / name, part, pool)
        weight_map.update({t.name: name for t in part})
        total += sum(2 * t.numel for t in part)
        log(f"stand-in {spec.name}: shard {index}/{len(parts)} written ({total / 2**30:.1f} GiB so far)")
    dump("model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
    return total
