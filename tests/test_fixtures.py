"""The pytest glue: options, parametrization ids and usage errors, seen from a child pytest (collect only)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def collect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "scenarios", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_ids_carry_recipe_and_node():
    out = collect("--sg-recipe", "recipes/local-hybrid.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "test_00_preflight.py::test_node_reachable[local-hybrid-local]" in out.stdout
    assert "test_60_serve.py::test_readiness[local-hybrid]" in out.stdout


def test_k_selects_by_recipe_name():
    out = collect("-k", "local-hybrid and readiness")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 test collected" in out.stdout or "1/" in out.stdout


def test_bad_set_option_is_a_usage_error():
    out = collect("--sg-set", "oops")
    assert out.returncode == 4
    assert "--set expects key=value" in out.stderr and "Traceback" not in out.stderr


def test_broken_recipe_is_a_usage_error_with_file_and_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("recipe_version: '1'\nname: b\ncontainer: c\ncommand: vllm serve m\nexpect:\n  nodez: 2\n")
    out = collect("--sg-recipe", str(bad))
    assert out.returncode == 4
    assert f"{bad}:6, key 'expect.nodez': unknown key 'nodez' in 'expect'" in out.stderr
    assert "did you mean 'nodes'" in out.stderr


def test_header_names_recipe_container_and_cluster():
    out = collect("--sg-recipe", "recipes/local-hybrid.yaml", "-v")
    assert "servegate: recipe local-hybrid" in out.stdout and "on cluster local (1 node(s))" in out.stdout
