"""sparkrun recipe v2 (spark-arena/sparkrun 0.4.x) read onto servegate's Recipe: real registry recipes load,
render and plan; what servegate cannot honour is a located error; sparkrun's own loader is the referee when
its venv exists (/tmp/sr-venv, python 3.12: sparkrun's exact pins clash with servegate's)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from servegate.config.cluster import load_cluster
from servegate.config.recipe import load_recipe
from servegate.errors import RecipeError
from servegate.render.command import render
from servegate.steps.plan import plan_lines

DATA = Path(__file__).resolve().parent / "data" / "recipes" / "sparkrun"
SPARKRUN_PY = Path("/tmp/sr-venv/bin/python")


def two_nodes(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("nodes:\n  - {name: a, role: head, host: 'local://', fabric_ip: 10.0.0.1}\n"
                    "  - {name: b, role: worker, host: 'local://', fabric_ip: 10.0.0.2}\n")
    return load_cluster(path)


def test_minimax_v2_min_nodes_is_cluster_only_and_renders_on_two_nodes(tmp_path):
    """sparkrun Recipe.__init__: `min_nodes = int(data.get("min_nodes", 1))`; auto & min>1 => cluster."""
    recipe = load_recipe(DATA / "minimax-m2.7-nvfp4-vllm.yaml")
    assert recipe.name == "minimax-m2.7-nvfp4-vllm" and recipe.cluster_only and recipe.extra["min_nodes"] == 2
    rendered = render(recipe, two_nodes(tmp_path))
    assert rendered.serve_argv[:3] == ["vllm", "serve", "nvidia/MiniMax-M2.7-NVFP4"]
    assert rendered.serve_argv[rendered.serve_argv.index("-tp") + 1] == "2"
    with pytest.raises(RecipeError, match="requires cluster mode"):
        render(recipe, load_cluster())
    assert any("multinode:" in line for line in plan_lines(recipe, two_nodes(tmp_path)))


def test_qwen_v2_max_nodes_1_is_solo_only_and_its_mod_resolves_next_to_it(tmp_path):
    recipe = load_recipe(DATA / "qwen3-coder-next-int4-autoround-vllm.yaml")
    assert recipe.solo_only and recipe.env == {"VLLM_MARLIN_USE_ATOMIC_ADD": "1", "VLLM_SLEEP_WHEN_IDLE": "0"}
    lines = plan_lines(recipe, load_cluster())
    assert any("fix-qwen3-next-autoround" in line and "run.sh" in line for line in lines)


def test_single_brace_json_model_revision_readiness_and_literal_env(tmp_path, monkeypatch):
    """sparkrun: literal braces are written plainly (mask_non_placeholder_braces); env is literal ("A ${HF_TOKEN}
    in a recipe reaches the container as the literal string ${HF_TOKEN}")."""
    monkeypatch.setenv("HF_TOKEN", "hf_shouldnotbeexpanded000")
    recipe = load_recipe(DATA / "deepseek4-style-json-mtp.yaml")
    argv = render(recipe, two_nodes(tmp_path)).serve_argv
    assert argv[argv.index("--revision") + 1] == "0123abc"
    assert argv[argv.index("--speculative-config") + 1] == '{"method": "mtp", "num_speculative_tokens": 2}'
    assert argv[argv.index("--compilation-config") + 1] == '{"cudagraph_mode": "FULL_DECODE_ONLY"}'
    assert recipe.extra["readiness"] == {"port_timeout_s": 600, "inference": False}
    launch = render(recipe, two_nodes(tmp_path)).launches[-1]
    assert launch.env["HF_TOKEN_COPY"] == "${HF_TOKEN}"


@pytest.mark.parametrize("text, key, cause", [
    ("runtime: sglang\ncommand: sglang serve m\n", "runtime", "is not vLLM"),
    ("command: vllm serve m\npre_exec: [echo hi]\n", "pre_exec", "lifecycle hooks"),
    ("command: vllm serve m\nreadiness: {port_timeout: 1}\n", "readiness.port_timeout", "unknown readiness key"),
    ("containers: [{host: a, image: x}, {host: b, image: y}]\ncommand: vllm serve m\n", "containers", "per-host"),
    ("defaults: {port: 1}\n", None, "without 'command'"),
])
def test_what_servegate_cannot_honour_is_a_located_error(tmp_path, text, key, cause):
    path = tmp_path / "v2.yaml"
    path.write_text("model: m\ncontainer: img\n" + text)
    with pytest.raises(RecipeError, match=cause) as err:
        load_recipe(path)
    assert err.value.where.file == str(path) and err.value.where.line
    if key:
        assert err.value.where.key == key


SPARKRUN_RENDER = """
import json, sys
from sparkrun.core.recipe import Recipe
r = Recipe.load(sys.argv[1])
print(json.dumps({"command": r.render_command(r.build_config_chain()), "env": r.env,
                  "min": r.min_nodes, "max": r.max_nodes}))
"""


@pytest.mark.skipif(not SPARKRUN_PY.exists(), reason="no sparkrun venv at /tmp/sr-venv (python 3.12 + sparkrun "
                                                      "0.4.2); servegate's own loader is tested above")
@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.yaml")))
def test_rendering_equals_sparkruns_own_loader(tmp_path, name):
    from servegate.config.recipe import command_argv
    done = subprocess.run([str(SPARKRUN_PY), "-c", SPARKRUN_RENDER, str(DATA / name)], capture_output=True,
                          text=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    recipe = load_recipe(DATA / name)
    ours = recipe.render_command(builtins={"model": recipe.model})
    assert command_argv(ours) == command_argv(theirs["command"])
    assert (recipe.extra["min_nodes"], recipe.extra["max_nodes"]) == (theirs["min"], theirs["max"])
    assert {k: v.replace("\\$", "$") for k, v in recipe.env.items()} == theirs["env"]
