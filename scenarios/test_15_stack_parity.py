"""Step 15, stack parity: driver, CUDA, kernel, NCCL, key packages, pip freeze and image identical on every node."""


def test_stack_identical_on_every_node(stack_fingerprints, cluster):
    report = stack_fingerprints
    assert sorted(report.fingerprints) == sorted(n.name for n in cluster.nodes), \
        f"fingerprints read on {sorted(report.fingerprints)}, cluster has {[n.name for n in cluster.nodes]}"
    assert not report.differences, "the stacks differ:\n" + "\n".join(str(d) for d in report.differences)
