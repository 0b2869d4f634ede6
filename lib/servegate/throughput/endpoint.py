"""An endpoint that is already running (`--sg-endpoint URL`): the same client API as a Deployment
(chat, stream_chat, metrics, get, model, base_url, readiness, timings), without launch or teardown."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import requests

from servegate.errors import ServegateError
from servegate.serve.deployment import OpenAIClient
from servegate.waits import Step, StepTiming, run_steps


class Endpoint(OpenAIClient):
    """A served model at base_url. Use as a context manager: entering waits until it streams a first token."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        ready_timeout_s: float = 120.0,
        progress=None,
        prefer: str | None = None,
    ):
        """model: the served name; None picks `prefer` when /v1/models lists it, else the first listed."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ServegateError(
                f"endpoint {base_url!r} is not a server base URL\n"
                f"  fix: give scheme, host and port only, e.g. http://127.0.0.1:8000"
            )
        self.base_url = base_url.rstrip("/")
        self._model = model
        self.prefer = prefer
        self.api_key = api_key
        self.ready_timeout_s = ready_timeout_s
        self.progress = progress or (lambda *args, **kwargs: None)
        self.readiness: list[StepTiming] = []
        self.timings: dict[str, float] = {}
        self.rendered = None  # servegate did not render or launch it
        self.hosts: dict[str, Any] = {}

    def __enter__(self) -> Endpoint:
        started = time.monotonic()
        self.readiness = self.wait_ready()
        self.timings["ready_check_s"] = time.monotonic() - started
        return self

    def __exit__(self, *exc_info) -> None:
        """Nothing to tear down: the endpoint belongs to whoever started it."""

    @property
    def model(self) -> str:
        if self._model is None:
            self._model = self._first_listed_model()
        return self._model

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def alive(self) -> bool:
        try:
            return self.get("/health", timeout=10).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self) -> list[StepTiming]:
        deadline = time.monotonic() + self.ready_timeout_s
        steps = [
            Step("/health 200", self._probe_health, self.ready_timeout_s, 1.0),
            Step("/v1/models lists the model", self._probe_models, 60, 1.0),
            Step("a streamed chat completion returns a first token", self._probe_first_token, 120, 2.0),
        ]
        return run_steps(
            steps,
            still_running=lambda: True,
            log_tail=lambda: f"(external endpoint {self.base_url})",
            on_step=lambda name: self.progress("readiness", f"{self.base_url}: {name}"),
            deadline=deadline,
        )

    def _first_listed_model(self) -> str:
        try:
            listed = [m.get("id") for m in self.get("/v1/models", timeout=10).json().get("data", [])]
        except (requests.RequestException, ValueError) as exc:
            raise ServegateError(
                f"{self.base_url}/v1/models did not answer: {exc}\n"
                f"  fix: check the URL, or name the model explicitly"
            ) from None
        if not listed:
            raise ServegateError(f"{self.base_url}/v1/models lists no model")
        return self.prefer if self.prefer in listed else listed[0]
