"""Process lifecycle on a real node transport: spawn, readiness failures told apart, group teardown."""

from __future__ import annotations

import sys
import time

import pytest

from servegate.config.cluster import load_cluster
from servegate.errors import ServerExited, WaitTimeout
from servegate.nodes.host import NodeHost
from servegate.waits import Step, run_steps


@pytest.fixture
def local_host():
    return NodeHost(load_cluster().head)


def test_spawn_runs_with_env_file_and_kill_takes_the_whole_group(local_host, tmp_path):
    env_file = tmp_path / "x.env"
    env_file.write_text('export SG_TEST_VALUE="hello"\n')
    log = tmp_path / "x.log"
    script = "echo $SG_TEST_VALUE; sleep 300 & sleep 300 & wait"
    pgid = local_host.spawn(["bash", "-c", script], env_file=str(env_file), log_path=str(log))
    deadline = time.monotonic() + 10
    while "hello" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "hello" in log.read_text()
    assert local_host.group_alive(pgid)
    assert local_host.kill_group(pgid, grace_s=5)
    assert not local_host.group_alive(pgid)


def test_unreachable_node_is_its_own_error():
    from servegate.config.cluster import Node
    from servegate.nodes.host import NodeUnreachable
    host = NodeHost(Node(name="ghost", role="head", host="docker://servegate-no-such-container",
                         fabric_ip="127.0.0.1"))
    with pytest.raises(NodeUnreachable, match="ghost"):
        host.ping()


def test_exited_process_is_reported_as_exited_with_log_tail(local_host, tmp_path):
    env_file = tmp_path / "e.env"
    env_file.write_text("")
    log = tmp_path / "e.log"
    pid = local_host.spawn([sys.executable, "-c", "print('boom: engine died'); raise SystemExit(3)"],
                           env_file=str(env_file), log_path=str(log))
    steps = [Step("port open", lambda: (False, "connect refused"), 30, 0.2)]
    with pytest.raises(ServerExited) as info:
        run_steps(steps, still_running=lambda: local_host.alive(pid), log_tail=lambda: log.read_text())
    assert "exited unexpectedly" in str(info.value) and "boom: engine died" in str(info.value)
    assert "step 1/1" in str(info.value)


def test_deadline_is_reported_with_step_status_and_tail():
    steps = [Step("ok", lambda: (True, "fine"), 1, 0.1), Step("/health 200", lambda: (False, "HTTP 503"), 0.5, 0.1)]
    with pytest.raises(WaitTimeout) as info:
        run_steps(steps, still_running=lambda: True, log_tail=lambda: "last log line")
    text = str(info.value)
    assert "step 2/2: /health 200 (the server) did not succeed" in text
    assert "HTTP 503" in text and "last log line" in text
