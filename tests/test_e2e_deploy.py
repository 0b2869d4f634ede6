"""End-to-end runs of the scenario suite in a child pytest: secrets, failures and interrupts, for real.

Each test launches real vLLM on the CPU through the same fixtures a user runs, then inspects the results
folder and the process table. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_secrets import VISIBLE, leaks, secret_recipe

from servegate.config.cluster import load_cluster
from servegate.labels import RUN_ID_VAR
from servegate.nodes.host import NodeHost

ROOT = Path(__file__).resolve().parents[1]
LOCAL_RECIPE = ROOT / "recipes" / "local-hybrid.yaml"
pytestmark = pytest.mark.slow


def child_pytest(results: Path, *args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    argv = [sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider", "-q",
            "--sg-results", str(results), *args]
    return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def only_run(results: Path) -> Path:
    runs = [p for p in results.iterdir() if (p / "run.json").is_file()]
    assert len(runs) == 1, f"expected one run folder in {results}, found {runs}"
    return runs[0]


def leftover_processes(run_dir: Path) -> list[int]:
    run_id = json.loads((run_dir / "run.json").read_text()).get("launch", {}).get("run_id")
    assert run_id, f"{run_dir}/run.json records no launch"
    return NodeHost(load_cluster().head).processes_with_env(RUN_ID_VAR, run_id)


def test_secrets_never_reach_results(tmp_path):
    fake_token, fake_key = "hf_FAKEtoken1234567890abcdef", "sk-servegate-fake-key-0987654321"
    child = child_pytest(tmp_path, "--sg-recipe", str(LOCAL_RECIPE), "-k", "serve",
                         env={"HF_TOKEN": fake_token, "VLLM_API_KEY": fake_key})
    output, _ = child.communicate(timeout=900)
    assert child.returncode == 0, output[-4000:]
    run = only_run(tmp_path)
    assert (run / "logs" / "local-serve.log").stat().st_size > 0
    for path in run.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert fake_token not in text, f"HF_TOKEN leaked into {path}"
            assert fake_key not in text, f"VLLM_API_KEY leaked into {path}"
    assert fake_token not in output and fake_key not in output
    assert leftover_processes(run) == []


def test_secrets_of_every_kind_never_printed_nor_written(tmp_path):
    """A real deploy carrying a fake secret of every kind (by name, by value shape, a URL password, --api-key):
    0 hits in every file of the results folder and every printed line; numbers under TOKENS names stay."""
    child = child_pytest(tmp_path / "results", "--sg-recipe", str(secret_recipe(tmp_path)), "-k", "serve")
    output, _ = child.communicate(timeout=900)
    assert child.returncode == 0, output[-4000:]
    assert leaks(output) == [], [line for line in output.splitlines() if leaks(line)]
    run = only_run(tmp_path / "results")
    files = [path for path in run.rglob("*") if path.is_file()]
    assert {"run.json", "junit.xml", "pytest.log", "progress.log"} <= {p.name for p in files}
    for path in files:
        hits = leaks(path.read_text(errors="replace"))
        assert hits == [], f"{hits} leaked into {path}"
    assert VISIBLE.split("=")[0] in (run / "run.json").read_text()
    run_id = json.loads((run / "run.json").read_text())["launch"]["run_id"]
    cache = Path(NodeHost(load_cluster().head).home_path("~/.cache/servegate/runs")) / run_id
    left = [p for p in cache.rglob("*") if p.is_file() and leaks(p.read_text(errors="replace"))]
    assert left == [], f"secret-bearing files left on the node: {left}"
    assert not cache.exists(), f"the run's folder on the node outlived teardown: {list(cache.rglob('*'))}"
    assert leftover_processes(run) == []


def test_sigkilled_run_leaves_no_secret_and_clean_stale_marks_it_killed(tmp_path):
    """SIGKILL the controller (nothing of its teardown runs): the env files are already gone; `servegate clean
    --stale` kills its server, removes its node files and marks its run.json `killed`."""
    results = tmp_path / "results"
    child = child_pytest(results, "--sg-recipe", str(secret_recipe(tmp_path)), "-k", "serve")
    deadline, run = time.monotonic() + 600, None
    while time.monotonic() < deadline and run is None:
        logs = list(results.glob("*/progress.log"))
        if logs and "readiness" in logs[0].read_text():
            run = logs[0].parent
        assert child.poll() is None, child.stdout.read()[-3000:]
        time.sleep(0.5)
    assert run is not None, "the child run never reached readiness"
    child.kill()
    child.communicate(timeout=60)
    data = json.loads((run / "run.json").read_text())
    assert data["verdict"] == "running"
    cache = Path(NodeHost(load_cluster().head).home_path("~/.cache/servegate/runs")) / data["launch"]["run_id"]
    assert not list(cache.glob("*.env")), "an env file outlived the process start"
    assert leftover_processes(run), "the server should outlive its SIGKILLed controller"
    clean = subprocess.run([sys.executable, "-m", "servegate", "clean", "--stale", "--results", str(results)],
                           cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "lib")}, capture_output=True,
                           text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    assert leftover_processes(run) == [], clean.stdout
    assert not cache.exists(), clean.stdout
    assert json.loads((run / "run.json").read_text())["verdict"] == "killed", clean.stdout
    assert leaks(clean.stdout + clean.stderr) == []
    assert not [p for p in results.rglob("*") if p.is_file() and leaks(p.read_text(errors="replace"))]


def test_failed_start_reports_exit_keeps_logs_and_leaves_nothing(tmp_path):
    # Past every pre-launch check (flags parse, the KV of one 999999-token sequence fits the CPU KV space),
    # refused by vLLM itself at start: longer than the model's max_position_embeddings (2048).
    broken = tmp_path / "local-broken.yaml"
    broken.write_text(LOCAL_RECIPE.read_text().replace("name: local-hybrid", "name: local-broken")
                      .replace("max_model_len: 1024", "max_model_len: 999999"))
    child = child_pytest(tmp_path / "results", "--sg-recipe", str(broken), "-k", "readiness")
    output, _ = child.communicate(timeout=900)
    assert child.returncode == 1, output[-3000:]
    assert "exited unexpectedly" in output, output[-3000:]
    run = only_run(tmp_path / "results")
    data = json.loads((run / "run.json").read_text())
    assert data["verdict"] == "failed"
    assert "999999" in (run / "logs" / "local-serve.log").read_text()
    assert (run / "junit.xml").read_text().count("<error") + (run / "junit.xml").read_text().count("<failure") >= 1
    assert leftover_processes(run) == []
    cache = Path(NodeHost(load_cluster().head).home_path("~/.cache/servegate/runs")) / data["launch"]["run_id"]
    assert not cache.exists(), f"the failed run's folder on the node outlived teardown: {list(cache.rglob('*'))}"


def test_interrupted_run_tears_down_and_records_it(tmp_path):
    # A background job of a non-interactive shell (nohup ... &) starts with SIGINT ignored, and Python keeps
    # it ignored: give the child the default disposition, as a terminal's Ctrl-C would find it.
    child = child_pytest(tmp_path, "--sg-recipe", str(LOCAL_RECIPE), "-k", "serve", start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 600
    run = None
    while time.monotonic() < deadline:
        logs = list(tmp_path.glob("*/progress.log"))
        if logs and "readiness" in logs[0].read_text():
            run = logs[0].parent
            break
        assert child.poll() is None, child.stdout.read()[-3000:]
        time.sleep(0.5)
    assert run is not None, "the child run never reached readiness"
    child.send_signal(signal.SIGINT)  # at once: a loaded machine must not let the run finish first
    output, _ = child.communicate(timeout=120)
    assert child.returncode != 0, output[-3000:]
    assert "stopping serve" in (run / "progress.log").read_text(), "the server was not up when interrupted"
    assert leftover_processes(run) == [], textwrap.shorten(output, 2000)
    assert json.loads((run / "run.json").read_text())["verdict"] == "interrupted"
    assert (run / "logs" / "local-serve.log").is_file()


def test_preflight_fails_naming_node_and_port_when_the_serve_port_is_taken(tmp_path):
    import socket
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        child = child_pytest(tmp_path, "--sg-recipe", str(LOCAL_RECIPE), "--sg-set", f"port={port}",
                             "-k", "port_free")
        output, _ = child.communicate(timeout=600)
    assert child.returncode == 1, output[-3000:]
    assert f"node local: port {port} is already in use" in output, output[-3000:]


def test_placeholder_cluster_is_one_usage_error(tmp_path):
    """`nox -s deploy-ultra` on the gx10-4 template: one short message naming the cluster file and the nodes,
    exit 4 (usage error), before any collection, instead of every test failing on every node."""
    recipe = ROOT / "recipes" / "nemotron-3-ultra-gx10x4.yaml"
    child = child_pytest(tmp_path, "--sg-recipe", str(recipe))
    output, _ = child.communicate(timeout=300)
    assert child.returncode == 4, output[-3000:]
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) <= 6, output
    assert "gx10-4.yaml" in output and "gx10-1" in output and "gx10-4" in output, output
    assert output.count("placeholder") == 1, output
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
