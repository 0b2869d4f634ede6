"""Hostile input: every bad recipe, cluster or --set value is a typed, located error, never a traceback."""

from __future__ import annotations

import contextlib
import io
import textwrap
import time
from pathlib import Path

import pytest

from servegate.config import yamlsrc
from servegate.config.cluster import load_cluster
from servegate.config.recipe import load_recipe, parse_override
from servegate.errors import ClusterError, LocatedError, RecipeError, ServegateError

RECIPE = """\
recipe_version: "1"
name: hostile
container: vllm-node
defaults:
  port: 8000
  tensor_parallel: 1
command: vllm serve m --port {port} -tp {tensor_parallel}
"""

CLUSTER = """\
name: two
nodes:
  - name: a
    role: head
    host: "local://"
    fabric_ip: 10.0.0.1
  - name: b
    host: "local://"
    fabric_ip: 10.0.0.2
"""


def write(tmp_path: Path, text: str | bytes, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def recipe_error(tmp_path: Path, text: str | bytes) -> RecipeError:
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.where.file == str(path)
    return info.value


def cluster_error(tmp_path: Path, text: str | bytes) -> ClusterError:
    path = write(tmp_path, text, "c.yaml")
    with pytest.raises(ClusterError) as info:
        load_cluster(path)
    assert info.value.where.file == str(path)
    return info.value


def with_line(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


# ---- 1. env var names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ['"X; touch /tmp/pwn"', '"1ABC"', '"A-B"', '"A B"', "5", '"$(id)"', '"A=B"'])
def test_recipe_env_var_name_must_be_an_identifier(tmp_path, name):
    err = recipe_error(tmp_path, RECIPE + f"env:\n  OK_VAR: 1\n  {name}: x\n")
    assert "not a valid variable name" in err.cause
    assert err.where.line == 10 and err.where.key.startswith("env.")


def test_recipe_env_valid_names_still_load(tmp_path):
    recipe = load_recipe(write(tmp_path, RECIPE + "env:\n  _A1: 1\n  VLLM_X: true\n"))
    assert recipe.env == {"_A1": "1", "VLLM_X": "True"}


@pytest.mark.parametrize("name", ['"X; touch /tmp/pwn"', '"9X"', "7", '"a.b"'])
def test_cluster_node_env_var_name_must_be_an_identifier(tmp_path, name):
    text = with_line(CLUSTER, "    fabric_ip: 10.0.0.2\n", f"    fabric_ip: 10.0.0.2\n    env:\n      {name}: x\n")
    err = cluster_error(tmp_path, text)
    assert "not a valid variable name" in err.cause and err.where.line == 11


# ---- 2. names that become paths ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ['"../../x"', '"a;b"', '"."', '".."', '"a/b"', '"-rf"', '"a b"', "x" * 64,
                                  '"a\\u0000b"', "123"])
def test_cluster_node_name_must_be_safe(tmp_path, name):
    err = cluster_error(tmp_path, with_line(CLUSTER, "  - name: b", f"  - name: {name}"))
    assert err.where.line == 7 and err.where.key == "nodes.1.name"


@pytest.mark.parametrize("name", ['"../x"', '"a;b"', '".."', "[a]", "7"])
def test_cluster_name_must_be_safe(tmp_path, name):
    err = cluster_error(tmp_path, with_line(CLUSTER, "name: two", f"name: {name}"))
    assert "cluster name" in err.cause and err.where.line == 1


@pytest.mark.parametrize("name", ['"../../x"', '"a/b"', '".."', '"."', '".hidden"', '"a\\\\b"', '"a\\nb"',
                                  '"a\\u0000b"', "x" * 129])
def test_recipe_name_must_be_one_path_component(tmp_path, name):
    err = recipe_error(tmp_path, with_line(RECIPE, "name: hostile", f"name: {name}"))
    assert "results folder" in err.cause and err.where.line == 2 and err.where.key == "name"


def test_recipe_names_of_upstream_style_still_load(tmp_path):
    recipe = load_recipe(write(tmp_path, with_line(RECIPE, "name: hostile", 'name: "GLM 4.7 Flash (AWQ) v2"')))
    assert recipe.name == "GLM 4.7 Flash (AWQ) v2"


@pytest.mark.parametrize("spec", ["../../etc/x", "a/b", "..", ""])
def test_generated_model_spec_must_be_a_plain_name(tmp_path, spec):
    err = recipe_error(tmp_path, RECIPE + f'model: "generated:{spec}"\n')
    assert err.where.key == "model" and err.where.line == 8


def test_throughput_workload_name_must_be_safe(tmp_path):
    err = recipe_error(tmp_path, RECIPE + "expect:\n  throughput:\n    - {name: ../../x, isl: 8}\n")
    assert "workload name" in err.cause and err.where.line == 10


def test_mods_and_cluster_paths_refuse_control_characters(tmp_path):
    err = recipe_error(tmp_path, RECIPE + 'mods:\n  - "mods/a\\u0000b"\n')
    assert err.where.key == "mods.0" and err.where.line == 9
    err = recipe_error(tmp_path, RECIPE + 'cluster: "c\\u0000.yaml"\n')
    assert err.where.key == "cluster"


# ---- 3. inputs that used to raise a raw Python exception ---------------------------------------------------

def test_non_utf8_recipe_and_cluster_name_the_line(tmp_path):
    err = recipe_error(tmp_path, RECIPE.encode() + b"description: caf\xe9\n")
    assert "not UTF-8" in err.cause and err.where.line == 8
    err = cluster_error(tmp_path, b"\xff\xfename: x\n")
    assert "not UTF-8" in err.cause and err.where.line == 1


@pytest.mark.parametrize("style", ["flow", "block", "list"])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path, style):
    depth = 400
    if style == "flow":
        body = "defaults: " + "[" * depth + "]" * depth + "\n"
    elif style == "block":
        body = "expect:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth))
    else:
        body = "mods:\n" + "".join("  " * (i + 1) + "-\n" for i in range(depth))
    err = recipe_error(tmp_path, RECIPE + body)
    assert "nested deeper than" in err.cause and err.where.line is not None
    err = cluster_error(tmp_path, CLUSTER + body.replace("defaults", "fabric").replace("expect", "fabric")
                        .replace("mods", "fabric"))
    assert "nested deeper than" in err.cause


@pytest.mark.parametrize("field", ["{port[0]}", "{port.x}", "{port.__class__}", "{0}", "{}", "{1[0]}",
                                   "{port:>999999999}", "{port:{tensor_parallel}>99999}", "{port!z}", "{a b}",
                                   "{port", "port}", "{model.__init__.__globals__}"])
def test_command_format_fields_are_located_errors(tmp_path, field):
    text = with_line(RECIPE, "command: vllm serve m", f"command: 'vllm serve m {field}'\nmodel: m\n#")
    err = recipe_error(tmp_path, text)
    assert err.where.key == "command" and err.where.line == 7


@pytest.mark.parametrize("value", ["1" * 5000, "0x" + "f" * 5000, "1:" * 3000 + "1", "-" + "9" * 200])
def test_huge_integers_are_refused(tmp_path, value):
    err = recipe_error(tmp_path, with_line(RECIPE, "tensor_parallel: 1", f"tensor_parallel: {value}"))
    assert "integer written with" in err.cause and err.where.line == 6
    err = cluster_error(tmp_path, CLUSTER + f"ray_port: {value}\n")
    assert "integer written with" in err.cause and err.where.line == 10


def test_impossible_timestamp_is_a_located_error(tmp_path):
    err = recipe_error(tmp_path, RECIPE + "description: 2020-99-99\n")
    assert "cannot read value" in err.cause and err.where.line == 8


@pytest.mark.parametrize(("text", "match"), [
    ("port=abc", "is an integer"), ("port=1.5", "is an integer"), ("port=true", "is an integer"),
    ("tensor_parallel=[1,2]", "is an integer"), ("port=99999", "1-65535"), ("port=0", "1-65535"),
    ("port=" + "9" * 5000, "is an integer"), ("port=" + "[" * 2000, "is an integer"),
])
def test_set_values_must_match_numeric_defaults(tmp_path, text, match):
    from servegate.render.command import render
    recipe = load_recipe(write(tmp_path, RECIPE))
    cluster = load_cluster(write(tmp_path, CLUSTER, "c.yaml"))
    with pytest.raises(RecipeError, match=match) as info:
        render(recipe, cluster, dict([parse_override(text)]))
    assert info.value.where.file == str(recipe.path)


@pytest.mark.parametrize("text", ["a b=1", "x;y=1", "port\x00=1", "port=a\x00b", "=1", "port.x=1"])
def test_set_keys_and_values_are_checked(text):
    with pytest.raises(RecipeError):
        parse_override(text)


def test_port_in_the_command_must_be_a_port(tmp_path):
    err = recipe_error(tmp_path, with_line(RECIPE, "--port {port}", "--port abc"))
    assert "1-65535" in err.cause and err.where.line == 7
    err = recipe_error(tmp_path, with_line(RECIPE, "port: 8000", "port: eighty"))
    assert "1-65535" in err.cause


@pytest.mark.parametrize(("old", "new", "key"), [
    ("name: two", "name: two\n1: x", None),
    ("name: two", "name: two\n1: x\nzz: y\n.5: z", None),
    ("    fabric_ip: 10.0.0.2", "    fabric_ip: 10.0.0.2\n    gpus: many", "nodes.1.gpus"),
    ("    fabric_ip: 10.0.0.2", "    fabric_ip: 10.0.0.2\n    gpus: -1", "nodes.1.gpus"),
    ("    fabric_ip: 10.0.0.2", "    fabric_ip: 10.0.0.2\n    gpus: true", "nodes.1.gpus"),
    ("    fabric_ip: 10.0.0.2", "    fabric_ip: 10.0.0.2\n    3: x\n    zz: y", None),
    ("    fabric_ip: 10.0.0.2", "    fabric_ip: [1, 2]", "nodes.1.fabric_ip"),
    ("    fabric_ip: 10.0.0.2", "    fabric_ip: 10.0.0.2\n    python: [a]", "nodes.1.python"),
    ("    fabric_ip: 10.0.0.2", "    fabric_ip: 10.0.0.2\n    workdir: 7", "nodes.1.workdir"),
    ("    fabric_ip: 10.0.0.2", "    fabric_ip: 10.0.0.2\n    env: {A: {b: c}}", "nodes.1.env.A"),
    ("    fabric_ip: 10.0.0.2", "    fabric_ip: 10.0.0.2\n    env: [A, B]", "nodes.1.env"),
    ("name: two", "name: two\nray_port: abc", "ray_port"),
    ("name: two", "name: two\nray_port: 70000", "ray_port"),
    ("name: two", "name: two\ndescription: [x]", "description"),
    ("  - name: b", "  - 7\n  - name: b", "nodes.1"),
])
def test_cluster_bad_types_are_located_errors(tmp_path, old, new, key):
    err = cluster_error(tmp_path, with_line(CLUSTER, old, new))
    assert err.where.line is not None
    if key:
        assert err.where.key == key


@pytest.mark.parametrize("nodes", ["nodes: 5", "nodes: {a: 1}", "nodes: abc", "nodes: []", "nodes:"])
def test_cluster_nodes_must_be_a_list(tmp_path, nodes):
    err = cluster_error(tmp_path, f"name: x\n{nodes}\n")
    assert "'nodes' must be a non-empty list" in err.cause


@pytest.mark.parametrize("text", ["[1, 2]", "just text", "7", "- a\n- b"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    assert "must hold a mapping" in recipe_error(tmp_path, text).cause
    assert "must hold a mapping" in cluster_error(tmp_path, text).cause


def test_recipe_defaults_and_env_keys_of_other_types(tmp_path):
    err = recipe_error(tmp_path, with_line(RECIPE, "defaults:\n", "defaults:\n  1: x\n"))
    assert "default name" in err.cause
    err = recipe_error(tmp_path, RECIPE + "env:\n  [a, b]: 1\n")
    assert err.where.line is not None


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(RecipeError, match="folder"):
        load_recipe(tmp_path)
    with pytest.raises(ClusterError, match="folder"):
        load_cluster(tmp_path)


# ---- 4. alias bombs and absurd sizes -----------------------------------------------------------------------

def billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_fast(tmp_path):
    started = time.perf_counter()
    err = recipe_error(tmp_path, RECIPE + "expect:\n  performance_table:\n    - x\n" + billion_laughs())
    elapsed = time.perf_counter() - started
    assert "alias bomb" in err.cause and elapsed < 0.5
    started = time.perf_counter()
    err = cluster_error(tmp_path, CLUSTER + billion_laughs())
    assert "alias bomb" in err.cause and time.perf_counter() - started < 0.5


def test_many_aliases_are_refused(tmp_path):
    text = RECIPE + "x: &x 1\nys: [" + ",".join(["*x"] * 2000) + "]\n"
    assert "alias references" in recipe_error(tmp_path, text).cause


def test_recursive_alias_is_refused(tmp_path):
    err = recipe_error(tmp_path, RECIPE + "loop: &l [*l]\n")
    assert "refers to the node that contains it" in err.cause and err.where.line == 8
    err = cluster_error(tmp_path, CLUSTER + "fabric: &f {self: *f}\n")
    assert "refers to the node that contains it" in err.cause


def test_ordinary_aliases_still_work(tmp_path):
    text = RECIPE.replace("defaults:\n", "defaults: &d\n") + "expect:\n  performance_table: [*d]\n"
    assert load_recipe(write(tmp_path, text)).expect.performance_table == [{"port": 8000, "tensor_parallel": 1}]


def test_oversized_files_are_refused_naming_file_and_limit(tmp_path):
    big = RECIPE + "description: |\n" + ("  " + "x" * 1000 + "\n") * 1100
    started = time.perf_counter()
    err = recipe_error(tmp_path, big)
    assert f"{yamlsrc.MAX_FILE_BYTES} bytes" in err.cause and time.perf_counter() - started < 1
    err = cluster_error(tmp_path, CLUSTER + "description: |\n" + ("  " + "x" * 1000 + "\n") * 1100)
    assert "larger than the limit" in err.cause


# ---- through the CLI: exit 2, one message, no traceback ----------------------------------------------------

@pytest.mark.parametrize(("recipe_text", "extra"), [
    (RECIPE + "env:\n  'X; touch /tmp/pwn': 1\n", []),
    (RECIPE + billion_laughs(), []),
    (with_line(RECIPE, "--port {port}", "--port {port[0]}"), []),
    (RECIPE, ["--set", "port=abc"]),
    (RECIPE, ["--set", "port=" + "1" * 5000]),
    (RECIPE.encode() + b"x: \xff\n", []),
])
@pytest.mark.parametrize("verb", ["render", "plan"])
def test_cli_reports_hostile_input_without_traceback(tmp_path, recipe_text, extra, verb):
    recipe = write(tmp_path, recipe_text)
    cluster = write(tmp_path, CLUSTER, "c.yaml")
    err = io.StringIO()
    from servegate.cli.main import main
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([verb, str(recipe), "--cluster", str(cluster), *extra])
    assert code == 2
    assert err.getvalue().startswith("servegate: error: ") and "Traceback" not in err.getvalue()


def test_every_loader_error_is_located():
    assert issubclass(RecipeError, LocatedError) and issubclass(ClusterError, ServegateError)


def test_too_many_values_are_refused_before_the_file_is_fully_read(tmp_path):
    started = time.perf_counter()
    err = recipe_error(tmp_path, RECIPE + "many: [" + "1," * (yamlsrc.MAX_NODES + 10) + "1]\n")
    assert f"more than {yamlsrc.MAX_NODES} values" in err.cause and err.where.line == 8
    assert time.perf_counter() - started < 30
