"""The `host` runtime: vLLM in a cached Python environment on the node itself (runtimes/pyenv.py).

A recipe's `container: pip:<requirements>` names the software; a node whose cluster entry gives `python:`
uses that interpreter as it is. Mods are kept in step with the recipe in that environment; the flag
manifest is read there; a generated model is built with that environment's torch.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from servegate.config.paths import LIB_DIR
from servegate.errors import ServegateError
from servegate.flags.node import node_manifest
from servegate.runtimes.base import Runtime, register
from servegate.runtimes.pyenv import HostEnvironment, existing_environment, pip_requirements, provision, sync_mods


@register
class HostRuntime(Runtime):
    name = "host"

    def __init__(self, ctx):
        super().__init__(ctx)
        self._envs: dict[str, HostEnvironment] | None = None

    def environments(self) -> dict[str, HostEnvironment]:
        if self._envs is None:
            self._envs = self.ctx.parallel(self._environment_for)
        return self._envs

    def _environment_for(self, name: str) -> HostEnvironment:
        host = self.ctx.hosts[name]
        if host.node.python:
            return existing_environment(host, host.node.python)
        recipe = self.ctx.recipe
        requirements = pip_requirements(recipe.container, recipe.where("container"))
        return provision(host, requirements, log=lambda message: self.ctx.progress("environment", message, node=name))

    def bin_dirs(self) -> dict[str, str]:
        return {name: env.bin_dir for name, env in self.environments().items()}

    def apply_mods(self, envs: dict[str, HostEnvironment]) -> dict[str, list]:
        recipe = self.ctx.recipe
        return self.ctx.parallel(lambda name: sync_mods(self.ctx.hosts[name], envs[name], recipe.mods,
                                                        recipe.path.parent))

    def flag_manifest(self, node: str, refresh: bool = False):
        recipe = self.ctx.recipe
        return node_manifest(self.ctx.hosts[node], self.environments()[node], recipe.mods, recipe.path.parent,
                             refresh=refresh)

    def generate_model(self, spec_name: str, spec_file: Path) -> str:
        """Built on this machine with a python that has torch: the head's environment when the head is local."""
        head = self.ctx.cluster.head
        python = self.environments()[head.name].python
        if not head.host.startswith("local://"):
            python = os.environ.get("SERVEGATE_TORCH_PYTHON", python)
        out = self.ctx.cache / "models" / spec_name
        env = {**os.environ, "PYTHONPATH": str(LIB_DIR)}
        result = subprocess.run([python, "-m", "servegate.models", str(spec_file), str(out)], capture_output=True,
                                text=True, env=env, timeout=900)
        if result.returncode != 0:
            raise ServegateError(f"generating model '{spec_name}' failed:\n{result.stderr[-3000:]}")
        return str(out)
