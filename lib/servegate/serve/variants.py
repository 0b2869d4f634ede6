"""A second server from the same deployment with some flags removed, e.g. to compare against no speculation.

It reuses the nodes, environments, mods and model of the running deployment, listens on another port and has
its own run id and log files; use it as a context manager like any Deployment.
"""

from __future__ import annotations

from dataclasses import replace

from servegate.labels import new_run_id
from servegate.serve.deployment import Deployment


def strip_flags(argv: list[str], flags: list[str]) -> list[str]:
    """Drop each flag with its value (`--f v` or `--f=v`); boolean flags are dropped alone."""
    out: list[str] = []
    skip_value = False
    for token in argv:
        if skip_value:
            skip_value = False
            if not token.startswith("-"):
                continue
        name = token.split("=", 1)[0]
        if name in flags:
            skip_value = "=" not in token
            continue
        out.append(token)
    return out


def with_port(argv: list[str], port: int) -> list[str]:
    out = list(argv)
    for index, token in enumerate(out):
        if token == "--port" and index + 1 < len(out):
            out[index + 1] = str(port)
            return out
        if token.startswith("--port="):
            out[index] = f"--port={port}"
            return out
    return out + ["--port", str(port)]


def without_flags(deployment: Deployment, flags: list[str], port: int, label: str) -> Deployment:
    def edit(argv: list[str]) -> list[str]:
        return with_port(strip_flags(argv, flags), port)

    rendered = deployment.rendered
    launches = [replace(launch, argv=edit(launch.argv)) if launch.role in ("serve", "headless") else launch
                for launch in rendered.launches if not launch.role.startswith("ray-")]
    variant = replace(rendered, serve_argv=edit(rendered.serve_argv), launches=launches)
    return Deployment(variant, deployment.hosts, deployment.run, deployment.progress, deployment.bin_dirs,
                      ready_timeout_s=deployment.ready_timeout_s, run_id=new_run_id(), label=label)
