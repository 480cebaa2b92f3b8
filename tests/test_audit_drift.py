"""Drift: what a workload's Pods run (their status) against what its tag names now (DIGEST_DRIFT)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from tests.harness.registry import Registry
from webhook import render
from webhook.audit import audit, with_drift
from webhook.codes import Code, Severity
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.findings import INFO, ImageResult
from webhook.placement import Placement, static_groups
from webhook.policy import Policy, RegistryOptions
from webhook.runtimes import Target, parse_target
from webhook.wiring import make_checker
from webhook.workloads import running_digests, with_running, workloads_in

NOW, OLD, CHILD = ("sha256:" + c * 64 for c in "abc")
TARGETS = [parse_target("containerd://2.1.3", "linux/amd64")]


def pod(uid: str, owner: str | None, **images: tuple[str, str]) -> dict[str, Any]:
    """A Pod whose containers (name -> (image, imageID)) run; `owner` the controller's uid."""
    metadata: dict[str, Any] = {"name": uid, "uid": uid}
    if owner:
        metadata["ownerReferences"] = [{"kind": "ReplicaSet", "name": "rs", "uid": owner, "controller": True}]
    return {
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": n, "image": image} for n, (image, _) in images.items()]},
        "status": {
            "containerStatuses": [{"name": n, "imageID": image_id} for n, (_, image_id) in images.items()]
        },
    }


def test_running_digests_read_image_ids_by_container_name() -> None:
    running = pod("p", None, app=("app:1", f"docker.io/library/app@{OLD}"), side=("side:2", f"side@{NOW}"))
    running["spec"]["initContainers"] = [{"name": "init", "image": f"tools:1@{CHILD}"}]
    running["status"]["initContainerStatuses"] = [{"name": "init", "imageID": f"docker.io/tools@{CHILD}"}]
    running["status"]["containerStatuses"].append({"name": "gone", "imageID": f"x@{OLD}"})
    assert running_digests(running) == {
        "app:1": frozenset({OLD}),
        "side:2": frozenset({NOW}),
        "tools:1": frozenset({CHILD}),  # the digest /mutate pinned is left out of the key
    }
    # A runtime that reports only an image ID (no repository digest) says nothing about the tag.
    assert running_digests(pod("q", None, app=("app:1", "sha256:" + "d" * 64))) == {}
    assert running_digests({"kind": "Pod", "spec": {}}) == {}


def test_pods_count_for_their_controllers_up_the_chain() -> None:
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "a", "uid": "dep"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
    }
    other = {**deployment, "metadata": {"name": "other", "namespace": "a", "uid": "other"}}
    pods = [
        ("p1", running_digests(pod("p1", "rs", app=("app:1", f"r/app@{OLD}")))),
        ("p2", {"app:1": frozenset({NOW})}),
    ]
    web, untouched = with_running(
        workloads_in([deployment, other]), pods, {"p1": "rs", "p2": "rs", "rs": "dep"}
    )
    assert web.running == {"app:1": frozenset({OLD, NOW})}
    assert untouched.running == {}


def _result(image: str, digest: str | None = NOW, children: tuple[str, ...] = ()) -> ImageResult:
    return ImageResult(image, image, digest=digest, child_digests=children)


def test_drift_is_an_info_finding_naming_both_digests() -> None:
    drifted = with_drift(_result("app:1"), frozenset({OLD, NOW}), Policy())
    (finding,) = drifted.findings
    assert finding.code == "DIGEST_DRIFT" and finding.severity == INFO and drifted.verdict == "allow"
    assert finding.message == f"running Pods use {OLD[:19]}; the tag now names {NOW[:19]}"


def test_no_drift_for_the_current_digest_an_index_child_a_digested_image_or_nothing_known() -> None:
    policy = Policy()
    assert with_drift(_result("app:1"), frozenset({NOW}), policy).findings == ()
    assert with_drift(_result("app:1", children=(CHILD,)), frozenset({CHILD}), policy).findings == ()
    assert with_drift(_result(f"app:1@{NOW}"), frozenset({OLD}), policy).findings == ()
    assert with_drift(_result("app:1", digest=None), frozenset({OLD}), policy).findings == ()
    assert with_drift(_result("app:1"), None, policy).findings == ()


def test_the_policy_can_raise_or_drop_drift() -> None:
    raised = with_drift(
        _result("app:1"), frozenset({OLD}), Policy(severities={Code.DIGEST_DRIFT: Severity.WARN})
    )
    assert raised.verdict == "warn"
    assert (
        with_drift(
            _result("app:1"), frozenset({OLD}), Policy(severities={Code.DIGEST_DRIFT: Severity.ALLOW})
        ).findings
        == ()
    )


def test_audit_splits_an_image_by_the_workloads_that_drifted() -> None:
    def check(
        images: Sequence[str], targets: Sequence[Target], policy: Policy, keyring: Keyring, deadline: Deadline
    ) -> list[ImageResult]:
        return [_result(image) for image in images]

    template = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}}}
    objects = [
        {"kind": "Deployment", "metadata": {"name": name, "namespace": "a", "uid": name}, **template}
        for name in ("fresh", "stale")
    ]
    workloads = with_running(workloads_in(objects), [("p", {"app:1": frozenset({OLD})})], {"p": "stale"})
    report = audit(
        check, workloads, Placement([], static_groups(TARGETS)), Policy(), node_keyring=Keyring.empty()
    )
    by_workload = {e.workloads[0].name: [f.code for f in e.result.findings] for e in report.entries}
    assert by_workload == {"fresh": [], "stale": ["DIGEST_DRIFT"]}
    assert report.resolutions == 1
    [drift_row] = [line for line in render.audit_to_table(report).splitlines() if "DIGEST_DRIFT" in line]
    assert drift_row.split()[:3] == ["ALLOW", "a/Deployment/stale", "app:1"]


@pytest.mark.registry
def test_an_index_result_names_its_manifests(registry: Registry) -> None:
    entries = [registry.push_platform_image("drift/multi", "linux", arch) for arch in ("amd64", "arm64")]
    index = registry.push_index("drift/multi", "v1", entries)
    policy = Policy(registries=(RegistryOptions(registry.host, insecure=True),))
    checker = make_checker(policy, network_guard=False)
    try:
        [result] = checker.check(
            [registry.ref("drift/multi", "v1")], TARGETS, policy, Keyring.empty(), Deadline(30)
        )
    finally:
        checker.close()
    assert result.digest == index
    assert result.child_digests == tuple(e["digest"] for e in entries)
