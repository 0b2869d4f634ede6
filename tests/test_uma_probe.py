"""The unified-memory probe: wraps MemorySnapshot.measure on import, records the host beside vLLM's figures,
and finds the worker's init -> after-profile window (memory/uma_probe.py)."""

import json
import sys

from servegate.memory import uma_probe
from servegate.memory.uma_probe import install, read, window

MODULE = """
class MemorySnapshot:
    def __init__(self, non_torch):
        self.torch_memory, self.cuda_memory, self.non_torch_memory = 5 << 30, (5 << 30) + non_torch, non_torch
        self.free_memory, self.total_memory = 70 << 30, 80 << 30
        self.measure()

    def measure(self):
        self.measured = True
"""


def init_device(module):
    return module.MemorySnapshot(100 << 20)


def memory_profiling(module, non_torch):
    module.MemorySnapshot(non_torch)


def test_the_probe_wraps_the_snapshot_class_when_its_module_is_imported(tmp_path, monkeypatch):
    (tmp_path / "fake_mem_utils.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(uma_probe, "TARGET_MODULE", "fake_mem_utils")
    probe = tmp_path / "probe.jsonl"
    install(str(probe))
    try:
        import fake_mem_utils
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path if type(f).__module__ != "servegate.memory.import_hook"]
        sys.modules.pop("fake_mem_utils", None)
    assert init_device(fake_mem_utils).measured
    held = bytearray(64 << 20)  # the process's heap grows between the snapshots
    held[::4096] = b"x" * len(held[::4096])
    memory_profiling(fake_mem_utils, 300 << 20)
    memory_profiling(fake_mem_utils, 400 << 20)
    rows = read(probe)
    assert [r["non_torch_memory"] for r in rows] == [100 << 20, 300 << 20, 400 << 20]
    assert "init_device" in rows[0]["callers"] and all(r["MemTotal"] > r["MemAvailable"] > 0 for r in rows)
    found = window(rows)
    assert found["device_non_torch_bytes"] == 300 << 20
    assert found["worker_rss_anon_bytes"] >= 60 << 20
    assert found["uma_non_torch_bytes"] == found["host_bytes"] + (300 << 20)
    del held


def test_a_run_that_stopped_before_profiling_has_no_window_and_a_bad_line_is_named(tmp_path):
    base = {"pid": 7, "MemTotal": 10, "MemAvailable": 5, "RssAnon": 1, "non_torch_memory": 0}
    rows = [{**base, "t": 1.0, "callers": ["measure", "__init__", "init_device"]},
            {**base, "t": 2.0, "callers": ["measure", "memory_profiling"]}]
    assert window(rows) is None
    other_process = {**base, "pid": 8, "t": 3.0, "callers": ["memory_profiling"]}
    assert window(rows + [other_process, {**other_process, "t": 4.0}]) is None
    bad = tmp_path / "probe.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\nnot json\n")
    try:
        read(bad)
    except ValueError as exc:
        assert f"{bad}:2" in str(exc)
    else:
        raise AssertionError("a broken line must be named")
