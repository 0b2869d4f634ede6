"""servegate wheelhouse: freeze parsing, tags, the plan over a real pip report, and a real tiny download."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from servegate.runtimes.wheelhouse import (
    MANIFEST_NAME,
    Target,
    Wheel,
    make_plan,
    node_conflicts,
    parse_freeze,
    parse_report,
    resolve,
    stale_files,
    unmet_requirements,
)

ROOT = Path(__file__).resolve().parents[1]
PY312 = Target("3.12", "2.35", "x86_64")


def test_parse_freeze_reads_every_line_form():
    text = "\n".join([
        "# comment", "torch==2.11.0+cu130", "Typing_Extensions==4.12.2", "numpy", "-e git+https://x/y#egg=z",
        "mypkg @ file:///tmp/mypkg-1.0-py3-none-any.whl", "ray[default]==2.60.0", "",
    ])
    assert parse_freeze(text) == {"torch": "2.11.0", "typing-extensions": "4.12.2", "numpy": None,
                                  "mypkg": None, "ray": "2.60.0"}


def test_platform_tags_stop_at_the_node_glibc():
    tags = PY312.platforms()
    assert tags[0] == "manylinux_2_35_x86_64" and "manylinux_2_36_x86_64" not in tags
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"} <= set(tags)
    assert "manylinux2014_x86_64" not in Target("3.12", "2.12").platforms()


@pytest.fixture(scope="module")
def report_file(tmp_path_factory) -> Path:
    """A real `pip install --dry-run --report` of requests for CPython 3.12 manylinux (small, 5 wheels)."""
    report = tmp_path_factory.mktemp("resolve") / "report.json"
    resolve(["requests==2.32.3"], PY312, report)
    return report


@pytest.fixture(scope="module")
def requests_report(report_file) -> list[Wheel]:
    return parse_report(json.loads(report_file.read_text()))


def test_report_of_a_real_resolution(requests_report):
    names = {w.name: w for w in requests_report}
    assert {"requests", "urllib3", "idna", "certifi", "charset-normalizer"} <= set(names)
    assert names["requests"].requested and names["requests"].version == "2.32.3"
    assert not names["idna"].requested
    assert any(r.startswith("urllib3") for r in names["requests"].requires)
    assert names["requests"].url.endswith(".whl")


def test_plan_subtracts_node_packages_and_excludes(requests_report):
    plan = make_plan(requests_report, {"idna": None, "certifi": "2024.2.2"}, PY312, excludes=("charset-*",))
    assert sorted(w.name for w in plan.fetch) == ["requests", "urllib3"]
    assert sorted(w.name for w, _ in plan.on_node) == ["certifi", "idna"]
    assert [(w.name, p) for w, p in plan.excluded] == [("charset-normalizer", "charset-*")]
    assert plan.problems == []
    assert [w.name for w, _ in plan.drifted] == ["certifi"]


def test_plan_names_a_node_version_that_breaks_a_requirement(requests_report):
    plan = make_plan(requests_report, {"urllib3": "1.20"}, PY312, excludes=())
    assert "urllib3" not in {w.name for w in plan.fetch}
    assert len(plan.problems) == 1 and "requests needs urllib3" in plan.problems[0]
    assert "the node has urllib3 1.20" in plan.problems[0]
    replaced = make_plan(requests_report, {"urllib3": "1.20"}, PY312, excludes=(), replace=("urllib3",))
    assert "urllib3" in {w.name for w in replaced.fetch} and replaced.problems == []


def test_a_set_in_its_own_site_carries_what_the_node_has_at_a_rejected_version(requests_report):
    """AIPerf's set goes into a site of its own (before the node's): a node package it rejects is carried,
    the way --replace would, instead of failing the bundle (issue 19: aiperf 0.13 pins rich~=14.1 etc.)."""
    node = {"urllib3": "1.20", "idna": "3.7"}
    plan = make_plan(requests_report, node, PY312, excludes=())
    assert node_conflicts(plan, node, PY312) == ("urllib3",)  # idna 3.7 satisfies requests: stays the node's
    carried = make_plan(requests_report, node, PY312, excludes=(), replace=node_conflicts(plan, node, PY312))
    assert carried.problems == [] and {"urllib3"} <= {w.name for w in carried.fetch}
    assert "idna" not in {w.name for w in carried.fetch}


def test_a_requested_package_is_never_excluded(requests_report):
    plan = make_plan(requests_report, {}, PY312, excludes=("requests", "idna"))
    assert "requests" in {w.name for w in plan.fetch}
    assert [w.name for w, _ in plan.excluded] == ["idna"]


def test_markers_are_evaluated_for_the_target_python():
    wheel = Wheel("app", "1.0", requires=('six>=1.16; python_version > "3.11"', 'zen; extra == "zen"'))
    plan_312 = make_plan([wheel], {}, PY312, excludes=())
    assert plan_312.problems == ['app needs six>=1.16; python_version > "3.11" (for Python 3.12): '
                                 'neither in the wheelhouse nor on the node']
    assert unmet_requirements(make_plan([wheel], {}, Target("3.11"), excludes=()), {}, Target("3.11")) == []


def test_stale_wheels_of_another_version_are_found(tmp_path):
    plan = make_plan([Wheel("idna", "3.7", requested=True)], {}, PY312, excludes=())
    (tmp_path / "idna-3.6-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "idna-3.7-py3-none-any.whl").write_bytes(b"")
    assert [p.name for p in stale_files(tmp_path, plan)] == ["idna-3.6-py3-none-any.whl"]


def test_parse_report_rejects_other_json():
    with pytest.raises(Exception, match="not a pip installation report"):
        parse_report({"packages": []})


def test_cli_downloads_what_the_node_lacks(tmp_path, report_file, requests_report):
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("requests==2.32.3\nurllib3==2.2.1\ncharset-normalizer\n")
    dest = tmp_path / "wh"
    argv = ["wheelhouse", "requests==2.32.3", "--dest", str(dest), "--freeze", str(freeze),
            "--from-report", str(report_file), "--exclude", "certifi"]
    out = subprocess.run([sys.executable, "-m", "servegate", *argv], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    idna = next(w for w in requests_report if w.name == "idna")
    assert [p.name for p in dest.glob("*.whl")] == [f"idna-{idna.version}-py3-none-any.whl"]
    assert out.stdout.startswith("wheelhouse: 1 wheels, ") and idna.pin in out.stdout
    assert "already on the node: 3" in out.stdout and "certifi==" in out.stdout
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    assert manifest["wheels"][0]["pin"] == idna.pin and manifest["wheels"][0]["bytes"] > 10_000
    assert manifest["target"]["python_version"] == "3.12"
