"""What vLLM's KV cache manager makes of a KV budget, as vLLM 0.2x-0.32 computes it.

Why model the allocator and not only raw bytes: on hybrid models vLLM pads each Mamba layer's state to
one attention page (raising the attention block size until a page holds the state), groups layers so
every group has the same layer count, and charges each request a fixed number of Mamba blocks per group
(3 with prefix caching, whose 'align' mode keeps a running, a checkpoint and a spare state; 1 without).
The logged "KV cache size: N tokens" is num_blocks / blocks_per_request x max_model_len from vLLM 0.21
on; before (0.18-0.20, _report_kv_cache_config) it was num_blocks // groups x block_size, which
understates hybrid models (vLLM PR #38364) but is what those servers print.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

CPU_BLOCK_SIZE = 128
GPU_BLOCK_SIZE = 16


@dataclass
class Capacity:
    block_size: int
    page_bytes: int  # one block of one layer
    group_size: int  # layers sharing one block id
    groups: int
    num_blocks: int
    blocks_per_request: int
    max_concurrency: float
    tokens: int
    mamba_padding_pct: float | None


def _group_size(attention: int, mamba: int) -> int:
    counts = [c for c in (attention, mamba) if c]
    size = min(counts)
    return max(counts) if max(counts) < size * 1.5 else size


def vllm_capacity(
    *,
    kv_budget_bytes: int,
    max_model_len: int,
    attention_layers: int,
    mamba_layers: int,
    attn_bytes_per_token_layer: float,
    mamba_bytes_per_layer: int,
    block_size: int,
    prefix_caching: bool,
    num_spec: int = 0,
    report_groups: bool = False,
) -> Capacity:
    """Token capacity and max concurrency vLLM will log for this budget (per rank)."""
    if not mamba_layers:
        page = int(block_size * attn_bytes_per_token_layer)
        num_blocks = max(0, kv_budget_bytes // max(1, page * attention_layers))
        per_request = ceil(max_model_len / block_size)
        cap = _capacity(block_size, page, attention_layers, 1, num_blocks, per_request, max_model_len, None)
        return _reported(cap, report_groups)
    per_token = max(attn_bytes_per_token_layer, 1e-9)
    if attention_layers:
        block_size = block_size * ceil(mamba_bytes_per_layer / (block_size * per_token))
    page = max(int(block_size * attn_bytes_per_token_layer), mamba_bytes_per_layer)
    size = _group_size(attention_layers, mamba_layers)
    attn_groups, mamba_groups = ceil(attention_layers / size), ceil(mamba_layers / size)
    mamba_blocks = (3 if prefix_caching else 1) + num_spec
    per_request = attn_groups * ceil(max_model_len / block_size) + mamba_groups * mamba_blocks
    num_blocks = max(0, kv_budget_bytes // (size * page))
    padding = 100.0 * (page - mamba_bytes_per_layer) / mamba_bytes_per_layer
    cap = _capacity(
        block_size, page, size, attn_groups + mamba_groups, num_blocks, per_request, max_model_len, padding
    )
    return _reported(cap, report_groups)


def _reported(cap: Capacity, report_groups: bool) -> Capacity:
    """vLLM < 0.21 logs num_blocks // groups x block_size as its KV cache size in tokens."""
    if report_groups:
        cap.tokens = cap.num_blocks // max(1, cap.groups) * cap.block_size
    return cap


def _capacity(
    block_size, page, group_size, groups, num_blocks, per_request, max_model_len, padding
) -> Capacity:
    concurrency = num_blocks / per_request if per_request else 0.0
    return Capacity(
        block_size,
        page,
        group_size,
        groups,
        int(num_blocks),
        per_request,
        concurrency,
        int(concurrency * max_model_len),
        padding,
    )
