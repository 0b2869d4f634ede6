"""Measure a recipe's throughput workloads against a served model and record everything in the run.

Shared by the throughput scenario, the image-bump gate and the fidelity benchmark, so all three measure
the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servegate.config.recipe import Recipe
from servegate.results.run import RunDir
from servegate.throughput import baseline as baselines
from servegate.throughput import provenance, store, vllm_bench
from servegate.throughput.runner import run_workload
from servegate.throughput.target import target_for
from servegate.throughput.thresholds import Violation, check
from servegate.throughput.tools import AIPERF_VERSION
from servegate.throughput.workload import Workload, gpu_count, workloads


@dataclass
class Measurement:
    run_path: Path
    summary: dict[str, Any]
    workloads: list[Workload]
    violations: list[Violation] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.violations)


def measure(
    recipe: Recipe,
    client,
    run: RunDir,
    *,
    hosts=None,
    tokenizer: str | None = None,
    vllm_python: str | None = None,
    sweep: list[int] | None = None,
    log: Callable[[str], None] = print,
) -> Measurement:
    """Run every workload of the recipe against client (a Deployment or an Endpoint), in order."""
    planned = workloads(recipe, sweep)
    target = target_for(client, tokenizer, vllm_python)
    gpus = gpu_count(recipe)
    tools = {"aiperf": AIPERF_VERSION} if any(w.tool == "aiperf" for w in planned) else {}
    if any(w.tool == "vllm-bench" for w in planned):
        tools["vllm-bench"] = vllm_bench.version(target.vllm_python) if target.vllm_python else None
    prov = provenance.collect(recipe, run.data, hosts, client, tools)
    result = Measurement(run.path, store.load(run.path) or {}, planned)
    for workload in planned:
        log(workload.describe())
        levels = run_workload(workload, target, store.folder(run.path), gpus, log=log)
        violations = check(workload, levels)
        result.violations += violations
        result.summary = store.record(run, workload, levels, violations, prov, gpus)
    return result


def regression_check(
    measurement: Measurement,
    baseline_file: Path,
    only_switched_on: bool = False,
    overrides: dict[str, float] | None = None,
) -> list[baselines.Delta]:
    """Deltas against a baseline; with only_switched_on, only workloads whose fail_on_regression is set."""
    deltas = baselines.compare(measurement.summary, baselines.load(baseline_file), overrides)
    if only_switched_on:
        switched = {w.name for w in measurement.workloads if w.fail_on_regression}
        deltas = [d for d in deltas if d.workload in switched]
    return deltas
