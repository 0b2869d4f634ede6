"""What vLLM says about its KV cache in the server log, and how far the plan is from it.

Lines read (vLLM 0.18-0.32, CPU and CUDA workers):
  "CPU KV cache size: 1,198,372 tokens, Maximum concurrency for 1,024 tokens per request: 1170.29x"
  "GPU KV cache size: ..." (same shape), "Available KV cache memory: 19.47 GiB",
  "Explicitly set (1.0/10.71) GiB for KV cache", "Padding mamba page size by 548.10% ...",
  "Setting attention block size to 2128 tokens ...".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from servegate.memory.plan import GIB, MemoryPlan

PATTERNS = {
    "kv_tokens": re.compile(r"KV cache size: ([\d,]+) tokens"),
    "max_concurrency": re.compile(r"Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x"),
    "kv_memory_gib": re.compile(r"Available KV cache memory: ([\d.]+) GiB"),
    "kv_space_gib": re.compile(r"Explicitly set \(([\d.]+)/[\d.]+\) GiB for KV cache"),
    "mamba_padding_pct": re.compile(r"Padding mamba page size by ([\d.]+)%"),
    "attention_block_size": re.compile(r"Setting attention block size to (\d+) tokens"),
    # CUDA graphs (vLLM 0.21+ gpu_model_runner.profile_cudagraph_memory / capture_model)
    "cudagraph_estimate_gib": re.compile(r"Estimated CUDA graph memory: ([\d.]+) GiB total"),
    "cudagraph_gib": re.compile(r"Graph capturing finished in [\d.]+ secs, took ([\d.]+) GiB"),
}
for _mode in ("PIECEWISE", "FULL"):  # DEBUG, one line per mode: "Estimated FULL CUDA graph memory:
    # 12.00 MiB first-capture + (5-1) x 1.00 MiB per-graph"
    _head = rf"Estimated {_mode} CUDA graph memory: "
    PATTERNS[f"cudagraph_{_mode.lower()}_first_mib"] = re.compile(_head + r"([\d.]+) MiB first-capture")
    PATTERNS[f"cudagraph_{_mode.lower()}_graphs"] = re.compile(_head + r"[\d.]+ MiB first-capture \+ \((\d+)-1\)")
    PATTERNS[f"cudagraph_{_mode.lower()}_per_graph_mib"] = re.compile(
        _head + r"[\d.]+ MiB first-capture \+ \(\d+-1\) \S+ ([\d.]+) MiB per-graph")


def parse_kv_log(text: str) -> dict[str, float]:
    """The last value of each KV-cache line in a vLLM server log (absent lines are left out)."""
    found: dict[str, float] = {}
    for key, pattern in PATTERNS.items():
        matches = pattern.findall(text)
        if matches:
            found[key] = float(matches[-1].replace(",", ""))
    if "kv_space_gib" in found and "kv_memory_gib" not in found:
        found["kv_memory_gib"] = found.pop("kv_space_gib")
    found.pop("kv_space_gib", None)
    return found


@dataclass
class Comparison:
    quantity: str
    predicted: float
    logged: float

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted - self.logged) / self.logged if self.logged else float("inf")

    def __str__(self) -> str:
        return (
            f"{self.quantity}: predicted {self.predicted:,.2f}, vLLM logged {self.logged:,.2f} "
            f"({self.error_pct:+.2f}%)"
        )


def compare(plan: MemoryPlan, logged: dict[str, float]) -> list[Comparison]:
    """Planner vs vLLM for every quantity both have. The raw-bytes capacity (no paging) is shown too,
    so the cost of vLLM's page padding and per-request Mamba blocks is visible."""
    cap = plan.capacity
    rows = []
    if "kv_memory_gib" in logged:
        rows.append(
            Comparison("KV cache memory per rank (GiB)", plan.kv_budget_bytes / GIB, logged["kv_memory_gib"])
        )
    if "kv_tokens" in logged:
        rows.append(Comparison("KV cache tokens (allocator model)", cap.tokens, logged["kv_tokens"]))
        per_seq = plan.kv_need_one_bytes / plan.max_model_len if plan.max_model_len else 0
        raw = plan.kv_budget_bytes / per_seq if per_seq else 0
        rows.append(Comparison("KV cache tokens (raw bytes, no paging)", raw, logged["kv_tokens"]))
    if "max_concurrency" in logged:
        rows.append(
            Comparison("max concurrency at max_model_len", cap.max_concurrency, logged["max_concurrency"])
        )
    if "mamba_padding_pct" in logged and cap.mamba_padding_pct is not None:
        rows.append(Comparison("Mamba page padding (%)", cap.mamba_padding_pct, logged["mamba_padding_pct"]))
        implied = cap.page_bytes / (1 + logged["mamba_padding_pct"] / 100)
        rows.append(
            Comparison("Mamba state per layer per sequence (B)", plan.mamba_state_bytes_per_layer, implied)
        )
    if "attention_block_size" in logged:
        rows.append(
            Comparison("attention block size (tokens)", cap.block_size, logged["attention_block_size"])
        )
    return rows
