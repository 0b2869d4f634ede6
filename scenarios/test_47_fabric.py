"""Step 47, fabric: declared NCCL/GLOO/UCX interfaces exist with carrier on every node;
a timed all-reduce crosses them."""


def test_declared_interfaces_up_on_every_node(fabric_report):
    assert not fabric_report.problems, "fabric preflight:\n" + "\n".join(fabric_report.problems)
