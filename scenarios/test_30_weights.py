"""Step 30, weights: the model folder is on every node, identical (file list, sizes, content hash)."""


def test_model_folder_identical_on_every_node(weights_report):
    assert not weights_report["problems"], "model folder problems:\n" + "\n".join(weights_report["problems"])


def test_model_folder_on_node(weights_report, node):
    found = weights_report["nodes"].get(node.name)
    assert found, f"node {node.name}: model folder {weights_report['path']} does not exist"
    assert found["files"] > 0 and found["bytes"] > 0, f"node {node.name}: model folder is empty: {found}"
