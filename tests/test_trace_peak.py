"""memory/trace_peak.py: the replay of an allocator trace finds the peak and what is alive then;
memory/gpu_runs.py cases carry argv edits and the trace switch."""

import json

from servegate.memory import gpu_runs, trace_peak

VLLM = "/site/vllm/model_executor/layers/"


def frames(*sites):
    return [{"filename": VLLM + f, "line": line, "name": name} for f, line, name in sites]


def test_replay_finds_the_peak_and_groups_the_live_blocks_by_vllm_site():
    moe = frames(("fused_moe/modular_kernel.py", 1096, "_allocate_buffers"))
    mamba = frames(("mamba/ops/ssd_combined.py", 80, "_mamba_chunk_scan_combined_fwd"),
                   ("mamba/mamba_mixer2.py", 700, "forward"))
    events = [
        {"action": "alloc", "addr": 1, "size": 100, "frames": moe},          # persistent workspace
        {"action": "alloc", "addr": 2, "size": 40, "frames": mamba},
        {"action": "alloc", "addr": 3, "size": 60, "frames": mamba},         # peak: 200
        {"action": "free_requested", "addr": 2, "size": 40},
        {"action": "free_completed", "addr": 2, "size": 40},
        {"action": "free_requested", "addr": 3, "size": 60},
        {"action": "free_requested", "addr": 99, "size": 500},                # a block from before recording
        {"action": "alloc", "addr": 4, "size": 150, "frames": []},            # lower than the peak by then
    ]
    summary = trace_peak.analyze({"device_traces": [events]})
    assert summary["peak_bytes"] == 200 and summary["peak_event"] == 2
    assert summary["live_at_peak_bytes"] == 200
    sites = {row["site"]: (row["bytes"], row["blocks"]) for row in summary["sites"]}
    assert sites["model_executor/layers/fused_moe/modular_kernel.py:1096:_allocate_buffers"] == (100, 1)
    key = ("model_executor/layers/mamba/ops/ssd_combined.py:80:_mamba_chunk_scan_combined_fwd < "
           "model_executor/layers/mamba/mamba_mixer2.py:700:forward")
    assert sites[key] == (100, 2)


def test_large_blocks_keep_their_alloc_and_free_event_indices():
    mib = 1 << 20
    events = [{"action": "alloc", "addr": 1, "size": 300 * mib, "frames": []},
              {"action": "alloc", "addr": 2, "size": 1 * mib, "frames": []},      # too small to follow
              {"action": "alloc", "addr": 3, "size": 64 * mib, "frames": []},
              {"action": "free_requested", "addr": 1, "size": 300 * mib},
              {"action": "free_requested", "addr": 2, "size": 1 * mib}]
    lifetimes = trace_peak.analyze({"device_traces": [events]})["lifetimes"]
    assert [(b["alloc"], b["free"], b["mib"]) for b in lifetimes] == [(0, 3, 300.0), (2, None, 64.0)]


def test_free_completed_without_a_request_still_frees():
    events = [{"action": "alloc", "addr": 1, "size": 10, "frames": []},
              {"action": "free_completed", "addr": 1, "size": 10},
              {"action": "alloc", "addr": 2, "size": 5, "frames": []}]
    summary = trace_peak.analyze({"device_traces": [events]})
    assert summary["peak_bytes"] == 10
    assert trace_peak.analyze({"device_traces": []})["peak_bytes"] == 0


def test_summary_cli_prints_and_refuses_unreadable(tmp_path, capsys):
    path = tmp_path / "peak.json"
    path.write_text(json.dumps({**trace_peak.analyze({"device_traces": [[
        {"action": "alloc", "addr": 1, "size": 2**30, "frames": []}]]}), "torch_peak_increase_bytes": 2**30}))
    assert trace_peak.main([str(path)]) == 0
    assert "1.000 GiB" in capsys.readouterr().out
    assert trace_peak.main([str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_case_as_json_carries_argv_edits_and_trace():
    case = gpu_runs.parse_case('{"name": "s-mtp", "argv": {"--speculative-config": "{\\"method\\": \\"mtp\\"}",'
                               ' "--enforce-eager": "drop-switch"}, "trace": true}')
    assert case == {"name": "s-mtp", "set": {}, "trace": True,
                    "argv": {"--speculative-config": '{"method": "mtp"}', "--enforce-eager": "drop-switch"}}
    assert gpu_runs.parse_case("u020:gpu_memory_utilization=0.2") == {
        "name": "u020", "set": {"gpu_memory_utilization": 0.2}}


def test_hook_wraps_profile_run_when_vllm_imports_it(tmp_path):
    """The sitecustomize in memory/tracehook wraps GPUModelRunner.profile_run as the engine imports it
    (a stand-in vllm package here: the wrapper itself needs CUDA)."""
    import subprocess
    import sys
    from pathlib import Path

    worker = tmp_path / "vllm" / "v1" / "worker"
    worker.mkdir(parents=True)
    for folder in (tmp_path / "vllm", tmp_path / "vllm" / "v1", worker):
        (folder / "__init__.py").write_text("")
    (worker / "gpu_model_runner.py").write_text(
        "class GPUModelRunner:\n    def profile_run(self):\n        return 'ran'\n")
    lib = Path(gpu_runs.__file__).resolve().parents[2]
    env = {"PYTHONPATH": f"{gpu_runs.TRACE_HOOK}:{lib}:{tmp_path}", "SERVEGATE_TRACE_PROFILE": str(tmp_path / "p.json")}
    probe = ("from vllm.v1.worker.gpu_model_runner import GPUModelRunner as R;"
             "print(getattr(R.profile_run, '_servegate_traced', False))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
    env.pop("SERVEGATE_TRACE_PROFILE")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
