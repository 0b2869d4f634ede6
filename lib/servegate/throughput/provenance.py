"""Provenance of a measurement: which recipe, software, driver and suite produced it."""

from __future__ import annotations

import shlex
from typing import Any

import requests

from servegate.config.recipe import Recipe
from servegate.errors import ServegateError
from servegate.nodes.host import NodeHost

NVIDIA_SMI = "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader"


def collect(
    recipe: Recipe,
    run_data: dict,
    hosts: dict[str, NodeHost] | None,
    client=None,
    tools: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """Everything needed to say what was measured; never raises for a missing piece (it records why)."""
    hosts = hosts or {}
    return {
        "recipe": {"name": recipe.name, "file": str(recipe.path), "sha256": recipe.hash()},
        "container": recipe.container,
        "images": {
            name: image_id(host, recipe.container)
            for name, host in hosts.items()
            if host.node.runtime == "docker"
        },
        "nodes": {name: info.get("versions", {}) for name, info in (run_data.get("nodes") or {}).items()},
        "drivers": {name: driver(host) for name, host in hosts.items()},
        "suite_commit": (run_data.get("suite") or {}).get("commit"),
        "machine": (run_data.get("suite") or {}).get("machine"),
        "server": server_version(client) if client is not None else None,
        "tools": dict(tools or {}),
    }


def driver(host: NodeHost) -> str | None:
    """nvidia-smi's GPU name, driver and memory per GPU, or None where there is no NVIDIA driver."""
    try:
        result = host.run(f"command -v nvidia-smi >/dev/null && {NVIDIA_SMI}")
    except ServegateError as exc:  # an unreachable node: say so, the rest of the provenance still counts
        return f"unknown: {exc}"[:200]
    return (result.stdout.strip() or None) if result.ok else None


def image_id(host: NodeHost, image: str) -> dict[str, str | None]:
    fmt = "{{.Id}} {{if .RepoDigests}}{{index .RepoDigests 0}}{{end}}"
    try:
        result = host.run(f"docker image inspect --format {shlex.quote(fmt)} {shlex.quote(image)}")
    except ServegateError as exc:
        return {"id": None, "digest": None, "error": str(exc)[:200]}
    if not result.ok:
        return {"id": None, "digest": None, "error": (result.stderr or result.stdout).strip()[:200]}
    parts = result.stdout.split()
    return {"id": parts[0] if parts else None, "digest": parts[1] if len(parts) > 1 else None}


def server_version(client) -> dict[str, Any] | None:
    """vLLM's /version answer (the server's own word on what it runs)."""
    try:
        response = client.get("/version", timeout=10)
        return response.json() if response.status_code == 200 else {"status": response.status_code}
    except (requests.RequestException, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
