"""The one redactor: every text servegate prints or writes goes through it (stdout of the CLI, progress lines,
run.json, logs copied into results, junit.xml, pytest.log, reports, error messages).

Three ways a secret is recognised, so a secret nobody declared is still caught:

- by NAME, word by word (`_`-separated): `HF_TOKEN`, `*_TOKEN` (TOKEN as the last word), `*_API_KEY`,
  `*_ACCESS_KEY`, `*_PRIVATE_KEY`, any name with a word SECRET/PASSWORD/PASSWD/CREDENTIAL(S); the values of
  `--api-key` / `--hf-token`. `VLLM_..._MAX_TOKENS=2048` is NOT a secret (TOKENS is not TOKEN), nor is a number.
- by VALUE learned: a value seen under a secret name (env, argv) is masked wherever it appears later.
- by SHAPE: `hf_…` (Hugging Face), `sk-…` (OpenAI style), `ghp_…`/`github_pat_…`, and the password part of
  `scheme://user:password@host` (the user and host stay visible).

The learned values are process-wide: every Redactor() shares them, so whatever path writes a text, a secret
learned on another path is masked there too.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any

MASK = "***"
SECRET_FLAGS = ("--api-key", "--hf-token")
# word-wise: a whole `_`-separated word, or TOKEN/KEY names as the name's last words
SECRET_NAME = re.compile(
    r"(?:^|_)(?:SECRETS?|PASSWORD|PASSWD|PASSPHRASE|CREDENTIALS?)(?:_|$)"
    r"|(?:^|_)(?:TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|AUTH_?KEY|SECRET_?KEY)$",
    re.IGNORECASE,
)
SHAPES = (
    re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{20,}"),
    re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{16,}"),
    re.compile(r"(?<![A-Za-z0-9_])(?:ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{20,}"),
)
# values never take a quote or a backslash: a JSON string's closing quote or an escape stays where it is
URL_PASSWORD = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"\\]+:)(?P<pw>[^\s@/'\"\\]+)(?=@)")
# NAME=value, NAME: value, "NAME": "value", 'NAME': 'value' (env dumps, argparse Namespace, JSON)
NAMED_VALUE = re.compile(
    r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<sep>['\"]?[ \t]*[=:][ \t]*\[?['\"]?)(?P<value>[^\s'\",\]}\\]+)")
FLAG_VALUE = re.compile(r"(?P<flag>--(?:api-key|hf-token))(?P<sep>=|'?[ \t]+'?)(?P<value>[^\s'\"\\]+)")

_LEARNED: set[str] = set()
_LEARNED_LOCK = threading.Lock()


def secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(str(name)))


def _worth_learning(value: str) -> bool:
    """A value long enough to be a secret and not a plain number or switch (masking `1` everywhere helps
    nobody and hides figures)."""
    text = value.strip()
    return len(text) >= 4 and not re.fullmatch(r"[-+]?[0-9.]+|true|false|none|null", text, re.IGNORECASE)


def _mask_named(match: re.Match) -> str:
    if not secret_name(match["name"]) or not _worth_learning(match["value"]) or match["value"] == MASK:
        return match.group(0)
    return f"{match['name']}{match['sep']}{MASK}"


class Redactor:
    """Masks secrets in any text; learns values from env mappings and argv (shared by every instance)."""

    def __init__(self) -> None:
        self.learn_env(os.environ)

    @staticmethod
    def learn(value: Any) -> None:
        text = str(value)
        if _worth_learning(text):
            with _LEARNED_LOCK:
                _LEARNED.add(text)

    def learn_env(self, env: Mapping) -> None:
        for name, value in dict(env).items():
            if secret_name(name) and value:
                self.learn(value)
            if value:
                for match in URL_PASSWORD.finditer(str(value)):
                    self.learn(match["pw"])

    def learn_argv(self, argv: list[str]) -> None:
        argv = [str(a) for a in argv]
        for index, token in enumerate(argv):
            for flag in SECRET_FLAGS:
                if token == flag and index + 1 < len(argv):
                    self.learn(argv[index + 1])
                elif token.startswith(flag + "="):
                    self.learn(token.split("=", 1)[1])
            for match in URL_PASSWORD.finditer(token):
                self.learn(match["pw"])

    def __call__(self, text: str) -> str:
        text = str(text)
        with _LEARNED_LOCK:
            learned = sorted(_LEARNED, key=len, reverse=True)
        for secret in learned:
            if secret in text:
                text = text.replace(secret, MASK)
        for shape in SHAPES:
            text = shape.sub(MASK, text)
        text = URL_PASSWORD.sub(lambda m: m["pre"] + MASK, text)
        text = FLAG_VALUE.sub(lambda m: m["flag"] + m["sep"] + MASK, text)
        return NAMED_VALUE.sub(_mask_named, text)

    def env(self, env: Mapping) -> dict[str, str]:
        return {k: (MASK if secret_name(k) and v else self(v)) for k, v in dict(env).items()}

    def argv(self, argv: list[str]) -> list[str]:
        self.learn_argv(argv)
        return [self(token) for token in argv]

    def tree(self, value: Any, key: str = "") -> Any:
        """A JSON-like value with every string redacted, a string under a secret-named key masked whole."""
        if isinstance(value, dict):
            return {k: self.tree(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.tree(v, key) for v in value]
        if isinstance(value, str):
            return MASK if value and secret_name(key) and _worth_learning(value) else self(value)
        return value


def redact(text: str) -> str:
    """Redact with the process-wide learned values (what any Redactor learned)."""
    return Redactor()(text)


class RedactingStream:
    """A text stream wrapper that redacts each line before it reaches the real stream (the CLI's stdout and
    stderr). Lines are buffered so a secret split over two writes is still seen whole."""

    def __init__(self, stream, redactor: Redactor | None = None):
        self._stream = stream
        self._redact = redactor or Redactor()
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            done, _, self._pending = self._pending.rpartition("\n")
            self._stream.write(self._redact(done + "\n"))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(self._redact(self._pending))
            self._pending = ""
        self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
