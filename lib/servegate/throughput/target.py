"""What a load generator talks to: a served model's URL, name, tokenizer and a liveness probe."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests


@dataclass
class Target:
    base_url: str
    model: str
    tokenizer: str  # a local folder (offline) or a hub id
    alive: Callable[[], bool]
    api_key: str | None = None
    vllm_python: str | None = None  # interpreter with vLLM, for tool: vllm-bench
    why_down: Callable[[], str] | None = None  # what died, how (signal/exit) and its log tail, once down


def target_for(client, tokenizer: str | None = None, vllm_python: str | None = None) -> Target:
    """A Target for a Deployment or an Endpoint (anything with the servegate client API)."""
    auth = client.headers().get("Authorization", "")
    api_key = auth.removeprefix("Bearer ") if auth else None
    alive = getattr(client, "alive", None) or (lambda: True)
    return Target(
        client.base_url,
        client.model,
        tokenizer or served_root(client) or client.model,
        alive,
        api_key,
        vllm_python or os.environ.get("SERVEGATE_VLLM_BENCH_PYTHON"),
        getattr(client, "death_reports", None),
    )


def served_root(client) -> str | None:
    """The served model's `root` in /v1/models (vLLM puts the model path there), if a local folder."""
    try:
        listed = client.get("/v1/models", timeout=10).json().get("data", [])
    except (requests.RequestException, ValueError):
        return None
    for entry in listed:
        root = entry.get("root")
        if entry.get("id") == client.model and root and Path(root).is_dir():
            return root
    return None
