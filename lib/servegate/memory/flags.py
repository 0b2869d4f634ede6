"""Reading serve-flag values out of a rendered argv, the way vLLM's argparse would see them."""

from __future__ import annotations

import json
import re

from servegate.errors import RecipeError
from servegate.render.argv import flag_value, has_flag  # noqa: F401 - has_flag re-exported

DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "fp32": 4,
    "bfloat16": 2,
    "bf16": 2,
    "float16": 2,
    "half": 2,
    "fp16": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "fp8_inc": 1,
    "fp8_ds_mla": 1,
    "int8": 1,
    "uint8": 1,
}
SIZE = re.compile(r"^\s*([0-9.]+)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)


flag = flag_value  # the one argv reader (render/argv.py): last occurrence wins, as in argparse


def int_flag(argv: list[str], name: str, default: int) -> int:
    value = flag(argv, name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise RecipeError(f"{name} {value!r} is not an integer", fix=f"write {name} <integer>") from None


def float_flag(argv: list[str], name: str) -> float | None:
    value = flag(argv, name)
    try:
        return None if value is None else float(value)
    except ValueError:
        raise RecipeError(f"{name} {value!r} is not a number", fix=f"write {name} <number>") from None


def parse_bytes(text: str) -> int:
    """'4G', '4GiB', '4294967296', '512M' -> bytes (vLLM reads K/M/G/T as powers of 1024 here)."""
    match = SIZE.match(str(text))
    if not match:
        raise RecipeError(f"cannot read {text!r} as a size", fix="write bytes, or a number with K/M/G/T")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


def dtype_bytes(name: str | None, fallback: str) -> float:
    """Bytes per element of a cache dtype; 'auto' (or None) means the fallback (the model's dtype)."""
    key = str(name or "auto").lower().replace("torch.", "")
    if key == "auto":
        key = str(fallback).lower().replace("torch.", "")
    if key not in DTYPE_BYTES:
        raise RecipeError(f"unknown dtype {name!r} for memory planning", fix=f"known: {sorted(DTYPE_BYTES)}")
    return DTYPE_BYTES[key]


def speculative_tokens(argv: list[str]) -> int:
    raw = flag(argv, "--speculative-config")
    if not raw:
        return 0
    try:
        return int(json.loads(raw).get("num_speculative_tokens", 0))
    except (ValueError, AttributeError):
        return 0


def speculative_method(argv: list[str]) -> str | None:
    """The --speculative-config method ("ngram", "mtp", "nemotron_h_mtp", ...), or None."""
    raw = flag(argv, "--speculative-config")
    try:
        method = json.loads(raw).get("method") if raw else None
    except (ValueError, AttributeError):
        return None
    return method if isinstance(method, str) else None


def drafts_with_mtp_layers(argv: list[str]) -> bool:
    """vLLM folds every *_mtp method into "mtp": the drafter is the checkpoint's own MTP layers."""
    method = speculative_method(argv) or ""
    return speculative_tokens(argv) > 0 and (method == "mtp" or method.endswith("_mtp"))


def prefix_caching(argv: list[str], default: bool = True) -> bool:
    """The last of --enable-/--no-enable-prefix-caching wins; without either, vLLM's default (see
    terms.prefix_caching_default: off for hybrid models up to 0.25)."""
    state = default
    for token in argv:
        if token == "--no-enable-prefix-caching":
            state = False
        elif token == "--enable-prefix-caching":
            state = True
    return state
