"""The Flask app's contract (a recording checker), then the same app on the real checker and registry."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient

from tests.harness.corpus import CorpusImage
from tests.harness.registry import Registry
from tests.harness.serving import local_registries, write_policy
from webhook.app import Settings, build_app, create_app
from webhook.codes import Code, Severity
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.engine import Webhook
from webhook.findings import DENY, WARN, Finding, ImageResult
from webhook.metrics import Metrics
from webhook.placement import NodeGroup
from webhook.policy import Exemptions, Mode, OnResolutionError, Policy
from webhook.runtimes import Target, parse_target

AMD = parse_target("containerd://2.1.3", "linux/amd64")
ARM = parse_target("containerd://2.1.3", "linux/arm64")
UID = "b6a4e9b0-0c2e-4c1f-9b55-0f2e3c4d5e6f"
MAX_BODY = 64 * 1024


def review(*images: str, kind: str = "Pod", namespace: str = "team-a", **spec: Any) -> dict[str, Any]:
    pod_spec = {"containers": [{"name": f"c{n}", "image": image} for n, image in enumerate(images)], **spec}
    if kind == "Pod":
        obj: dict[str, Any] = {"metadata": {"name": "p", "namespace": namespace}, "spec": pod_spec}
    elif kind == "CronJob":
        obj = {"metadata": {"name": "w"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}}
    else:
        obj = {"metadata": {"name": "w"}, "spec": {"template": {"spec": pod_spec}}}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "operation": "CREATE",
            "namespace": namespace,
            "object": obj,
        },
    }


class RecordingChecker:
    """Answers from a table of image -> findings, and remembers what it was asked."""

    def __init__(self, answers: dict[str, tuple[Finding, ...]] | None = None, error: Exception | None = None):
        self.answers = answers or {}
        self.error = error
        self.calls: list[tuple[list[str], list[Target], Keyring]] = []

    def check(
        self,
        images: Sequence[str],
        targets: Sequence[Target],
        policy: Policy,
        keyring: Keyring,
        deadline: Deadline,
    ) -> list[ImageResult]:
        self.calls.append((list(images), list(targets), keyring))
        if self.error is not None:
            raise self.error
        return [ImageResult(i, i, findings=policy.apply(self.answers.get(i, ()))) for i in images]


SCHEMA1 = (
    Finding(Code.SCHEMA1, DENY, "containerd://2.1.3", "linux/amd64", "schema 1 is no longer supported"),
)
ENCRYPTED = (Finding(Code.ENCRYPTED_LAYER, WARN, "", "", "layer 1 is encrypted"),)


class Nodes:
    def __init__(self, groups: list[NodeGroup], synced: bool = True) -> None:
        self._groups, self._synced = groups, synced

    def groups(self) -> list[NodeGroup]:
        return self._groups

    def synced(self) -> bool:
        return self._synced


class Secrets:
    def __init__(self, keyring: Keyring) -> None:
        self.key = keyring
        self.asked: list[tuple[str, tuple[str, ...], str]] = []

    def keyring(
        self,
        namespace: str,
        secret_names: Sequence[str],
        service_account: str,
        deadline: Deadline | None = None,
    ) -> Keyring:
        self.asked.append((namespace, tuple(secret_names), service_account))
        return self.key


def keyring_for(host: str, user: str) -> Keyring:
    return Keyring.from_docker_config({"auths": {host: {"username": user, "password": "pw"}}}, "test")


def make_client(
    checker: RecordingChecker, policy: Policy | Callable[[], Policy] | None = None, **kwargs: Any
) -> tuple[FlaskClient, Webhook]:
    fixed = policy or Policy()
    current = fixed if callable(fixed) else (lambda: fixed)
    webhook = Webhook(current, lambda _policy: checker, **kwargs)
    return build_app(webhook, Metrics(), MAX_BODY).test_client(), webhook


def answer(client: FlaskClient, body: Any) -> dict[str, Any]:
    response = client.post("/validate", json=body)
    assert response.status_code == 200, response.data
    result: dict[str, Any] = response.json["response"]  # type: ignore[index]
    return result


# --- malformed requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not an AdmissionReview"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), "request"),
        (json.dumps(review("a:1", kind="ConfigMap")).encode(), "kind ConfigMap"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 20_000 + b"]" * 20_000, "not JSON"),
    ],
)
def test_malformed_bodies_get_400_with_a_short_reason(data: bytes, reason: str) -> None:
    client, webhook = make_client(RecordingChecker())
    response = client.post("/validate", data=data, content_type="application/json")
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert reason in text and text.count("\n") == 1 and "Traceback" not in text
    assert 'pullcheck_invalid_requests_total{status="400"} 1.0' in client.get("/metrics").get_data(
        as_text=True
    )


@pytest.mark.parametrize(
    ("kind", "operation", "sub_resource"),
    [
        ("PodExecOptions", "CONNECT", "exec"),
        ("PodAttachOptions", "CONNECT", "attach"),
        ("Binding", "CREATE", "binding"),
    ],
)
def test_reviews_without_a_pod_spec_are_admitted(kind: str, operation: str, sub_resource: str) -> None:
    checker = RecordingChecker()
    client, _ = make_client(checker, Policy(mode="enforce", on_resolution_error="deny"))
    body = review("a:1")
    body["request"].update(
        kind={"group": "", "version": "v1", "kind": kind},
        operation=operation,
        subResource=sub_resource,
        name="p",
        object={"kind": kind},
    )
    assert answer(client, body) == {"uid": UID, "allowed": True}
    assert checker.calls == []
    assert 'pullcheck_admission_duration_seconds_count{kind="other"} 1.0' in client.get("/metrics").get_data(
        as_text=True
    )


def test_oversized_body_gets_413() -> None:
    client, _ = make_client(RecordingChecker())
    body = review("a:1")
    body["request"]["object"]["metadata"]["annotations"] = {"big": "x" * (MAX_BODY + 1)}
    response = client.post("/validate", json=body)
    assert response.status_code == 413
    assert "larger than" in response.get_data(as_text=True)


def test_wrong_method_and_path_are_short_answers() -> None:
    client, _ = make_client(RecordingChecker())
    assert client.get("/validate").status_code == 405
    missing = client.get("/nope")
    assert missing.status_code == 404 and "<html" not in missing.get_data(as_text=True).lower()


# --- decisions -------------------------------------------------------------------------------------


def test_enforce_denies_with_403_and_the_same_uid() -> None:
    checker = RecordingChecker({"old:1": SCHEMA1})
    client, _ = make_client(checker, Policy(mode="enforce"))
    response = answer(client, review("old:1", "ok:1"))
    assert response["uid"] == UID and response["allowed"] is False
    assert response["status"]["code"] == 403
    assert "old:1: SCHEMA1 fails" in response["status"]["message"]
    assert "rebuild with a current Docker" in response["status"]["message"]
    assert checker.calls[0][0] == ["old:1", "ok:1"]


def test_answer_keeps_the_review_version() -> None:
    client, _ = make_client(RecordingChecker())
    body = review("a:1")
    body["apiVersion"] = "admission.k8s.io/v1beta1"
    response = client.post("/validate", json=body)
    assert response.json["apiVersion"] == "admission.k8s.io/v1beta1"  # type: ignore[index]


def test_warn_admits_with_warnings() -> None:
    client, _ = make_client(RecordingChecker({"old:1": SCHEMA1, "enc:1": ENCRYPTED}), Policy(mode="warn"))
    response = answer(client, review("old:1", "enc:1"))
    assert response["allowed"] is True and "status" not in response
    assert [w.split(" ")[:2] for w in response["warnings"]] == [
        ["old:1:", "SCHEMA1"],
        ["enc:1:", "ENCRYPTED_LAYER"],
    ]


def test_audit_admits_with_audit_annotations_only() -> None:
    client, _ = make_client(RecordingChecker({"old:1": SCHEMA1}), Policy(mode="audit"))
    response = answer(client, review("old:1"))
    assert response["allowed"] is True and "warnings" not in response
    assert response["auditAnnotations"]["verdict"] == DENY


def test_dry_run_is_answered_like_a_real_request() -> None:
    client, _ = make_client(RecordingChecker({"old:1": SCHEMA1}), Policy(mode="enforce"))
    body = review("old:1")
    real = answer(client, body)
    body["request"]["dryRun"] = True
    assert answer(client, body) == real


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet"])
def test_workloads_are_judged_by_their_pod_template(kind: str) -> None:
    client, _ = make_client(RecordingChecker({"old:1": SCHEMA1}), Policy(mode="enforce"))
    assert answer(client, review("old:1", kind=kind))["allowed"] is False


def test_policy_severity_override_applies() -> None:
    policy = Policy(mode="enforce", severities={Code.SCHEMA1: Severity.WARN})
    client, _ = make_client(RecordingChecker({"old:1": SCHEMA1}), policy)
    response = answer(client, review("old:1"))
    assert response["allowed"] is True and "SCHEMA1" in response["warnings"][0]


def test_exempt_namespace_is_not_checked() -> None:
    checker = RecordingChecker({"old:1": SCHEMA1})
    client, _ = make_client(checker, Policy(mode="enforce", exemptions=Exemptions(namespaces=("legacy-*",))))
    assert answer(client, review("old:1", namespace="legacy-apps")) == {"uid": UID, "allowed": True}
    assert checker.calls == []


def test_exempt_images_and_registries_are_left_out() -> None:
    checker = RecordingChecker({"registry.example/legacy/old:1": SCHEMA1})
    exemptions = Exemptions(images=("registry.example/legacy/*",), registries=("quay.io",))
    client, _ = make_client(checker, Policy(mode="enforce", exemptions=exemptions))
    response = answer(client, review("registry.example/legacy/old:1", "quay.io/team/app:1", "nginx:1"))
    assert response["allowed"] is True
    assert checker.calls[0][0] == ["nginx:1"]


def test_policy_changes_take_effect_on_the_next_request() -> None:
    policies = [Policy(mode="enforce")]
    client, _ = make_client(RecordingChecker({"old:1": SCHEMA1}), lambda: policies[-1])
    assert answer(client, review("old:1"))["allowed"] is False
    policies.append(Policy(mode="warn"))
    assert answer(client, review("old:1"))["allowed"] is True


# --- targets and credentials -----------------------------------------------------------------------


def test_targets_come_from_the_nodes_narrowed_by_the_pod() -> None:
    checker = RecordingChecker()
    nodes = Nodes(
        [
            NodeGroup(AMD, 3, {"kubernetes.io/arch": "amd64"}),
            NodeGroup(ARM, 2, {"kubernetes.io/arch": "arm64"}),
        ]
    )
    client, _ = make_client(checker, nodes=nodes)
    answer(client, review("a:1"))
    answer(client, review("a:1", nodeSelector={"kubernetes.io/arch": "arm64"}))
    assert [call[1] for call in checker.calls] == [[AMD, ARM], [ARM]]


def test_node_counts_reach_the_message() -> None:
    finding = (Finding(Code.SCHEMA1, DENY, "containerd://2.1.3", "linux/arm64", "no"),)
    nodes = Nodes([NodeGroup(AMD, 3, {}), NodeGroup(ARM, 2, {})])
    client, _ = make_client(RecordingChecker({"old:1": finding}), Policy(mode="enforce"), nodes=nodes)
    message = answer(client, review("old:1"))["status"]["message"]
    assert "fails on 2 nodes running containerd 2.1 (linux/arm64)" in message


def test_without_synced_nodes_the_policy_targets_are_used() -> None:
    checker = RecordingChecker()
    policy = Policy(targets=(ARM,))
    client, _ = make_client(checker, policy, nodes=Nodes([NodeGroup(AMD, 3, {})], synced=False))
    answer(client, review("a:1"))
    assert checker.calls[0][1] == [ARM]
    assert client.get("/readyz").status_code == 503


def test_a_pod_selecting_no_current_node_is_judged_on_the_policy_targets() -> None:
    checker = RecordingChecker()
    client, _ = make_client(checker, Policy(targets=(AMD, ARM)), nodes=Nodes([NodeGroup(AMD, 3, {})]))
    answer(client, review("a:1", nodeSelector={"kubernetes.io/arch": "arm64"}))
    assert checker.calls[0][1] == [ARM]


def test_pull_secrets_of_the_namespace_come_before_node_credentials() -> None:
    checker = RecordingChecker()
    pod_keyring = keyring_for("registry.example", "pod-user")
    node_keyring = keyring_for("registry.example", "node-user")
    secrets = Secrets(pod_keyring)
    client, _ = make_client(checker, pull_secrets=secrets, node_keyring=lambda _policy: node_keyring)
    answer(
        client,
        review("registry.example/app:1", imagePullSecrets=[{"name": "regcred"}], serviceAccountName="ci"),
    )
    assert secrets.asked == [("team-a", ("regcred",), "ci")]
    keyring = checker.calls[0][2]
    assert [c.username for c in keyring.lookup("registry.example", "app")] == ["pod-user", "node-user"]


# --- failures, readiness, metrics, logs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "on_error", "allowed", "warned"),
    [("enforce", "deny", False, False), ("enforce", "warn", True, True), ("warn", "allow", True, False)],
)
def test_an_unexpected_failure_follows_on_resolution_error(
    mode: Mode, on_error: OnResolutionError, allowed: bool, warned: bool
) -> None:
    client, _ = make_client(
        RecordingChecker(error=RuntimeError("boom")), Policy(mode=mode, on_resolution_error=on_error)
    )
    response = answer(client, review("a:1"))
    assert response["allowed"] is allowed
    assert ("warnings" in response) is warned
    assert "boom" not in json.dumps(response) and "Traceback" not in json.dumps(response)


def test_health_and_readiness() -> None:
    client, _ = make_client(RecordingChecker(), nodes=Nodes([], synced=True))
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_metrics_count_decisions_by_mode_and_code() -> None:
    client, _ = make_client(RecordingChecker({"old:1": SCHEMA1}), Policy(mode="enforce"))
    answer(client, review("old:1"))
    answer(client, review("ok:1"))
    text = client.get("/metrics").get_data(as_text=True)
    assert 'pullcheck_admission_decisions_total{code="SCHEMA1",mode="enforce",outcome="denied"} 1.0' in text
    assert 'pullcheck_admission_decisions_total{code="none",mode="enforce",outcome="allowed"} 1.0' in text
    assert 'pullcheck_admission_duration_seconds_count{kind="Pod"} 2.0' in text


def test_one_log_line_per_admission_without_credentials(caplog: pytest.LogCaptureFixture) -> None:
    secrets = Secrets(keyring_for("registry.example", "robot"))
    client, _ = make_client(RecordingChecker({"old:1": SCHEMA1}), Policy(mode="warn"), pull_secrets=secrets)
    with caplog.at_level(logging.INFO, logger="pullcheck.admission"):
        answer(client, review("old:1", imagePullSecrets=[{"name": "regcred"}]))
    (record,) = [r for r in caplog.records if r.name == "pullcheck.admission"]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["uid"] == UID and fields["namespace"] == "team-a" and fields["kind"] == "Pod"
    assert fields["images"] == ["old:1"] and fields["verdicts"] == {"old:1": DENY}
    assert fields["durationMs"] >= 0
    assert "robot" not in json.dumps(fields) and "pw" not in json.dumps(fields)


# --- the real checker against the real registry ------------------------------------------------------


def policy_for(path: Path, registry: Registry, **values: Any) -> str:
    return str(write_policy(path, local_registries([registry.host]), **values))


def real_app(policy_file: str, **settings: Any) -> Flask:
    return create_app(Settings(policy_file=policy_file, **settings))


@pytest.mark.registry
def test_real_registry_enforce_warn_audit(
    tmp_path: Path, registry: Registry, corpus: dict[str, CorpusImage]
) -> None:
    schema1, healthy = corpus["schema1_signed"].ref, corpus["oci_index"].ref
    outcomes = {}
    for mode in ("enforce", "warn", "audit"):
        client = real_app(policy_for(tmp_path / f"{mode}.yaml", registry, mode=mode)).test_client()
        outcomes[mode] = answer(client, review(schema1, healthy))
    assert outcomes["enforce"]["allowed"] is False
    assert f"{schema1}: SCHEMA1 fails on containerd 2.1" in outcomes["enforce"]["status"]["message"]
    assert outcomes["warn"]["allowed"] is True
    assert any("SCHEMA1 fails" in w for w in outcomes["warn"]["warnings"])
    assert outcomes["audit"]["allowed"] is True and "warnings" not in outcomes["audit"]
    audited = json.loads(outcomes["audit"]["auditAnnotations"]["images"])
    assert [entry["image"] for entry in audited] == [schema1]


@pytest.mark.registry
def test_result_cache_lookups_are_counted_one_per_image(
    tmp_path: Path, registry: Registry, corpus: dict[str, CorpusImage]
) -> None:
    client = real_app(policy_for(tmp_path / "p.yaml", registry, mode="warn")).test_client()
    images = [corpus[name].ref for name in ("schema2", "oci", "oci_index")]
    answer(client, review(*images))
    answer(client, review(*images, images[0]))  # a second container of the same image: one lookup
    text = client.get("/metrics").get_data(as_text=True)
    assert 'pullcheck_cache_lookups_total{cache="result",result="miss"} 3.0' in text
    assert 'pullcheck_cache_lookups_total{cache="result",result="hit"} 3.0' in text


@pytest.mark.registry
def test_real_registry_clean_pod_is_admitted_and_metrics_see_the_registry(
    tmp_path: Path, registry: Registry, corpus: dict[str, CorpusImage]
) -> None:
    client = real_app(policy_for(tmp_path / "p.yaml", registry, mode="enforce")).test_client()
    body = review(corpus["oci"].ref, corpus["schema2"].ref, kind="Deployment")
    assert answer(client, body) == {"uid": UID, "allowed": True}
    assert answer(client, copy.deepcopy(body)) == {"uid": UID, "allowed": True}
    text = client.get("/metrics").get_data(as_text=True)
    assert f'pullcheck_registry_requests_total{{host="{registry.host}",method="HEAD",status="200"}}' in text
    assert 'result="hit"' in text
    # A registry the policy does not list, here one the network guard refuses, is no label of its own.
    for port in (1, 2, 3):
        answer(client, review(f"localhost:{port}/app:v1"))
    text = client.get("/metrics").get_data(as_text=True)
    assert "localhost" not in text
    assert 'pullcheck_registry_requests_total{host="other",method="HEAD",status="0"} 3.0' in text


@pytest.mark.registry
def test_real_registry_credentials_from_the_node_docker_config(
    tmp_path: Path, htpasswd_registry: Registry
) -> None:
    image = htpasswd_registry.push_private_image("private/app", "v1")
    config = tmp_path / "config.json"
    auth = {"username": htpasswd_registry.username, "password": htpasswd_registry.password}
    config.write_text(json.dumps({"auths": {htpasswd_registry.host: auth}}))
    policy = {
        "mode": "enforce",
        "onResolutionError": "deny",
        "registries": [
            {
                "host": htpasswd_registry.host,
                "caFile": str(htpasswd_registry.ca_file),
                "allowPrivateNetwork": True,
            }
        ],
    }
    without = tmp_path / "without.yaml"
    without.write_text(yaml.safe_dump(policy))
    denied = answer(real_app(str(without)).test_client(), review(image))
    assert denied["allowed"] is False and "UNAUTHORIZED" in denied["status"]["message"]
    with_config = tmp_path / "with.yaml"
    with_config.write_text(yaml.safe_dump({**policy, "dockerConfig": str(config)}))
    admitted = answer(real_app(str(with_config)).test_client(), review(image))
    assert admitted == {"uid": UID, "allowed": True}
    assert str(htpasswd_registry.password) not in json.dumps(denied)


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# The examples name public images; the local corpus holds images of the same kinds.
LOCAL_STAND_INS = {"registry.k8s.io/pause:2.0": "schema1_signed", "registry.k8s.io/pause:3.10": "oci_index"}


@pytest.mark.registry
@pytest.mark.parametrize(
    ("policy_name", "expected"),
    [
        ("policy-enforce.yaml", {"pod-schema1": "denied", "deployment-schema1": "denied", "pod-ok": "clean"}),
        (None, {"pod-schema1": "warned", "deployment-schema1": "warned", "pod-ok": "clean"}),
        ("policy-audit.yaml", {"pod-schema1": "audited", "deployment-schema1": "audited", "pod-ok": "clean"}),
    ],
)
def test_examples_are_denied_warned_or_audited_as_the_mode_says(
    tmp_path: Path,
    registry: Registry,
    corpus: dict[str, CorpusImage],
    policy_name: str | None,
    expected: dict[str, str],
) -> None:
    values = yaml.safe_load((EXAMPLES / policy_name).read_text()) if policy_name else {}
    client = real_app(policy_for(tmp_path / "policy.yaml", registry, **values)).test_client()
    seen = {}
    for name in expected:
        text = (EXAMPLES / f"{name}.json").read_text()
        for public, stand_in in LOCAL_STAND_INS.items():
            text = text.replace(f'"{public}"', json.dumps(corpus[stand_in].ref))
        response = answer(client, json.loads(text))
        if not response["allowed"]:
            seen[name] = "denied" if response["status"]["code"] == 403 else "?"
        elif "warnings" in response:
            seen[name] = "warned"
        elif "auditAnnotations" in response:
            seen[name] = "audited"
        else:
            seen[name] = "clean"
    assert seen == expected


def test_a_lone_surrogate_from_a_registry_still_gets_an_answer() -> None:
    # A registry's JSON may escape half a surrogate pair; the fast encoder refuses such a string.
    lone = (Finding(Code.SCHEMA1, DENY, "containerd://2.1.3", "linux/amd64", "media type \ud800"),)
    client, _ = make_client(RecordingChecker({"r.example/a:1": lone}), Policy(mode="enforce"))
    assert answer(client, review("r.example/a:1"))["allowed"] is False
