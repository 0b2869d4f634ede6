"""Workloads: one `expect.throughput[]` entry of a recipe, its concurrency levels and its GPU count."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servegate.config.recipe import Recipe
from servegate.errors import RecipeError
from servegate.throughput.schema import THRESHOLDS

TOOLS = ("aiperf", "vllm-bench")
DEFAULT_REQUESTS = 32


@dataclass
class Workload:
    name: str
    tool: str
    isl: int
    osl: int
    concurrency: list[int]
    requests: int | None
    ignore_eos: bool = True
    trace: Path | None = None
    trace_block_size: int | None = None
    extra_inputs: dict[str, Any] = field(default_factory=dict)
    seed: int = 42
    timeout_s: float = 900.0
    thresholds: dict[str, float] = field(default_factory=dict)
    fail_on_regression: bool = False
    tolerance_pct: dict[str, float | None] = field(default_factory=dict)
    prompts: Path | None = None  # aiperf.jsonl + sharegpt.json: the same prompts, both tools
    repeats: int = 1  # runs per concurrency level; >1 gives a confidence interval per metric (noise.py)
    input_tolerance_pct: float = 10.0  # validity.py: prompt lengths around isl
    max_http_error_pct: float = 5.0  # validity.py: share of 4xx/5xx answers that invalidates a level

    @property
    def request_count(self) -> int | None:
        """Requests per level: the recipe's number, 32 for random prompts, every line for a trace."""
        if self.requests is not None:
            return self.requests
        return None if self.trace else DEFAULT_REQUESTS

    def describe(self) -> str:
        shape = f"trace {self.trace.name}" if self.trace else f"isl {self.isl} osl {self.osl}"
        count = self.request_count if self.request_count is not None else "all"
        return (
            f"{self.name}: {shape}, concurrency {self.concurrency}, {count} requests per level, {self.tool}"
        )


def workloads(recipe: Recipe, sweep: list[int] | None = None) -> list[Workload]:
    """The recipe's workloads, validated; `sweep` replaces every workload's concurrency levels."""
    out = [_workload(recipe, index, entry, sweep) for index, entry in enumerate(recipe.expect.throughput)]
    names = [w.name for w in out]
    for name in names:
        if names.count(name) > 1:
            raise RecipeError(
                f"two throughput workloads are named '{name}'",
                where=recipe.where("expect.throughput"),
                fix="give each workload a distinct 'name'",
            )
    return out


def gpu_count(recipe: Recipe) -> int:
    return int(recipe.expect.gpus_per_node or 0) * int(recipe.expect.nodes or 1)


def _workload(recipe: Recipe, index: int, entry: dict, sweep: list[int] | None) -> Workload:
    where = recipe.where(f"expect.throughput.{index}")
    if entry["tool"] not in TOOLS:
        raise RecipeError(
            f"throughput[{index}].tool '{entry['tool']}' is not a known load generator",
            where=where,
            fix=f"use one of: {', '.join(TOOLS)}",
        )
    trace = _trace(recipe, entry.get("trace"), where)
    if trace and entry["tool"] != "aiperf":
        raise RecipeError(
            f"throughput[{index}] replays a trace with {entry['tool']}",
            where=where,
            fix="trace replay (mooncake format) needs tool: aiperf",
        )
    levels = sweep or _levels(entry["concurrency"], index, where)
    name = entry.get("name") or (trace.stem if trace else f"isl{entry['isl']}-osl{entry['osl']}")
    thresholds = {key: entry[key] for key in THRESHOLDS if entry.get(key) is not None}
    if thresholds.get("min_output_tps_per_gpu") is not None and gpu_count(recipe) == 0:
        raise RecipeError(
            f"throughput[{index}] sets min_output_tps_per_gpu but the recipe counts no GPU",
            where=where,
            fix="set expect.gpus_per_node (and expect.nodes), or drop the per-GPU floor",
        )
    return Workload(
        name=name,
        tool=entry["tool"],
        isl=entry["isl"],
        osl=entry["osl"],
        concurrency=levels,
        requests=entry.get("requests"),
        ignore_eos=entry["ignore_eos"],
        trace=trace,
        trace_block_size=entry.get("trace_block_size"),
        extra_inputs=dict(entry.get("extra_inputs") or {}),
        seed=entry["seed"],
        timeout_s=float(entry["timeout_s"]),
        thresholds=thresholds,
        fail_on_regression=entry["fail_on_regression"],
        repeats=max(1, int(entry.get("repeats") or 1)),
        input_tolerance_pct=float(entry.get("input_tolerance_pct", 10.0)),
        max_http_error_pct=float(entry.get("max_http_error_pct", 5.0)),
        tolerance_pct={
            str(k): None if v is None else float(v) for k, v in (entry.get("tolerance_pct") or {}).items()
        },
    )


def _levels(value: Any, index: int, where) -> list[int]:
    levels = value if isinstance(value, list) else [value]
    if not levels or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in levels):
        raise RecipeError(
            f"throughput[{index}].concurrency must be a positive integer or a list of them, found {value!r}",
            where=where,
            fix="write e.g. concurrency: [1, 2, 4]",
        )
    return levels


def _trace(recipe: Recipe, value: str | None, where) -> Path | None:
    if not value:
        return None
    path = Path(value)
    path = path if path.is_absolute() else (recipe.path.parent / path)
    if not path.is_file():
        raise RecipeError(
            f"trace file {path} does not exist",
            where=where,
            fix="stage the mooncake trace (jsonl) there, or fix the path (relative to the recipe)",
        )
    return path.resolve()


def parse_sweep(text: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]; ValueError naming the accepted format otherwise."""
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or any(level <= 0 for level in levels):
        raise ValueError(f"expected comma-separated positive integers like 1,2,4,8, got {text!r}")
    return levels
