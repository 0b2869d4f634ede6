"""Real-width stand-ins: a Nemotron-3 model's published architecture with random weights.

A stand-in spec (recipes/models/nemotron-3-*-standin.yaml, `kind: nemotron_h_standin`) names a shape file
(recipes/models/shapes/, the published config.json written down with its sources), a quantization and
optionally a reduced depth. The generated folder is a checkpoint in NVIDIA's layout (`backbone.*`, `mtp.*`)
that vLLM's NemotronH loader reads: Mamba-2, attention and MoE layers (routed experts, shared expert,
LatentMoE projections, sigmoid gate with its correction bias) plus the MTP block when the config has one.

`layers: N` keeps the pattern's proportions: each layer kind keeps round(count x N / L) of its layers (at
least one of every kind present), picked at evenly spaced ranks and kept in their original order.
`overrides:` replaces config keys (the CPU test shrinks the width with it; real runs leave it empty).

`quant: nvfp4` plans a ModelOpt NVFP4 checkpoint in the published Nemotron-3 selective layout (the layout
memory/terms.nvfp4_selective_bytes sizes): the routed and shared experts and the in/out projections of every
Mamba layer except the one right before an attention layer are NVFP4 (packed e2m1 weight [out, in/2] U8,
per-16 FP8-E4M3 block scales, FP32 global weight and input scales); attention, those Mamba layers, the
LatentMoE projections, lm_head and the MTP block stay BF16 and are named in the config's exclude_modules;
the router is FP32.

This module is pyyaml-only (validation and the tensor plan); standin_write.py writes the files (numpy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from servegate.config.paths import SHAPES_DIR
from servegate.errors import Location, RecipeError

KIND = "nemotron_h_standin"
QUANTS = ("bf16", "fp8", "nvfp4")
KNOWN_KEYS = ("name", "kind", "description", "shape", "seed", "quant", "layers", "overrides", "shard_gib")
NVFP4_GROUP = 16
# Linear layers written quantized (fp8/nvfp4): the rest (embeddings, lm_head, the router gate, the LatentMoE
# projections, Mamba conv/norm, the MTP block) stay BF16, listed in the quantization config's exclude_modules.
QUANTIZED_SUFFIXES = (".up_proj", ".down_proj", ".q_proj", ".k_proj", ".v_proj", ".o_proj", ".in_proj", ".out_proj")
EXCLUDED = ["lm_head", "*.mixer.gate", "*fc1_latent_proj*", "*fc2_latent_proj*", "mtp*"]
DTYPE_BYTES = {"BF16": 2, "F32": 4, "U8": 1, "F8_E4M3": 1}


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    init: str  # normal | ones | zeros | a_log | dt_bias | fp4 | block_scale | weight_scale_2 | input_scale
    linear: bool = False  # a Linear weight [out, in]: quantized unless excluded
    dtype: str = "BF16"  # safetensors dtype: BF16 | F32 | U8 (two e2m1 values a byte) | F8_E4M3

    @property
    def numel(self) -> int:
        out = 1
        for size in self.shape:
            out *= size
        return out

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES[self.dtype]


@dataclass
class StandinSpec:
    name: str
    shape_file: Path
    config: dict[str, Any]  # the shape's config with the depth reduced and overrides applied
    seed: int
    quant: str
    source: str
    shard_bytes: int = 2 * 2**30
    description: str = ""
    sources: dict[str, Any] = field(default_factory=dict)

    @property
    def pattern(self) -> str:
        return self.config["hybrid_override_pattern"]


def _error(source: str, key: str | None, cause: str, fix: str) -> RecipeError:
    return RecipeError(cause, where=Location(file=source, key=key), fix=fix)


def is_standin(path: str | Path) -> bool:
    """True when a spec file declares `kind: nemotron_h_standin` (cheap peek, no validation)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("kind") == KIND


def reduce_pattern(pattern: str, layers: int) -> str:
    """`layers` of `pattern`'s layers, every kind kept in proportion (>= 1 each), order preserved."""
    if layers >= len(pattern):
        return pattern
    kinds = sorted(set(pattern), key=pattern.index)
    counts = {k: max(1, round(pattern.count(k) * layers / len(pattern))) for k in kinds}
    while sum(counts.values()) > layers:  # rounding up past N: take from the most common kind
        counts[max(counts, key=counts.get)] -= 1
    while sum(counts.values()) < layers:
        counts[max(kinds, key=lambda k: pattern.count(k) / counts[k])] += 1
    keep = set()
    for kind in kinds:
        positions = [i for i, c in enumerate(pattern) if c == kind]
        keep |= {positions[(j * len(positions)) // counts[kind]] for j in range(counts[kind])}
    return "".join(pattern[i] for i in sorted(keep))


def load_standin(path: str | Path) -> StandinSpec:
    path = Path(path)
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise _error(source, None, f"cannot read stand-in spec: {exc}", "pass a readable YAML file") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        kind = data.get("kind") if isinstance(data, dict) else None
        raise _error(source, "kind", f"not a stand-in spec (kind {kind!r})", f"write `kind: {KIND}`")
    unknown = sorted(set(data) - set(KNOWN_KEYS))
    if unknown:
        raise _error(source, unknown[0], f"unknown key(s) {unknown}", f"known keys: {', '.join(KNOWN_KEYS)}")
    shape_file = _shape_path(data, path, source)
    shape = yaml.safe_load(shape_file.read_text())
    config = dict(shape["config"])
    quant = data.get("quant", "bf16")
    if quant not in QUANTS:
        raise _error(source, "quant", f"unknown quant {quant!r}", f"use one of {', '.join(QUANTS)}")
    config.update(_overrides(data, source))
    layers = data.get("layers")
    if layers is not None:
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise _error(source, "layers", f"expected a positive integer, got {layers!r}", "write e.g. `layers: 12`")
        config["hybrid_override_pattern"] = reduce_pattern(config["hybrid_override_pattern"], layers)
    config["num_hidden_layers"] = len(config["hybrid_override_pattern"])
    spec = StandinSpec(
        name=str(data.get("name") or path.stem), shape_file=shape_file, config=config,
        seed=int(data.get("seed", 0)), quant=quant, source=source,
        shard_bytes=int(float(data.get("shard_gib", 2)) * 2**30), description=str(data.get("description", "")),
        sources={"shape_file": str(shape_file), "unsure": shape.get("unsure", [])},
    )
    _check_widths(spec)
    return spec


def _shape_path(data: dict, path: Path, source: str) -> Path:
    name = data.get("shape")
    if not isinstance(name, str) or not name:
        raise _error(source, "shape", "missing `shape:`", "name a file of recipes/models/shapes/, e.g. nemotron-3-nano")
    for candidate in (path.parent / name, SHAPES_DIR / name, SHAPES_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise _error(source, "shape", f"no shape file {name!r}", f"files in {SHAPES_DIR}: "
                 f"{', '.join(p.stem for p in sorted(SHAPES_DIR.glob('*.yaml')))}")


def _overrides(data: dict, source: str) -> dict:
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise _error(source, "overrides", "expected a mapping of config.json keys",
                     "write `overrides: {hidden_size: 256}`")
    return overrides


def _check_widths(spec: StandinSpec) -> None:
    """What the formats need: kv heads dividing heads, Mamba groups dividing heads, NVFP4 16-element groups."""
    c = spec.config
    if c["num_attention_heads"] % c["num_key_value_heads"] or c["mamba_num_heads"] % c["n_groups"]:
        raise _error(spec.source, "overrides", "heads must be multiples of kv heads and Mamba heads of n_groups",
                     "fix num_key_value_heads / n_groups")
    if spec.quant == "nvfp4":
        bad = sorted({t.name.rsplit(".", 2)[-2] for t in _bf16_plan(spec)
                      if t.linear and nvfp4_quantized(t.name, spec.pattern) and t.shape[1] % NVFP4_GROUP})
        if bad:
            raise _error(spec.source, "quant", f"NVFP4 needs input widths divisible by {NVFP4_GROUP}; not: {bad}",
                         "pick widths that are multiples of 16, or quant: fp8")


def quantized(name: str) -> bool:
    """Is this Linear weight written quantized (fp8/nvfp4)? Mirrors EXCLUDED."""
    module = name.removesuffix(".weight")
    if name.startswith(("mtp.", "lm_head")) or module.endswith(".gate") or "latent_proj" in module:
        return False
    return module.endswith(QUANTIZED_SUFFIXES)


def nvfp4_quantized(name: str, pattern: str) -> bool:
    """Is this Linear weight NVFP4 in the published Nemotron-3 selective layout? Experts (routed and shared)
    and Mamba in/out projections, except a Mamba layer followed by attention; attention stays BF16."""
    if not quantized(name) or not name.startswith("backbone.layers."):
        return False
    index = int(name.split(".")[2])
    kind = pattern[index]
    if kind == "E":
        return ".experts." in name or ".shared_experts." in name
    return kind == "M" and not (index + 1 < len(pattern) and pattern[index + 1] == "*")


def _nvfp4(tensors: list[Tensor], pattern: str) -> list[Tensor]:
    """The BF16 plan rewritten as a ModelOpt NVFP4 checkpoint: each quantized Linear weight becomes its
    packed weight, block scales and the two global scales (ModelOptNvFp4LinearMethod's parameters)."""
    out = []
    for t in tensors:
        if t.linear and nvfp4_quantized(t.name, pattern):
            module = t.name.removesuffix(".weight")
            rows, cols = t.shape
            out += [Tensor(t.name, (rows, cols // 2), "fp4", True, "U8"),
                    Tensor(f"{module}.weight_scale", (rows, cols // NVFP4_GROUP), "block_scale", dtype="F8_E4M3"),
                    Tensor(f"{module}.weight_scale_2", (), "weight_scale_2", dtype="F32"),
                    Tensor(f"{module}.input_scale", (), "input_scale", dtype="F32")]
        elif t.name.endswith(".mixer.gate.weight"):
            out.append(Tensor(t.name, t.shape, t.init, t.linear, "F32"))  # the router is FP32
        else:
            out.append(t)
    return out


def nvfp4_excluded(spec: StandinSpec) -> list[str]:
    """exclude_modules of the NVFP4 config: every BF16 Linear module by name (checkpoint names; vLLM maps
    them as it maps the weights), and the MTP block by ModelOpt's wildcard."""
    names = [t.name.removesuffix(".weight") for t in plan_tensors(spec)
             if t.linear and t.dtype != "U8" and not t.name.startswith("mtp.")]
    return names + (["mtp*"] if any(t.name.startswith("mtp.") for t in plan_tensors(spec)) else [])


def checkpoint_bytes(spec: StandinSpec) -> int:
    """The bytes of weights the writer puts on disk (the planner's checkpoint size for the stand-in)."""
    return sum(t.nbytes for t in plan_tensors(spec))


def _mamba(c: dict) -> list[Tensor]:
    heads, inner = c["mamba_num_heads"], c["mamba_num_heads"] * c["mamba_head_dim"]
    conv_dim = inner + 2 * c["n_groups"] * c["ssm_state_size"]
    h = c["hidden_size"]
    return [
        Tensor("in_proj.weight", (inner + conv_dim + heads, h), "normal", True),
        Tensor("conv1d.weight", (conv_dim, 1, c["conv_kernel"]), "normal"),
        Tensor("conv1d.bias", (conv_dim,), "zeros"),
        Tensor("dt_bias", (heads,), "dt_bias"),
        Tensor("A_log", (heads,), "a_log"),
        Tensor("D", (heads,), "ones"),
        Tensor("norm.weight", (inner,), "ones"),
        Tensor("out_proj.weight", (h, inner), "normal", True),
    ]


def _attention(c: dict) -> list[Tensor]:
    h, q, kv = c["hidden_size"], c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    return [Tensor("q_proj.weight", (q, h), "normal", True), Tensor("k_proj.weight", (kv, h), "normal", True),
            Tensor("v_proj.weight", (kv, h), "normal", True), Tensor("o_proj.weight", (h, q), "normal", True)]


def _moe(c: dict) -> list[Tensor]:
    """Router (fp32 compute, bias), routed experts (non-gated relu2: up/down only), shared expert, latent."""
    h, n, inter = c["hidden_size"], c["n_routed_experts"], c["moe_intermediate_size"]
    width = c.get("moe_latent_size") or h
    out = [Tensor("gate.weight", (n, h), "normal", True), Tensor("gate.e_score_correction_bias", (n,), "zeros")]
    for e in range(n):
        out += [Tensor(f"experts.{e}.up_proj.weight", (inner_shape := (inter, width)), "normal", True),
                Tensor(f"experts.{e}.down_proj.weight", inner_shape[::-1], "normal", True)]
    if c.get("n_shared_experts"):
        shared = c["moe_shared_expert_intermediate_size"] * c["n_shared_experts"]
        out += [Tensor("shared_experts.up_proj.weight", (shared, h), "normal", True),
                Tensor("shared_experts.down_proj.weight", (h, shared), "normal", True)]
    if c.get("moe_latent_size"):
        out += [Tensor("fc1_latent_proj.weight", (width, h), "normal", True),
                Tensor("fc2_latent_proj.weight", (h, width), "normal", True)]
    return out


MIXERS = {"M": _mamba, "*": _attention, "E": _moe}


def _layer(c: dict, prefix: str, kind: str) -> list[Tensor]:
    tensors = [Tensor(f"{prefix}.norm.weight", (c["hidden_size"],), "ones")]
    return tensors + [Tensor(f"{prefix}.mixer.{t.name}", t.shape, t.init, t.linear) for t in MIXERS[kind](c)]


def plan_tensors(spec: StandinSpec) -> list[Tensor]:
    """Every tensor of the checkpoint, in write order (names as NVIDIA's checkpoints spell them)."""
    plan = _bf16_plan(spec)
    return _nvfp4(plan, spec.pattern) if spec.quant == "nvfp4" else plan


def _bf16_plan(spec: StandinSpec) -> list[Tensor]:
    c = spec.config
    h, vocab = c["hidden_size"], c["vocab_size"]
    out = [Tensor("backbone.embeddings.weight", (vocab, h), "normal")]
    for index, kind in enumerate(spec.pattern):
        out += _layer(c, f"backbone.layers.{index}", kind)
    out += [Tensor("backbone.norm_f.weight", (h,), "ones"), Tensor("lm_head.weight", (vocab, h), "normal", True)]
    mtp = c.get("mtp_hybrid_override_pattern") or ""
    for index, kind in enumerate(mtp * int(c.get("num_nextn_predict_layers") or 0)):
        prefix = f"mtp.layers.{index}"
        if index % len(mtp) == 0:  # the step's first layer fuses the embedding with the hidden state
            out += [Tensor(f"{prefix}.enorm.weight", (h,), "ones"), Tensor(f"{prefix}.hnorm.weight", (h,), "ones"),
                    Tensor(f"{prefix}.eh_proj.weight", (h, 2 * h), "normal", True)]
        out += _layer(c, prefix, kind)
        if index % len(mtp) == len(mtp) - 1:
            out.append(Tensor(f"{prefix}.final_layernorm.weight", (h,), "ones"))
    return out


def count_params(spec: StandinSpec) -> int:
    """Safetensors elements, as the hub counts a checkpoint's "params" (a packed NVFP4 byte is one)."""
    return sum(t.numel for t in plan_tensors(spec))
