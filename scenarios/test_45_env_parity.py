"""Step 45, env parity: every recipe var present and equal on every node, as a Ray task there sees it."""


def test_env_probe_before_launch(stack, image_report, environments):
    """The containers' start env, probed before any launch (image_report: docker runtime only)."""
    found = [str(f) for f in stack.runtime.env_probe]
    assert found == [], f"the container env probe found: {found}"


def test_recipe_vars_present_on_every_node(env_parity):
    assert not env_parity.missing, "\n".join(env_parity.missing)


def test_recipe_vars_equal_across_nodes(env_parity):
    assert not env_parity.unequal, "\n".join(env_parity.unequal)


def test_every_node_reported(env_parity, cluster):
    assert sorted(env_parity.per_node) == sorted(n.name for n in cluster.nodes), (
        f"env read on {sorted(env_parity.per_node)}, cluster has {sorted(n.name for n in cluster.nodes)}"
    )
