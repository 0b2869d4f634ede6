"""Shared fixtures of the project's own tests."""

from pathlib import Path

import pytest

from servegate.config.cluster import load_cluster
from servegate.config.recipe import load_recipe
from servegate.nodes.host import NodeHost
from servegate.runtimes.pyenv import pip_requirements, provision

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The embedded default's vLLM CPU environment, built through servegate itself (cached after once)."""
    recipe = load_recipe(ROOT / "recipes" / "local-hybrid.yaml")
    host = NodeHost(load_cluster().head)
    return provision(host, pip_requirements(recipe.container)).python
