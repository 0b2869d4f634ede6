"""The one reader of vLLM argv: what argparse would see.

argparse keeps the LAST occurrence of an option and accepts both `--flag value` and `--flag=value`; every
part of servegate that asks "what is --port here?" asks this module, so the answer is the one vLLM uses.
"""

from __future__ import annotations


def flag_value(argv: list[str], *names: str) -> str | None:
    """The value of the last occurrence of any of `names` (`--port 8000` or `--port=8000`); None if absent."""
    value = None
    for index, token in enumerate(argv):
        for name in names:
            if token == name and index + 1 < len(argv):
                value = argv[index + 1]
            elif token.startswith(name + "="):
                value = token.split("=", 1)[1]
    return value


def has_flag(argv: list[str], *names: str) -> bool:
    return any(token == name or token.startswith(name + "=") for token in argv for name in names)

