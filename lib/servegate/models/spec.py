"""Model spec files (recipes/models/*.yaml): load, validate, hash.

A spec names every architecture number of a tiny NemotronH model explicitly, so a reader
sees what vLLM will load without running anything. Validation happens here, in plain
Python (pyyaml only), so a bad spec fails in milliseconds with file, line and key,
before any torch-bearing interpreter is started.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from servegate.errors import Location, RecipeError
from servegate.models.script import parse_script

# Head sizes the vLLM CPU attention backend accepts (others fail at the first request).
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
LAYER_CHARS = {"M": "Mamba-2", "*": "attention", "-": "MLP"}

REQUIRED_INTS = (
    "seed", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
    "head_dim", "mamba_num_heads", "mamba_head_dim", "n_groups", "ssm_state_size",
    "conv_kernel", "max_position_embeddings", "vocab_size",
)
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "description": "",
    "expand": 2,
    "chunk_size": 128,
    "layer_norm_epsilon": 1e-5,
    "dtype": "float32",
    "script": None,
}
# mtp_layers (default 0) enters `raw`, hence the spec hash, only when written: older specs keep their hash.
KNOWN_KEYS = ("name", "kind", "hybrid_override_pattern", *REQUIRED_INTS, *OPTIONAL_DEFAULTS, "mtp_layers")
# vLLM's NemotronH MTP (nemotron_h_mtp.py, 0.25 and 0.32) asserts exactly one MTP layer; its pattern
# allows '*' and 'E', and 'E' (MoE) fails on CPU, so the one layer is an attention block.
MTP_PATTERN = "*"
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelSpec:
    """A validated model spec. `raw` keeps the file's mapping (defaults filled in) for hashing."""

    name: str
    kind: str
    hybrid_override_pattern: str
    seed: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    mamba_num_heads: int
    mamba_head_dim: int
    n_groups: int
    ssm_state_size: int
    conv_kernel: int
    max_position_embeddings: int
    vocab_size: int
    expand: int = 2
    chunk_size: int = 128
    layer_norm_epsilon: float = 1e-5
    dtype: str = "float32"
    description: str = ""
    script: Any = None  # servegate.models.script.Script when present
    mtp_layers: int = 0  # 1: a NemotronH MTP block (num_nextn_predict_layers) after the backbone
    source: str | None = None
    key_lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def where(self, key: str | None = None) -> Location:
        """Location of `key` (dotted path) in the spec file, for errors raised after loading."""
        line = self.key_lines.get(key) if key else None
        return Location(file=self.source, line=line, key=key)

    def spec_hash(self, generator_version: str) -> str:
        """Hash of everything that decides the generated files (spec content + generator version)."""
        payload = json.dumps({"spec": self.raw, "generator": generator_version}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


def load_spec(path: str | Path) -> ModelSpec:
    """Read and validate a spec file; raise RecipeError naming file, line and key on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RecipeError(f"cannot read model spec: {exc.strerror}", where=Location(file=str(path)),
                          fix="pass the path of a recipes/models/*.yaml file") from exc
    return parse_spec(text, source=str(path))


def parse_spec(text: str, source: str | None = None) -> ModelSpec:
    """Validate spec text (the body of load_spec, usable on strings in tests)."""
    try:
        data = yaml.safe_load(text)
        key_lines = _key_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise RecipeError(f"not valid YAML: {getattr(exc, 'problem', exc)}",
                          where=Location(file=source, line=line), fix="fix the YAML syntax") from exc
    checker = _Checker(source, key_lines)
    if not isinstance(data, dict):
        raise checker.error(None, f"a model spec is a mapping, got {type(data).__name__}",
                            "write `name: ...`, `kind: nemotron_h`, ... at the top level")
    values = checker.top_level(data)
    script = parse_script(values["script"], checker) if values["script"] is not None else None
    return ModelSpec(**{**values, "script": script}, source=source, key_lines=key_lines, raw=values)


class _Checker:
    """Validation helpers that know where each key sits in the file."""

    def __init__(self, source: str | None, key_lines: dict[str, int]):
        self.source = source
        self.key_lines = key_lines

    def error(self, key: str | None, cause: str, fix: str) -> RecipeError:
        line = self.key_lines.get(key) if key else None
        return RecipeError(cause, where=Location(file=self.source, line=line, key=key), fix=fix)

    def unknown_keys(self, mapping: dict, known: tuple[str, ...], prefix: str = "") -> None:
        for key in mapping:
            if key not in known:
                raise self.error(f"{prefix}{key}", f"unknown key '{key}'",
                                 f"known keys here: {', '.join(known)}")

    def positive_int(self, data: dict, key: str, prefix: str = "") -> int:
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.error(f"{prefix}{key}", f"expected a positive integer, got {value!r}",
                             f"write e.g. `{key}: 64`")
        return value

    def text(self, data: dict, key: str, prefix: str = "") -> str:
        value = data[key]
        if not isinstance(value, str) or not value:
            raise self.error(f"{prefix}{key}", f"expected a non-empty string, got {value!r}",
                             f"write `{key}: \"...\"`")
        return value

    def top_level(self, data: dict) -> dict[str, Any]:
        self.unknown_keys(data, KNOWN_KEYS)
        missing = [key for key in ("name", "kind", "hybrid_override_pattern", *REQUIRED_INTS)
                   if key not in data]
        if missing:
            raise self.error(None, f"missing required key(s): {', '.join(missing)}",
                             "see recipes/models/tiny-hybrid.yaml for a complete spec")
        values: dict[str, Any] = {**OPTIONAL_DEFAULTS, **data}
        values["name"] = self.text(data, "name")
        self.check_kind(data)
        for key in REQUIRED_INTS + ("expand", "chunk_size"):
            if key == "seed":
                continue
            values[key] = self.positive_int(values, key)
        values["seed"] = self.seed(data)
        values["hybrid_override_pattern"] = self.pattern(data, has_script=values["script"] is not None)
        if "mtp_layers" in data:
            values["mtp_layers"] = self.mtp_layers(data)
        self.check_dtype(values)
        self.check_attention(values)
        self.check_mamba(values)
        if not isinstance(values["description"], str):
            raise self.error("description", "expected a string", "write `description: \"...\"`")
        if not isinstance(values["layer_norm_epsilon"], float) or values["layer_norm_epsilon"] <= 0:
            raise self.error("layer_norm_epsilon", f"expected a small positive float, got "
                             f"{values['layer_norm_epsilon']!r}", "write `layer_norm_epsilon: 1.0e-5`")
        return values

    def check_kind(self, data: dict) -> None:
        if data["kind"] != "nemotron_h":
            raise self.error("kind", f"unsupported kind {data['kind']!r}",
                             "only `kind: nemotron_h` (hybrid Mamba-2 + attention) is generated")

    def seed(self, data: dict) -> int:
        value = data["seed"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
            raise self.error("seed", f"expected an integer in [0, 2**32), got {value!r}",
                             "write e.g. `seed: 1234`")
        return value

    def pattern(self, data: dict, has_script: bool) -> str:
        value = data["hybrid_override_pattern"]
        if not isinstance(value, str) or not value:
            raise self.error("hybrid_override_pattern", f"expected a string like 'M*M-', got {value!r}",
                             "M = Mamba-2, * = attention, - = MLP; quote it in YAML")
        if "E" in value:
            raise self.error("hybrid_override_pattern", "MoE layers ('E') fail on the vLLM CPU build "
                             "(relu2 non-gated experts are CUDA/XPU/ROCm only)",
                             "use only M, * and - for a model served on CPU")
        bad = sorted(set(value) - set(LAYER_CHARS))
        if bad:
            raise self.error("hybrid_override_pattern", f"unknown layer character(s) {bad}",
                             "M = Mamba-2, * = attention, - = MLP")
        attention = value.find("*")
        if has_script and (attention < 0 or "-" not in value[attention:]):
            raise self.error("hybrid_override_pattern", "a scripted model needs an attention layer ('*') "
                             "followed later by an MLP layer ('-'): the attention routes the chat "
                             "template's mode token to every position, the MLP resolves shared tokens",
                             "use a pattern like 'M*M-'")
        return value

    def mtp_layers(self, data: dict) -> int:
        value = data["mtp_layers"]
        if isinstance(value, bool) or value not in (0, 1):
            raise self.error("mtp_layers", f"expected 0 or 1, got {value!r}",
                             "vLLM's NemotronH MTP supports exactly one MTP layer: write `mtp_layers: 1`")
        return value

    def check_dtype(self, values: dict) -> None:
        if values["dtype"] not in DTYPES:
            raise self.error("dtype", f"unsupported dtype {values['dtype']!r}",
                             f"use one of {', '.join(DTYPES)}")

    def check_attention(self, values: dict) -> None:
        if values["head_dim"] not in CPU_HEAD_DIMS:
            raise self.error("head_dim", f"head_dim {values['head_dim']} is not supported by vLLM's CPU "
                             "attention (fails at the first request)",
                             f"use one of {', '.join(map(str, CPU_HEAD_DIMS))}")
        if values["num_attention_heads"] % values["num_key_value_heads"]:
            raise self.error("num_key_value_heads", f"num_attention_heads {values['num_attention_heads']} "
                             f"is not a multiple of num_key_value_heads {values['num_key_value_heads']}",
                             "pick num_key_value_heads dividing num_attention_heads")

    def check_mamba(self, values: dict) -> None:
        if values["mamba_num_heads"] % values["n_groups"]:
            raise self.error("n_groups", f"mamba_num_heads {values['mamba_num_heads']} is not a multiple "
                             f"of n_groups {values['n_groups']}", "pick n_groups dividing mamba_num_heads")
        if values["conv_kernel"] > 4:
            raise self.error("conv_kernel", f"conv_kernel {values['conv_kernel']} is larger than the "
                             "causal-conv1d kernels support", "use conv_kernel: 4 (or less)")


def _key_lines(text: str) -> dict[str, int]:
    """Map dotted key paths ('script.think.reasoning') to 1-based line numbers."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = f"{prefix}{key_node.value}"
                lines[path] = key_node.start_mark.line + 1
                walk(value_node, f"{path}.")

    root = yaml.compose(text)
    if root is not None:
        walk(root, "")
    return lines
