"""Workloads from objects: every kind, List kinds, owners that stand for their children, bad shapes."""

from __future__ import annotations

import io
from typing import Any

import pytest

from webhook.errors import ConfigError
from webhook.manifests import STDIN, parse_manifests, read_text
from webhook.placement import NodeGroup, Placement, static_groups
from webhook.runtimes import parse_target
from webhook.workloads import objects_in, workload_of, workloads_in


def _template(*images: str, **spec: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": f"c{n}", "image": i} for n, i in enumerate(images)], **spec}}


def _owned(kind: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": kind, "name": "owner", "uid": "u", "controller": True}]


def test_every_kind_yields_its_pod_template_images() -> None:
    objects = [
        {"kind": "Pod", "metadata": {"name": "p", "namespace": "a"}, **_template("pod:1")},
        {
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"template": _template("d:1", "d:1", "d:2")},
        },
        {
            "kind": "CronJob",
            "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": _template("c:1")}}},
        },
        {"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}},
    ]
    found = workloads_in(objects)
    assert [(w.label, w.images) for w in found] == [
        ("a/Pod/p", ("pod:1",)),
        ("Deployment/d", ("d:1", "d:2")),
        ("CronJob/c", ("c:1",)),
    ]


def test_init_containers_first_and_placement_fields_kept() -> None:
    spec = {
        "initContainers": [{"name": "i", "image": "init:1"}],
        "containers": [{"name": "m", "image": "main:1"}],
        "nodeSelector": {"kubernetes.io/arch": "arm64"},
        "imagePullSecrets": [{"name": "creds"}],
        "volumes": [{"name": "v", "emptyDir": {}}],
    }
    workload = workload_of({"kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    assert workload is not None
    assert workload.images == ("init:1", "main:1")
    assert set(workload.pod_spec) == {"nodeSelector", "imagePullSecrets"}


def test_a_pod_bound_to_a_node_is_audited_for_that_node_only() -> None:
    """`kubectl debug node/x` makes a Pod with spec.nodeName: the audit judges it where it runs."""
    containerd = parse_target("containerd://2.1.3", "linux/amd64")
    crio = parse_target("cri-o://1.33.2", "linux/amd64")
    known = [
        NodeGroup(containerd, 1, {}, frozenset({("node-a", "node-a")})),
        NodeGroup(crio, 1, {}, frozenset({("node-b", "node-b")})),
    ]
    pod = {"kind": "Pod", "metadata": {"name": "debugger"}, **_template("debug:1", nodeName="node-b")}
    workload = workload_of(pod)
    assert workload is not None
    assert Placement(known, static_groups([containerd])).targets(workload.pod_spec) == (crio,)


@pytest.mark.parametrize(
    ("kind", "owner", "covered"),
    [
        ("ReplicaSet", "Deployment", True),
        ("ReplicaSet", "Rollout", False),  # a controller the audit does not list: the ReplicaSet stays
        ("Job", "CronJob", True),
        ("Pod", "ReplicaSet", True),
        ("Pod", "Node", False),  # a static Pod's mirror
        ("Deployment", "Deployment", False),
    ],
)
def test_owner_filtering(kind: str, owner: str, covered: bool) -> None:
    obj = {"kind": kind, "metadata": {"name": "x", "ownerReferences": _owned(owner)}, **_template("i:1")}
    if kind != "Pod":
        obj = {"kind": kind, "metadata": obj["metadata"], "spec": {"template": _template("i:1")}}
    assert (workload_of(obj) is None) == covered


def test_an_owner_that_is_not_the_controller_does_not_cover() -> None:
    references = [{**_owned("Deployment")[0], "controller": False}]
    obj = {
        "kind": "ReplicaSet",
        "metadata": {"name": "x", "ownerReferences": references},
        "spec": {"template": _template("i:1")},
    }
    assert workload_of(obj) is not None


def test_lists_typed_and_untyped() -> None:
    documents = [
        {"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "a"}, **_template("a:1")}]},
        {"kind": "PodList", "items": [{"metadata": {"name": "b"}, **_template("b:1")}]},
        {
            "kind": "List",
            "items": [
                {"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "c"}, **_template("c:1")}]}
            ],
        },
    ]
    assert [o["metadata"]["name"] for o in objects_in(documents)] == ["a", "b", "c"]
    assert [w.label for w in workloads_in(documents)] == ["Pod/a", "Pod/b", "Pod/c"]


def test_a_bad_pod_spec_names_the_object() -> None:
    bad = {
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {"spec": {"containers": "nginx"}}},
    }
    with pytest.raises(ConfigError, match=r"^shop/Deployment/web: containers is not a list$"):
        workloads_in([bad])


def test_yaml_multi_document_and_json() -> None:
    text = (
        "---\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: 'a:1'}]}\n---\n# empty\n"
    )
    assert [w.label for w in workloads_in(parse_manifests(text, "t"))] == ["Pod/a"]
    as_json = (
        '{"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "b"}, "spec": {"containers": []}}]}'
    )
    assert [w.label for w in workloads_in(parse_manifests(as_json, "t"))] == ["Pod/b"]
    with pytest.raises(ConfigError, match=r"^m\.yaml: .* at line 2, column"):
        parse_manifests("kind: Pod\n  bad: [\n", "m.yaml")


@pytest.mark.parametrize("errors", ["strict", "surrogateescape"])
def test_standard_input_that_is_not_utf8_is_one_config_error(
    monkeypatch: pytest.MonkeyPatch, errors: str
) -> None:
    stream = io.TextIOWrapper(io.BytesIO(b"kind: Pod\nmetadata: {name: \xff}\n"), "utf-8", errors=errors)
    monkeypatch.setattr("sys.stdin", stream)
    with pytest.raises(ConfigError, match="standard input: the manifests are not UTF-8 text"):
        read_text(STDIN)
