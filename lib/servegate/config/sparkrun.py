"""sparkrun recipe v2 (spark-arena/sparkrun 0.4.x, its default format), mapped onto the same Recipe.

Read from sparkrun's own loader (sparkrun/core/recipe.py) and RECIPES.md; servegate does not depend on
sparkrun (its exact pins clash). What maps:
- `name` is the file stem (sparkrun ignores a declared name); `recipe_version` absent means "2".
- `min_nodes` / `max_nodes` (and the deprecated `mode`, `cluster_only`, `solo_only`): min_nodes > 1 is
  cluster_only, max_nodes == 1 is solo_only; both kept in `extra`.
- `model_revision` becomes the `{model_revision}` placeholder only when set (sparkrun: unset -> left literal).
- `env` values are str() and literal (sparkrun passes `${HF_TOKEN}` through unexpanded, by design): `$` is
  escaped so servegate's bash-style expansion leaves them as sparkrun does.
- the command's single braces: `{key}` for a known key (defaults, model, model_revision) is a placeholder,
  every other brace is literal (JSON); doubled braces (deprecated) collapse first, as sparkrun does.
- `readiness:` keys are checked as sparkrun checks them and kept in `extra`.
Located errors for what servegate cannot honour: a runtime other than vLLM, per-host `containers:` naming
different images, lifecycle hooks (pre_exec/post_exec/post_commands), executors, and a missing command.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from servegate.config.yamlsrc import SourceMap
from servegate.errors import Location, RecipeError

V2_KEYS = {
    "sparkrun_version", "recipe_version", "min_sparkrun_version", "name", "description", "model", "model_revision",
    "runtime", "runtime_version", "mode", "min_nodes", "max_nodes", "container", "containers", "defaults", "env",
    "command", "runtime_config", "cluster_only", "solo_only", "benchmark", "metadata", "pre_exec", "post_exec",
    "post_commands", "mods", "stop_after_post", "builder", "builder_config", "executor", "executor_config",
    "scheduler", "distribution_config", "layout", "cluster_config", "runtime_cache", "readiness", "capabilities",
    "unsupported_capabilities", "include", "overrides", "build_args",
}
UNHONOURED = {"pre_exec": "lifecycle hooks", "post_exec": "lifecycle hooks", "post_commands": "lifecycle hooks",
              "executor": "executors", "executor_config": "executors", "include": "recipe includes",
              "overrides": "recipe overrides", "layout": "layouts", "scheduler": "schedulers"}
VLLM_RUNTIMES = {"", "vllm", "vllm-ray", "vllm-distributed", "eugr-vllm"}
READINESS_KEYS = {"port_timeout_s", "health_timeout_s", "inference", "inference_style", "inference_timeout_s",
                  "inference_prompt"}
PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")


def is_v2(data: dict) -> bool:
    """sparkrun's default: no recipe_version, or "2", without eugr's required `name`."""
    return str(data.get("recipe_version", "2")) != "1" and "name" not in data


def v2_fields(data: dict, src: SourceMap, path: Path) -> dict[str, Any]:
    """Keyword arguments for Recipe(...) from a v2 mapping; RecipeError for what servegate cannot honour."""
    _refuse_unhonoured(data, src)
    if not isinstance(data.get("command"), str) or not data["command"].strip():
        raise RecipeError("a sparkrun v2 recipe without 'command' asks sparkrun's runtime to generate one",
                          where=src.at("command") if "command" in data else Location(file=src.file, line=1),
                          fix="write the vllm serve command under 'command:' (servegate renders what it runs)")
    defaults = dict(data.get("defaults") or {})
    if data.get("model_revision"):
        defaults.setdefault("model_revision", str(data["model_revision"]))
    min_nodes, max_nodes = _topology(data, src)
    extra = {"format": "sparkrun-v2", "min_nodes": min_nodes, "max_nodes": max_nodes,
             "model_revision": data.get("model_revision"), "readiness": _readiness(data, src),
             "runtime": data.get("runtime") or "vllm", "metadata": data.get("metadata") or {}}
    known = set(defaults) | {"model", "model_revision"} | ({"model"} if data.get("model") else set())
    return {
        "path": path, "name": path.stem, "container": _container(data, src), "command": v1_command(
            data["command"], known), "description": str((data.get("metadata") or {}).get("description") or ""),
        "model": data.get("model"), "mods": list(data.get("mods") or []),
        "env": {str(k): str(v).replace("$", "\\$") for k, v in (data.get("env") or {}).items()},
        "defaults": defaults, "build_args": data.get("build_args"),
        "cluster_only": min_nodes > 1, "solo_only": max_nodes == 1,
        "unknown_keys": sorted(set(map(str, data)) - V2_KEYS), "recipe_version": str(data.get("recipe_version", "2")),
        "extra": extra,
    }


def v1_command(command: str, known: set[str]) -> str:
    """A v2 command (single braces, unknown placeholders left as written) as a v1 str.format template."""
    if "{{" in command:  # sparkrun uses_brace_escapes: collapse doubled braces over the whole template
        command = command.replace("{{", "\0L").replace("}}", "\0R")
        command = command.replace("\0L", "{").replace("\0R", "}")
    escaped = command.replace("{", "{{").replace("}", "}}")
    return PLACEHOLDER.sub(lambda m: "{" + m[1] + "}" if m[1] in known else m[0], escaped)


def _refuse_unhonoured(data: dict, src: SourceMap) -> None:
    for key, what in UNHONOURED.items():
        if data.get(key):
            raise RecipeError(f"sparkrun {what} ('{key}') are not honoured by servegate", where=src.at(key),
                              fix=f"remove '{key}' or run this recipe with sparkrun itself")
    runtime = str(data.get("runtime") or "")
    if runtime not in VLLM_RUNTIMES:
        raise RecipeError(f"runtime '{runtime[:40]}' is not vLLM: servegate serves vLLM only", where=src.at("runtime"),
                          fix="use a vllm recipe, or sparkrun for this runtime")
    if "env_templates" in data:
        raise RecipeError("env_templates is not a recipe field", where=src.at("env_templates"),
                          fix="put templates directly in env (as sparkrun says)")


def _container(data: dict, src: SourceMap) -> str:
    """One image on every node: per-host `containers:` entries naming other images cannot be honoured."""
    fallback = data.get("container")
    images = {str(entry.get("image")) for entry in data.get("containers") or [] if isinstance(entry, dict)}
    if images - ({str(fallback)} if fallback else set()) and (len(images) > 1 or fallback):
        raise RecipeError(f"per-host containers name different images ({', '.join(sorted(images))[:200]})",
                          where=src.at("containers"),
                          fix="servegate runs one image on every node: use 'container:' alone")
    image = fallback or (images.pop() if len(images) == 1 else None)
    if not image:
        raise RecipeError("no container image", where=Location(file=src.file, line=1, key="container"),
                          fix="add 'container: <image>'")
    return str(image)


def _topology(data: dict, src: SourceMap) -> tuple[int, int | None]:
    """sparkrun Recipe.__init__: mode solo -> 1..1; cluster_only -> min 2; solo_only -> max 1."""
    try:
        min_nodes = int(data.get("min_nodes", 1))
        max_nodes = None if data.get("max_nodes") is None else int(data["max_nodes"])
    except (TypeError, ValueError):
        raise RecipeError("min_nodes / max_nodes must be integers", where=src.at("min_nodes"),
                          fix="write e.g. min_nodes: 2") from None
    if data.get("mode") == "solo" or data.get("solo_only"):
        max_nodes = 1
        min_nodes = 1 if data.get("mode") == "solo" else min_nodes
    if data.get("cluster_only") or data.get("mode") == "cluster":
        min_nodes = max(min_nodes, 2)
    if max_nodes is not None and min_nodes > max_nodes:
        raise RecipeError(f"min_nodes {min_nodes} > max_nodes {max_nodes}", where=src.at("max_nodes"),
                          fix="min_nodes must not exceed max_nodes")
    return min_nodes, max_nodes


def _readiness(data: dict, src: SourceMap) -> dict:
    readiness = data.get("readiness") or {}
    if not isinstance(readiness, dict):
        raise RecipeError("readiness must be a mapping", where=src.at("readiness"), fix="readiness: {...}")
    unknown = sorted(set(map(str, readiness)) - READINESS_KEYS)
    if unknown:
        raise RecipeError(f"unknown readiness key '{unknown[0]}'", where=src.at(f"readiness.{unknown[0]}"),
                          fix=f"sparkrun's readiness keys: {', '.join(sorted(READINESS_KEYS))}")
    return dict(readiness)
