"""Model shapes: the numbers memory depends on, read from a config.json or a shape file under
recipes/models/shapes/ (published configs written down as data, for models nobody downloads).

Layer kinds follow NemotronH's `hybrid_override_pattern` (M Mamba-2, * attention, - MLP, E MoE) or its
`layers_block_type` list; a model without either is a plain transformer (every layer attention).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from servegate.config.paths import SHAPES_DIR
from servegate.errors import Location, RecipeError

PATTERN_KINDS = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"}
BLOCK_KINDS = {
    "mamba": "mamba",
    "linear_attention": "mamba",
    "attention": "attention",
    "full_attention": "attention",
    "mlp": "mlp",
    "moe": "moe",
}


@dataclass
class Checkpoint:
    """One published checkpoint: its size on disk (or bits per parameter) and where that comes from."""

    match: str  # substring of the hub id, case-insensitive ("NVFP4", "BF16")
    gib: float | None = None
    bits_per_param: float | None = None
    source: str = ""
    unsure: bool = False
    layout: str | None = None  # "nvfp4-selective": bytes from the shape (terms.nvfp4_selective_bytes)

    def weight_bytes(self, params: float) -> int:
        if self.gib is not None:
            return int(self.gib * 2**30)
        return int(params * (self.bits_per_param or 16) / 8)


@dataclass
class ModelShape:
    name: str
    layer_kinds: list[str]
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: str = "bfloat16"
    vocab_size: int = 0
    max_position_embeddings: int | None = None
    mamba_num_heads: int = 0
    mamba_head_dim: int = 0
    ssm_state_size: int = 0
    n_groups: int = 1
    conv_kernel: int = 4
    mamba_ssm_cache_dtype: str | None = None  # the config's own default for --mamba-ssm-cache-dtype auto
    mtp_layer_kinds: list[str] = field(default_factory=list)  # NemotronH MTP block(s), drafting with method mtp
    mtp_steps: int = 0  # num_nextn_predict_layers: each step also has eh_proj (2 hidden -> hidden) and norms
    # MLP / MoE widths (what the activation peak depends on); 0 where the config has none
    intermediate_size: int = 0  # dense MLP ('-') width
    hidden_act: str = "silu"  # silu/swiglu layers are gated (w1 is 2 x intermediate); relu2 is not
    experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    moe_latent_size: int = 0  # LatentMoE: routed experts work in this width instead of hidden_size
    shared_expert_intermediate_size: int = 0
    mamba_chunk_size: int = 256
    params_total: float | None = None
    params_active: float | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    source: str = ""
    unsure: list[str] = field(default_factory=list)

    @property
    def attention_layers(self) -> int:
        return self.layer_kinds.count("attention")

    @property
    def mamba_layers(self) -> int:
        return self.layer_kinds.count("mamba")

    @property
    def is_hybrid(self) -> bool:
        return self.mamba_layers > 0

    def checkpoint_for(self, model_id: str) -> Checkpoint | None:
        lowered = model_id.lower()
        for checkpoint in self.checkpoints:
            if checkpoint.match.lower() in lowered:
                return checkpoint
        return None


def layer_kinds(config: dict[str, Any]) -> list[str]:
    pattern = config.get("hybrid_override_pattern")
    if isinstance(pattern, str) and pattern:
        unknown = sorted(set(pattern) - set(PATTERN_KINDS))
        if unknown:
            raise RecipeError(
                f"hybrid_override_pattern has unknown layer symbols {unknown}",
                fix=f"known symbols: {PATTERN_KINDS}",
            )
        return [PATTERN_KINDS[ch] for ch in pattern]
    blocks = config.get("layers_block_type")
    if isinstance(blocks, list) and blocks:
        return [BLOCK_KINDS.get(str(b), "mlp") for b in blocks]
    return ["attention"] * int(config.get("num_hidden_layers") or 0)


def mtp_layer_kinds(config: dict[str, Any]) -> list[str]:
    """Layers of the MTP blocks (NemotronH: num_nextn_predict_layers x its MTP pattern); vLLM gives their
    attention layers KV cache when --speculative-config drafts with them (method mtp)."""
    count = int(config.get("num_nextn_predict_layers") or 0)
    pattern, blocks = config.get("mtp_hybrid_override_pattern"), config.get("mtp_layers_block_type")
    if isinstance(pattern, str) and pattern:
        kinds = [PATTERN_KINDS.get(ch, "mlp") for ch in pattern]
    elif isinstance(blocks, list):
        kinds = [BLOCK_KINDS.get(str(b), "mlp") for b in blocks]
    else:
        kinds = []
    return kinds * count


def shape_from_config(config: dict[str, Any], name: str = "", source: str = "") -> ModelShape:
    """A ModelShape from a Hugging Face config.json mapping (text_config for multimodal wrappers)."""
    config = config.get("text_config") or config
    heads = int(config.get("num_attention_heads") or 0)
    hidden = int(config.get("hidden_size") or 0)
    head_dim = config.get("head_dim") or (hidden // heads if heads else 0)
    mtp = mtp_layer_kinds(config)
    return ModelShape(
        name=name or str(config.get("_name_or_path") or config.get("model_type") or "model"),
        layer_kinds=layer_kinds(config),
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(head_dim),
        dtype=str(config.get("torch_dtype") or config.get("dtype") or "bfloat16"),
        vocab_size=int(config.get("vocab_size") or 0),
        max_position_embeddings=config.get("max_position_embeddings"),
        mamba_num_heads=int(config.get("mamba_num_heads") or 0),
        mamba_head_dim=int(config.get("mamba_head_dim") or 0),
        ssm_state_size=int(config.get("ssm_state_size") or 0),
        n_groups=int(config.get("n_groups") or 1),
        conv_kernel=int(config.get("conv_kernel") or 4),
        mamba_ssm_cache_dtype=config.get("mamba_ssm_cache_dtype"),
        mtp_layer_kinds=mtp,
        mtp_steps=int(config.get("num_nextn_predict_layers") or 0) if mtp else 0,
        intermediate_size=int(config.get("intermediate_size") or 0),
        hidden_act=str(config.get("mlp_hidden_act") or config.get("hidden_act") or "silu"),
        experts=int(config.get("n_routed_experts") or config.get("num_experts") or 0),
        experts_per_token=int(config.get("num_experts_per_tok") or 0),
        moe_intermediate_size=int(config.get("moe_intermediate_size") or 0),
        moe_latent_size=int(config.get("moe_latent_size") or 0),
        shared_expert_intermediate_size=int(config.get("moe_shared_expert_intermediate_size") or 0),
        mamba_chunk_size=int(config.get("chunk_size") or 256),
        source=source,
    )


def load_shape_file(path: Path) -> ModelShape:
    """A shape file: the config.json keys (as published) plus names, params and checkpoints."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RecipeError(
            f"shape file is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
            f"{getattr(exc, 'problem', None) or exc}",
            where=Location(file=str(path), line=mark.line + 1 if mark else None),
            fix="fix the syntax (quote list items that hold brackets or colons)",
        ) from None
    if not isinstance(data, dict) or "config" not in data:
        raise RecipeError(
            f"{path}: a shape file needs a 'config:' mapping", fix="see recipes/models/shapes/*.yaml"
        )
    shape = shape_from_config(data["config"], name=data.get("name", path.stem), source=str(path))
    shape.names = [str(n).lower() for n in data.get("names", [shape.name])]
    shape.params_total = data.get("params_total")
    shape.params_active = data.get("params_active")
    shape.unsure = list(data.get("unsure", []))
    shape.checkpoints = [Checkpoint(**item) for item in data.get("checkpoints", [])]
    return shape


def all_shapes(folder: Path = SHAPES_DIR) -> list[ModelShape]:
    return [load_shape_file(p) for p in sorted(folder.glob("*.y*ml")) + sorted(folder.glob("*.json"))]


def shape_for_model(model_id: str, folder: Path = SHAPES_DIR) -> ModelShape | None:
    """The shape whose names occur in a hub id or path ('.../NVIDIA-Nemotron-3-Ultra-550B-A55B-NVFP4')."""
    lowered = re.sub(r"[_\s]", "-", model_id.lower())
    matches = [s for s in all_shapes(folder) if any(n in lowered for n in s.names)]
    return max(matches, key=lambda s: max(len(n) for n in s.names), default=None)
