"""The memory sampler: one long-running reader per node, from before launch to after teardown.

Each node runs a small bash loop (spawned through NodeHost, so any transport works) that appends one line
per tick to a file on the node: its clock, MemTotal/MemAvailable/MemFree/Cached from /proc/meminfo and,
where GPUs exist, `nvidia-smi --query-gpu` memory. On unified memory nvidia-smi reports nothing useful,
so /proc/meminfo is the number that matters there. The controller only marks phases (load, warmup, idle,
heavy, teardown) with its own clock; the node's clock offset is measured once at start.
"""

from __future__ import annotations

import os
import shlex
import time
import uuid
from dataclasses import dataclass, field

from servegate.errors import ServegateError
from servegate.labels import OWNER_VAR, RUN_ID_VAR, owner_tag
from servegate.nodes.host import NodeHost

MEMINFO_KEYS = ("MemTotal", "MemAvailable", "MemFree", "Cached")
MAX_SECONDS = 12 * 3600  # the loop ends by itself even if nobody stops it

LOOP = r"""
period={period}; gpu={gpu}; owner={owner}; end=$((SECONDS + {max_s}))
while [ "$SECONDS" -lt "$end" ]; do
  if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then exit 0; fi
  line="${{EPOCHREALTIME:-$(date +%s.%N)}}"
  while read -r k v _; do
    case "$k" in MemTotal:|MemAvailable:|MemFree:|Cached:) line="$line ${{k%:}}=$v";; esac
  done < /proc/meminfo
  if [ "$gpu" = 1 ]; then
    line="$line gpu=$(nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv,noheader,nounits \
      2>/dev/null | tr -d ' ' | tr '\n' ';')"
  fi
  echo "$line"
  sleep "$period"
done
"""


@dataclass
class Sample:
    t: float  # controller clock (epoch seconds)
    kib: dict[str, int]  # MemTotal, MemAvailable, MemFree, Cached in KiB
    gpus: list[tuple[int, int, int]] = field(default_factory=list)  # (index, used MiB, total MiB)

    def gib(self, key: str) -> float:
        return self.kib.get(key, 0) / 2**20


def parse_line(line: str, offset: float) -> Sample | None:
    parts = line.split()
    try:
        t = float(parts[0].replace(",", ".")) - offset
    except (IndexError, ValueError):
        return None
    kib, gpus = {}, []
    for part in parts[1:]:
        key, _, value = part.partition("=")
        if key in MEMINFO_KEYS and value.isdigit():
            kib[key] = int(value)
        elif key == "gpu":
            for row in filter(None, value.split(";")):
                fields = row.split(",")
                if len(fields) == 3 and all(x.strip().isdigit() for x in fields):
                    gpus.append(tuple(int(x) for x in fields))
    return Sample(t, kib, gpus) if "MemAvailable" in kib else None


class NodeSampler:
    """The sampling loop on one node."""

    def __init__(self, host: NodeHost, hz: float, sampler_id: str):
        self.host, self.hz, self.sampler_id = host, hz, sampler_id
        base = f"{host.home_path(host.node.workdir)}/runs/{sampler_id}"
        self.path, self.env_path = f"{base}/memory-{host.name}.log", f"{base}/memory-{host.name}.env"
        self.owner_path = f"{base}/owner"  # `servegate clean` removes the folder once this owner is gone
        self.pgid: int | None = None
        self.offset = 0.0
        self.gpu = False

    def start(self) -> None:
        self.gpu = bool(self.host.node.gpus) or self.host.run("command -v nvidia-smi").ok
        local = self.host.node.host.startswith("local://")
        script = LOOP.format(
            period=f"{1.0 / self.hz:.3f}",
            gpu=int(self.gpu),
            max_s=MAX_SECONDS,
            owner=os.getpid() if local else "''",
        )
        self.host.write_text(self.owner_path, owner_tag())
        self.host.write_text(
            self.env_path,
            f"export {RUN_ID_VAR}={self.sampler_id}\nexport {OWNER_VAR}={shlex.quote(owner_tag())}",
        )
        self.offset = self._clock_offset()
        self.pgid = self.host.spawn(["bash", "-c", script], env_file=self.env_path, log_path=self.path)

    def _clock_offset(self) -> float:
        before = time.time()
        out = self.host.run('echo "${EPOCHREALTIME:-$(date +%s.%N)}"').stdout.strip().replace(",", ".")
        after = time.time()
        try:
            return float(out) - (before + after) / 2
        except ValueError:
            return 0.0

    def samples(self) -> list[Sample]:
        text = self.host.read_text(self.path)
        return [s for s in (parse_line(line, self.offset) for line in text.splitlines()) if s]

    def stop(self) -> None:
        if self.pgid is not None:
            self.host.kill_group(self.pgid, grace_s=5)
            self.pgid = None
        self.host.remove_files(self.env_path, self.path, self.owner_path)  # samples read first (MemorySampler.stop)


class MemorySampler:
    """Samplers on every node plus the phase marks; a context manager (stop() is safe to call twice)."""

    def __init__(self, hosts: dict[str, NodeHost], hz: float = 2.0):
        self.sampler_id = f"mem-{uuid.uuid4().hex[:10]}"
        self.nodes = {name: NodeSampler(host, hz, self.sampler_id) for name, host in hosts.items()}
        self.marks: list[tuple[float, str]] = []
        self.started = self.stopped = None
        self._final: dict[str, list[Sample]] = {}
        self.gone: dict[str, str] = {}  # node -> why its samples could not be read at stop (the node died)

    def __enter__(self) -> MemorySampler:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        self.started = time.time()
        try:
            for sampler in self.nodes.values():
                sampler.start()
        except BaseException:
            self.stop()
            raise
        self.mark("start")

    def stop(self) -> None:
        if self.stopped is not None:
            return
        self.mark("stop")
        self.stopped = time.time()
        for name, sampler in self.nodes.items():
            try:
                self._final[name] = sampler.samples()
                sampler.stop()
            except ServegateError as exc:  # a node that died mid-run: its samples are lost, the others kept
                self._final.setdefault(name, [])
                self.gone[name] = str(exc).splitlines()[0]

    def mark(self, phase: str, at: float | None = None) -> None:
        self.marks.append((time.time() if at is None else at, phase))
        self.marks.sort()

    def mark_ready(self, readiness) -> None:
        """After readiness: 'warmup' began when /health answered (the rest is model warm-up), then 'idle'."""
        now = time.time()
        names = [step.name for step in readiness]
        health = next((i for i, name in enumerate(names) if name.startswith("/health")), None)
        if health is not None:
            self.mark("warmup", now - sum(step.seconds for step in readiness[health + 1 :]))
        self.mark("idle", now)

    def samples(self, node: str) -> list[Sample]:
        return self._final[node] if node in self._final else self.nodes[node].samples()

    def windows(self) -> list[tuple[str, float, float]]:
        """(phase, start, end) spans between consecutive marks; 'start'/'stop' bound the timeline."""
        end = self.stopped or time.time()
        spans = []
        for index, (at, phase) in enumerate(self.marks):
            if phase in ("start", "stop"):
                continue
            following = self.marks[index + 1][0] if index + 1 < len(self.marks) else end
            spans.append((phase, at, following))
        return spans

    def phase_of(self, t: float) -> str:
        current = "start"
        for at, phase in self.marks:
            if at <= t and phase not in ("start", "stop"):
                current = phase
        return current

    def samples_in(self, node: str, phase: str, pad_s: float = 0.0) -> list[Sample]:
        """Samples taken during a phase; pad_s widens each span (a short phase still gets its neighbours)."""
        spans = [(s - pad_s, e + pad_s) for name, s, e in self.windows() if name == phase]
        return [x for x in self.samples(node) if any(s <= x.t <= e for s, e in spans)]


def sample_rate(samples: list[Sample]) -> float:
    if len(samples) < 2:
        return 0.0
    return (len(samples) - 1) / (samples[-1].t - samples[0].t)
