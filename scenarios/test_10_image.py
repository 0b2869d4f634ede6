"""Step 10, image: built once, the very same image ID on every node, pinned versions and Ray inside it."""

import json
import shlex

import pytest


def test_image_identical_on_every_node(image_report, cluster):
    ids = {name: info["id"] for name, info in image_report.nodes.items()}
    missing = [name for name, seen in ids.items() if not seen]
    assert not missing, f"image {image_report.tag} is missing on node(s) {missing}: {ids}"
    assert len(set(ids.values())) == 1, f"image {image_report.tag} differs across nodes: {ids}"
    assert sorted(ids) == sorted(n.name for n in cluster.nodes), f"nodes checked {sorted(ids)}"
    if image_report.build is not None:
        assert set(ids.values()) == {image_report.build.image_id}, (
            f"nodes hold {set(ids.values())}, this machine built {image_report.build.image_id}"
        )


def test_image_versions_pinned(image_report, recipe, node):
    pins = {k: v for k, v in (recipe.expect.get("image") or {}).items() if v is not None}
    if not pins:
        pytest.skip(f"not applicable: recipe {recipe.name} pins no versions in expect.image")
    seen = image_report.nodes[node.name].get("versions") or {}
    wrong = {k: (str(v), seen.get(k)) for k, v in pins.items() if str(v) != seen.get(k)}
    assert not wrong, (
        f"node {node.name}: image {image_report.tag} versions differ from expect.image "
        f"(pinned, seen): {wrong}; rebuild the image or fix the pins"
    )


def test_ray_in_image(image_report, node):
    seen = image_report.nodes[node.name].get("versions") or {}
    assert seen.get("ray_import") == "ok", (
        f"node {node.name}: `import ray` fails in image {image_report.tag}: {seen.get('ray_import')}; "
        "the image must ship Ray (an NGC image once dropped it silently)"
    )
    assert seen.get("ray_on_path"), (
        f"node {node.name}: no `ray` executable on PATH in image {image_report.tag}"
    )


def test_no_image_problem_left(image_report):
    assert not image_report.problems, "image problems:\n" + "\n".join(image_report.problems)


def test_container_started_with_seed_flags(stack, image_report, node, environments):
    plan = stack.runtime.plans[node.name]
    out = node.check(f"docker inspect {shlex.quote(plan.name)}", f"inspecting container {plan.name}").stdout
    config = json.loads(out)[0]
    host_config, labels = config["HostConfig"], config["Config"]["Labels"]
    assert host_config["NetworkMode"] == "host", (
        f"node {node.name}: network {host_config['NetworkMode']}, want host"
    )
    assert host_config["IpcMode"] == "host", f"node {node.name}: ipc {host_config['IpcMode']}, want host"
    assert labels.get("org.servegate.run") == stack.run_id, f"node {node.name}: run label {labels}"
    memlock = [u for u in host_config.get("Ulimits") or [] if u["Name"] == "memlock"]
    dropped = [d for d in plan.dropped if d.startswith("--ulimit memlock")]
    assert memlock or dropped, f"node {node.name}: memlock ulimit neither set nor recorded as refused"
    if memlock:
        assert memlock[0]["Hard"] == -1, f"node {node.name}: memlock {memlock[0]}, want unlimited"
    if node.node.gpus:
        assert host_config.get("DeviceRequests"), (
            f"node {node.name}: has GPUs but the container requests none"
        )
