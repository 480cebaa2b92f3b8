"""Digest pinning in a real API server with the chart installed, and drift seen by `pullcheck audit`.

The release's webhook pins (`policy.pinDigests`); a second mutating webhook of the tests' own injects a
sidecar after it, so the API server must call pullcheck again (reinvocationPolicy IfNeeded).
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import ControlPlane
from tests.e2e.pullcheck_webhook import (
    Release,
    deployment_manifest,
    registry_policy,
    serving,
    unique,
)
from tests.harness.corpus import HELM_CHART, HELM_CONFIG
from tests.harness.images import Blob, make_layer
from tests.harness.pki import CertificateAuthority
from tests.harness.registry import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.registry]

PULLCHECK = str(Path(sys.executable).parent / "pullcheck")


def _release(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory, registry: Registry, pin: bool
) -> Iterator[Release]:
    policy = {
        "mode": "enforce",
        "pinDigests": pin,
        **registry_policy({"host": registry.host, "insecure": True}),
    }
    yield from serving(cluster, tmp_path_factory.mktemp("pin" if pin else "nopin"), {"policy": policy})


@pytest.fixture(scope="module")
def pinning(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory, registry: Registry
) -> Iterator[Release]:
    yield from _release(cluster, tmp_path_factory, registry, pin=True)


@pytest.fixture(scope="module")
def not_pinning(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory, registry: Registry
) -> Iterator[Release]:
    yield from _release(cluster, tmp_path_factory, registry, pin=False)


def fresh_image(registry: Registry, tag: str = "1.0") -> tuple[str, str]:
    """A new tagged image of its own repository: (reference, digest)."""
    repository = f"pin/{unique('app')}"
    digest = registry.push_image(repository, tag, [make_layer(f"{repository} {tag}")])
    return registry.ref(repository, tag), digest


def _pod(cluster: ControlPlane, name: str, namespace: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=True).stdout)


def test_kubectl_run_stores_the_image_pinned_to_the_digest_judged(
    cluster: ControlPlane, pinning: Release, registry: Registry
) -> None:
    namespace = pinning.judged_namespace()
    image, digest = fresh_image(registry)
    repository = image.split("/", 1)[1].rpartition(":")[0]
    before = registry.log_file.stat().st_size
    run = cluster.kubectl("run", "app", "-n", namespace, f"--image={image}", "--restart=Never")
    assert run.returncode == 0, run.stderr
    assert _pod(cluster, "app", namespace)["spec"]["containers"][0]["image"] == f"{image}@{digest}"
    # The validating call judged the pinned image from the mutating call's caches: the registry saw one
    # HEAD, for the tag, and none for the digest.
    log = registry.log_file.read_bytes()[before:].decode(errors="replace")
    heads = re.findall(rf'"HEAD /v2/{re.escape(repository)}/manifests/(\S+) ', log)
    assert heads == ["1.0"]
    validated = [r for r in pinning.webhooks[0].admissions() if r["namespace"] == namespace]
    assert [r["images"] for r in validated] == [[f"{image}@{digest}"]]


def test_a_deployment_template_is_pinned(cluster: ControlPlane, pinning: Release, registry: Registry) -> None:
    namespace = pinning.judged_namespace()
    image, digest = fresh_image(registry)
    applied = cluster.kubectl("apply", "-f", "-", input=deployment_manifest("web", namespace, image))
    assert applied.returncode == 0, applied.stderr
    stored = json.loads(
        cluster.kubectl("get", "deployment", "web", "-n", namespace, "-o", "json", check=True).stdout
    )
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == f"{image}@{digest}"


def test_server_dry_run_shows_the_pinned_image_and_stores_nothing(
    cluster: ControlPlane, pinning: Release, registry: Registry
) -> None:
    namespace = pinning.judged_namespace()
    image, digest = fresh_image(registry)
    dry = cluster.kubectl("run", "dry", "-n", namespace, f"--image={image}", "--dry-run=server", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["spec"]["containers"][0]["image"] == f"{image}@{digest}"
    assert (
        cluster.kubectl("get", "pod", "dry", "-n", namespace, "--ignore-not-found", "-o", "name").stdout == ""
    )


def test_a_denied_image_is_not_pinned_and_is_refused_by_validation(
    cluster: ControlPlane, pinning: Release, registry: Registry
) -> None:
    namespace = pinning.judged_namespace()
    repository = f"pin/{unique('artifact')}"
    # A Helm chart: its config is no image config, which every runtime refuses to run.
    chart = make_layer("chart", media_type=HELM_CHART)
    registry.push_image(repository, "1.0", [chart], Blob(b'{"name":"chart","version":"1.0"}', HELM_CONFIG))
    image = registry.ref(repository, "1.0")
    run = cluster.kubectl("run", "chart", "-n", namespace, f"--image={image}", "--restart=Never")
    assert run.returncode == 1 and "NOT_AN_IMAGE" in run.stderr
    # Refused as written: the message names the tag, not a digest pullcheck would have added.
    assert f"{image}: NOT_AN_IMAGE" in run.stderr


class _SidecarInjector(http.server.BaseHTTPRequestHandler):
    """Adds a `sidecar` container (image from the server's `sidecar_image`) to Pods that have none."""

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        pod = review["request"]["object"]
        response: dict[str, Any] = {"uid": review["request"]["uid"], "allowed": True}
        if not any(c["name"] == "sidecar" for c in pod["spec"]["containers"]):
            patch = [
                {
                    "op": "add",
                    "path": "/spec/containers/-",
                    "value": {"name": "sidecar", "image": self.server.sidecar_image},  # type: ignore[attr-defined]
                }
            ]
            response |= {
                "patchType": "JSONPatch",
                "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
            }
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sidecar_injector(tmp_path: Path, cluster: ControlPlane, registry: Registry) -> Iterator[tuple[str, str]]:
    """A mutating webhook named to run after pullcheck's (configurations are called in name order),
    injecting a tagged sidecar image into Pods of the namespace it yields."""
    image, digest = fresh_image(registry, "sidecar")
    ca = CertificateAuthority(tmp_path / "injector-pki")
    pair = ca.server_pair("injector")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pair.cert_file, pair.key_file)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SidecarInjector)
    server.sidecar_image = image  # type: ignore[attr-defined]
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = unique("zz-sidecar")
    configuration = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "sidecar.pullcheck.test",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{server.server_address[1]}/inject",
                    "caBundle": base64.b64encode(ca.ca_file.read_bytes()).decode(),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"sidecar-injection": name}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "reinvocationPolicy": "Never",
                "timeoutSeconds": 5,
            }
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(configuration), check=True)
    try:
        yield name, f"{image}@{digest}"
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", name, check=True)
        server.shutdown()
        server.server_close()


def test_a_sidecar_another_webhook_injects_is_pinned_on_reinvocation(
    cluster: ControlPlane, pinning: Release, registry: Registry, sidecar_injector: tuple[str, str]
) -> None:
    injection, pinned_sidecar = sidecar_injector
    namespace = pinning.judged_namespace(labels={"sidecar-injection": injection})
    image, digest = fresh_image(registry)
    run = cluster.kubectl("run", "app", "-n", namespace, f"--image={image}", "--restart=Never")
    assert run.returncode == 0, run.stderr
    containers = _pod(cluster, "app", namespace)["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [
        ("app", f"{image}@{digest}"),
        ("sidecar", pinned_sidecar),
    ]


def test_with_pinning_off_nothing_changes(
    cluster: ControlPlane, not_pinning: Release, registry: Registry
) -> None:
    configurations = cluster.kubectl("get", "mutatingwebhookconfigurations", "-o", "name", check=True).stdout
    assert not_pinning.fullname not in configurations
    namespace = not_pinning.judged_namespace()
    image, _ = fresh_image(registry)
    run = cluster.kubectl("run", "app", "-n", namespace, f"--image={image}", "--restart=Never")
    assert run.returncode == 0, run.stderr
    assert _pod(cluster, "app", namespace)["spec"]["containers"][0]["image"] == image


# --- drift -------------------------------------------------------------------------------------------


def _running(
    cluster: ControlPlane, namespace: str, owner: dict[str, Any], pod: str, image: str, digest: str
) -> None:
    """A Pod of `owner` (a ReplicaSet) whose container reports running `digest`, as its kubelet would."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod,
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": True, **owner}],
        },
        "spec": {"containers": [{"name": "app", "image": image}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=True)
    repository = image.rpartition(":")[0]
    status = {
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "app",
                    "image": image,
                    "imageID": f"{repository}@{digest}",
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
            ],
        }
    }
    cluster.kubectl(
        "patch",
        "pod",
        pod,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
        check=True,
    )


def _deployment_with_replica_set(
    cluster: ControlPlane, namespace: str, name: str, image: str
) -> dict[str, Any]:
    """A Deployment and the ReplicaSet its controller would make; returns the ReplicaSet's name and uid."""
    cluster.kubectl("apply", "-f", "-", input=deployment_manifest(name, namespace, image), check=True)
    deployment = json.loads(
        cluster.kubectl("get", "deployment", name, "-n", namespace, "-o", "json", check=True).stdout
    )
    replica_set = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{name}-1",
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": name,
                    "uid": deployment["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {"selector": deployment["spec"]["selector"], "template": deployment["spec"]["template"]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(replica_set), check=True)
    uid = json.loads(
        cluster.kubectl("get", "rs", f"{name}-1", "-n", namespace, "-o", "json", check=True).stdout
    )
    return {"name": f"{name}-1", "uid": uid["metadata"]["uid"]}


def test_audit_reports_pods_running_another_digest_than_their_tag_names_now(
    cluster: ControlPlane, registry: Registry
) -> None:
    namespace = unique("drift")
    cluster.create_namespace(namespace)
    image, old = fresh_image(registry)
    repository = image.split("/", 1)[1].rpartition(":")[0]
    new = registry.push_image(repository, "1.0", [make_layer(f"{repository} rebuilt")])
    for name, digest in (("stale", old), ("fresh", new)):
        owner = _deployment_with_replica_set(cluster, namespace, name, image)
        _running(cluster, namespace, owner, f"{name}-1-abcde", image, digest)
    done = subprocess.run(
        [PULLCHECK, "audit", "--kubeconfig", str(cluster.kubeconfig), "-n", namespace, "--insecure-registry",
         registry.host, "--platform", "linux/amd64", "-o", "json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    findings = {
        w["name"]: [(f["code"], f["severity"], f["message"]) for f in r["findings"]]
        for r in json.loads(done.stdout)["results"]
        for w in r["workloads"]
    }
    assert findings == {
        "stale": [("DIGEST_DRIFT", "info", f"running Pods use {old[:19]}; the tag now names {new[:19]}")],
        "fresh": [],
    }
