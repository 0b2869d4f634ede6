"""Run a workload: one watched tool run per concurrency level, raw output kept, results normalised.

A level that breaks (tool error, timeout, server gone) is recorded with whatever the tool wrote and with
its error count; once the server is gone the remaining levels are recorded as not run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from servegate.errors import ServegateError
from servegate.nodes.host import quote
from servegate.throughput import aiperf, noise, validity, vllm_bench
from servegate.throughput.proc import Watched, WatchPolicy, run_watched
from servegate.throughput.schema import LevelResult
from servegate.throughput.target import Target
from servegate.throughput.tools import AIPERF, ensure_tool
from servegate.throughput.workload import Workload

TOOL_LOG = "tool.log"
SERVER_DOWN = "server stopped answering"


def run_workload(
    workload: Workload, target: Target, out_root: Path, gpus: int, log: Callable[[str], None] = print
) -> list[LevelResult]:
    """Every concurrency level of the workload, in order; raw output under out_root/<workload>/c<N>/."""
    levels: list[LevelResult] = []
    server_gone = False
    for concurrency in workload.concurrency:
        if server_gone:
            levels.append(
                LevelResult(
                    workload.name,
                    workload.tool,
                    concurrency,
                    status="not run",
                    note="the server had stopped answering at an earlier level",
                )
            )
            continue
        log(f"{workload.name}: concurrency {concurrency} with {workload.tool}")
        level = _repeated(workload, concurrency, target, out_root, gpus, log)
        log(f"{workload.name}: concurrency {concurrency}: {summary_line(level)}")
        levels.append(level)
        server_gone = level.note.startswith(SERVER_DOWN)
    return levels


def _repeated(workload: Workload, concurrency: int, target: Target, out_root: Path, gpus: int,
              log: Callable[[str], None]) -> LevelResult:
    """The level once, or `repeats` times (raw output under c<N>/r<i>/) merged with a confidence interval."""
    if workload.repeats <= 1:
        return run_level(workload, concurrency, target, out_root, gpus)
    runs = []
    for repeat in range(1, workload.repeats + 1):
        runs.append(run_level(workload, concurrency, target, out_root, gpus, repeat))
        log(f"{workload.name}: concurrency {concurrency} repeat {repeat}/{workload.repeats}: {summary_line(runs[-1])}")
        if runs[-1].note.startswith(SERVER_DOWN):
            break
    return noise.merge(runs)


def run_level(workload: Workload, concurrency: int, target: Target, out_root: Path, gpus: int,
              repeat: int | None = None) -> LevelResult:
    level_dir = out_root / workload.name / f"c{concurrency}"
    level_dir = level_dir / f"r{repeat}" if repeat else level_dir
    level_dir.mkdir(parents=True, exist_ok=True)
    argv = _command(workload, concurrency, target, level_dir, gpus)
    shown = [a if a != target.api_key else "***" for a in argv]
    (level_dir / "command.txt").write_text(quote(shown) + "\n")
    policy = WatchPolicy(timeout_s=workload.timeout_s)
    watched = run_watched(argv, level_dir / TOOL_LOG, level_dir, target.alive, policy, env=_tool_env())
    parse = aiperf.parse if workload.tool == "aiperf" else vllm_bench.parse
    level = parse(level_dir, workload, concurrency)
    level.raw = (
        str(level_dir.relative_to(out_root.parent))
        if out_root.parent in level_dir.parents
        else str(level_dir)
    )
    level.per_gpu(gpus)
    level.validity = validity.for_level(level_dir, workload).to_dict()
    if watched.outcome == "exited" and (level.errors or 0) > 0 and _gone(target.alive):
        watched.outcome, watched.server_down_after_s = "server down", watched.seconds  # died near the end
    if watched.outcome == "server down" and target.why_down is not None:
        _record_death(level, target.why_down(), level_dir)
    _judge(level, watched, workload, level_dir)
    return level


def _record_death(level: LevelResult, report: str, level_dir: Path) -> None:
    """The dead processes' reports go beside the tool's log; their 'X died: how' lines into the note."""
    if not report:
        return
    (level_dir / DEATH_LOG).write_text(report + "\n")
    died = [line for line in report.splitlines() if " died: " in line or " is gone with its node" in line]
    level.note = f"{'; '.join(died)} (log tail in {DEATH_LOG}). {level.note}".strip()


DEATH_LOG = "server-death.log"


def _gone(alive, probes: int = 2, pause_s: float = 2.0) -> bool:
    """The server failed every one of a few liveness probes (one slow answer is not a dead server)."""
    for index in range(probes):
        if alive():
            return False
        if index + 1 < probes:
            time.sleep(pause_s)
    return True


def _command(workload: Workload, concurrency: int, target: Target, level_dir: Path, gpus: int) -> list[str]:
    if workload.tool == "aiperf":
        return aiperf.command(str(ensure_tool(AIPERF)), workload, concurrency, target, level_dir, gpus)
    if not target.vllm_python:
        raise ServegateError(
            f"workload '{workload.name}' uses vllm-bench but no interpreter with vLLM is known "
            f"for {target.base_url}\n  fix: set SERVEGATE_VLLM_BENCH_PYTHON=/path/to/python "
            f"(one that imports vllm), or use tool: aiperf"
        )
    return vllm_bench.command(target.vllm_python, workload, concurrency, target, level_dir)


def _tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the tool's own venv only
    return env


def _judge(level: LevelResult, watched: Watched, workload: Workload, level_dir: Path) -> None:
    """Turn how the tool ended into the level's status, keeping every error as evidence."""
    planned = workload.request_count or level.requests or 0
    if watched.outcome == "server down":
        level.status = "failed"
        missing = max(planned - (level.completed or 0), 0)
        level.errors = max(level.errors or 0, missing)
        level.note = (
            f"{SERVER_DOWN} {watched.server_down_after_s:.0f} s into the level; "
            f"{level.completed or 0}/{planned} requests completed. {level.note}"
        ).strip()
    elif watched.outcome == "timeout":
        level.status = "failed"
        level.errors = max(level.errors or 0, max(planned - (level.completed or 0), 0))
        level.note = (
            f"stopped after timeout_s={workload.timeout_s:g} s with {level.completed or 0}/{planned} "
            f"requests completed. {level.note}"
        ).strip()
    elif watched.rc != 0:
        level.status = "failed"
        level.note = (
            f"{workload.tool} exited {watched.rc}: {_tail(level_dir / TOOL_LOG)} {level.note}".strip()
        )
    elif level.output_tps is None:
        level.status = "failed"
        level.note = f"{workload.tool} exited 0 but reported no throughput. {level.note}".strip()
    invalid = level.validity.get("problems") or []
    if invalid:
        level.status = "failed"
        level.note = f"{level.note} invalid benchmark: {'; '.join(invalid)}".strip()  # SERVER_DOWN stays first


def _tail(path: Path, lines: int = 4) -> str:
    """The tool's first ERROR line (the cause, not the cascade after it), else its last lines."""
    text = path.read_text(errors="replace") if path.is_file() else ""
    errors = [line.strip() for line in text.splitlines() if " ERROR " in line or line.startswith("Error")]
    if errors:
        return errors[0][:500]
    wanted = [
        line.strip(" │") for line in text.splitlines() if line.strip(" │╭╰─") and "Event loop" not in line
    ]
    return " | ".join(wanted[-lines:])[:500]


def summary_line(level: LevelResult) -> str:
    if level.output_tps is None:
        return f"{level.status}: {level.note[:200]}"
    return (
        f"{level.status}, {level.output_tps:.1f} output tok/s, TTFT p50 {_ms(level.ttft_ms_p50)}, "
        f"ITL p50 {_ms(level.itl_ms_p50)}, {level.completed} ok / {level.errors} errors"
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"
