"""Fast checks of the multi-node building blocks: env parity, weights manifests, transports, container plans,
image rules. Real inputs, real shells on this machine where a command runs; nothing mocked."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from servegate.config.cluster import Node
from servegate.errors import NodeError
from servegate.nodes.container import ContainerPlan, env_file_text
from servegate.nodes.host import NodeHost
from servegate.nodes.transport import command_argv, pipe_argvs
from servegate.runtimes.images import ImageBuild, content_hash, identity_problems, image_problems, repository
from servegate.steps.env_parity import parity, shown
from servegate.steps.model_folder import manifest, problems

ROOT = Path(__file__).resolve().parents[1]
LOCAL = Node(name="here", role="head", host="local://", fabric_ip="127.0.0.1")


def test_parity_flags_missing_and_unequal_recipe_vars_but_allows_per_node_ones():
    envs = {
        "head": {"A": "1", "B": "x", "NCCL_SOCKET_IFNAME": "enp1", "VLLM_HOST_IP": "10.0.0.1"},
        "w1": {"B": "y", "NCCL_SOCKET_IFNAME": "enp2", "VLLM_HOST_IP": "10.0.0.2"},
    }
    report = parity(
        envs, {"A": "1", "B": "x", "NCCL_SOCKET_IFNAME": "enp1"}, ["NCCL_SOCKET_IFNAME", "VLLM_HOST_IP"]
    )
    assert len(report.missing) == 1 and report.missing[0].startswith("A is missing on node(s) w1")
    assert (
        len(report.unequal) == 1
        and "B differs across nodes" in report.unequal[0]
        and "w1='y'" in report.unequal[0]
    )
    assert any(line.startswith("NCCL_SOCKET_IFNAME") for line in report.allowed_differences)
    assert any(line.startswith("VLLM_HOST_IP") for line in report.allowed_differences)
    assert sorted(report.per_node) == ["head", "w1"]


def test_parity_passes_when_equal_and_never_shows_secret_values():
    envs = {"head": {"HF_TOKEN": "hf_secret_1"}, "w1": {"HF_TOKEN": "hf_secret_2"}}
    report = parity(envs, {"HF_TOKEN": "hf_secret_1"}, [])
    assert report.unequal and "hf_secret" not in " ".join(report.unequal)
    assert shown("HF_TOKEN", "hf_secret_1").startswith("sha256:")
    assert not parity({"a": {"X": "1"}, "b": {"X": "1"}}, {"X": "1"}, []).problems


def test_weights_manifest_finds_identical_and_differing_folders(tmp_path):
    host = NodeHost(LOCAL)
    for name in ("a", "b"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "config.json").write_text('{"x": 1}')
        (tmp_path / name / "sub" / "w.bin").write_bytes(bytes(range(256)) * 40)
    a, b = manifest(host, str(tmp_path / "a")), manifest(host, str(tmp_path / "b"))
    assert a.sizes == {"config.json": 8, "sub/w.bin": 10240} and a.mode == "full"
    assert a.digest == b.digest and not problems({"n1": a, "n2": b}, "n1", "M")
    data = bytearray((tmp_path / "b" / "sub" / "w.bin").read_bytes())
    data[100] ^= 1
    (tmp_path / "b" / "sub" / "w.bin").write_bytes(bytes(data))
    found = problems({"n1": a, "n2": manifest(host, str(tmp_path / "b"))}, "n1", "M")
    assert len(found) == 1 and found[0].startswith("node n2:") and "sub/w.bin content differs" in found[0]
    assert problems({"n1": a, "n2": None}, "n1", "M") == ["node n2: model folder M does not exist"]
    assert manifest(host, str(tmp_path / "absent")) is None


def test_command_argv_per_transport():
    assert command_argv("local://", "echo hi") == ["bash", "-c", "echo hi"]
    assert command_argv("docker://root@n1", "echo hi") == [
        "docker",
        "exec",
        "-i",
        "-u",
        "root",
        "n1",
        "bash",
        "-c",
        "echo hi",
    ]
    argv = command_argv(
        "ssh://root@10.0.0.2:2222?ssh_config=/tmp/cfg&ssh_identity_file=/tmp/key", "echo 'hi'"
    )
    assert argv[0] == "ssh" and ["-F", "/tmp/cfg"] == argv[argv.index("-F") : argv.index("-F") + 2]
    assert argv[-2] == "10.0.0.2" and argv[-1] == "bash -c 'echo '\"'\"'hi'\"'\"''"
    assert ["-p", "2222"] == argv[argv.index("-p") : argv.index("-p") + 2] and "-l" in argv
    with pytest.raises(NodeError, match="not supported"):
        command_argv("kubectl://pod", "true")


def test_pipe_counts_bytes_and_reports_failures():
    result = pipe_argvs(["bash", "-c", "head -c 3000000 /dev/zero"], ["bash", "-c", "wc -c"])
    assert result.ok and result.bytes == 3_000_000 and result.sink_stdout.strip() == "3000000"
    failed = pipe_argvs(["bash", "-c", "echo x; exit 3"], ["bash", "-c", "cat >/dev/null"])
    assert failed.source_rc == 3 and not failed.ok


def test_container_plan_uses_seed_flags_and_devices_only_where_present():
    plan = ContainerPlan(LOCAL, "img:1", "c1", "run1", {"A": "1"}, ["/data"])
    flags = plan.flags()
    for expected in (
        ["--network", "host"],
        ["--ipc", "host"],
        ["--ulimit", "memlock=-1"],
        ["--label", "org.servegate.run=run1"],
        ["-v", "/data:/data"],
    ):
        assert any(flags[i : i + 2] == expected for i in range(len(flags))), (expected, flags)
    assert "--gpus" not in flags
    plan.dropped.append("--ulimit memlock=-1 (refused by this platform: setting rlimit type 8)")
    assert "memlock=-1" not in plan.flags()
    gpu = ContainerPlan(
        Node(name="g", role="head", host="local://", fabric_ip="127.0.0.1", gpus=4), "i", "c", "r"
    )
    assert ["--gpus", "all"] == gpu.flags()[gpu.flags().index("--gpus") : gpu.flags().index("--gpus") + 2]
    assert env_file_text({"A": "1", "B": "x y"}) == "A=1\nB=x y"
    with pytest.raises(NodeError, match="newlines"):
        env_file_text({"A": "1\n2"})


def test_image_rules():
    assert (
        repository("nvcr.io/nvidia/vllm:26.05-py3") == "vllm"
        and repository("servegate-vllm-cpu:0.32.0") == "servegate-vllm-cpu"
    )
    info = {
        "vllm": "0.32.0",
        "torch": "2.13.0+cpu",
        "ray": None,
        "ray_import": "ModuleNotFoundError: No module named 'ray'",
        "ray_on_path": None,
    }
    found = image_problems(info, {"vllm": "0.32.0", "torch": "2.11.0+cu130"}, "w1", "img")
    assert any("torch 2.13.0+cpu, the recipe pins 2.11.0+cu130" in p for p in found)
    assert any(p.startswith("node w1: `import ray` fails") for p in found)
    assert any("no `ray` executable on PATH" in p for p in found)
    state = {"a": {"id": "sha256:1"}, "b": {"id": "sha256:2"}, "c": {"id": None}}
    assert identity_problems(state, "img") == [
        "node c: image img is missing",
        "image img differs across nodes: a=sha256:1, b=sha256:2, c=none",
    ]


def test_content_hash_follows_the_dockerfile_folder(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    (folder / "Dockerfile").write_text("FROM scratch-not-local\n")
    first = content_hash(ImageBuild("t:1", folder), [])
    assert first == content_hash(ImageBuild("t:1", folder), [])
    (folder / "extra.sh").write_text("echo\n")
    assert content_hash(ImageBuild("t:1", folder), []) != first
    assert content_hash(ImageBuild("t:1", folder, {"A": "1"}), []) != content_hash(
        ImageBuild("t:1", folder), []
    )


def test_engine_module_runs_without_servegate_installed():
    """.ci/run calls it before any venv exists: standard library plus lib/ only."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        ["python3", "-c", "import servegate.sim.engine as e; print(e.PACKAGES)"],
        cwd=root,
        env={"PYTHONPATH": str(root / "lib"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "docker.io" in out.stdout, out.stderr


def test_ray_node_on_matches_fabric_ip_and_a_loopback_head_of_a_one_node_ray():
    from servegate.steps.ray import RayNode, node_on
    head, worker = RayNode("10.0.0.1", True, "a"), RayNode("10.0.0.2", True, "b")
    assert node_on([head, worker], "10.0.0.2") is worker
    assert node_on([head, worker], "10.0.0.3") is None
    assert node_on([RayNode("192.0.2.2", True, "a")], "127.0.0.1").node_id == "a"
    assert node_on([head, worker], "127.0.0.1") is None  # two nodes: loopback names neither
    assert node_on([RayNode("10.0.0.1", False, "a")], "10.0.0.1") is None


def test_ray_node_name_maps_reported_addresses_to_cluster_nodes():
    from servegate.config.cluster import load_cluster
    from servegate.steps.ray import node_name
    local = load_cluster(ROOT / "recipes/clusters/local.yaml")
    assert node_name(local, "192.0.2.2", ["192.0.2.2"]) == local.head.name  # loopback head, one Ray node
    sim = load_cluster(ROOT / "recipes/clusters/sim-2.yaml")
    ips = [n.fabric_ip for n in sim.nodes]
    assert [node_name(sim, ip, ips) for ip in ips] == [n.name for n in sim.nodes]
    assert node_name(sim, "10.9.9.9", ips + ["10.9.9.9"]) == "10.9.9.9"
