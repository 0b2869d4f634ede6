"""Byte streams between nodes, over the same URLs testinfra uses (local://, docker://, ssh://).

testinfra's run() takes a command and returns its output; moving an image (`docker save | docker load`) or
a model folder (`tar c | tar x`) needs a pipe from one node's command into another's. This module turns a
node URL plus a shell command into the local argv that runs it there, and joins two such argvs with a
pipe through this machine. SSH options come from the URL's query, as in testinfra (`ssh_config`,
`ssh_identity_file`, `timeout`).
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass

from servegate.errors import Location, NodeError

SSH_BASE_OPTIONS = ("-o", "BatchMode=yes")


def command_argv(url: str, command: str) -> list[str]:
    """The argv that, run here, runs `command` (a bash script) on the host named by the testinfra URL."""
    scheme, _, rest = url.partition("://")
    parsed = urllib.parse.urlparse(url)
    if scheme == "local":
        return ["bash", "-c", command]
    if scheme == "docker":
        user, _, name = parsed.netloc.rpartition("@")
        return ["docker", "exec", "-i", *(["-u", user] if user else []), name, "bash", "-c", command]
    if scheme in ("ssh", "paramiko"):
        return ssh_argv(parsed) + ["bash -c " + shlex.quote(command)]
    raise NodeError(
        f"host URL {url!r}: streaming over '{scheme}://' is not supported",
        fix="use local://, docker://NAME or ssh://user@host for nodes that receive images or models",
    )


def ssh_argv(parsed: urllib.parse.ParseResult) -> list[str]:
    query = urllib.parse.parse_qs(parsed.query)
    argv = ["ssh", *SSH_BASE_OPTIONS, "-o", f"ConnectTimeout={query.get('timeout', ['10'])[0]}"]
    if "ssh_config" in query:
        argv += ["-F", query["ssh_config"][0]]
    if "ssh_identity_file" in query:
        argv += ["-i", query["ssh_identity_file"][0]]
    if parsed.username:
        argv += ["-l", urllib.parse.unquote(parsed.username)]
    if parsed.port:
        argv += ["-p", str(parsed.port)]
    return argv + [parsed.hostname or ""]


@dataclass
class PipeResult:
    source_rc: int
    sink_rc: int
    source_stderr: str
    sink_stdout: str
    sink_stderr: str
    bytes: int

    @property
    def ok(self) -> bool:
        return self.source_rc == 0 and self.sink_rc == 0


def pipe_argvs(source: list[str], sink: list[str], timeout: float = 3600) -> PipeResult:
    """Run `source | sink` through this machine, counting the bytes; never raises for a non-zero exit."""
    src = subprocess.Popen(source, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    dst = subprocess.Popen(sink, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outputs: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda k=k, s=s: outputs.__setitem__(k, s.read()), daemon=True)
        for k, s in (("src_err", src.stderr), ("dst_out", dst.stdout), ("dst_err", dst.stderr))
    ]
    for reader in readers:
        reader.start()
    moved = 0
    killer = threading.Timer(timeout, lambda: (src.kill(), dst.kill()))
    killer.start()
    try:
        for block in iter(lambda: src.stdout.read(1 << 20), b""):
            moved += len(block)
            dst.stdin.write(block)
    except (BrokenPipeError, ValueError):
        pass  # the receiver stopped reading: its exit status says why
    finally:
        for stream in (dst.stdin, src.stdout):
            try:
                stream.close()
            except BrokenPipeError:
                pass
        src.wait()
        dst.wait()
        killer.cancel()
        for reader in readers:
            reader.join(timeout=10)
    text = {k: v.decode(errors="replace") for k, v in outputs.items()}
    return PipeResult(
        src.returncode,
        dst.returncode,
        text.get("src_err", ""),
        text.get("dst_out", ""),
        text.get("dst_err", ""),
        moved,
    )


def pipe_between(
    source_url: str,
    source_command: str,
    sink_url: str,
    sink_command: str,
    *,
    what: str,
    node: str,
    timeout: float = 3600,
) -> PipeResult:
    """`source_command` on one host piped into `sink_command` on another; raise naming node and step."""
    result = pipe_argvs(
        command_argv(source_url, source_command), command_argv(sink_url, sink_command), timeout
    )
    if not result.ok:
        raise NodeError(
            f"{what} failed: source exit {result.source_rc} ({result.source_stderr.strip()[-300:]}), "
            f"receiver exit {result.sink_rc} ({result.sink_stderr.strip()[-300:]})",
            where=Location(node=node),
            fix=f"source: {source_command} | receiver: {sink_command}",
        )
    return result


def send_bytes(url: str, data: bytes, command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Feed data to `command` on the host (e.g. write a file: `cat > PATH`)."""
    return subprocess.run(command_argv(url, command), input=data, capture_output=True, timeout=timeout)
