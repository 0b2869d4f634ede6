"""Thresholds: each level of a workload against the recipe's floors and ceilings."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from servegate.throughput.schema import METRICS, THRESHOLDS, LevelResult
from servegate.throughput.workload import Workload


@dataclass
class Violation:
    workload: str
    concurrency: int
    metric: str
    threshold_key: str
    threshold: float | None
    measured: float | None
    detail: str = ""

    def __str__(self) -> str:
        if self.metric == "status":
            return (
                f"workload '{self.workload}' at concurrency {self.concurrency}: level failed: {self.detail}"
            )
        meta = METRICS[self.metric]
        bound = ">=" if THRESHOLDS[self.threshold_key][1] == "min" else "<="
        seen = "not measured" if self.measured is None else f"measured {self.measured:.4g} {meta.unit}"
        return (
            f"workload '{self.workload}' at concurrency {self.concurrency}: {meta.label} ({self.metric}) "
            f"{seen}, threshold {bound} {self.threshold:g} {meta.unit} "
            f"(expect.throughput {self.threshold_key})" + (f"; {self.detail}" if self.detail else "")
        )

    def to_dict(self) -> dict:
        return asdict(self) | {"message": str(self)}


def check(workload: Workload, levels: list[LevelResult]) -> list[Violation]:
    violations: list[Violation] = []
    for level in levels:
        if level.status != "ok":
            violations.append(
                Violation(
                    workload.name, level.concurrency, "status", "", None, None, level.note or level.status
                )
            )
            if level.output_tps is None:  # nothing was measured: one message, not one per threshold
                continue
        violations += _level(workload, level)
    return violations


def _level(workload: Workload, level: LevelResult) -> list[Violation]:
    out = []
    thresholds = dict(workload.thresholds)
    thresholds.setdefault("max_errors", 0)
    for key, threshold in thresholds.items():
        metric, bound = THRESHOLDS[key]
        measured = getattr(level, metric)
        if measured is None and metric == "errors":
            continue  # the tool reported no count; the status check above already fails the level
        ok = measured is not None and (measured >= threshold if bound == "min" else measured <= threshold)
        if not ok:
            detail = (
                f"first errors: {level.error_samples[:2]}"
                if metric == "errors" and level.error_samples
                else ""
            )
            out.append(Violation(workload.name, level.concurrency, metric, key, threshold, measured, detail))
    return out
