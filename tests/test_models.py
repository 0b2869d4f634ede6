"""servegate.models spec validation: plain Python, runs in any test environment (no torch, no tokenizers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from servegate.errors import RecipeError
from servegate.models import MODES, load_spec
from servegate.models.script import ToolCall

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "recipes" / "models"
GOOD = (SPECS / "tiny-hybrid.yaml").read_text()
SCRIPTED = (SPECS / "tiny-scripted.yaml").read_text()
SCRIPTED_MTP = (SPECS / "tiny-scripted-mtp.yaml").read_text()


def test_recipe_specs_load():
    hybrid = load_spec(SPECS / "tiny-hybrid.yaml")
    scripted = load_spec(SPECS / "tiny-scripted.yaml")
    assert hybrid.script is None
    assert (hybrid.hybrid_override_pattern, hybrid.head_dim, hybrid.vocab_size) == ("M*M-", 64, 512)
    assert set(scripted.script.replies) == set(MODES)
    think_tools = scripted.script.reply("think_tools")
    assert think_tools.tool_call == ToolCall("get_weather", {"city": "Paris"})
    assert scripted.where("hidden_size").line == _line_of(SCRIPTED, "hidden_size:")


def test_mtp_spec_is_tiny_scripted_plus_one_mtp_layer():
    scripted, mtp = load_spec(SPECS / "tiny-scripted.yaml"), load_spec(SPECS / "tiny-scripted-mtp.yaml")
    assert (scripted.mtp_layers, mtp.mtp_layers) == (0, 1)
    assert "mtp_layers" not in scripted.raw  # an absent key stays out of the hash: old stamps hold
    assert {k: v for k, v in mtp.raw.items() if k not in ("name", "description", "mtp_layers")} == \
        {k: v for k, v in scripted.raw.items() if k not in ("name", "description")}


def test_spec_hash_follows_content_not_formatting():
    original = load_spec(SPECS / "tiny-hybrid.yaml")
    reformatted = _parse(GOOD.replace("seed: 20261122", "seed:   20261122  # same"))
    reseeded = _parse(GOOD.replace("seed: 20261122", "seed: 7"))
    assert reformatted.spec_hash("g") == original.spec_hash("g")
    assert reseeded.spec_hash("g") != original.spec_hash("g")
    assert original.spec_hash("g") != original.spec_hash("other-generator")


BAD_SPECS = {
    "unknown-key": (GOOD + "hiden_size: 3\n", "hiden_size", "unknown key"),
    "cpu-head-dim": (GOOD.replace("head_dim: 64", "head_dim: 16"), "head_dim", "CPU"),
    "moe-layer": (GOOD.replace('"M*M-"', '"M*ME"'), "hybrid_override_pattern", "MoE"),
    "not-positive": (GOOD.replace("vocab_size: 512", "vocab_size: -1"), "vocab_size", "positive"),
    "gqa": (GOOD.replace("num_key_value_heads: 1", "num_key_value_heads: 3"), "num_key_value_heads",
            "multiple"),
    "kind": (GOOD.replace("kind: nemotron_h", "kind: llama"), "kind", "unsupported kind"),
    "script-no-mlp-after-attention": (SCRIPTED.replace('"M*M-"', '"M-M*"'), "hybrid_override_pattern",
                                      "MLP layer"),
    "plain-with-reasoning": (SCRIPTED.replace("  plain:   ", "  plain:\n    reasoning: \"no\"\n  #"),
                             "script.plain", "must not have"),
    "two-tool-arguments": (SCRIPTED.replace("{city: Paris}", "{city: Paris, day: Mon}", 1),
                           "script.think_tools.tool_call.arguments", "exactly one argument"),
    "markup-in-text": (SCRIPTED.replace("answer politely", "answer </think> politely"),
                       "script.think.reasoning", "markup"),
    "unknown-mode": (SCRIPTED.replace("  plain_tools:", "  plain_tool:"), "script.plain_tool", "unknown key"),
    "two-mtp-layers": (SCRIPTED_MTP.replace("mtp_layers: 1", "mtp_layers: 2"), "mtp_layers", "0 or 1"),
    "mtp-layers-bool": (SCRIPTED_MTP.replace("mtp_layers: 1", "mtp_layers: true"), "mtp_layers", "0 or 1"),
}


@pytest.mark.parametrize("name", sorted(BAD_SPECS))
def test_bad_spec_raises_recipe_error_naming_file_line_and_key(tmp_path, name):
    text, key, cause = BAD_SPECS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as caught:
        load_spec(path)
    err = caught.value
    assert (err.where.file, err.where.key) == (str(path), key)
    assert err.where.line == _line_of(text, key.rsplit(".", 1)[-1] + ":", after=key)
    assert cause in err.cause
    assert err.fix
    assert f"{path}:{err.where.line}" in str(err)


def test_missing_keys_are_listed(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text("name: x\nkind: nemotron_h\n")
    with pytest.raises(RecipeError, match="missing required key.*hidden_size"):
        load_spec(path)


def test_unreadable_and_malformed_specs(tmp_path):
    with pytest.raises(RecipeError, match="cannot read"):
        load_spec(tmp_path / "absent.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML") as caught:
        load_spec(path)
    assert caught.value.where.line is not None


def _parse(text: str):
    from servegate.models import parse_spec

    return parse_spec(text, source="inline.yaml")


def _line_of(text: str, needle: str, after: str | None = None) -> int:
    """1-based line of the first `needle` (inside the block of `after`'s parents when dotted)."""
    lines = text.splitlines()
    start = 0
    if after and "." in after:
        for parent in after.split(".")[:-1]:
            start = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(parent + ":"))
    return next(i for i in range(start, len(lines)) if lines[i].strip().startswith(needle)) + 1
