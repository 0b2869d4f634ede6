"""The context ladder: prompt length raised rung by rung up to the recipe's context, memory watched.

Seed 004 climbed 256K -> 512K -> 1M by hand; TechPreacher's LADDER aborts at a MemAvailable floor. Each rung
sends one streamed completion whose prompt is exactly N token IDs (the completions API takes token lists,
so no tokenizer is needed), records TTFT, then MemAvailable on every node (and GPU memory where nvidia-smi
answers). The climb stops at the first rung that takes a node below the floor, or whose request fails, and
names that rung.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

MEMINFO = "awk '/^MemAvailable:/ {print $2}' /proc/meminfo"
GPU_USED = "nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null"
FILLER_TOKEN = 100  # any ID the vocabulary holds; the ladder measures lengths, not meaning


@dataclass
class Rung:
    index: int
    tokens: int
    ttft_ms: float | None = None
    mem_available_gib: dict[str, float] = field(default_factory=dict)
    gpu_used_gib: dict[str, float] = field(default_factory=dict)
    error: str = ""


@dataclass
class Ladder:
    floor_gib: float
    context: int
    rungs: list[Rung] = field(default_factory=list)
    broke: str = ""  # why the climb stopped early, naming the rung; "" when it reached the top

    def as_dict(self) -> dict[str, Any]:
        return {"floor_gib": self.floor_gib, "context": self.context, "broke": self.broke,
                "rungs": [asdict(r) for r in self.rungs]}


def rung_sizes(start: int, context: int, output_tokens: int, factor: float = 2.0) -> list[int]:
    """start, start*factor, ... and the top rung: the longest prompt the context holds with the output."""
    top = context - output_tokens - 1
    sizes, size = [], max(1, start)
    while size < top:
        sizes.append(int(size))
        size = int(size * factor) if factor > 1 else top
    return sizes + [top]


def memory(hosts: dict) -> tuple[dict[str, float], dict[str, float]]:
    """MemAvailable (GiB) and GPU memory used (GiB, summed over GPUs; absent without nvidia-smi) per node."""
    mem, gpu = {}, {}
    for name, host in hosts.items():
        out = host.run(MEMINFO)
        if out.ok and out.stdout.strip():
            mem[name] = round(int(out.stdout.split()[0]) / 1024 / 1024, 3)
        used = host.run(GPU_USED)
        if used.ok and used.stdout.strip():
            gpu[name] = round(sum(float(x) for x in used.stdout.split()) / 1024, 3)
    return mem, gpu


def first_token_ms(client, tokens: int, output_tokens: int, timeout_s: float) -> float:
    """One streamed completion with a prompt of exactly `tokens` IDs: milliseconds to its first token."""
    body = {"model": client.model, "prompt": [FILLER_TOKEN] * tokens, "max_tokens": output_tokens,
            "temperature": 0, "stream": True, "ignore_eos": True}
    started = time.monotonic()
    with requests.post(client.url("/v1/completions"), json=body, headers=client.headers(), timeout=timeout_s,
                       stream=True) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        for raw in response.iter_lines(decode_unicode=True):
            if raw and raw.startswith("data:") and raw[5:].strip() != "[DONE]":
                chunk = json.loads(raw[5:])
                if chunk.get("choices"):  # a generated token, even one whose text is empty (a special token)
                    return 1000.0 * (time.monotonic() - started)
    raise RuntimeError("the stream ended without a token")


def climb(send: Callable[[int], float], measure: Callable[[], tuple[dict, dict]], sizes: list[int],
          floor_gib: float, context: int) -> Ladder:
    """Each rung in turn; stop at the first that fails or leaves a node under the floor."""
    ladder = Ladder(floor_gib, context)
    for index, tokens in enumerate(sizes, start=1):
        rung = Rung(index, tokens)
        ladder.rungs.append(rung)
        try:
            rung.ttft_ms = round(send(tokens), 1)
        except (requests.RequestException, RuntimeError) as exc:
            rung.error = str(exc)[:300]
        rung.mem_available_gib, rung.gpu_used_gib = measure()
        low = {n: v for n, v in rung.mem_available_gib.items() if v < floor_gib}
        if low:
            node, value = min(low.items(), key=lambda item: item[1])
            ladder.broke = (f"rung {index} ({tokens} prompt tokens) broke the floor: MemAvailable on {node} "
                            f"{value:.2f} GiB < floor {floor_gib:g} GiB")
        elif rung.error:
            ladder.broke = f"rung {index} ({tokens} prompt tokens) failed: {rung.error}"
        if ladder.broke:
            break
    return ladder


def plot(ladder: Ladder, title: str, out) -> None:
    import matplotlib  # noqa: PLC0415 - optional heavy dependency (the `plot` extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - as above

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    xs = [r.tokens for r in ladder.rungs]
    top.plot(xs, [r.ttft_ms for r in ladder.rungs], marker="o")
    top.set_ylabel("TTFT (ms)")
    for node in sorted({n for r in ladder.rungs for n in r.mem_available_gib}):
        bottom.plot(xs, [r.mem_available_gib.get(node) for r in ladder.rungs], marker="o", label=node)
    bottom.axhline(ladder.floor_gib, color="red", linestyle="--", label=f"floor {ladder.floor_gib:g} GiB")
    bottom.set_ylabel("MemAvailable (GiB)")
    bottom.set_xlabel("prompt tokens")
    bottom.set_xscale("log", base=2)
    bottom.legend()
    top.set_title(title + (f"\n{ladder.broke}" if ladder.broke else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
