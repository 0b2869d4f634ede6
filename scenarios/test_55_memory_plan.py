"""Step 55, memory plan: before anything launches, the recipe's weights, KV and Mamba state fit its budget
and its nodes (predicted from config.json and safetensors headers; no weights loaded)."""

import warnings


class MemoryPlanWarning(UserWarning):
    """The plan fits, but leaves less than the recipe's margin or limits concurrency."""


def test_memory_plan_fits(memory_plan, stack):
    for line in memory_plan.lines():
        stack.progress("memory plan", line)
    for finding in memory_plan.findings:
        if finding.level == "warn":
            warnings.warn(MemoryPlanWarning(str(finding)), stacklevel=1)
    failures = [str(f) for f in memory_plan.findings if f.level == "fail"]
    assert not failures, (
        "the memory plan cannot fit:\n"
        + "\n".join(failures)
        + "\nfull plan:\n  "
        + "\n  ".join(memory_plan.lines())
    )
