"""A minimal, deterministic safetensors writer (F32, F16, BF16) on numpy.

numpy has no bfloat16, and the generated models should be stored in the dtype they are
served in (vLLM warns once per tensor when it downcasts float32 weights on load). The
format is small: an 8-byte little-endian header length, a JSON header (tensor name ->
dtype, shape, byte offsets), then the raw little-endian data. Names are written sorted, so
equal tensors give byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def to_dtype_bytes(array: np.ndarray, dtype: str) -> bytes:
    """Little-endian bytes of a float32 array stored as `dtype` (bf16: round to nearest even)."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if dtype == "float32":
        return array.astype("<f4").tobytes()
    if dtype == "float16":
        return array.astype("<f2").tobytes()
    bits = array.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2").tobytes()


def round_to_dtype(array: np.ndarray, dtype: str) -> np.ndarray:
    """The float32 values `array` takes once stored as `dtype` (for replaying the stored model)."""
    if dtype == "float32":
        return array
    if dtype == "float16":
        return array.astype(np.float16).astype(np.float32)
    halves = np.frombuffer(to_dtype_bytes(array, dtype), dtype="<u2").astype(np.uint32)
    return (halves << 16).view(np.float32).reshape(array.shape)


def save_safetensors(tensors: dict[str, np.ndarray], path: Path, dtype: str) -> None:
    """Write `tensors` (float32 arrays) to `path`, every tensor stored as `dtype`."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    chunks, offset = [], 0
    for name in sorted(tensors):
        data = to_dtype_bytes(tensors[name], dtype)
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    write_framed(path, header, chunks)


def write_framed(path: Path, header: dict, chunks: Iterable[bytes]) -> None:
    """The safetensors framing: 8-byte little-endian header length, the JSON header padded to 8 bytes, then
    the data chunks in header order (an iterable, so a large checkpoint is written as it is produced)."""
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    with open(path, "wb") as out:
        out.write(len(header_bytes).to_bytes(8, "little"))
        out.write(header_bytes)
        for data in chunks:
            out.write(data)
