"""Step 90, throughput: the recipe's load workloads meet their thresholds, errors kept, no regression."""

import pytest

from servegate.throughput.baseline import regressions


def test_throughput_thresholds(throughput, recipe):
    """Every workload at every concurrency level meets expect.throughput's floors and ceilings."""
    if throughput.violations:
        pytest.fail(
            f"recipe {recipe.name} ({recipe.path}): {len(throughput.violations)} throughput check(s) "
            "failed:\n  "
            + "\n  ".join(str(v) for v in throughput.violations)
            + f"\nraw tool output and the normalised summary: {throughput.run_path / 'throughput'}"
            + "\nfix: if the deployment is right and this is its real capacity, adjust the threshold in the "
            "recipe; a failed level's tool.log says why it failed",
            pytrace=False,
        )


def test_throughput_no_regression(throughput_deltas, throughput_baseline, recipe):
    """Optional (--sg-baseline, or fail_on_regression in a workload): no metric worse than its tolerance."""
    if not throughput_deltas:
        pytest.fail(
            f"baseline {throughput_baseline} shares no workload and concurrency level with this run of "
            f"{recipe.name}; fix: record a baseline from a run of the same workloads",
            pytrace=False,
        )
    worse = regressions(throughput_deltas)
    if worse:
        pytest.fail(
            f"recipe {recipe.name}: {len(worse)} metric(s) regressed against {throughput_baseline}:\n  "
            + "\n  ".join(str(d) for d in worse)
            + "\nfix: find the cause (image, flags, host load); if the change is intended, record a new "
            "baseline with `servegate baseline RUN --force`",
            pytrace=False,
        )
