"""Node transports: every node is a testinfra host, so local, SSH and docker nodes run the same code.

`run()` never raises: it returns rc/stdout/stderr/command. `check()` raises a NodeError naming the node.
An unreachable node is a different error (`NodeUnreachable`) from a command that failed on it.
"""

from __future__ import annotations

import os
import re
import secrets
import select
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath

import testinfra

from servegate.config.cluster import Node
from servegate.errors import Location, NodeError


def exit_meaning(code: int) -> str:
    """'exit 137: killed by SIGKILL' for a status over 128 (128 + the signal), else 'exit N'."""
    if code > 128:
        try:
            return f"exit {code}: killed by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"exit {code}"


class NodeUnreachable(NodeError):
    """The node could not be contacted at all."""


DOCKER_GONE = re.compile(r"No such container|is not running")
BATCH_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
BATCH_MARK = "SERVEGATE-BATCH"
WRITE_CHUNK = 32 * 1024  # one printf argument, far below the kernel's 128 KiB per-argument limit


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    command: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def batch_script(commands: dict[str, str], boundary: str) -> str:
    """One shell script running every command in its own subshell (stdin /dev/null), one after another.

    Framing costs no process per command beyond the subshells: a command's stdout goes straight out, its
    stderr is captured in a variable, then comes `\\n<boundary> name rc\\n<stderr>\\n<boundary> end\\n`. A
    random boundary per batch (new_boundary) means no output can forge it. Run it with `bash -c` or in a Session."""
    bad = [name for name in commands if not BATCH_NAME.match(name)]
    if bad:
        raise ValueError(f"batch command names must match {BATCH_NAME.pattern}: {bad}")
    lines = ["exec 3>&1"]
    for name, command in commands.items():
        lines += [
            "sg_err=$( (",
            command,
            ") 2>&1 1>&3 </dev/null; printf '.%s' \"$?\" )",  # fd 3: the batch's stdout (exec 3>&1 above)
            f"printf '\\n{boundary} {name} %s\\n%s\\n{boundary} end\\n' \"${{sg_err##*.}}\" \"${{sg_err%.*}}\"",
        ]
    return "\n".join(lines)


def new_boundary() -> str:
    return f"{BATCH_MARK}-{secrets.token_hex(8)}"


def parse_batch(commands: dict[str, str], boundary: str, result: Result) -> dict[str, Result]:
    """Per-command results of a batch; a command the batch did not reach gets the batch's own exit and stderr."""
    mark = re.escape(boundary)
    record = re.compile(rf"(.*?)\n{mark} ([A-Za-z0-9_.-]+) (\d+)\n(.*?)\n{mark} end\n", re.S)
    seen: dict[str, Result] = {}
    for match in record.finditer(result.stdout):
        out, name, rc, err = match.groups()
        if name in commands:
            seen[name] = Result(int(rc), out, err, commands[name])
    unreached = result.rc if result.rc != 0 else 1
    return {name: seen.get(name) or Result(unreached, "", f"batch ended before this command: {result.stderr}",
                                           command)
            for name, command in commands.items()}


SESSION_MARK = "SERVEGATE-SESSION-DONE"


class Session:
    """A long-lived bash on the node, fed commands on stdin, like an SSH ControlMaster: a round trip then costs
    what the command costs, not a new `docker exec` or ssh handshake. Output framing: each command's stdout,
    then a line `MARK-<token> <rc>`; its stderr is dropped (batches carry their commands' stderr in stdout)."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def run(self, command: str, timeout: float = 600) -> Result:
        token = f"{SESSION_MARK}-{secrets.token_hex(6)}"
        line = f"(\n{command}\n) 2>/dev/null </dev/null; printf '\\n{token} %s\\n' $?\n"
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except (OSError, ValueError) as exc:  # ValueError: the session was closed here
            return Result(255, "", f"session closed: {exc}", command)
        return self._read_until(token, command, time.monotonic() + timeout)

    def _read_until(self, token: str, command: str, deadline: float) -> Result:
        buffer = b""
        needle = f"\n{token} ".encode()
        fd = self.proc.stdout.fileno()
        while needle not in buffer or not buffer.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                self.close()
                return Result(124, buffer.decode(errors="replace"), "session command timed out", command)
            chunk = os.read(fd, 65536)
            if not chunk:
                return Result(255, buffer.decode(errors="replace"), "session closed by the node", command)
            buffer += chunk
        out, _, tail = buffer.partition(needle)
        rc = tail.split()[0].decode() if tail.split() else "255"
        return Result(int(rc) if rc.isdigit() else 255, out.decode(errors="replace"), "", command)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@contextmanager
def sessions(hosts: dict[str, NodeHost]) -> Iterator[dict[str, NodeHost]]:
    """Open a Session on every node at once (its setup is the connection, not the checks); close them all."""
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        list(pool.map(lambda host: host.open_session(), hosts.values()))
    try:
        yield hosts
    finally:
        for host in hosts.values():
            host.close_session()


class NodeHost:
    """One node, reached through its testinfra backend."""

    def __init__(self, node: Node):
        self.node = node
        self._host = None
        self._session: Session | None = None

    def open_session(self) -> None:
        from servegate.nodes.transport import command_argv
        if self._session is None:
            self._session = Session(command_argv(self.node.host, "exec bash"))
            if "servegate-ping" not in self._session.run("echo servegate-ping", timeout=60).stdout:
                self.close_session()
                raise NodeUnreachable("could not open a session on the node", where=Location(node=self.name),
                                      fix=f"check that {self.node.host} is reachable")

    def close_session(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def testinfra_host(self):
        if self._host is None:
            self._host = testinfra.get_host(self.node.host)
        return self._host

    def run(self, command: str, timeout: float | None = None) -> Result:
        """Run a shell command on the node; never raises for a non-zero exit."""
        wrapped = command if timeout is None else f"timeout {int(timeout)} bash -c {shlex.quote(command)}"
        try:
            out = self.testinfra_host.run(wrapped)
        except Exception as exc:  # noqa: BLE001 - testinfra backends raise anything on transport failure
            raise NodeUnreachable(f"cannot run a command: {type(exc).__name__}: {exc}",
                                  where=Location(node=self.name),
                                  fix=f"check that {self.node.host} is reachable") from None
        if out.rc != 0 and self.node.host.startswith("docker://") and DOCKER_GONE.search(out.stderr or ""):
            self._raise_if_container_down()
        return Result(out.rc, out.stdout, out.stderr, command)

    def run_batch(self, commands: dict[str, str], timeout: float | None = None) -> dict[str, Result]:
        """Run several commands in ONE round trip to the node, each in its own subshell, one after another;
        each gets its own rc/stdout/stderr. A round trip (docker exec, ssh) costs far more than df or ss."""
        boundary = new_boundary()
        script = batch_script(commands, boundary)
        if self._session is not None:
            result = self._session.run(script, timeout=timeout or 600)
        else:
            result = self.run("bash -c " + shlex.quote(script), timeout=timeout)
        return parse_batch(commands, boundary, result)

    def _raise_if_container_down(self) -> None:
        """testinfra's docker backend reports a stopped or missing node container as a failed command."""
        name = self.node.host.removeprefix("docker://").rpartition("@")[2]
        state = subprocess.run(["docker", "container", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                                name], capture_output=True, text=True)
        status, _, code = state.stdout.strip().partition(" ")
        if state.returncode != 0 or status != "running":
            seen = (status or "absent") + (f" ({exit_meaning(int(code))})" if status == "exited" and code.isdigit()
                                           else "")
            raise NodeUnreachable(f"node container {name} is {seen}", where=Location(node=self.name),
                                  fix=f"start it (servegate sim up CLUSTER) or check {self.node.host}")

    def check(self, command: str, what: str, timeout: float | None = None) -> Result:
        result = self.run(command, timeout=timeout)
        if not result.ok:
            tail = (result.stderr or result.stdout).strip().splitlines()[-10:]
            raise NodeError(f"{what} failed (exit {result.rc}): {' | '.join(tail)}",
                            where=Location(node=self.name), fix=f"command was: {command}")
        return result

    def ping(self) -> float:
        """Round-trip one trivial command; raise NodeUnreachable if the node does not answer."""
        started = time.monotonic()
        result = self.run("echo servegate-ping")
        if "servegate-ping" not in result.stdout:
            raise NodeUnreachable(f"node did not answer (rc {result.rc}: {result.stderr.strip()[:200]})",
                                  where=Location(node=self.name), fix=f"check that {self.node.host} is up")
        return time.monotonic() - started

    def home_path(self, path: str) -> str:
        if path.startswith("~/"):
            home = self.run("printf %s \"$HOME\"").stdout.strip() or "/root"
            return home + path[1:]
        return path

    def remove_files(self, *paths: str) -> None:
        """Remove files, then each one's folder if that left it empty (a run's `runs/<id>/` on the node)."""
        files = " ".join(shlex.quote(p) for p in paths)
        folders = " ".join(sorted({shlex.quote(str(PurePosixPath(p).parent)) for p in paths}))
        self.run(f"rm -f {files}; rmdir {folders} 2>/dev/null; true")

    def read_text(self, path: str, max_bytes: int | None = None) -> str:
        command = f"cat {shlex.quote(path)}" if max_bytes is None else f"tail -c {max_bytes} {shlex.quote(path)}"
        return self.run(command).stdout

    def write_text(self, path: str, text: str, mode: str = "600") -> None:
        """Write text to a file on the node, private (umask 077), for any content: no heredoc, every piece
        a single-quoted printf argument, so no text can end the command or run one. A failure names the
        file and the node's error, never the command (it holds the text, which may hold secrets)."""
        folder, target = shlex.quote(str(PurePosixPath(path).parent)), shlex.quote(path)
        chunks = [text[i:i + WRITE_CHUNK] for i in range(0, len(text), WRITE_CHUNK)] or [""]
        steps = [f"umask 077; mkdir -p {folder} && printf %s {shlex.quote(chunks[0])} > {target}"]
        steps += [f"printf %s {shlex.quote(chunk)} >> {target}" for chunk in chunks[1:]]
        steps.append(f"chmod {shlex.quote(mode)} {target}")
        for step in steps:
            result = self.run(step)
            if not result.ok:
                raise NodeError(f"writing {path} failed (exit {result.rc}): {result.stderr.strip()[-300:]}",
                                where=Location(node=self.name), fix="check the folder exists and is writable")

    def spawn(self, argv: list[str], *, env_file: str, log_path: str, cwd: str | None = None,
              exit_path: str | None = None) -> int:
        """Start a detached process group running argv with the env file sourced; return its pid (= pgid).
        With exit_path, a shell stays as the group leader and writes argv's exit status there when it ends
        (a status over 128 is 128 + the signal that killed it), so a death can be told apart later."""
        # the env file is removed as soon as the shell has read it: secrets do not outlive the start
        run = (f"{quote(argv)}; echo $? > {shlex.quote(exit_path)}" if exit_path else f"exec {quote(argv)}")
        inner = "set -a; . {env}; set +a; rm -f {env}; {cd}{run}".format(
            env=shlex.quote(env_file), cd=f"cd {shlex.quote(cwd)} && " if cwd else "", run=run)
        command = (f"mkdir -p {shlex.quote(str(PurePosixPath(log_path).parent))}; "
                   f"setsid bash -c {shlex.quote(inner)} > {shlex.quote(log_path)} 2>&1 < /dev/null & echo $!")
        result = self.check(command, "starting a process")
        return int(result.stdout.strip().splitlines()[-1])

    def alive(self, pid: int) -> bool:
        state = self.run(f"ps -o stat= -p {int(pid)}").stdout.strip()
        return bool(state) and not state.startswith("Z")

    def group_alive(self, pgid: int) -> bool:
        """True while any non-zombie process is left in the process group."""
        table = self.run("ps -e -o pgid=,stat=").stdout
        return any(fields[0] == str(int(pgid)) and not fields[1].startswith("Z")
                   for fields in (line.split() for line in table.splitlines()) if len(fields) >= 2)

    def kill_group(self, pgid: int, grace_s: float = 15.0) -> bool:
        """SIGTERM the process group, wait up to grace_s, then SIGKILL. True if the group is gone."""
        self.run(f"kill -TERM -{int(pgid)} 2>/dev/null")
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not self.group_alive(pgid):
                return True
            time.sleep(0.25)
        self.run(f"kill -KILL -{int(pgid)} 2>/dev/null")
        time.sleep(0.5)
        return not self.group_alive(pgid)

    def port_open(self, ip: str, port: int) -> bool:
        probe = f"exec 3<>/dev/tcp/{ip}/{int(port)}"
        return self.run(f"timeout 2 bash -c {shlex.quote(probe)}").ok

    def port_holders(self, port: int) -> list[tuple[int, str]]:
        """(pid, command line) of the processes listening on TCP `port`, where the node lets us see them:
        `ss -p` when present, else the socket inode of /proc/net/tcp{,6} found among /proc/*/fd."""
        hexport = f"{int(port):04X}"
        script = (
            f"if command -v ss >/dev/null 2>&1; then ss -Htlnp {shlex.quote(f'sport = :{int(port)}')} 2>/dev/null "
            "| grep -o 'pid=[0-9]*' | cut -d= -f2; else "
            "for f in /proc/net/tcp /proc/net/tcp6; do [ -r \"$f\" ] || continue; "
            f"while read -r sl local rem st a b c uid t inode rest; do case \"$local:$st\" in *:{hexport}:0A) "
            "for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null | grep -q \"socket:\\[$inode\\]\" && "
            "echo ${p#/proc/}; done;; esac; done < \"$f\"; done; fi | sort -un | "
            "while read -r pid; do "
            "printf '%s %s\\n' \"$pid\" \"$(tr '\\0' ' ' < /proc/$pid/cmdline 2>/dev/null)\"; done")
        holders = []
        for line in self.run(script, timeout=30).stdout.splitlines():
            pid, _, command = line.strip().partition(" ")
            if pid.isdigit():
                holders.append((int(pid), command.strip()[:200]))
        return holders

    def port_holder_text(self, port: int) -> str:
        """Who holds `port` and what to do, for an error message: `servegate clean` only for a servegate run's
        process (its environment carries SERVEGATE_RUN_ID), never for a foreign one."""
        holders = self.port_holders(port)
        if not holders:
            return (f"the holding process is not visible from here (another user's or another namespace's); "
                    f"find it with `ss -tlnp 'sport = :{int(port)}'` on node {self.name}, or use another port "
                    f"(--set port=N)")
        ours = set(self.processes_with_env("SERVEGATE_RUN_ID"))
        named = "; ".join(f"pid {pid}: {command or '?'}" for pid, command in holders)
        if any(pid in ours for pid, _ in holders):
            return f"held by a servegate run's process ({named}); `servegate clean --stale` reaps a dead run's"
        return (f"held by {named} (not a servegate process: `servegate clean` will not touch it); stop it or "
                f"use another port (--set port=N)")

    def processes_with_env(self, key: str, value: str | None = None) -> list[int]:
        """PIDs whose environment holds key (=value): how servegate finds what a run left behind."""
        needle = f"{key}={value}" if value is not None else f"{key}="
        script = ("for d in /proc/[0-9]*; do tr '\\0' '\\n' < $d/environ 2>/dev/null | "
                  f"grep -q ^{shlex.quote(needle)} && echo ${{d#/proc/}}; done; true")
        out = self.run(script).stdout
        return [int(p) for p in out.split() if p.isdigit()]
