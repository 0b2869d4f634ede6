"""Node checks in one round trip (servegate.steps.preflight): each batched command keeps its own exit status and
output, and every check still fails on the real fault (port taken, folder absent or differing, container
with a missing var or another image). On this machine (local://) and, with a docker engine, a real container.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from servegate.config.cluster import Node
from servegate.nodes.container import ContainerPlan, remove_container, start_container
from servegate.nodes.host import NodeHost
from servegate.runtimes.images import local_image_id
from servegate.sim.base import BASE_IMAGE, ensure_base_image
from servegate.steps.model_folder import problems
from servegate.steps.preflight import NodeCheck, check_node, check_nodes

LOCAL = Node(name="local", role="head", host="local://", fabric_ip="127.0.0.1")


def test_batch_keeps_each_commands_exit_and_output():
    host = NodeHost(LOCAL)
    results = host.run_batch({
        "fails": "echo out; echo err >&2; exit 3",
        "pipefail": "set -euo pipefail; false | true",
        "heredoc": "cat <<'EOF'\nline one\n  two\tthree é\nEOF",
        "after": "printf '%s' \"$((40 + 2))\"",
    })
    assert (results["fails"].rc, results["fails"].stdout, results["fails"].stderr) == (3, "out\n", "err\n")
    assert results["pipefail"].rc == 1
    assert results["heredoc"].ok and results["heredoc"].stdout == "line one\n  two\tthree é\n"
    assert results["after"].ok and results["after"].stdout == "42"


def test_batch_that_times_out_marks_the_commands_it_did_not_reach():
    results = NodeHost(LOCAL).run_batch({"quick": "echo done", "slow": "sleep 8", "never": "echo x"}, timeout=2)
    assert results["quick"].ok and results["quick"].stdout == "done\n"
    assert not results["slow"].ok and not results["never"].ok
    assert "batch ended before this command" in results["never"].stderr


def model_folder(root, name: str, byte: int):
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "w.bin").write_bytes(bytes([byte]) * 4096)
    return folder


def test_local_checks_pass_then_fail_on_a_taken_port_and_an_absent_folder(tmp_path):
    host = NodeHost(LOCAL)
    folder = model_folder(tmp_path, "model", 1)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        check = NodeCheck(str(tmp_path / "work"), port=port, model_path=str(folder))
        clean = check_node(host, NodeCheck(str(tmp_path / "work"), port=port, model_path=str(folder)))
        assert clean.problems == [] and clean.free_gib > 0 and clean.weights.sizes["w.bin"] == 4096
        listener.listen()
        taken = check_node(host, check)
    assert [p for p in taken.problems if f"port {port} is already in use" in p], taken.problems
    absent = check_node(host, NodeCheck(str(tmp_path), model_path=str(tmp_path / "absent")))
    assert absent.problems == [f"node local: model folder {tmp_path / 'absent'} is absent"]
    too_full = check_node(host, NodeCheck(str(tmp_path), min_free_gib=1e9))
    assert "GiB free at" in too_full.problems[0]


def test_differing_folders_on_two_nodes_are_found_from_the_reports(tmp_path):
    hosts = {"n1": NodeHost(LOCAL), "n2": NodeHost(LOCAL)}
    folders = {"n1": model_folder(tmp_path, "a", 1), "n2": model_folder(tmp_path, "b", 2)}
    reports = check_nodes(hosts, {name: NodeCheck(str(tmp_path), model_path=str(f)) for name, f in folders.items()})
    found = problems({name: report.weights for name, report in reports.items()}, "n1", "M")
    assert len(found) == 1 and "w.bin content differs" in found[0]


@pytest.fixture
def base_container():
    """A real container on this machine's docker engine, started with one env var; removed afterwards."""
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("needs a docker engine: PYTHONPATH=lib python3 -m servegate.sim.engine")
    ensure_base_image()  # built here when missing: no test depends on what an earlier run left
    host = NodeHost(LOCAL)
    plan = ContainerPlan(LOCAL, BASE_IMAGE, "servegate-nodecheck-test", "nodecheck", {"GLOO_SOCKET_IFNAME": "lo"})
    remove_container(host, plan.name)
    start_container(host, plan)
    try:
        yield host, plan.name
    finally:
        assert remove_container(host, plan.name)


@pytest.mark.container
@pytest.mark.parametrize("via", ["engine socket", "docker cli"])
def test_container_image_and_start_env_are_read_for_real(tmp_path, base_container, via, monkeypatch):
    if via == "docker cli":  # DOCKER_HOST set: the check leaves the socket to the CLI
        monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    host, name = base_container
    image_id = local_image_id(BASE_IMAGE)
    good = check_node(host, NodeCheck(str(tmp_path), container=name, image_id=image_id,
                                      env={"GLOO_SOCKET_IFNAME": "lo"}))
    assert good.problems == [] and good.image_id == image_id
    wrong = check_node(host, NodeCheck(str(tmp_path), container=name, image_id="sha256:" + "0" * 64,
                                       env={"GLOO_SOCKET_IFNAME": "eth0", "VLLM_CPU_KVCACHE_SPACE": "1"}))
    assert any("runs image" in p for p in wrong.problems), wrong.problems
    assert "node local: GLOO_SOCKET_IFNAME expected 'eth0', seen 'lo'" in wrong.problems
    assert "node local: VLLM_CPU_KVCACHE_SPACE expected '1', seen <missing>" in wrong.problems
    gone = check_node(host, NodeCheck(str(tmp_path), container="servegate-nodecheck-absent"))
    assert "container servegate-nodecheck-absent not found" in gone.problems[0]


def test_a_session_gives_the_same_batch_results_and_reports_a_timeout_or_a_closed_shell():
    from servegate.nodes.host import sessions
    host = NodeHost(Node(name="here", role="head", host="local://", fabric_ip="127.0.0.1"))
    commands = {"out": "echo hi; echo err >&2; exit 3", "lines": "printf 'x\\ny'", "missing": "cat /nonexistent"}
    fresh = host.run_batch(commands)
    with sessions({"here": host}):
        assert host.run_batch(commands) == fresh
        session = host._session
        assert session.run("sleep 5", timeout=0.5).rc == 124  # and the session is closed
        assert session.run("echo again").rc == 255
    assert host._session is None
    assert host.run_batch(commands) == fresh  # back to one round trip per batch


def path_without(tmp_path, *missing: str) -> str:
    """A PATH of one folder holding symlinks to every program on this machine's PATH except `missing`."""
    import os
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = os.path.join(directory, name)
            if name not in missing and not (folder / name).exists() and os.access(target, os.X_OK):
                (folder / name).symlink_to(target)
    return str(folder)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_a_node_without_ss_still_finds_a_listener_in_proc_net_tcp(tmp_path, family, monkeypatch):
    monkeypatch.setenv("PATH", path_without(tmp_path, "ss"))  # the local:// node's shell inherits it
    host = NodeHost(Node(name="nossnode", role="head", host="local://", fabric_ip="127.0.0.1"))
    assert host.run("command -v ss || echo none").stdout.strip() == "none"  # the node really lacks ss
    address = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.socket(family) as listener:
        listener.bind((address, 0))
        port = listener.getsockname()[1]
        free = check_node(host, NodeCheck(str(tmp_path / "work"), port=port))
        assert free.problems == [] and free.port_source == "/proc/net/tcp"
        listener.listen()
        taken = check_node(host, NodeCheck(str(tmp_path / "work"), port=port))
    shown = f"[{address}]" if family == socket.AF_INET6 else address
    assert taken.port_source == "/proc/net/tcp"
    assert len(taken.problems) == 1 and taken.problems[0].startswith(
        f"node nossnode: port {port} is already in use (read with /proc/net/tcp):\n"
        f"LISTEN {shown}:{port} (/proc/net/tcp{'6' if family == socket.AF_INET6 else ''})\nheld by pid {os.getpid()}: ")


def test_a_missing_tool_is_named_not_read_as_a_finding(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", path_without(tmp_path, "sha256sum", "nvidia-smi", "docker", "curl"))
    host = NodeHost(Node(name="bare", role="head", host="local://", fabric_ip="127.0.0.1"))
    folder = model_folder(tmp_path, "model", 1)
    report = check_node(host, NodeCheck(str(tmp_path / "work"), model_path=str(folder), gpus=1,
                                        container="servegate-absent"))
    assert report.weights is None and report.free_gib > 0
    assert "sha256sum" in report.missing_tools and "nvidia-smi" in report.missing_tools
    assert ("node bare: the weights check needs sha256sum, which is not on the node's PATH; install it there "
            "(no check was made)") in report.problems
    assert any("the gpus check needs nvidia-smi" in p for p in report.problems)
    assert any("the container check needs docker" in p for p in report.problems), report.problems
    assert not any("absent" in p or "differs" in p or "not found" in p for p in report.problems)
