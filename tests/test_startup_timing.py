"""Startup timing from each node's container start (issue 18, item 7): the phases measured from vLLM's process
start are shifted by the gap between that node's container start and the readiness probes' start, per node;
expect.startup's container limits name node, phase and key; the report shows the table. No server: the
readiness steps and clocks are given."""

from __future__ import annotations

from types import SimpleNamespace

from servegate.config.expect import SCHEMA
from servegate.report.cli import write_report
from servegate.results.run import RunDir
from servegate.steps import startup

READINESS = [{"name": "process alive", "seconds": 0.5}, {"name": "port 18480 open", "seconds": 40.0},
             {"name": "/health 200", "seconds": 1.0}, {"name": "/v1/models lists 'x'", "seconds": 0.5},
             {"name": "a streamed chat completion returns a first token", "seconds": 2.0}]
CONTAINERS = {"head": {"epoch": 1000.0, "started_at": "2026-12-06T08:00:00.1Z"},
              "w1": {"epoch": 1003.0, "started_at": "2026-12-06T08:00:03.1Z"}}


def launched(node: str, role: str, epoch: float):
    return SimpleNamespace(launch=SimpleNamespace(node=SimpleNamespace(name=node), role=role), spawned_epoch=epoch)


def deployment():
    """Follower spawned at 1100 (w1), server at 1101 (head), probes from 1101.5: 100 s of pre-launch steps."""
    return SimpleNamespace(launched=[launched("w1", "follower", 1100.0), launched("head", "serve", 1101.0)],
                           readiness=READINESS, ready_from_epoch=1101.5)


def test_phases_from_each_nodes_container_start():
    timings = startup.of_deployment(deployment(), CONTAINERS)
    head, w1 = timings["head"], timings["w1"]
    assert head["port_open_s"] == 40.5 and head["first_token_s"] == 44.0
    assert head["container_to_process_start_s"] == 101.0 and w1["container_to_process_start_s"] == 97.0
    assert head["container_to_port_open_s"] == 142.0 and w1["container_to_port_open_s"] == 139.0
    assert head["container_to_http_ready_s"] == 143.5 and head["container_to_first_token_s"] == 145.5
    assert w1["container_to_first_token_s"] == 142.5 and w1["joined_server_ready_s"] == 44.0
    assert w1["container_started_at"] == "2026-12-06T08:00:03.1Z"


def test_no_container_no_container_phases():
    """The host runtime (vLLM on the node itself): the process-start phases alone."""
    timings = startup.of_deployment(deployment(), {})
    assert not any(key.startswith("container_") for entry in timings.values() for key in entry), timings


def test_container_limits_name_node_phase_and_key():
    timings = startup.of_deployment(deployment(), CONTAINERS)
    assert startup.check(timings, {"max_container_to_first_token_s": 200, "max_first_token_s": 60}) == []
    late = startup.check(timings, {"max_container_to_port_open_s": 140})
    assert [(x.node, x.phase) for x in late] == [("head", "container_to_port_open_s")]
    assert str(late[0]) == ("node head: time to port open 142.0 s from container start exceeds "
                            "expect.startup.max_container_to_port_open_s = 140 s")
    assert {key for _, key in startup.FROM_CONTAINER.values()} <= set(SCHEMA["startup"].schema)


def test_report_shows_container_start_table(tmp_path):
    run = RunDir("local-sim", tmp_path)
    run.update("startup", value=startup.of_deployment(deployment(), CONTAINERS))
    run.flush()
    html = next(p for p in write_report([run.path], tmp_path / "report") if p.suffix == ".html").read_text()
    for words in ("from each node&#x27;s container start", "2026-12-06T08:00:03.1Z", "139.0", "145.5"):
        assert words in html, words
