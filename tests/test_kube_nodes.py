"""Nodes as the API returns them, turned into node groups the admission narrows."""

from __future__ import annotations

from typing import Any

from webhook import placement
from webhook.kube import node_groups
from webhook.kube.nodes import node_entry, node_key
from webhook.placement import NodeGroup
from webhook.runtimes import parse_target


def node(
    name: str, runtime: str, os_name: str = "linux", arch: str = "amd64", **labels: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": os_name,
                "kubernetes.io/arch": arch,
                **labels,
            },
        },
        "status": {
            "nodeInfo": {"containerRuntimeVersion": runtime, "operatingSystem": os_name, "architecture": arch}
        },
    }


def test_node_key_reads_runtime_and_platform_and_drops_the_hostname() -> None:
    key = node_key(node("n1", "containerd://2.1.3", arch="arm64", pool="arm"))
    assert key is not None
    target, labels = key
    assert target == parse_target("containerd://2.1.3", "linux/arm64")
    assert dict(labels) == {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64", "pool": "arm"}


def test_node_with_an_unknown_runtime_is_left_out() -> None:
    assert node_key(node("n1", "remote://1.0")) is None
    assert node_key({"metadata": {"name": "bare"}}) is None


def test_nodes_with_the_same_target_and_labels_are_counted_together() -> None:
    keys = [node_entry(node(f"a{n}", "containerd://2.1.3", pool="general")) for n in range(3)] + [
        node_entry(node("b0", "cri-o://1.33.2", pool="general")),
        node_entry(node("c0", "containerd://2.1.3", pool="gpu")),
    ]
    groups = node_groups(k for k in keys if k is not None)
    assert groups[0].members == {("a0", "a0"), ("a1", "a1"), ("a2", "a2")}
    summary = [(str(g.target), g.nodes, g.labels.get("pool")) for g in groups]
    assert summary == [
        ("containerd://2.1.3 on linux/amd64", 3, "general"),
        ("containerd://2.1.3 on linux/amd64", 1, "gpu"),
        ("cri-o://1.33.2 on linux/amd64", 1, "general"),
    ]


def test_groups_narrow_by_any_label_and_count_failing_nodes() -> None:
    keys = [node_entry(node(f"g{n}", "containerd://2.1.3", pool="gpu")) for n in range(2)]
    keys += [node_entry(node(f"c{n}", "cri-o://1.33.2", pool="general")) for n in range(5)]
    groups = node_groups(k for k in keys if k is not None)
    narrowed = placement.narrow(groups, {"nodeSelector": {"pool": "gpu"}})
    assert [(str(g.target), g.nodes) for g in narrowed] == [("containerd://2.1.3 on linux/amd64", 2)]
    # The hostname names one node of the group: judged for that node alone.
    spec = {"nodeSelector": {"pool": "gpu", "kubernetes.io/hostname": "g0"}}
    narrowed = placement.narrow(groups, spec)
    assert narrowed == [
        NodeGroup(
            parse_target("containerd://2.1.3", "linux/amd64"),
            1,
            narrowed[0].labels,
            frozenset({("g0", "g0")}),
        )
    ]
