"""Weight bytes from safetensors headers, without loading a single weight.

A .safetensors file starts with an 8-byte little-endian header length, then that many bytes of JSON:
{tensor name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}. The bytes a tensor
takes are end - begin, exact for every dtype (packed NVFP4 included). The files are read on the node
that holds them, through NodeHost.run, so a model on a remote head is planned the same way.
"""

from __future__ import annotations

import json
import shlex
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servegate.errors import Location, NodeError

FILE_MARK = "@@servegate-safetensors@@"
CONFIG_MARK = "@@servegate-config@@"
MAX_HEADER_BYTES = 100 * 2**20


@dataclass
class WeightSummary:
    files: int = 0
    tensors: int = 0
    bytes: int = 0
    by_dtype: dict[str, int] = field(default_factory=dict)


def summarize_headers(headers: list[dict[str, Any]]) -> WeightSummary:
    summary = WeightSummary(files=len(headers))
    for header in headers:
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            begin, end = info["data_offsets"]
            summary.tensors += 1
            summary.bytes += int(end) - int(begin)
            summary.by_dtype[info["dtype"]] = summary.by_dtype.get(info["dtype"], 0) + int(end) - int(begin)
    return summary


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of one local .safetensors file."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > MAX_HEADER_BYTES:
            raise NodeError(f"{path}: safetensors header claims {length} bytes; not a safetensors file?")
        return json.loads(handle.read(length))


def _dump_command(model_dir: str) -> str:
    d = shlex.quote(model_dir.rstrip("/"))
    return (
        f"cat {d}/config.json || exit 3; echo; echo {CONFIG_MARK}; "
        f'for f in {d}/*.safetensors; do [ -e "$f" ] || continue; '
        f'n=$(od -An -t u8 -N8 "$f" | tr -d \' \'); echo "{FILE_MARK} $f $n"; '
        f'tail -c +9 "$f" | head -c "$n"; echo; done'
    )


def read_model_dir(host, model_dir: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config.json, [safetensors header per file]) of a model folder on a node (a NodeHost)."""
    result = host.run(_dump_command(model_dir), timeout=120)
    if result.rc == 3 or CONFIG_MARK not in result.stdout:
        raise NodeError(
            f"no config.json in {model_dir}: {result.stderr.strip()[:300]}",
            where=Location(node=host.name),
            fix="download the model (or generate it) first, or add a shape file under "
            "recipes/models/shapes/ naming this model",
        )
    config_text, _, rest = result.stdout.partition(CONFIG_MARK)
    headers = []
    for chunk in rest.split(FILE_MARK)[1:]:
        first, _, body = chunk.partition("\n")
        try:
            headers.append(json.loads(body.strip()))
        except json.JSONDecodeError as exc:
            raise NodeError(
                f"safetensors header of {first.split()[0]} is not JSON: {exc}",
                where=Location(node=host.name),
                fix="check the file is complete",
            ) from None
    return json.loads(config_text), headers
