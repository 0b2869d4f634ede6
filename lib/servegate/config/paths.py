"""Every path constant of servegate, defined once: the repository, its recipe folders, the cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
LIB_DIR = REPO_ROOT / "lib"
PACKAGE_DIR = LIB_DIR / "servegate"
RECIPES_DIR = REPO_ROOT / "recipes"
CLUSTERS_DIR = RECIPES_DIR / "clusters"
DEFAULT_CLUSTER = CLUSTERS_DIR / "local.yaml"
MODEL_SPECS_DIR = RECIPES_DIR / "models"
SHAPES_DIR = MODEL_SPECS_DIR / "shapes"
IMAGES_DIR = RECIPES_DIR / "images"
MODS_DIR = RECIPES_DIR / "mods"
RESULTS_DIR = REPO_ROOT / "results"
FLAGS_DIR = RESULTS_DIR / "flags"


def cache_root() -> Path:
    """servegate's cache (environments, images, models, run-private files): $SERVEGATE_CACHE or ~/.cache."""
    return Path(os.environ.get("SERVEGATE_CACHE", Path.home() / ".cache" / "servegate"))
