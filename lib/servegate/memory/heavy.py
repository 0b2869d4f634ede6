"""The heavy phase: concurrent long prompts that push the KV cache and activations to their peak.

Prompts are calibrated with the server's own /tokenize (chat template included), each starts with its own
request number so prefix caching cannot share them, and generation runs to exactly output_tokens
(ignore_eos). Every request must succeed; each outcome records the token counts the server reports.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from servegate.memory import flags as f

FILLER = (
    "harbor",
    "lantern",
    "meadow",
    "copper",
    "violet",
    "thunder",
    "saddle",
    "orchard",
    "glacier",
    "pepper",
    "marble",
    "falcon",
    "canyon",
    "ribbon",
    "walnut",
    "ember",
)


@dataclass
class HeavySpec:
    concurrency: int
    prompt_tokens: int
    output_tokens: int
    requests: int
    timeout_s: float


@dataclass
class Outcome:
    index: int
    ok: bool
    seconds: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""


@dataclass
class HeavyResult:
    spec: HeavySpec
    started: float
    ended: float
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def heavy_spec(memory, argv: list[str]) -> HeavySpec:
    """The recipe's expect.memory.heavy; defaults from the rendered command (prompts near max_model_len)."""
    heavy = memory.get("heavy") or {}
    max_len = f.int_flag(argv, "--max-model-len", 8192)
    output = int(heavy.get("output_tokens") or 32)
    concurrency = int(heavy.get("concurrency") or min(4, f.int_flag(argv, "--max-num-seqs", 4)))
    prompt = int(heavy.get("prompt_tokens") or max_len - output - 32)
    return HeavySpec(
        concurrency,
        prompt,
        output,
        int(heavy.get("requests") or concurrency),
        float(heavy.get("timeout_s") or 1800),
    )


def count_tokens(deployment, text: str) -> int | None:
    """Prompt tokens of one user message as the server counts them (None if /tokenize is missing)."""
    body = {"model": deployment.model, "messages": [{"role": "user", "content": text}]}
    try:
        response = requests.post(
            deployment.url("/tokenize"), json=body, headers=deployment.headers(), timeout=60
        )
    except requests.RequestException:
        return None
    return int(response.json()["count"]) if response.status_code == 200 else None


def filler(words: int, index: int) -> str:
    head = f"Request {index} of the heavy phase."
    return head + " " + " ".join(FILLER[(i * 7 + index) % len(FILLER)] for i in range(max(0, words)))


def calibrated_words(deployment, target: int) -> int:
    """Filler words whose prompt comes to at most target tokens (three /tokenize rounds)."""
    words = target
    for _ in range(3):
        counted = count_tokens(deployment, filler(words, 0))
        if counted is None or counted == target:
            break
        words = max(1, int(words * target / counted)) if counted > target else words + (target - counted) // 2
    while (counted := count_tokens(deployment, filler(words, 0))) is not None and counted > target:
        words -= max(1, (counted - target))
    return words


def run_heavy(deployment, spec: HeavySpec, on_done=lambda outcome: None) -> HeavyResult:
    words = calibrated_words(deployment, spec.prompt_tokens)
    result = HeavyResult(spec, time.time(), 0.0)

    def one(index: int) -> Outcome:
        started = time.monotonic()
        try:
            reply = deployment.chat(
                [{"role": "user", "content": filler(words, index)}],
                timeout=spec.timeout_s,
                max_tokens=spec.output_tokens,
                temperature=0,
                ignore_eos=True,
            )
            usage = reply.get("usage") or {}
            outcome = Outcome(
                index,
                True,
                time.monotonic() - started,
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
            )
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and reported, never swallowed
            outcome = Outcome(
                index, False, time.monotonic() - started, error=f"{type(exc).__name__}: {exc}"[:300]
            )
        on_done(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
        result.outcomes = list(pool.map(one, range(spec.requests)))
    result.ended = time.time()
    return result
