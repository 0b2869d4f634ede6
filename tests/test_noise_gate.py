"""Noise-aware regression gate (issue 18, item 4): repeats per level, a 95 % interval per metric, and a
regression only when a change exceeds both the tolerance and the measured noise.

Numbers: the real rounds of the H100 fidelity run (results/gpu/20261123-h100-fidelity-bench-dense.tgz,
`vllm bench serve` at concurrency 1 and 8, rounds 2-6; round 1 was the warm-up)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from servegate.throughput import baseline, noise, vllm_bench
from servegate.throughput.workload import Workload

REPO = Path(__file__).resolve().parents[1]
TGZ = REPO / "results" / "gpu" / "20261123-h100-fidelity-bench-dense.tgz"
RUN = "20261123T041934Z-gpu-bench-dense/fidelity"


@pytest.fixture(scope="module")
def rounds(tmp_path_factory) -> dict[int, list]:
    """concurrency -> the five measured rounds of vllm bench, each parsed from its own raw file."""
    out = tmp_path_factory.mktemp("fidelity")
    with tarfile.open(TGZ) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(vllm_bench.RESULT) and "-vllm-bench-r" in m.name]
        tar.extractall(out, members=members, filter="data")
    work = Workload(name="fidelity", tool="vllm-bench", isl=128, osl=64, concurrency=[1, 8], requests=96)
    return {c: [vllm_bench.parse(out / RUN / f"fidelity-c{c}-vllm-bench-r{r}" / f"c{c}", work, c)
                for r in range(2, 7)] for c in (1, 8)}


def summary(levels) -> dict:
    return {"workloads": {"fidelity": {"spec": {"tool": "vllm-bench"},
                                       "levels": [lv.to_dict() for lv in levels]}}}


def scaled(level, factor: float, metrics=("output_tps",)):
    copy = type(level).from_dict(level.to_dict())
    for key in metrics:
        setattr(copy, key, getattr(level, key) * factor)
        if key in copy.ci:
            ci = dict(copy.ci[key])
            ci.update({k: ci[k] * factor for k in ("mean", "low", "high")})
            copy.ci[key] = ci
    return copy


def test_repeats_merge_into_a_median_with_a_confidence_interval(rounds):
    merged = noise.merge(rounds[8])
    tps = sorted(r.output_tps for r in rounds[8])
    assert merged.repeats == 5 and merged.output_tps == tps[2] and merged.completed == 5 * 96
    ci = merged.ci["output_tps"]
    assert ci["n"] == 5 and ci["low"] < merged.output_tps < ci["high"]
    assert 0.5 < ci["half_pct"] < 3.0, ci  # 757-773 tok/s on the H100: about +-1 %
    assert merged.ci["ttft_ms_p50"]["half_pct"] > ci["half_pct"]  # TTFT is the noisier figure


def test_a_change_beyond_tolerance_and_noise_is_a_regression(rounds):
    base = noise.merge(rounds[8])
    current = scaled(base, 0.90)  # -10 % output tok/s, the same spread
    base_file = {"workloads": {"fidelity": {"levels": {"8": {"output_tps": base.output_tps}},
                                            "ci": {"8": base.ci}}}}
    deltas = [d for d in baseline.compare(summary([current]), base_file, {"output_tps": 5})
              if d.metric == "output_tps"]
    assert deltas[0].verdict == "regressed" and deltas[0].noise_pct < 5, str(deltas[0])
    assert "tolerance 5 %, noise +-" in str(deltas[0])


def test_a_change_beyond_tolerance_but_within_noise_is_not(rounds):
    """Concurrency 1's TTFT p50 moves by ~10 % from round to round: a 6 % rise against a 5 % tolerance is noise."""
    base = noise.merge(rounds[1])
    current = scaled(base, 1.06, ("ttft_ms_p50",))
    base_file = {"workloads": {"fidelity": {"levels": {"1": {"ttft_ms_p50": base.ttft_ms_p50}},
                                            "ci": {"1": base.ci}}}}
    delta, = baseline.compare(summary([current]), base_file, {"ttft_ms_p50": 5})
    assert delta.noise_pct > 6, delta
    assert delta.verdict == "within noise" and delta not in baseline.regressions([delta])
    # the same change measured once (no interval): the tolerance alone decides, as before
    once = rounds[1][0]
    single = scaled(once, 1.06, ("ttft_ms_p50",))
    delta, = baseline.compare(summary([single]), {"workloads": {"fidelity": {"levels": {
        "1": {"ttft_ms_p50": once.ttft_ms_p50}}}}}, {"ttft_ms_p50": 5})
    assert delta.verdict == "regressed" and delta.noise_pct is None
    assert "noise not measured (1 repeat)" in str(delta)


def test_the_baseline_keeps_the_interval(tmp_path, rounds):
    from servegate.results.run import RunDir
    from servegate.throughput import store

    run = RunDir("gpu-bench-dense", tmp_path)
    work = Workload(name="fidelity", tool="vllm-bench", isl=128, osl=64, concurrency=[8], requests=96, repeats=5)
    store.record(run, work, [noise.merge(rounds[8])], [], {}, 1)
    data = baseline.make(run.path)
    assert data["workloads"]["fidelity"]["ci"]["8"]["output_tps"]["n"] == 5


def test_t_quantiles():
    assert noise.t95(4) == 2.776 and noise.t95(11) == 2.228 and noise.t95(100) == 1.96
    assert noise.interval([1.0]) is None
