"""The Finding: one problem in one rendered serve command, worded so a person can act on it."""

from __future__ import annotations

from dataclasses import dataclass

# Stable codes, so tests, filters and reports need not match on prose.
UNKNOWN_FLAG = "unknown-flag"
ABBREVIATION = "abbreviation"
AMBIGUOUS_FLAG = "ambiguous-flag"
STRAY_POSITIONAL = "stray-positional"
MODEL_TWICE = "model-twice"
UNEXPECTED_VALUE = "unexpected-value"
MISSING_VALUE = "missing-value"
INVALID_CHOICE = "invalid-choice"
WRONG_TYPE = "wrong-type"
BAD_JSON = "bad-json"
DEPRECATED = "deprecated"
DUPLICATE = "duplicate"
UNREGISTERED = "unregistered-name"
UNKNOWN_ENV = "unknown-env"
UNVERIFIABLE = "unverifiable"
NOT_A_SERVE_COMMAND = "not-a-serve-command"
EMPTY_MANIFEST = "empty-manifest"

# What vLLM's own argparse would refuse (exit 2) as opposed to what it silently accepts.
ARGPARSE_REFUSES = {
    MODEL_TWICE,
    UNKNOWN_FLAG,
    AMBIGUOUS_FLAG,
    STRAY_POSITIONAL,
    UNEXPECTED_VALUE,
    MISSING_VALUE,
    INVALID_CHOICE,
    WRONG_TYPE,
    BAD_JSON,
}


@dataclass(frozen=True)
class Finding:
    """What is wrong (reason), where (source, flag), how bad (severity) and what to do (fix)."""

    severity: str  # 'error' | 'warning'
    source: str  # recipe name or file
    flag: str  # the flag or env var as written; '' for the whole command
    reason: str
    fix: str
    code: str = ""

    def __str__(self) -> str:
        where = f"{self.source}: {self.flag}" if self.flag else self.source
        return f"{where}: {self.severity}: {self.reason}\n  fix: {self.fix}"
