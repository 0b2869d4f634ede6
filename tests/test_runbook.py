"""The runbook has one definition (lib/servegate/steps/runbook.py): scenarios/, the plan and lib/ follow it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from servegate.config.paths import REPO_ROOT
from servegate.steps.runbook import STEPS

SCENARIOS = REPO_ROOT / "scenarios"
LIB = REPO_ROOT / "lib" / "servegate"


def test_every_scenario_module_is_a_runbook_step_and_back():
    files = sorted(p.stem for p in SCENARIOS.glob("test_*.py"))
    assert files == sorted(step.scenario for step in STEPS)
    assert [s.number for s in STEPS] == sorted(s.number for s in STEPS), "STEPS must be in runbook order"


def test_scenario_docstrings_carry_their_file_number_and_step_name():
    for step in STEPS:
        doc = ast.get_docstring(ast.parse((SCENARIOS / f"{step.scenario}.py").read_text())) or ""
        assert doc.startswith(f"Step {step.number}, {step.name}:"), (step.scenario, doc.splitlines()[:1])


def test_plan_narrates_every_step_in_order():
    out = subprocess.run([sys.executable, "-m", "servegate", "plan", str(REPO_ROOT / "recipes" / "local-hybrid.yaml")],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    positions = [out.stdout.index(f"step {s.number} {s.name} ({s.scenario},") for s in STEPS]
    assert positions == sorted(positions)
    assert out.stdout.count("(the launch refuses on its errors)") == sum(s.pre_launch for s in STEPS)


def test_pre_launch_steps_are_asked_by_the_launch():
    """Stack.launch_problems asks each pre-launch step's Stack method (the runbook's `runs`)."""
    source = (LIB / "stack.py").read_text()
    body = source[source.index("def launch_problems"):source.index("def deployment")]
    for step in (s for s in STEPS if s.pre_launch):
        method = step.runs.removeprefix("Stack.")
        assert re.search(rf"self\.{method}\(", body), f"launch_problems does not ask {step.runs} ({step.name})"


def test_lib_stays_free_of_pytest():
    offenders = [str(p.relative_to(REPO_ROOT)) for p in LIB.rglob("*.py")
                 if re.search(r"^\s*(import pytest|from pytest|from _pytest)", p.read_text(), re.M)]
    assert offenders == []


def test_fixture_modules_mirror_steps():
    """Each fixtures/ module is a step's (or the shared options/stack/report plumbing), and is registered."""
    conftest = (REPO_ROOT / "conftest.py").read_text()
    for path in sorted((REPO_ROOT / "fixtures").glob("*.py")):
        if path.stem != "__init__":
            assert f'"fixtures.{path.stem}"' in conftest, f"{path.name} is not registered in conftest.py"


def test_scenarios_define_no_fixtures_of_their_own():
    for path in sorted(SCENARIOS.glob("test_*.py")):
        assert "@pytest.fixture" not in path.read_text(), f"{path.name}: fixtures belong in fixtures/<step>.py"


def test_no_path_constant_is_defined_twice():
    seen: dict[str, list[str]] = {}
    for path in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.BinOp | ast.Call):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.endswith(("_DIR", "_ROOT")):
                        seen.setdefault(target.id, []).append(str(path.relative_to(LIB)))
    assert {k: v for k, v in seen.items() if len(v) > 1} == {}

