"""The HTML report shows issue 18's results: stack parity, fabric, startup timing, multi-turn, the context ladder
and per-level validity and noise, read from a run folder written through RunDir (real lib calls)."""

from __future__ import annotations

from pathlib import Path

from servegate.report.cli import write_report
from servegate.results.run import RunDir
from servegate.steps import ladder, stack_parity, startup
from servegate.throughput import noise, store, validity
from servegate.throughput.aiperf import parse
from servegate.throughput.workload import Workload

DATA = Path(__file__).parent / "data" / "throughput"


def test_report_shows_the_new_checks(tmp_path):
    run = RunDir("local-scripted", tmp_path)
    fp = {"nvidia_driver": stack_parity.NO_DRIVER, "kernel": "6.1", "cuda_runtime": "none (CPU build)",
          "nccl": "none", "image": stack_parity.NO_IMAGE, "packages": {"torch": "2.13.0+cpu"},
          "freeze_sha256": "ab" * 32, "freeze": {}}
    run.update("stack_parity", value=stack_parity.compare({"local": fp}, "local").as_dict())
    run.update("fabric", value={"problems": ["node b: NCCL_SOCKET_IFNAME=eth9 names interface 'eth9'"],
                                "notes": [], "allreduce": None})
    run.update("startup", value=startup.per_node([("local", "serve")], [
        {"name": "process alive", "seconds": 0.1}, {"name": "port 18081 open", "seconds": 30.0},
        {"name": "/health 200", "seconds": 0.2}, {"name": "/v1/models lists 'x'", "seconds": 0.1},
        {"name": "a streamed chat completion returns a first token", "seconds": 0.4}]))
    run.update("multiturn", value={"plain": {"call": {"tool_calls": [{"name": "get_weather", "arguments": "{}"}]},
                                             "answer": {"content": "Paris is sunny", "reasoning": "r"}, "problems": []},
                                   "parity": ["turn 1 tool calls: plain [...] != streamed []"]})
    climbed = ladder.Ladder(1.0, 1024, [ladder.Rung(1, 128, 26.0, {"local": 20.3})], "rung 1 (128 prompt tokens) "
                            "broke the floor: MemAvailable on local 0.50 GiB < floor 1 GiB")
    run.update("ladder", value=climbed.as_dict())
    (run.path / "ladder").mkdir()
    ladder.plot(climbed, "ladder", run.path / "ladder" / "ladder.png")
    work = Workload(name="chat", tool="aiperf", isl=64, osl=32, concurrency=[4], requests=12, repeats=2)
    level = parse(DATA / "aiperf-c4", work, 4)
    level.validity = validity.for_level(DATA / "aiperf-c4", work).to_dict()
    other = parse(DATA / "aiperf-c4", work, 4)
    other.output_tps *= 1.1
    store.record(run, work, [noise.merge([level, other])], [], {}, 0)
    run.flush()
    written = write_report([run.path], tmp_path / "report")
    text = next(p for p in written if p.suffix == ".html").read_text()
    for words in ("Stack parity", "none (no NVIDIA driver)", "Fabric", "eth9", "Startup timing", "30.1",
                  "Multi-turn tool use", "streamed != plain", "Context ladder", "broke the floor",
                  "Benchmark validity and noise", "[32, 32]", "output_tps +-"):
        assert words in text, words
