"""Wait strategies: ordered probes, each polled against a deadline, that say which step failed and why.

A probe returns (done, last_status). The runner stops early when `still_running()` says the process died,
so "exited unexpectedly" and "failed to start in time" are told apart, both with the log tail.
This is servegate's only poll loop: the server's readiness, Ray's bring-up, the simulated cluster's nodes
and the docker engine all wait through `run_steps` or `wait_until`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from servegate.errors import ServerExited, WaitTimeout

Probe = Callable[[], tuple[bool, str]]


@dataclass
class Step:
    name: str
    probe: Probe
    timeout_s: float
    poll_s: float = 1.0


@dataclass
class StepTiming:
    name: str
    seconds: float
    status: str


def run_steps(steps: list[Step], *, still_running: Callable[[], bool] = lambda: True,
              log_tail: Callable[[], str] = lambda: "", on_step: Callable[[str], None] = lambda _: None,
              deadline: float | None = None, subject: str = "the server") -> list[StepTiming]:
    """Run each step in order; raise ServerExited or WaitTimeout naming step i/n, wait, last status, log tail."""
    timings: list[StepTiming] = []
    for index, step in enumerate(steps, start=1):
        on_step(step.name)
        started = time.monotonic()
        step_deadline = started + step.timeout_s
        if deadline is not None:
            step_deadline = min(step_deadline, deadline)
        status = "not polled yet"
        while True:
            try:
                done, status = step.probe()
            except Exception as exc:  # noqa: BLE001 - a probe failing is a status, reported below
                done, status = False, f"{type(exc).__name__}: {exc}"
            if done:
                timings.append(StepTiming(step.name, time.monotonic() - started, status))
                break
            if not still_running():
                raise ServerExited(f"step {index}/{len(steps)}: {subject} exited unexpectedly while waiting for "
                                   f"{step.name} (after {time.monotonic() - started:.0f} s); last status: {status}"
                                   f"{_tail(log_tail, subject)}")
            if time.monotonic() >= step_deadline:
                raise WaitTimeout(f"step {index}/{len(steps)}: {step.name} ({subject}) did not succeed after "
                                  f"{time.monotonic() - started:.0f} s; last status: {status}"
                                  f"{_tail(log_tail, subject)}")
            time.sleep(step.poll_s)
    return timings


def wait_until(name: str, probe: Probe, timeout_s: float, poll_s: float = 1.0, **kwargs) -> StepTiming:
    """One step: poll `probe` until done; the same errors as run_steps (kwargs: still_running, log_tail, subject)."""
    return run_steps([Step(name, probe, timeout_s, poll_s)], **kwargs)[0]


def _tail(log_tail: Callable[[], str], subject: str) -> str:
    text = log_tail()
    return f"\n--- {subject} log tail ---\n{text}" if text else ""
