"""Run a load generator as its own process group, watched: it ends on its own, or is stopped when the
server stops answering or the level's time is up. Whatever it leaves behind in its group is killed, so
nothing keeps running after a level, whatever happened."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEAD_AFTER = 2  # consecutive failed liveness probes before the server counts as down
# SIGINT first: AIPerf then writes what it has; helpers that ignore it get SIGTERM, then SIGKILL.
STOP_STEPS = ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0))


@dataclass
class Watched:
    pid: int  # also the process group id
    rc: int | None
    outcome: str  # "exited" | "server down" | "timeout"
    seconds: float
    server_down_after_s: float | None = None
    stopped_group: bool = False


@dataclass(frozen=True)
class WatchPolicy:
    timeout_s: float
    grace_s: float = 15.0  # how long the tool may go on recording errors once the server is gone
    probe_every_s: float = 3.0
    poll_s: float = 0.5
    stop_steps: tuple = STOP_STEPS


def run_watched(
    argv: list[str],
    log_path: Path,
    cwd: Path,
    alive: Callable[[], bool],
    policy: WatchPolicy,
    env: dict[str, str] | None = None,
) -> Watched:
    """Run argv (output to log_path) until it exits, the server has been down for grace_s, or time is up."""
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
            env=env,
        )
    try:
        outcome, down_at = _wait(proc, alive, started, policy)
    except BaseException:
        stop_group(proc, policy.stop_steps)
        raise
    stopped = outcome != "exited"
    if stopped or group_members(proc.pid):  # stopped, or it exited leaving helpers in its group
        stopped = True
        stop_group(proc, policy.stop_steps)
    return Watched(proc.pid, proc.poll(), outcome, time.monotonic() - started, down_at, stopped)


def _wait(proc: subprocess.Popen, alive, started: float, policy: WatchPolicy) -> tuple[str, float | None]:
    failures, down_at, next_probe = 0, None, started + policy.probe_every_s
    while proc.poll() is None:
        now = time.monotonic()
        if now - started > policy.timeout_s:
            return "timeout", down_at
        if down_at is not None and now - started - down_at > policy.grace_s:
            return "server down", down_at
        if down_at is None and now >= next_probe:
            failures = 0 if alive() else failures + 1
            if failures >= DEAD_AFTER:
                down_at = now - started
            next_probe = now + policy.probe_every_s
        time.sleep(policy.poll_s)
    return ("server down" if down_at is not None else "exited"), down_at


def group_members(pgid: int) -> list[int]:
    """PIDs (not zombies) whose process group is pgid."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def stop_group(proc: subprocess.Popen, steps=STOP_STEPS) -> bool:
    """Signal the whole group, escalating step by step; True once no member is left."""
    for sig, wait_s in steps:
        proc.poll()
        if not group_members(proc.pid):
            return True
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()
            if not group_members(proc.pid):
                return True
            time.sleep(0.2)
    proc.poll()
    return not group_members(proc.pid)
