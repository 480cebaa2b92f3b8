"""The control plane harness is real: Nodes, RBAC, admission webhooks, audit, kubectl and helm all behave."""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.e2e.build_binaries import TOOLS, cached_path, locate
from tests.e2e.harness import CONTAINERD_1_7, CONTAINERD_2_1, CRIO_1_33, ControlPlane
from tests.harness.pki import CertificateAuthority

pytestmark = pytest.mark.e2e

KUBERNETES_VERSION = TOOLS["kube-apiserver"].version


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def namespace(cluster: ControlPlane) -> str:
    # Without a namespace controller a deleted namespace stays Terminating, so each test takes a fresh one.
    return cluster.create_namespace(_name("harness")).metadata.name


@pytest.fixture
def nodes(cluster: ControlPlane) -> Iterator[dict[str, tuple[str, str]]]:
    wanted = {
        _name("containerd17-amd64"): (CONTAINERD_1_7, "linux/amd64"),
        _name("containerd21-arm64"): (CONTAINERD_2_1, "linux/arm64"),
        _name("crio-amd64"): (CRIO_1_33, "linux/amd64"),
    }
    for name, (runtime, platform) in wanted.items():
        cluster.create_node(name, runtime=runtime, platform=platform)
    yield wanted
    for name in wanted:
        cluster.delete_node(name)


def test_nodes_are_listed_with_runtime_and_platform(
    cluster: ControlPlane, nodes: dict[str, tuple[str, str]]
) -> None:
    listed = {n.metadata.name: n for n in cluster.core.list_node().items if n.metadata.name in nodes}
    assert listed.keys() == nodes.keys()
    for name, (runtime, platform) in nodes.items():
        node = listed[name]
        os_name, arch = platform.split("/")
        info = node.status.node_info
        assert (info.container_runtime_version, info.operating_system, info.architecture) == (
            runtime,
            os_name,
            arch,
        )
        assert info.kubelet_version == KUBERNETES_VERSION
        assert node.metadata.labels["kubernetes.io/os"] == os_name
        assert node.metadata.labels["kubernetes.io/arch"] == arch
        assert [c.type for c in node.status.conditions if c.status == "True"] == ["Ready"]

    arm64 = cluster.kubectl("get", "nodes", "-l", "kubernetes.io/arch=arm64", "-o", "json", check=True)
    runtimes = {
        item["metadata"]["name"]: item["status"]["nodeInfo"]["containerRuntimeVersion"]
        for item in json.loads(arm64.stdout)["items"]
        if item["metadata"]["name"] in nodes
    }
    assert list(runtimes.values()) == [CONTAINERD_2_1]


def test_a_service_account_token_gets_what_its_role_grants_and_no_more(
    cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cluster.create_service_account(namespace, "reader")
    rbac = k8s.RbacAuthorizationV1Api(cluster.api_client)
    rbac.create_namespaced_role(
        namespace,
        k8s.V1Role(
            metadata=k8s.V1ObjectMeta(name="pod-reader"),
            rules=[k8s.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="reader-reads-pods"),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        ),
    )
    token = cluster.service_account_token(namespace, "reader")

    with cluster.token_client(token) as api:
        core = k8s.CoreV1Api(api)
        assert core.list_namespaced_pod(namespace).items == []
        for forbidden in (
            lambda: core.list_namespaced_secret(namespace),
            lambda: core.list_node(),
            lambda: core.list_namespaced_pod("default"),
        ):
            with pytest.raises(k8s.ApiException) as denied:
                forbidden()
            assert denied.value.status == 403

    kubeconfig = cluster.token_kubeconfig(token, tmp_path / "reader.kubeconfig")
    whoami = cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig, check=True)
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{namespace}:reader"
    )
    can_i = cluster.kubectl("auth", "can-i", "get", "secrets", "-n", namespace, kubeconfig=kubeconfig)
    assert (can_i.returncode, can_i.stdout.strip()) == (1, "no")


def test_pods_are_admitted_without_controllers_and_inherit_the_service_accounts_pull_secrets(
    cluster: ControlPlane, namespace: str
) -> None:
    secret = cluster.create_pull_secret(namespace, "registry-creds", "127.0.0.1:5000", "alice", "s3cret")
    assert secret.type == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))
    assert base64.b64decode(config["auths"]["127.0.0.1:5000"]["auth"]) == b"alice:s3cret"
    cluster.create_service_account(namespace, "puller", image_pull_secrets=["registry-creds"])

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app"},
        "spec": {"serviceAccountName": "puller", "containers": [{"name": "app", "image": "busybox:1.36"}]},
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod), check=True)

    stored = cluster.core.read_namespaced_pod("app", namespace)
    # The ServiceAccount admission plugin copies the account's pull secrets into a Pod that names none.
    assert [s.name for s in stored.spec.image_pull_secrets] == ["registry-creds"]
    assert stored.status.phase == "Pending"


def test_the_audit_log_receives_request_metadata(cluster: ControlPlane, namespace: str) -> None:
    name = _name("audited")
    cluster.kubectl("create", "configmap", name, "-n", namespace, "--from-literal=k=v", check=True)

    event = cluster.wait_for_audit_event(
        lambda e: e.get("verb") == "create" and e.get("objectRef", {}).get("name") == name
    )
    assert event["level"] == "Metadata"
    assert event["stage"] == "ResponseComplete"
    assert event["objectRef"] == {
        "resource": "configmaps",
        "namespace": namespace,
        "name": name,
        "apiVersion": "v1",
    }
    assert event["responseStatus"]["code"] == 201
    assert "system:masters" in event["user"]["groups"]
    assert "requestObject" not in event


def test_kubectl_talks_to_the_apiserver_at_the_pinned_version(cluster: ControlPlane) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json", check=True).stdout)
    assert version["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert version["clientVersion"]["gitVersion"] == KUBERNETES_VERSION

    namespaces = cluster.kubectl("get", "namespaces", "-o", "name", check=True).stdout.split()
    assert {"namespace/default", "namespace/kube-system"} <= set(namespaces)


def test_helm_lists_templates_and_installs_a_chart(
    cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: tiny\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n"
    )
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )

    listed = cluster.helm("list", "--all-namespaces", "-o", "json", check=True)
    assert [r for r in json.loads(listed.stdout) if r["namespace"] == namespace] == []

    rendered = cluster.helm("template", "demo", str(chart), "--set", "greeting=hi", check=True)
    assert "name: demo-greeting" in rendered.stdout
    assert 'greeting: "hi"' in rendered.stdout

    cluster.helm("install", "demo", str(chart), "-n", namespace, "--wait", check=True)
    stored = cluster.core.read_namespaced_config_map("demo-greeting", namespace)
    assert stored.data == {"greeting": "hello"}
    releases = json.loads(cluster.helm("list", "-n", namespace, "-o", "json", check=True).stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]
    cluster.helm("uninstall", "demo", "-n", namespace, "--wait", check=True)
    assert cluster.helm("list", "-n", namespace, "-q", check=True).stdout.strip() == ""


class _StubWebhook(http.server.BaseHTTPRequestHandler):
    """Refuses Pods named `refused-*`; admits the rest with a warning and an audit annotation."""

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = review["request"]["object"]["metadata"]["name"]
        response: dict[str, Any] = {
            "uid": review["request"]["uid"],
            "allowed": not name.startswith("refused-"),
        }
        if response["allowed"]:
            response |= {"warnings": [f"{name} looks odd"], "auditAnnotations": {"verdict": "warn"}}
        else:
            response["status"] = {"code": 403, "message": f"{name} is not allowed here"}
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
def stub_webhook(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    ca = CertificateAuthority(tmp_path / "webhook-pki")
    pair = ca.server_pair("webhook")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pair.cert_file, pair.key_file)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubWebhook)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/validate", ca.ca_file.read_bytes()
    server.shutdown()
    server.server_close()


def test_the_apiserver_calls_a_webhook_on_loopback_and_audits_its_annotations(
    cluster: ControlPlane, namespace: str, stub_webhook: tuple[str, bytes]
) -> None:
    url, ca_bundle = stub_webhook
    configuration = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": namespace},
        "webhooks": [
            {
                "name": "stub.pullcheck.test",
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_bundle).decode()},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(configuration), check=True)
    try:
        refused = cluster.kubectl("run", "refused-app", "-n", namespace, "--image=busybox:1.36")
        assert refused.returncode == 1
        assert (
            'admission webhook "stub.pullcheck.test" denied the request: refused-app is not allowed here'
            in (refused.stderr)
        )

        admitted = cluster.kubectl("run", "odd-app", "-n", namespace, "--image=busybox:1.36", check=True)
        assert "Warning: odd-app looks odd" in admitted.stderr

        event = cluster.wait_for_audit_event(
            lambda e: e.get("verb") == "create" and e.get("objectRef", {}).get("name") == "odd-app"
        )
        assert event["annotations"]["stub.pullcheck.test/verdict"] == "warn"
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", namespace, check=True)


def test_kubebuilder_assets_come_before_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "etcd").write_text("#!/bin/sh\n")
    (tmp_path / "etcd").chmod(0o755)
    (tmp_path / "kubectl").write_text("not executable")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    found = locate()
    assert found["etcd"] == tmp_path / "etcd"
    assert found["kubectl"] is None
    assert found["helm"] is None
    assert (
        cached_path("helm")
        == tmp_path / "cache" / "pullcheck" / "bin" / f"helm-{TOOLS['helm'].version}" / "helm"
    )
