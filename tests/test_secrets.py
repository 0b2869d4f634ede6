"""Secrets and injection, without launching vLLM: the one redactor (by name, learned value and shape) on every
output path that needs no server (CLI stdout/stderr, error messages, run.json, progress), env files written
for any content with nothing run at write time, a model path with spaces kept one argument on the node.

The full-run check (every results file and every printed line of a real deploy) is
tests/test_e2e_deploy.py::test_secrets_of_every_kind_never_printed_nor_written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servegate.config.cluster import Node
from servegate.errors import NodeError
from servegate.nodes.host import NodeHost
from servegate.redact import MASK, Redactor, redact, secret_name
from servegate.render.launches import env_script
from servegate.results.run import Progress, RunDir

ROOT = Path(__file__).resolve().parents[1]

# one fake secret of every kind the redactor knows; none is a real credential
FAKE = {
    "HF_TOKEN": "hf_FAKEhfToken" + "A" * 20,  # built, so no token-shaped string is tracked
    "MY_PASSWORD": "fakepass-MYPW-123",
    "OTHER_SECRET": "fakesecret-OTHER-456",
    "DEPLOY_TOKEN": "faketoken-DEPLOY-789",
    "SERVICE_API_KEY": "fakeapikey-SERVICE-012",
}
URL_PASSWORD = "fakeurlpw-345"
SHAPED = "sk-fakeSkShapeBBBBBBBBBBBBBBBB"  # under a harmless name: caught by its shape alone
API_KEY = "fake-api-key-value-CCC"
EVERY_SECRET = [*FAKE.values(), URL_PASSWORD, SHAPED, API_KEY]
VISIBLE = "VLLM_B12X_MLA_CKV_GATHER_MAX_TOKENS=2048"


def secret_recipe(folder: Path, base: Path = ROOT / "recipes" / "local-hybrid.yaml") -> Path:
    """A copy of a recipe carrying a fake secret of every kind in its env and its command."""
    lines = base.read_text().replace(f"name: {base.stem}", "name: secret-test").splitlines()
    env_at = lines.index("env:") + 1
    extra = [f"  {name}: {value}" for name, value in FAKE.items()]
    extra += [f"  DB_URL: https://alice:{URL_PASSWORD}@db.example.com:5432/x", f"  OPENAI_STYLE: {SHAPED}",
              "  VLLM_B12X_MLA_CKV_GATHER_MAX_TOKENS: 2048"]
    lines[env_at:env_at] = extra
    text = "\n".join(lines) + "\n"
    text = text.replace("    --seed 0", f"    --seed 0 \\\n    --api-key {API_KEY}")
    (folder / "secret-test.yaml").write_text(text)
    return folder / "secret-test.yaml"


def leaks(text: str) -> list[str]:
    return [secret for secret in EVERY_SECRET if secret in text]


@pytest.mark.parametrize("name", ["HF_TOKEN", "VLLM_API_KEY", "MY_PASSWORD", "OTHER_SECRET", "aws_secret_access_key",
                                  "GITHUB_TOKEN", "DB_PASSWD", "X_CREDENTIALS", "api_key", "AWS_ACCESS_KEY"])
def test_secret_names_by_word(name):
    assert secret_name(name)


@pytest.mark.parametrize("name", ["VLLM_B12X_MLA_CKV_GATHER_MAX_TOKENS", "max_tokens", "TOKENIZER", "KEYBOARD",
                                  "VLLM_CPU_KVCACHE_SPACE", "MAX_NUM_BATCHED_TOKENS", "TOKEN_BUDGET", "SECRETARY"])
def test_non_secret_names_stay_visible(name):
    assert not secret_name(name)
    assert redact(f"{name}=2048") == f"{name}=2048"


def test_redactor_masks_by_learned_value_by_shape_and_keeps_numbers():
    redactor = Redactor()
    redactor.learn_env({"SOME_TOKEN": "learned-value-77", "HARMLESS": "1234", "PLAIN_TOKEN": "2048"})
    redactor.learn_argv(["vllm", "serve", "m", "--api-key", "argv-key-88"])
    text = ("a learned-value-77 b argv-key-88 c hf_abcdefghijklmnopqrstuvwxyz12 d sk-abcdefghijklmnop1234 "
            "e https://bob:pw-in-url-99@host:1/p f --api-key=inline-key-11 g 'OTHER_SECRET': 'in-dict-22' "
            f"h {VISIBLE} i max_tokens=16 j 1234 k 2048")
    out = redactor(text)
    for secret in ("learned-value-77", "argv-key-88", "hf_abcdefghijklmnopqrstuvwxyz12", "sk-abcdefghijklmnop1234",
                   "pw-in-url-99", "inline-key-11", "in-dict-22"):
        assert secret not in out, out
    assert "https://bob:***@host:1/p" in out  # only the password part of a URL
    assert VISIBLE in out and "max_tokens=16" in out and " 1234 " in out and out.endswith("2048")
    assert redactor.env({"HF_TOKEN": "x", VISIBLE.split("=")[0]: "2048"}) == {
        "HF_TOKEN": MASK, VISIBLE.split("=")[0]: "2048"}


def test_every_redactor_shares_what_any_learned():
    Redactor().learn_env({"LATE_TOKEN": "learned-elsewhere-66"})
    assert "learned-elsewhere-66" not in Redactor()("x learned-elsewhere-66 y")
    assert "learned-elsewhere-66" not in str(NodeError("failed", fix="command was: x learned-elsewhere-66"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    return subprocess.run([sys.executable, "-m", "servegate", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("verb", ["render", "plan"])
def test_render_and_plan_print_no_secret(tmp_path, verb):
    out = _cli(verb, str(secret_recipe(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert leaks(out.stdout + out.stderr) == [], out.stdout
    assert VISIBLE in out.stdout  # a number under a TOKENS name is no secret (issue 16 item 12)
    assert "https://alice:***@db.example.com:5432/x" in out.stdout


def test_flags_check_prints_no_secret(tmp_path):
    manifests = sorted((ROOT / "results" / "flags").glob("*.json"))
    if not manifests:
        pytest.skip("no stored flag manifest in results/flags")
    out = _cli("flags", "check", "--manifest", str(manifests[-1]), str(secret_recipe(tmp_path)))
    assert out.returncode in (0, 1), out.stderr
    assert leaks(out.stdout + out.stderr) == [], out.stdout + out.stderr


def test_cli_error_message_is_redacted(tmp_path):
    recipe = secret_recipe(tmp_path)
    out = _cli("render", str(recipe), "--set", f"nosuchkey={FAKE['MY_PASSWORD']}")
    assert out.returncode == 2, out.stdout + out.stderr
    assert leaks(out.stdout + out.stderr) == [], out.stderr


def test_results_run_json_and_progress_are_redacted(tmp_path):
    run = RunDir("secret-test", root=tmp_path)
    run.redact.learn_env({**FAKE, "DB_URL": f"https://alice:{URL_PASSWORD}@h/x"})  # as a launch learns them
    run.redact.learn_argv(["vllm", "serve", "m", "--api-key", API_KEY])
    progress = Progress(run, stream=open(os.devnull, "w"))
    progress("launch", f"vllm serve m --api-key {API_KEY} DB_URL=https://alice:{URL_PASSWORD}@h/x {SHAPED}")
    run.update("recipe", value={"env": {**FAKE, "DB_URL": f"https://alice:{URL_PASSWORD}@h/x"}})
    run.write_text("logs/x.log", " ".join(EVERY_SECRET))
    run.update("rendered", value={"command": f"vllm serve m --api-key {API_KEY}", "argv": ["--api-key", API_KEY],
                                  "note": f"MY_PASSWORD=x\\{FAKE['MY_PASSWORD']}\"q"})
    assert json.loads((run.path / "run.json").read_text())["rendered"]["command"] == "vllm serve m --api-key ***"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert leaks(path.read_text()) == [], path


def local_node(tmp_path: Path) -> NodeHost:
    return NodeHost(Node(name="local", role="head", host="local://", fabric_ip="127.0.0.1",
                         workdir=str(tmp_path / "work")))


def test_env_file_is_written_as_given_and_runs_nothing_at_write_time(tmp_path):
    marker = tmp_path / "INJECTED"
    hostile = (f"a'b\"c\nSERVEGATE_EOF\n$(touch {marker})\n`touch {marker}`\nEOF\n; touch {marker} #"
               + "x" * 70_000)  # over one printf chunk
    host = local_node(tmp_path)
    target = tmp_path / "work" / "runs" / "r1" / "serve.env"
    host.write_text(str(target), hostile)
    assert not marker.exists(), "a command ran while the env file was written"
    assert target.read_text() == hostile
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_env_file_write_failure_names_the_file_not_the_secrets(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(NodeError) as caught:
        local_node(tmp_path).write_text(str(blocker / "sub" / "serve.env"), f"export MY_PASSWORD={FAKE['MY_PASSWORD']}")
    message = str(caught.value)
    assert "serve.env" in message and "node 'local'" in message
    assert FAKE["MY_PASSWORD"] not in message


def _spawned_argv(host: NodeHost, tmp_path: Path, argv: list[str], env: dict[str, str]) -> list[str]:
    env_file, log = str(tmp_path / "work" / "runs" / "r2" / "serve.env"), str(tmp_path / "work" / "serve.log")
    host.write_text(env_file, env_script(env, "r2"))
    pid = host.spawn(argv, env_file=env_file, log_path=log)
    deadline = time.monotonic() + 30
    while host.group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(env_file).exists(), "the env file outlived the process start"
    return json.loads(Path(log).read_text().strip().splitlines()[-1])


def test_model_path_with_spaces_is_one_argument_on_the_node(tmp_path):
    from servegate.config.cluster import load_cluster
    from servegate.config.recipe import load_recipe
    from servegate.render.command import render
    model = str(tmp_path / "my model; touch X")
    rendered = render(load_recipe(ROOT / "recipes" / "local-hybrid.yaml"), load_cluster(), model_path=model)
    argv = rendered.serve_argv
    assert argv[2] == model, argv
    probe = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *argv[1:4]]
    seen = _spawned_argv(local_node(tmp_path), tmp_path, probe, {"A_VAR": "1"})
    assert seen == argv[1:4]
    assert not (tmp_path / "X").exists() and not Path("X").exists()


def test_env_values_expand_at_start_like_upstream_and_the_file_is_gone(tmp_path):
    """Upstream exports env in a bash script: `$VAR` and `$(...)` expand when the process starts (README:
    a recipe is code). Writing the file ran nothing (test above); starting it does, on purpose."""
    probe = [sys.executable, "-c", "import json, os; print(json.dumps([os.environ['SG_EXPANDED']]))"]
    seen = _spawned_argv(local_node(tmp_path), tmp_path, probe, {"SG_EXPANDED": "$(echo expanded)-$HOME"})
    assert seen == [f"expanded-{os.environ['HOME']}"]
