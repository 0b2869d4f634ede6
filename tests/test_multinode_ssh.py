"""The SSH transport against a real sshd (started inside a simulated node, reached on its fabric IP):
commands, a container with its start env, an image and a model folder streamed over ssh://, and an
unreachable node told apart from a failed command."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from multinode_support import SIM_CLUSTER, simulation

from servegate.config.cluster import Node, load_cluster
from servegate.nodes.container import ContainerPlan, remove_container, start_container
from servegate.nodes.host import NodeHost, NodeUnreachable
from servegate.runtimes.images import local_image_id, node_image_id, remove_image, sync_image
from servegate.sim.base import BASE_IMAGE, ensure_base_image
from servegate.steps.env_parity import missing_vars
from servegate.steps.model_folder import copy_folder, manifest

pytestmark = [pytest.mark.slow, pytest.mark.multinode, pytest.mark.container]
SSHD_PID = "/run/servegate-test-sshd.pid"


@pytest.fixture(scope="module")
def sim():
    """sim-2 for this module alone, up with the image built (see multinode_support.simulation)."""
    with simulation() as running:
        yield running


@pytest.fixture(scope="module")
def ssh_node(sim, tmp_path_factory):
    """An sshd on the head node (key auth only), and a Node reaching it as ssh://root@<fabric ip>."""
    head = sim.nodes[0]
    keys = tmp_path_factory.mktemp("ssh")
    key = keys / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = keys / "config"
    config.write_text(
        f"Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
    )
    public = (keys / "id_ed25519.pub").read_text().strip()
    node_shell = NodeHost(
        Node(name=head.name, role="head", host=f"docker://{head.container}", fabric_ip=head.ip)
    )
    node_shell.check(
        f"echo {shlex.quote(public)} >> /root/.ssh/authorized_keys && chmod 600 "
        f"/root/.ssh/authorized_keys && /usr/sbin/sshd -o PidFile={SSHD_PID}",
        "starting sshd",
    )
    node = Node(
        name="ssh-head",
        role="head",
        host=f"ssh://root@{head.ip}?ssh_config={config}",
        fabric_ip=head.ip,
        runtime="docker",
    )
    yield node
    node_shell.run(
        f"kill $(cat {SSHD_PID}) 2>/dev/null; sed -i {shlex.quote('/' + public.split()[1][:20] + '/d')} "
        "/root/.ssh/authorized_keys"
    )


def test_commands_over_ssh(ssh_node):
    host = NodeHost(ssh_node)
    assert host.ping() >= 0
    result = host.run("echo out; echo err >&2; exit 3")
    assert (result.rc, result.stdout.strip(), result.stderr.strip()) == (3, "out", "err")
    assert host.run("hostname").stdout.strip() == "sim-head"
    assert host.run("ip -4 -o addr show eth0").stdout.split()[3].startswith(ssh_node.fabric_ip + "/")


def test_container_with_its_start_env_over_ssh(ssh_node):
    host = NodeHost(ssh_node)
    plan = ContainerPlan(
        ssh_node,
        "servegate-vllm-cpu:0.32.0",
        "servegate-sshtest-env",
        "sshtest",
        {"SG_A": "1", "SG_B": "two words"},
    )
    inside = start_container(host, plan)
    try:
        assert missing_vars(inside, {"SG_A": "1", "SG_B": "two words"}) == []
        found = missing_vars(inside, {"SG_C": "3"})
        assert [str(f) for f in found] == ["node ssh-head: SG_C expected '3', seen <missing>"]
        assert inside.run("echo $((6 * 7))").stdout.strip() == "42"
    finally:
        assert remove_container(host, plan.name)


def test_image_streamed_over_ssh(ssh_node):
    ensure_base_image()
    host = NodeHost(ssh_node)
    had = node_image_id(host, BASE_IMAGE)
    try:
        if had:
            assert remove_image(host, BASE_IMAGE)
        state = sync_image(
            BASE_IMAGE,
            {"ssh-head": host},
            "ssh-head",
            Path("/tmp/servegate-ssh-test-images"),
            controller_id=local_image_id(BASE_IMAGE),
        )
        assert state["ssh-head"]["action"] == "received" and state["ssh-head"]["id"] == local_image_id(
            BASE_IMAGE
        )
    finally:
        if not had:
            remove_image(host, BASE_IMAGE)


def test_model_folder_streamed_from_a_docker_node_to_an_ssh_node(sim, ssh_node):
    worker = NodeHost(load_cluster(SIM_CLUSTER).node("sim-w1"))
    source = "/root/.cache/servegate/ssh-test-folder"
    worker.check(
        f"mkdir -p {source}/sub && head -c 300000 /dev/urandom > {source}/sub/w.bin && echo x > "
        f"{source}/config.json",
        "writing a folder",
    )
    host = NodeHost(ssh_node)
    try:
        moved = copy_folder(worker, host, source)
        assert moved > 300000
        assert manifest(host, source).digest == manifest(worker, source).digest
    finally:
        worker.run(f"rm -rf {source}")
        host.run(f"rm -rf {source}")


def test_unreachable_ssh_node_is_its_own_error(ssh_node):
    ghost = Node(
        name="ssh-ghost",
        role="worker",
        host=ssh_node.host.replace(ssh_node.fabric_ip, "172.31.200.99").replace(
            "ssh_config=", "timeout=3&ssh_config="
        ),
        fabric_ip="172.31.200.99",
    )
    with pytest.raises(NodeUnreachable) as info:
        NodeHost(ghost).ping()
    assert "ssh-ghost" in str(info.value)
