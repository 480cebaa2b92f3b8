"""AdmissionReview parsing, narrowing to the nodes a Pod may land on, and the answer for each mode."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook import admission, placement, podspec
from webhook.codes import Code
from webhook.errors import InvalidReview
from webhook.findings import ALLOW, DENY, INFO, REMEDY, WARN, Finding, ImageResult
from webhook.placement import NodeGroup
from webhook.policy import Mode
from webhook.runtimes import parse_target

CONTAINERD_AMD = parse_target("containerd://2.1.3", "linux/amd64")
CONTAINERD_ARM = parse_target("containerd://2.1.3", "linux/arm64")
CRIO_AMD = parse_target("cri-o://1.33.2", "linux/amd64")
GROUPS = [
    NodeGroup(CONTAINERD_AMD, 3, {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "pool": "a"}),
    NodeGroup(CONTAINERD_ARM, 2, {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64", "pool": "b"}),
    NodeGroup(CRIO_AMD, 4, {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "pool": "c"}),
]


def pod_spec(*images: str, init: tuple[str, ...] = (), ephemeral: tuple[str, ...] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    }
    if init:
        spec["initContainers"] = [{"name": f"i{i}", "image": image} for i, image in enumerate(init)]
    if ephemeral:
        spec["ephemeralContainers"] = [{"name": f"e{i}", "image": image} for i, image in enumerate(ephemeral)]
    return spec


def wrap(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": "x"}}, "spec": spec}
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
    if kind == "CronJob":
        return {
            "kind": kind,
            "metadata": {"name": "w"},
            "spec": {"jobTemplate": {"spec": {"template": template}}},
        }
    return {"kind": kind, "metadata": {"name": "w"}, "spec": {"template": template}}


def review(
    kind: str = "Pod",
    obj: dict[str, Any] | None = None,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": kind},
        "operation": operation,
        "namespace": "team-a",
        "object": obj if obj is not None else wrap(kind, pod_spec("nginx:1.27")),
        **extra,
    }
    if old is not None:
        request["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


@pytest.mark.parametrize("kind", sorted(podspec.POD_SPEC_PATHS))
def test_every_kind_yields_the_images_of_its_pod_spec(kind: str) -> None:
    spec = pod_spec("app:1", "sidecar:2", init=("init:3",))
    request = admission.parse_review(review(kind, wrap(kind, spec)))
    assert request.kind == kind
    assert [c.image for c in request.images] == ["init:3", "app:1", "sidecar:2"]
    assert [c.field for c in request.images] == ["initContainers", "containers", "containers"]


def test_request_fields_are_read() -> None:
    body = review(dryRun=True, name="p")
    body["request"]["object"]["spec"]["imagePullSecrets"] = [{"name": "a"}, {"name": "b"}, {"name": "a"}, {}]
    body["request"]["object"]["spec"]["serviceAccountName"] = "builder"
    request = admission.parse_review(body)
    assert (request.uid, request.namespace, request.name, request.operation) == (
        "705ab4f5-6393-11e8-b7cc-42010a800002",
        "team-a",
        "p",
        "CREATE",
    )
    assert request.dry_run is True
    assert request.pull_secret_names == ("a", "b")
    assert request.service_account == "builder"


def test_defaults_service_account_and_takes_the_generated_name() -> None:
    obj = {"metadata": {"generateName": "web-7d9f-"}, "spec": pod_spec("nginx")}
    request = admission.parse_review(review(obj=obj))
    assert request.service_account == "default"
    assert request.name == "web-7d9f-"
    assert request.pull_secret_names == ()


def test_duplicate_images_are_judged_once() -> None:
    request = admission.parse_review(review(obj=wrap("Pod", pod_spec("a:1", "a:1", "b:1"))))
    assert request.distinct_images == ["a:1", "b:1"]


def test_update_judges_only_changed_images() -> None:
    old = wrap("Deployment", pod_spec("app:1", "sidecar:2"))
    new = wrap("Deployment", pod_spec("app:2", "sidecar:2"))
    request = admission.parse_review(review("Deployment", new, operation="UPDATE", old=old))
    assert [c.image for c in request.images] == ["app:2"]


def test_ephemeral_container_subresource_judges_the_new_debug_image() -> None:
    old = wrap("Pod", pod_spec("app:1"))
    new = wrap("Pod", pod_spec("app:1", ephemeral=("busybox:1.36",)))
    body = review("Pod", new, operation="UPDATE", old=old, subResource="ephemeralcontainers")
    request = admission.parse_review(body)
    assert request.sub_resource == "ephemeralcontainers"
    assert [(c.field, c.image) for c in request.images] == [("ephemeralContainers", "busybox:1.36")]


def test_delete_carries_no_images() -> None:
    body = review(operation="DELETE")
    body["request"]["object"] = None
    assert admission.parse_review(body).images == ()


@pytest.mark.parametrize(
    ("kind", "operation", "sub_resource", "obj"),
    [
        ("PodExecOptions", "CONNECT", "exec", {"kind": "PodExecOptions", "command": ["sh"]}),
        ("PodAttachOptions", "CONNECT", "attach", {"kind": "PodAttachOptions", "stdin": True}),
        ("PodPortForwardOptions", "CONNECT", "portforward", {"kind": "PodPortForwardOptions", "ports": [80]}),
        ("Binding", "CREATE", "binding", {"kind": "Binding", "target": {"kind": "Node", "name": "n1"}}),
        ("Eviction", "CREATE", "eviction", {"kind": "Eviction", "metadata": {"name": "p"}}),
        ("Scale", "UPDATE", "scale", {"kind": "Scale", "spec": {"replicas": 3}}),
    ],
)
def test_requests_without_a_pod_spec_are_admitted_with_no_images(
    kind: str, operation: str, sub_resource: str, obj: dict[str, Any]
) -> None:
    """What a hand-written configuration naming `pods/*` or `deployments/*` sends: nothing to judge."""
    body = review(kind, obj, operation=operation, subResource=sub_resource, name="p")
    request = admission.parse_review(body)
    assert (request.kind, request.operation, request.sub_resource) == (kind, operation, sub_resource)
    assert request.images == () and request.name == "p"


def test_template_container_without_image_is_skipped() -> None:
    spec = {"containers": [{"name": "a"}, {"name": "b", "image": "b:1"}]}
    assert [c.image for c in admission.parse_review(review("Job", wrap("Job", spec))).images] == ["b:1"]


def test_v1beta1_is_answered_in_v1beta1() -> None:
    body = review()
    body["apiVersion"] = "admission.k8s.io/v1beta1"
    request = admission.parse_review(body)
    assert admission.response(request.api_version, request.uid, admission.ALLOW_ALL)["apiVersion"] == (
        "admission.k8s.io/v1beta1"
    )


def _broken(change: str) -> Any:
    body = review()
    request = body["request"]
    if change == "not an object":
        return ["AdmissionReview"]
    if change == "wrong apiVersion":
        body["apiVersion"] = "v1"
    elif change == "wrong kind":
        body["kind"] = "Pod"
    elif change == "no request":
        del body["request"]
    elif change == "no uid":
        del request["uid"]
    elif change == "uid not a string":
        request["uid"] = 7
    elif change == "unknown kind":
        request["kind"]["kind"] = "ConfigMap"
    elif change == "no object":
        del request["object"]
    elif change == "containers not a list":
        request["object"]["spec"]["containers"] = {"image": "x"}
    elif change == "container not an object":
        request["object"]["spec"]["containers"] = ["nginx"]
    elif change == "spec not an object":
        request["object"]["spec"] = "nginx"
    return body


@pytest.mark.parametrize(
    "change",
    [
        "not an object",
        "wrong apiVersion",
        "wrong kind",
        "no request",
        "no uid",
        "uid not a string",
        "unknown kind",
        "no object",
        "containers not a list",
        "container not an object",
        "spec not an object",
    ],
)
def test_malformed_reviews_raise_one_line(change: str) -> None:
    with pytest.raises(InvalidReview) as raised:
        admission.parse_review(_broken(change))
    assert "\n" not in str(raised.value) and str(raised.value)


# --- narrowing -------------------------------------------------------------------------------------


def test_no_selector_keeps_every_group() -> None:
    assert placement.narrow(GROUPS, pod_spec("x")) == GROUPS


def test_node_selector_on_arch_narrows() -> None:
    spec = {**pod_spec("x"), "nodeSelector": {"kubernetes.io/arch": "arm64"}}
    assert [g.target for g in placement.narrow(GROUPS, spec)] == [CONTAINERD_ARM]


def test_node_selector_on_any_label_narrows() -> None:
    spec = {**pod_spec("x"), "nodeSelector": {"pool": "c"}}
    assert [g.target for g in placement.narrow(GROUPS, spec)] == [CRIO_AMD]


def test_hostname_selector_cannot_narrow_groups() -> None:
    spec = {**pod_spec("x"), "nodeSelector": {"kubernetes.io/hostname": "node-1"}}
    assert placement.narrow(GROUPS, spec) == GROUPS


def affinity(*terms: list[dict[str, Any]]) -> dict[str, Any]:
    node_terms = [{"matchExpressions": term} for term in terms]
    return {
        **pod_spec("x"),
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": node_terms}
            }
        },
    }


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        (
            [[{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]],
            [CONTAINERD_AMD, CRIO_AMD],
        ),
        ([[{"key": "kubernetes.io/arch", "operator": "NotIn", "values": ["amd64"]}]], [CONTAINERD_ARM]),
        ([[{"key": "pool", "operator": "Exists"}]], [CONTAINERD_AMD, CONTAINERD_ARM, CRIO_AMD]),
        ([[{"key": "gpu", "operator": "DoesNotExist"}]], [CONTAINERD_AMD, CONTAINERD_ARM, CRIO_AMD]),
        ([[{"key": "gpu", "operator": "Exists"}]], []),
        # terms are ORed, expressions within a term ANDed
        (
            [
                [{"key": "pool", "operator": "In", "values": ["a"]}],
                [{"key": "pool", "operator": "In", "values": ["b"]}],
            ],
            [CONTAINERD_AMD, CONTAINERD_ARM],
        ),
        (
            [
                [
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    {"key": "pool", "operator": "NotIn", "values": ["a"]},
                ]
            ],
            [CRIO_AMD],
        ),
    ],
)
def test_required_node_affinity_narrows(terms: list[list[dict[str, Any]]], expected: list[Any]) -> None:
    assert [g.target for g in placement.narrow(GROUPS, affinity(*terms))] == expected


def test_os_and_arch_come_from_the_target_when_labels_are_missing() -> None:
    groups = placement.static_groups([CONTAINERD_AMD, CONTAINERD_ARM])
    spec = {**pod_spec("x"), "nodeSelector": {"kubernetes.io/arch": "arm64", "kubernetes.io/os": "linux"}}
    assert placement.narrow(groups, spec) == [NodeGroup(CONTAINERD_ARM, None)]


def test_policy_targets_narrow_by_os_and_arch_only() -> None:
    groups = placement.static_groups([CONTAINERD_AMD, CONTAINERD_ARM])
    spec = {**pod_spec("x"), "nodeSelector": {"kubernetes.io/arch": "arm64", "pool": "new"}}
    assert placement.narrow(groups, spec) == [NodeGroup(CONTAINERD_ARM, None)]
    assert placement.narrow(groups, affinity([{"key": "pool", "operator": "Exists"}])) == groups


def test_gt_and_lt_compare_numbers() -> None:
    groups = [NodeGroup(CONTAINERD_AMD, 1, {"cores": "8"}), NodeGroup(CRIO_AMD, 1, {"cores": "2"})]
    spec = affinity([{"key": "cores", "operator": "Gt", "values": ["4"]}])
    assert [g.target for g in placement.narrow(groups, spec)] == [CONTAINERD_AMD]


# --- the answer ------------------------------------------------------------------------------------


def schema1(image: str = "registry.example/old:1") -> ImageResult:
    msg = "schema 1 image manifests are no longer supported"
    return ImageResult(
        image,
        image,
        findings=(
            Finding(Code.SCHEMA1, DENY, "containerd://2.1.3", "linux/amd64", msg),
            Finding(Code.SCHEMA1, DENY, "containerd://2.1.3", "linux/arm64", msg),
            Finding(Code.SCHEMA1, WARN, "cri-o://1.33.2", "linux/amd64", "schema 1 is deprecated"),
        ),
    )


def healthy(image: str = "registry.example/ok:1") -> ImageResult:
    return ImageResult(image, image, digest="sha256:" + "a" * 64)


def encrypted(image: str = "registry.example/secret:1") -> ImageResult:
    return ImageResult(
        image, image, findings=(Finding(Code.ENCRYPTED_LAYER, WARN, "", "", "layer 1 is encrypted"),)
    )


def test_where_counts_nodes_per_runtime() -> None:
    result = schema1()
    deny = [f for f in result.findings if f.severity == DENY]
    assert admission.where(deny, GROUPS) == "on 5 nodes running containerd 2.1"
    assert admission.where(deny[:1], GROUPS) == "on 3 nodes running containerd 2.1 (linux/amd64)"
    amd_only = [GROUPS[0], GROUPS[2]]
    assert admission.where(deny, amd_only) == "on 3 nodes running containerd 2.1"
    assert admission.where(list(result.findings), amd_only) == "on 7 nodes: 3 containerd 2.1, 4 CRI-O 1.33"


def test_where_without_node_counts_names_the_runtimes() -> None:
    groups = placement.static_groups([CONTAINERD_AMD, CRIO_AMD])
    deny = [f for f in schema1().findings if f.severity == DENY]
    assert admission.where(deny, groups) == "on containerd 2.1"


def test_enforce_denies_with_image_code_nodes_and_remedy() -> None:
    decision = admission.decide([schema1(), healthy(), encrypted()], GROUPS, "enforce")
    assert not decision.allowed
    assert decision.message.startswith(
        "pullcheck denied 1 image: registry.example/old:1: SCHEMA1 fails on 5 nodes"
    )
    assert "rebuild with a current Docker" in decision.message
    assert "ok:1" not in decision.message
    # warn findings still reach the user, deny ones are in the message instead
    old, secret = decision.warnings
    # Too long with its remedy: the advice becomes a pointer to the explanation, never a cut remedy.
    assert old == (
        "registry.example/old:1: SCHEMA1 warns on 4 nodes running CRI-O 1.33 (linux/amd64); "
        "see pullcheck explain SCHEMA1"
    )
    assert secret == (
        "registry.e...e/secret:1: ENCRYPTED_LAYER warns on 9 nodes: 5 containerd 2.1...; "
        "see pullcheck explain ENCRYPTED_LAYER"
    )
    assert decision.verdicts == {
        "registry.example/old:1": DENY,
        "registry.example/ok:1": "allow",
        "registry.example/secret:1": WARN,
    }
    assert decision.codes == ("SCHEMA1", "ENCRYPTED_LAYER")


def test_enforce_admits_when_nothing_is_denied() -> None:
    decision = admission.decide([healthy(), encrypted()], GROUPS, "enforce")
    assert decision.allowed and decision.message == ""
    assert len(decision.warnings) == 1


def test_warn_admits_with_warnings_for_deny_and_warn() -> None:
    decision = admission.decide([schema1(), healthy()], GROUPS, "warn")
    assert decision.allowed
    assert [w.split(" ", 3)[:3] for w in decision.warnings] == [
        ["registry.example/old:1:", "SCHEMA1", "fails"],
        ["registry.example/old:1:", "SCHEMA1", "warns"],
    ]
    assert not any(w.lower().startswith("warning") for w in decision.warnings)


def test_audit_admits_silently_with_annotations() -> None:
    decision = admission.decide([schema1(), healthy()], GROUPS, "audit")
    assert decision.allowed and decision.warnings == ()
    assert decision.audit_annotations["verdict"] == DENY
    images = json.loads(decision.audit_annotations["images"])
    assert images == [
        {
            "image": "registry.example/old:1",
            "digest": None,
            "verdict": DENY,
            "findings": {
                "SCHEMA1": "deny on 5 nodes running containerd 2.1; "
                "warn on 4 nodes running CRI-O 1.33 (linux/amd64)"
            },
        }
    ]


def test_info_findings_only_reach_the_audit_annotations() -> None:
    result = ImageResult(
        "a:1", "docker.io/library/a:1", findings=(Finding(Code.SHORT_NAME, INFO, "", "", "short"),)
    )
    decision = admission.decide([result], GROUPS, "warn")
    assert decision.allowed and decision.warnings == () and decision.codes == ()
    assert json.loads(decision.audit_annotations["images"])[0]["findings"] == {
        "SHORT_NAME": "info on 9 nodes: 5 containerd 2.1, 4 CRI-O 1.33"
    }


def test_clean_pod_has_no_annotations() -> None:
    decision = admission.decide([healthy()], GROUPS, "enforce")
    assert decision == admission.Decision(True, "", (), {}, {"registry.example/ok:1": ALLOW}, ())


def test_warnings_are_deduplicated() -> None:
    decision = admission.decide([encrypted("x:1"), encrypted("x:1")], GROUPS, "warn")
    assert len(decision.warnings) == 1


def test_long_image_names_are_shortened_in_warnings() -> None:
    image = "registry.example.com/" + "deep/" * 40 + "app@sha256:" + "b" * 64
    (warning,) = admission.decide([encrypted(image)], GROUPS, "warn").warnings
    assert len(warning) <= admission.WARNING_LENGTH
    assert "ENCRYPTED_LAYER" in warning and warning.startswith("registry.e...")


def test_many_warnings_stay_under_the_total_and_say_how_many_were_left_out() -> None:
    results = [encrypted(f"registry.example/team/app-{n:03}:1") for n in range(200)]
    warnings = admission.decide(results, GROUPS, "warn").warnings
    assert sum(len(w.encode()) for w in warnings) < admission.WARNINGS_TOTAL
    assert warnings[-1].startswith("and ") and "more pullcheck warnings" in warnings[-1]
    kept = len(warnings) - 1
    assert warnings[-1].split()[1] == str(200 - kept)


@pytest.mark.parametrize("ascii_images", range(28, 40))
def test_a_last_warning_of_multibyte_characters_still_fits_the_total(ascii_images: int) -> None:
    # A Pod's image is not validated by the apiserver: 120 characters of a warning can be 4 bytes each.
    results = [encrypted(f"registry.example/team/app-{n:03}:1") for n in range(ascii_images)]
    results.append(encrypted("\U0001f600" * 70))
    warnings = admission.decide(results, GROUPS, "warn").warnings
    assert sum(len(w.encode()) for w in warnings) < admission.WARNINGS_TOTAL
    assert all(len(w) <= admission.WARNING_LENGTH for w in warnings)


findings = st.builds(
    Finding,
    code=st.sampled_from(["SCHEMA1", "NOT_FOUND", "ENCRYPTED_LAYER", "UNAUTHORIZED"]),
    severity=st.sampled_from([DENY, WARN, INFO]),
    runtime=st.sampled_from(["", "containerd://2.1.3", "cri-o://1.33.2"]),
    platform=st.sampled_from(["", "linux/amd64", "linux/arm64"]),
    message=st.text(max_size=200),
)
results = st.lists(
    st.builds(
        ImageResult,
        image=st.text(min_size=1, max_size=300),
        reference=st.none(),
        findings=st.tuples(findings),
    ),
    max_size=60,
)


@given(results, st.sampled_from(["enforce", "warn", "audit"]))
def test_warnings_always_fit_the_apiserver_limits(results: list[ImageResult], mode: Mode) -> None:
    decision = admission.decide(results, GROUPS, mode)
    assert all(len(w) <= admission.WARNING_LENGTH for w in decision.warnings)
    assert sum(len(w.encode()) for w in decision.warnings) < admission.WARNINGS_TOTAL
    assert len(set(decision.warnings)) == len(decision.warnings)
    assert decision.allowed == (mode != "enforce" or all(r.verdict != DENY for r in results))
    assert len(decision.message) <= admission.MESSAGE_LENGTH


def test_response_echoes_uid_and_carries_the_decision() -> None:
    decision = admission.decide([schema1(), encrypted()], GROUPS, "enforce")
    answer = admission.response("admission.k8s.io/v1", "uid-1", decision)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    body = answer["response"]
    assert body["uid"] == "uid-1" and body["allowed"] is False
    assert body["status"]["code"] == 403 and body["status"]["message"] == decision.message
    assert body["warnings"] == list(decision.warnings)
    assert body["auditAnnotations"]["verdict"] == DENY
    json.dumps(answer)


def test_allowing_response_is_minimal() -> None:
    answer = admission.response("admission.k8s.io/v1", "u", admission.ALLOW_ALL)
    assert answer["response"] == {"uid": "u", "allowed": True}


def test_parse_does_not_modify_the_body() -> None:
    body = review("Deployment", wrap("Deployment", pod_spec("a:1")))
    before = copy.deepcopy(body)
    admission.parse_review(body)
    assert body == before


def test_a_shortened_warning_keeps_its_fix_advice() -> None:
    short, long = "r.example/app:1", "registry.example/a-much-longer-repository/name:1"
    [fits] = admission.decide([encrypted(short)], [GROUPS[0]], "warn").warnings
    assert (
        fits
        == "r.example/app:1: ENCRYPTED_LAYER warns on 3 nodes running containerd 2.1; "
        + (REMEDY[Code.ENCRYPTED_LAYER])
    )
    # Too long with the remedy: a pointer to the explanation instead; the image is shortened first, then
    # where the finding bites is cut, never the advice.
    assert admission.decide([encrypted("r.example/app:1")], GROUPS, "warn").warnings == (
        "r.example/app:1: ENCRYPTED_LAYER warns on 9 nodes: 5 containerd 2.1, 4 CRI-O 1.33; "
        "see pullcheck explain ENCRYPTED_LAYER",
    )
    [cut] = admission.decide([encrypted(long)], GROUPS, "warn").warnings
    assert cut == "registry.e...ory/name:1: ENCRYPTED_LAYER warns on 9 nodes: 5 containerd 2.1...; " + (
        "see pullcheck explain ENCRYPTED_LAYER"
    )


# ---- Pods bound to nodes -----------------------------------------------------------------------------

_CRIO_NODE = parse_target("cri-o://1.33.2", "linux/amd64")
_C21_NODE = parse_target("containerd://2.1.3", "linux/amd64")
_BOUND_GROUPS = [
    placement.NodeGroup(
        _CRIO_NODE, 2, {"pool": "a"}, frozenset({("old-1", "old-1"), ("old-2", "old-2-host")})
    ),
    placement.NodeGroup(_C21_NODE, 2, {"pool": "a"}, frozenset({("new-1", "new-1"), ("new-2", "new-2")})),
]


@pytest.mark.parametrize(
    "spec",
    [
        {"nodeName": "old-2"},
        {"nodeSelector": {"kubernetes.io/hostname": "old-2-host"}},
        {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["old-2"]}]}
                        ]
                    }
                }
            }
        },
    ],
)
def test_a_pod_bound_to_a_node_is_judged_for_that_node_only(spec: dict[str, Any]) -> None:
    [group] = placement.narrow(_BOUND_GROUPS, spec)
    assert (group.target, group.nodes, group.members) == (_CRIO_NODE, 1, frozenset({("old-2", "old-2-host")}))


def test_a_daemonset_pod_bound_by_match_fields_keeps_its_other_requirements() -> None:
    term = {
        "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["new-1", "old-1"]}],
        "matchExpressions": [{"key": "pool", "operator": "In", "values": ["b"]}],
    }
    spec = {
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
        }
    }
    assert placement.narrow(_BOUND_GROUPS, spec) == []
    term["matchExpressions"] = [{"key": "pool", "operator": "In", "values": ["a"]}]
    narrowed = placement.narrow(_BOUND_GROUPS, spec)
    assert [(g.target, g.nodes) for g in narrowed] == [(_CRIO_NODE, 1), (_C21_NODE, 1)]


def test_a_pod_bound_to_an_unknown_node_is_judged_on_the_static_targets() -> None:
    static = placement.static_groups([_C21_NODE])
    assert placement.groups_for(_BOUND_GROUPS, static, {"nodeName": "gone"}) == static
    # A pod template names no node: every group it selects.
    assert placement.groups_for(_BOUND_GROUPS, static, {}) == _BOUND_GROUPS


def test_local_image_pull_reaches_node_targets() -> None:
    [crio, c21] = placement.pulling_locally(_BOUND_GROUPS, True)
    assert c21.target.local_pull and c21.members == _BOUND_GROUPS[1].members
    assert placement.pulling_locally(_BOUND_GROUPS, False) == _BOUND_GROUPS
