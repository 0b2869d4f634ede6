"""Speculative decoding, measured over a live server: draft and accepted token counters from /metrics
around a batch of greedy chats whose prompts give a drafter something to match."""

from __future__ import annotations

from dataclasses import dataclass

from servegate.serve.chat import from_message

DRAFTS = "vllm:spec_decode_num_draft_tokens_total"
ACCEPTED = "vllm:spec_decode_num_accepted_tokens_total"
THINKING_OFF = {"chat_template_kwargs": {"enable_thinking": False}}


@dataclass
class SpecDecodeRun:
    texts: list[str]
    drafted: float
    accepted: float
    counters_live: bool

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None


def prompts(script, count: int) -> list[list[dict]]:
    """Prompts that give a drafter something to match: the expected answer quoted in the question."""
    quote = script["plain"]["content"] if script else "The quick brown fox jumps over the lazy dog."
    return [[{"role": "user", "content": f"Request {i}. Repeat exactly: {quote}"}] for i in range(count)]


def greedy_texts(server, messages_list, max_tokens: int = 64) -> list[str]:
    return [from_message(server.chat(m, temperature=0, max_tokens=max_tokens, **THINKING_OFF)).content or ""
            for m in messages_list]


def measure(server, script, requests: int) -> SpecDecodeRun:
    before = server.metrics()
    live = all(name in before for name in (DRAFTS, ACCEPTED))
    texts = greedy_texts(server, prompts(script, requests))
    after = server.metrics()
    drafted = after.get(DRAFTS, 0.0) - before.get(DRAFTS, 0.0)
    accepted = after.get(ACCEPTED, 0.0) - before.get(ACCEPTED, 0.0)
    return SpecDecodeRun(texts, drafted, accepted, live)
