"""What a killed run leaves, and teardown past a dead node.

- `servegate clean --stale` on real files: run folders under the node's runs/ whose owner is gone are removed
  (env files hold secrets, raw logs vLLM's args), a live owner's are kept; run.json left `running` by a dead
  owner becomes `killed`.
- A deployment whose node is gone (its processes killed, its host unreachable) still tears down the rest and
  says which node and why; a readiness failure names the node; a process killed by a signal is reported with
  that signal and its log tail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servegate.config.cluster import Cluster, Node, load_cluster
from servegate.errors import ServerExited
from servegate.nodes.host import NodeHost
from servegate.runtimes.reaper import mark_killed_runs, reap_env_files

ROOT = Path(__file__).resolve().parents[1]


def dead_owner() -> str:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return f"{socket.gethostname()}:{gone.pid}"


def local(tmp_path: Path, name: str = "local") -> NodeHost:
    return NodeHost(Node(name=name, role="head", host="local://", fabric_ip="127.0.0.1",
                         workdir=str(tmp_path / "work")))


def test_clean_stale_removes_a_dead_runs_files_and_keeps_a_live_ones(tmp_path):
    runs = tmp_path / "work" / "runs"
    dead, live, loose, fresh = (runs / name for name in ("deadrun", "liverun", "looserun", "freshrun"))
    for folder in (dead, live, loose, fresh):
        folder.mkdir(parents=True)
    (dead / "owner").write_text(dead_owner())
    (dead / "serve.env").write_text("export MY_PASSWORD=fakepass-MYPW-123\n")
    (dead / "serve.log").write_text("api_key='fake'\n")
    (live / "owner").write_text(f"{socket.gethostname()}:{os.getpid()}")
    (live / "serve.env").write_text("x")
    (loose / "ray.env").write_text(f"export A=1\nexport SERVEGATE_OWNER='{dead_owner()}'\n")
    (fresh / "container.env").write_text("A=1\n")  # no owner line, just written: a run about to start
    report = reap_env_files(local(tmp_path), only_stale=True)
    assert not dead.exists() and not (loose / "ray.env").exists(), report
    assert (live / "serve.env").exists() and (fresh / "container.env").exists(), report
    assert any("deadrun" in line and "removed" in line for line in report), report


def test_clean_marks_a_running_run_json_with_a_dead_owner_killed(tmp_path):
    for name, owner, verdict in (("a", dead_owner(), "running"), ("b", f"{socket.gethostname()}:{os.getpid()}",
                                                                      "running"), ("c", dead_owner(), "passed")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"verdict": verdict, "suite": {"owner": owner}}))
    report = mark_killed_runs([tmp_path])
    verdicts = {n: json.loads((tmp_path / n / "run.json").read_text())["verdict"] for n in "abc"}
    assert verdicts == {"a": "killed", "b": "running", "c": "passed"}, report


def test_port_taken_by_a_foreign_process_names_it_and_does_not_suggest_clean(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        text = NodeHost(load_cluster().head).port_holder_text(port)
    assert f"pid {os.getpid()}" in text and "python" in text, text
    assert "servegate clean` will not touch it" in text and "--stale" not in text, text


def _deployment(tmp_path: Path, argv: list[str], nodes: list[Node]):
    """A Deployment of an arbitrary command (a stand-in 'server'), on real local processes."""
    from servegate.render.command import Rendered
    from servegate.render.launches import NodeLaunch
    from servegate.results.run import Progress, RunDir
    from servegate.serve.deployment import Deployment
    cluster = Cluster(name="t", nodes=nodes, path=tmp_path / "c.yaml")
    launches = [NodeLaunch(node=n, role="serve" if n.role == "head" else "headless", argv=argv, env={"A": "1"})
                for n in nodes]
    rendered = Rendered.__new__(Rendered)
    rendered.cluster, rendered.launches = cluster, launches
    run = RunDir("teardown-test", root=tmp_path / "results")
    run.update("launch", value={"run_id": "t", "mode": "solo", "processes": []})  # as Deployment.start does
    return Deployment(rendered=rendered, hosts={n.name: NodeHost(n) for n in nodes}, run=run,
                      progress=Progress(run, stream=open(os.devnull, "w")))


def test_a_process_killed_by_a_signal_is_reported_with_signal_node_and_tail(tmp_path):
    node = Node(name="nodeA", role="head", host="local://", fabric_ip="127.0.0.1", workdir=str(tmp_path / "w"))
    deployment = _deployment(tmp_path, [sys.executable, "-c", "print('about to be killed', flush=True); "
                                        "import time; time.sleep(60)"], [node])
    try:
        launched = deployment._spawn(deployment.rendered.launches[0])
        time.sleep(1.5)
        pgrep = subprocess.run(["pgrep", "-P", str(launched.pid)], capture_output=True, text=True)
        os.kill(int(pgrep.stdout.split()[0]), signal.SIGKILL)  # the server, not its group: as the OOM killer does
        time.sleep(1.0)
        with pytest.raises(ServerExited) as caught:
            deployment.explain_failure()
    finally:
        deployment.stop()
    text = str(caught.value)
    assert "node 'nodeA'" in text and "killed by SIGKILL (exit 137)" in text and "about to be killed" in text, text


def test_teardown_carries_on_past_an_unreachable_node(tmp_path):
    good = Node(name="good", role="head", host="local://", fabric_ip="127.0.0.1", workdir=str(tmp_path / "g"))
    gone = Node(name="gone", role="worker", host="docker://servegate-no-such-node", fabric_ip="10.0.0.9",
                workdir="/tmp")
    deployment = _deployment(tmp_path, [sys.executable, "-c", "import time; time.sleep(120)"], [good])
    deployment._spawn(deployment.rendered.launches[0])
    server = deployment.launched[0]
    # the second node's process was started, then its node died: teardown must reach past it
    from servegate.serve.deployment import Launched
    deployment.hosts["gone"] = NodeHost(gone)
    deployment.launched.append(Launched(server.launch.__class__(node=gone, role="headless", argv=["x"], env={}),
                                        4242, "/tmp/x.log", "/tmp/x.env"))
    deployment.stop()  # no ExceptionGroup, no NodeUnreachable
    assert not NodeHost(good).group_alive(server.pid)
    teardown = deployment.run.data.get("teardown", {})
    assert any(key.startswith("gone-") for key in teardown), teardown
    progress = (deployment.run.path / "progress.log").read_text()
    assert "[gone]" in progress and "node gone" in progress, progress
