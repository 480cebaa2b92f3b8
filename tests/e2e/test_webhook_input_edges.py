"""What Pod specs and webhook configurations written by people send, in a real API server.

A hand-written configuration that sends every Pod subresource (`pods/*`) with CONNECT: kubectl exec and
scheduling (the pods/binding subresource) still work. Without a kubelet, `kubectl exec` ends at the API
server's own refusal (the Pod has no node) once admission has passed; a webhook that refused the review
would fail it first, with failurePolicy Fail.

An image name with a control character still gets a warning the API server keeps (it drops warnings
holding one), and a password in an image name reaches neither kubectl nor the audit log.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import yaml

from tests.e2e.harness import ControlPlane
from tests.e2e.pullcheck_webhook import SELECT_LABEL, Release, install, pod_manifest, registry_policy, unique
from tests.harness.corpus import CorpusImage
from tests.harness.registry import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.registry]


@pytest.fixture(scope="module")
def release(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory, registry: Registry
) -> Iterator[Release]:
    policy = {"mode": "enforce", "severities": {"INVALID_REFERENCE": "warn"}}
    values = {"policy": {**policy, **registry_policy({"host": registry.host, "insecure": True})}}
    release = install(cluster, tmp_path_factory.mktemp("edges"), values)
    configuration = unique("pods-everything")
    hand_written = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": configuration},
        "webhooks": [
            {
                "name": "everything.pods.example.com",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{release.port}/validate",
                    "caBundle": base64.b64encode(release.serving.ca_file.read_bytes()).decode(),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE", "CONNECT"],
                        "resources": ["pods", "pods/*"],
                    }
                ],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
                "namespaceSelector": {"matchLabels": {SELECT_LABEL: release.name}},
            }
        ],
    }
    try:
        release.start_webhook("--static-targets")
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(hand_written), check=True)
        yield release
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", configuration, "--ignore-not-found")
        release.uninstall()


def test_kubectl_exec_and_binding_pass_a_webhook_that_sees_every_pod_subresource(
    cluster: ControlPlane, release: Release, corpus: dict[str, CorpusImage]
) -> None:
    namespace = release.judged_namespace()
    created = cluster.kubectl("apply", "-f", "-", input=pod_manifest("app", namespace, corpus["oci"].ref))
    assert created.returncode == 0, created.stderr

    execed = cluster.kubectl("exec", "-n", namespace, "app", "--", "true")
    assert execed.returncode != 0
    assert "webhook" not in execed.stderr, execed.stderr
    assert "does not have a host assigned" in execed.stderr, execed.stderr

    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "app"},
        "target": {"name": "node-a"},
    }
    bound = cluster.kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{namespace}/pods/app/binding",
        "-f",
        "-",
        input=json.dumps(binding),
    )
    assert bound.returncode == 0, bound.stderr
    assert cluster.core.read_namespaced_pod("app", namespace).spec.node_name == "node-a"

    seen = {(a["operation"], a["kind"]): a for a in release.webhooks[0].admissions()}
    assert seen[("CONNECT", "PodExecOptions")]["allowed"] is True
    assert seen[("CREATE", "Binding")]["allowed"] is True
    assert json.dumps(seen[("CONNECT", "PodExecOptions")]["images"]) == "[]"


def test_a_control_character_or_a_password_in_an_image_name_is_escaped_or_masked_for_the_apiserver(
    cluster: ControlPlane, release: Release, registry: Registry
) -> None:
    namespace = release.judged_namespace()
    bell, secret = f"{registry.host}/app\u0007:1", f"robot:s3cr3t-pw@{registry.host}/app:1"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "odd", "namespace": namespace},
        "spec": {"containers": [{"name": "bell", "image": bell}, {"name": "secret", "image": secret}]},
    }
    created = cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    assert created.returncode == 0, created.stderr  # INVALID_REFERENCE warns in this policy
    warnings = [line for line in created.stderr.splitlines() if line.startswith("Warning: ")]
    assert any(f"{registry.host}/app\\x07:1: INVALID_REFERENCE warns" in w for w in warnings), created.stderr
    assert any(f"***@{registry.host}/app:1: INVALID_REFERENCE warns" in w for w in warnings), created.stderr
    assert "s3cr3t" not in created.stderr

    event = cluster.wait_for_audit_event(
        lambda e: (
            e.get("verb") == "create"
            and (e.get("objectRef") or {}).get("namespace") == namespace
            and (e.get("objectRef") or {}).get("resource") == "pods"
            and e.get("stage") == "ResponseComplete"
        )
    )
    annotations = json.dumps(event.get("annotations") or {})
    assert "INVALID_REFERENCE" in annotations and "***@" in annotations and "s3cr3t" not in annotations
    assert "s3cr3t" not in release.webhooks[0].output()
