"""The vLLM deployment handle: one object owns launch, readiness, clients and teardown.

Shaped like vLLM's own tests/utils.py RemoteOpenAIServer, improved: it starts in `__enter__` and cleans up
before re-raising when startup fails; it signals whole process groups on every node; every process carries
SERVEGATE_RUN_ID in its environment so a crashed run can be reaped later (`servegate clean`).
"""

from __future__ import annotations

import atexit
import json
import shlex
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

from servegate.errors import ServegateError, ServerExited
from servegate.labels import new_run_id, owner_tag
from servegate.lifecycle import Managed
from servegate.nodes.host import NodeHost
from servegate.render.command import Rendered
from servegate.render.launches import NodeLaunch, env_script
from servegate.results.run import Progress, RunDir
from servegate.waits import Step, StepTiming, run_steps

LOG_TAIL_LINES = 50
_LIVE: set[Deployment] = set()
_LIVE_LOCK = threading.Lock()


@dataclass
class Launched:
    launch: NodeLaunch
    pid: int
    log_path: str
    env_path: str
    exited_rc: int | None = None
    spawned_epoch: float = 0.0  # wall clock (this machine's) when the process was spawned

    @property
    def exit_path(self) -> str:
        return self.log_path.removesuffix(".log") + ".exit"

    @property
    def where(self) -> str:
        return f"vLLM {self.launch.role} on node '{self.launch.node.name}' (pid {self.pid})"


class OpenAIClient:
    """The client half of a served model, shared by Deployment (servegate launched it) and Endpoint (it was
    already running). Subclasses provide `base_url`, `model`, `headers()` and a `timings` dict."""

    timings: dict[str, float]

    def url(self, path: str) -> str:
        return self.base_url + path

    def death_reports(self, lines: int = LOG_TAIL_LINES) -> str:
        """What died and how ('' here: an already-running endpoint has no processes of ours to ask)."""
        return ""

    def explain_failure(self) -> None:
        """Raise a ServegateError that says why the server stopped answering, when that can be told
        (Deployment: which node's process died, its exit signal and log tail); else return."""

    def get(self, path: str, timeout: float = 10) -> requests.Response:
        try:
            return requests.get(self.url(path), headers=self.headers(), timeout=timeout)
        except requests.RequestException:
            self.explain_failure()
            raise

    def chat(self, messages: list[dict], timeout: float = 120, **params: Any) -> dict:
        body = {"model": self.model, "messages": messages, **params}
        try:
            response = requests.post(self.url("/v1/chat/completions"), json=body, headers=self.headers(),
                                     timeout=timeout)
            response.raise_for_status()
        except requests.RequestException:
            self.explain_failure()
            raise
        return response.json()

    def stream_chat(self, messages: list[dict], timeout: float = 120, **params: Any) -> Iterator[dict]:
        """Yield each streamed chunk (parsed JSON) until [DONE]."""
        body = {"model": self.model, "messages": messages, "stream": True, **params}
        with requests.post(self.url("/v1/chat/completions"), json=body, headers=self.headers(), timeout=timeout,
                           stream=True) as response:
            response.raise_for_status()
            for raw in response.iter_lines(decode_unicode=True):
                if not raw or not raw.startswith("data:"):
                    continue
                payload = raw[len("data:"):].strip()
                if payload == "[DONE]":
                    return
                yield json.loads(payload)

    def metrics(self) -> dict[str, float]:
        return parse_prometheus(self.get("/metrics").text)

    # ---- readiness probes (each returns (done, last status)) ----------------------------------------
    def _probe_health(self) -> tuple[bool, str]:
        response = self.get("/health", timeout=5)
        return response.status_code == 200, f"HTTP {response.status_code}"

    def _probe_models(self) -> tuple[bool, str]:
        response = self.get("/v1/models", timeout=5)
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}"
        names = [m.get("id") for m in response.json().get("data", [])]
        return self.model in names, f"listed {names}"

    def _probe_first_token(self) -> tuple[bool, str]:
        started = time.monotonic()
        messages = [{"role": "user", "content": "Say hello."}]
        for chunk in self.stream_chat(messages, max_tokens=8, temperature=0, timeout=60):
            if any(first_text(choice.get("delta") or {}) for choice in chunk.get("choices", [])):
                self.timings["first_token_latency_s"] = time.monotonic() - started
                return True, "first token received"
        return False, "stream ended without a token"


@dataclass
class Deployment(Managed, OpenAIClient):
    """A rendered recipe running on its nodes. Use as a context manager."""

    rendered: Rendered
    hosts: dict[str, NodeHost]
    run: RunDir
    progress: Progress
    bin_dirs: dict[str, str] = field(default_factory=dict)  # node -> dir holding vllm/ray for the host runtime
    ready_timeout_s: float = 600.0
    run_id: str = field(default_factory=new_run_id)
    launched: list[Launched] = field(default_factory=list)
    readiness: list[StepTiming] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    label: str = ""  # distinguishes a variant server's log files (e.g. "-nospec") from the main one's
    ready_from_epoch: float | None = None  # wall clock when the readiness probes began (startup phases' zero)

    def __hash__(self) -> int:
        return id(self)

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        with _LIVE_LOCK:
            _LIVE.add(self)
        started = time.monotonic()
        self.run.update("launch", value={"run_id": self.run_id, "mode": self.rendered.mode, "processes": []})
        self._refuse_busy_port()
        for launch in self.rendered.vllm:  # all first: a --headless follower must run before rank 0 is ready
            self._spawn(launch)
        if any(launch.role == "serve" for launch in self.rendered.vllm):
            self.ready_from_epoch = time.time()
            self.readiness += self.wait_ready()
        self.timings["start_to_first_token_s"] = time.monotonic() - started
        self.run.update("readiness", value=[vars(t) for t in self.readiness])

    def _refuse_busy_port(self) -> None:
        """Readiness would pass against whatever already listens there: refuse to start instead."""
        busy, status = self._probe_port()
        if busy:
            head = self.rendered.cluster.head
            holder = self.hosts[head.name].port_holder_text(self.rendered.port)
            raise ServerExited(f"node '{head.name}': port {self.rendered.port} on {self.api_host} is already in use "
                               f"({status}) before launch, so another server would answer our probes: {holder}")

    def _spawn(self, launch: NodeLaunch) -> Launched:
        host = self.hosts[launch.node.name]
        workdir = host.home_path(launch.node.workdir)
        base = f"{workdir}/runs/{self.run_id}/{launch.role}"
        env_path, log_path = f"{base}.env", f"{base}.log"
        host.write_text(f"{workdir}/runs/{self.run_id}/owner", owner_tag())  # `servegate clean --stale` reads it
        host.write_text(env_path, self._env_file(launch))
        self.run.redact.learn_env(launch.env)
        self.run.redact.learn_argv(launch.argv)
        self.progress("launch", f"{launch.role}: {self.run.redact(launch.text)}", node=launch.node.name)
        pid = host.spawn(launch.argv, env_file=env_path, log_path=log_path, exit_path=f"{base}.exit")
        launched = Launched(launch, pid, log_path, env_path, spawned_epoch=time.time())
        self.launched.append(launched)
        self.run.data["launch"]["processes"].append(
            {"node": launch.node.name, "role": launch.role, "pid": pid, "log": log_path,
             "argv": self.run.redact.argv(launch.argv)})
        self.run.flush()
        return launched

    def _env_file(self, launch: NodeLaunch) -> str:
        return env_script(launch.env, self.run_id, self.bin_dirs.get(launch.node.name))

    def stop(self) -> None:
        """Kill every process group this deployment started (newest first), then save the logs. A node that
        is gone (container stopped, unreachable) is reported and passed: the other nodes are still cleaned."""
        for launched in reversed(self.launched):
            self._carry_on(launched, "stopping", self._stop_one)
        self.save_logs()
        for launched in self.launched:  # the node's raw log holds vLLM's args in clear: the redacted copy stays
            self._carry_on(launched, "removing the env file and raw log", lambda x: self.hosts[x.launch.node.name]
                           .remove_files(x.env_path, x.log_path, x.exit_path))
        for launched in {x.launch.node.name: x for x in self.launched}.values():  # then the run's folder, per node
            self._carry_on(launched, "removing the run folder", self._remove_run_dir)
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def _remove_run_dir(self, launched: Launched) -> None:
        """`<workdir>/runs/<id>/` once its files are gone: the owner tag, then the folder if nothing else is left."""
        self.hosts[launched.launch.node.name].remove_files(launched.env_path.rsplit("/", 1)[0] + "/owner")

    def _stop_one(self, launched: Launched) -> None:
        host = self.hosts[launched.launch.node.name]
        if host.group_alive(launched.pid):
            self.progress("teardown", f"stopping {launched.launch.role} (pgid {launched.pid})",
                          node=launched.launch.node.name)
            if not host.kill_group(launched.pid):
                self.progress("teardown", f"process group {launched.pid} survived SIGKILL",
                              node=launched.launch.node.name)

    def _carry_on(self, launched: Launched, what: str, action) -> None:
        try:
            action(launched)
        except ServegateError as exc:  # NodeUnreachable / a stopped container: say so, go on with the rest
            first = str(exc).splitlines()[0]
            self.progress("teardown", f"{what} {launched.launch.role} skipped, node gone: {first}",
                          node=launched.launch.node.name)
            self.run.update("teardown", f"{launched.launch.node.name}-{launched.launch.role}",
                            f"{what} skipped: {first}")

    def save_logs(self) -> None:
        for launched in self.launched:
            name = f"logs/{launched.launch.node.name}-{launched.launch.role}{self.label}.log"
            self._carry_on(launched, "saving the log", lambda x, name=name: self.run.write_text(
                name, self.hosts[x.launch.node.name].read_text(x.log_path, max_bytes=20_000_000)))

    # ---- state -----------------------------------------------------------------------------------------
    @property
    def server(self) -> Launched:
        return next(item for item in self.launched if item.launch.role == "serve")

    def alive(self) -> bool:
        return not self.dead()

    def dead(self) -> list[Launched]:
        """The launched processes that are no longer running (a node that cannot be reached counts)."""
        gone = []
        for item in self.launched:
            try:
                if not self.hosts[item.launch.node.name].alive(item.pid):
                    gone.append(item)
            except ServegateError:
                gone.append(item)
        return gone

    def death_report(self, launched: Launched, lines: int = LOG_TAIL_LINES) -> str:
        """'<role> on node N (pid P) died: killed by SIGKILL (exit 137)' with its log tail; for a node that cannot
        be reached, that node by name and why."""
        host = self.hosts[launched.launch.node.name]
        try:
            rc = host.run(f"cat {shlex.quote(launched.exit_path)} 2>/dev/null").stdout.strip()
            tail = self.run.redact(host.run(f"tail -n {lines} {shlex.quote(launched.log_path)}").stdout)
        except ServegateError as exc:
            return f"{launched.where} is gone with its node: {str(exc).splitlines()[0]}"
        if rc.isdigit() and int(rc) > 128:
            try:
                how = f"killed by {signal.Signals(int(rc) - 128).name} (exit {rc})"
            except ValueError:
                how = f"exit {rc}"
        elif rc.isdigit():
            how = f"exited with status {rc}"
        else:
            how = "ended; no exit status recorded (its whole process group was killed)"
        return f"{launched.where} died: {how}\n--- {launched.where} log tail ---\n{tail}"

    def death_reports(self, lines: int = LOG_TAIL_LINES) -> str:
        """Every dead process's death report ('' while all run)."""
        return "\n".join(self.death_report(x, lines) for x in self.dead())

    def explain_failure(self) -> None:
        gone = self.dead()
        if gone:
            raise ServerExited("the server stopped answering: " + "\n".join(self.death_report(x) for x in gone))

    def log_tail(self, lines: int = LOG_TAIL_LINES, role: str = "serve") -> str:
        gone = self.dead()
        if gone:  # what died says why (a follower's tail, not the head's), with its exit signal
            return "\n".join(self.death_report(x, lines) for x in gone)
        for launched in self.launched:
            if launched.launch.role == role:
                host = self.hosts[launched.launch.node.name]
                text = host.run(f"tail -n {lines} {shlex.quote(launched.log_path)}").stdout
                return self.run.redact(text)
        return ""

    # ---- clients ---------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.api_host}:{self.rendered.port}"

    @property
    def api_host(self) -> str:
        head = self.rendered.cluster.head
        return "127.0.0.1" if head.host.startswith("local://") else head.fabric_ip

    @property
    def model(self) -> str:
        return self.rendered.served_model_name

    def headers(self) -> dict[str, str]:
        key = self.rendered.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    # ---- readiness -------------------------------------------------------------------------------------
    def wait_ready(self) -> list[StepTiming]:
        server = self.server
        host = self.hosts[server.launch.node.name]
        budget = self.ready_timeout_s
        deadline = time.monotonic() + budget
        steps = [
            Step("process alive", lambda: (host.alive(server.pid), f"pid {server.pid}"), 15, 0.5),
            Step(f"port {self.rendered.port} open", self._probe_port, budget, 1.0),
            Step("/health 200", self._probe_health, budget, 1.0),
            Step(f"/v1/models lists '{self.model}'", self._probe_models, 60, 1.0),
            Step("a streamed chat completion returns a first token", self._probe_first_token, 120, 2.0),
        ]
        return run_steps(steps, still_running=self.alive, log_tail=self.log_tail,
                         on_step=lambda name: self.progress("readiness", name, node=server.launch.node.name),
                         deadline=deadline, subject=server.where)

    def _probe_port(self) -> tuple[bool, str]:
        with socket.socket() as sock:
            sock.settimeout(2)
            rc = sock.connect_ex((self.api_host, self.rendered.port))
        return rc == 0, f"connect rc {rc}"


TEXT_FIELDS = ("content", "reasoning", "reasoning_content")


def first_text(delta: dict) -> str:
    for name in TEXT_FIELDS:
        if delta.get(name):
            return delta[name]
    return "tool_calls" if delta.get("tool_calls") else ""


def parse_prometheus(text: str) -> dict[str, float]:
    """Sum each metric name over its label sets: {'vllm:generation_tokens_total': 123.0, ...}."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        try:
            totals[name] = totals.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return totals


def _kill_live_deployments() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for deployment in live:
        deployment.stop()


atexit.register(_kill_live_deployments)
