"""Cluster files: every mistake names the file, line, node and key."""

import textwrap

import pytest

from servegate.config.cluster import load_cluster, placeholder_addresses
from servegate.errors import ClusterError


def cluster_error(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ClusterError) as info:
        load_cluster(path)
    return info.value


def test_default_cluster_is_this_machine():
    cluster = load_cluster()
    assert [n.name for n in cluster.nodes] == ["local"]
    assert cluster.head.host == "local://"


def test_two_heads_rejected(tmp_path):
    err = cluster_error(tmp_path, """\
        nodes:
          - {name: a, role: head, host: "local://"}
          - {name: b, role: head, host: "local://"}
        """)
    assert "exactly one head node, found 2" in str(err)


def test_bad_host_url_names_node_and_line(tmp_path):
    err = cluster_error(tmp_path, """\
        nodes:
          - name: a
            role: head
            host: "local://"
          - name: w2
            host: 10.0.0.2
        """)
    assert "node 'w2'" in str(err) and "testinfra host URL" in str(err)
    assert err.where.line == 6


def test_bad_fabric_ip(tmp_path):
    err = cluster_error(tmp_path, """\
        nodes:
          - {name: a, role: head, host: "local://", fabric_ip: 10.0.0.300}
        """)
    assert "fabric_ip '10.0.0.300' is not an IP address" in str(err)


def test_duplicate_node_names(tmp_path):
    err = cluster_error(tmp_path, """\
        nodes:
          - {name: a, role: head, host: "local://"}
          - {name: a, host: "ssh://root@x"}
        """)
    assert "node name 'a' is used twice" in str(err)


def test_unknown_node_key(tmp_path):
    err = cluster_error(tmp_path, """\
        nodes:
          - {name: a, role: head, host: "local://", fabirc_ip: 1.2.3.4}
        """)
    assert "unknown node key 'fabirc_ip'" in str(err)


def test_placeholder_addresses_are_reported(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('nodes:\n  - {name: h, role: head, host: "ssh://root@<head-node>", fabric_ip: "<head-ip>"}\n')
    assert placeholder_addresses(load_cluster(path)) == ["h"]
