"""The Helm chart without an API server: helm lint, what helm template renders, the schema's refusals,
the README's list of values and the rendered manifests/ (no drift)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import build_binaries
from webhook.policy import Policy
from webhook.policyfile import load_policy

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "pullcheck"


@pytest.fixture(scope="module")
def helm() -> Path:
    return build_binaries.ensure()["helm"]


def _helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=60, check=False)


def render(helm: Path, *values: str) -> list[dict[str, Any]]:
    done = _helm(helm, "template", "rel", str(CHART), "--namespace", "pc", *values)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def kinds(documents: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in documents)


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind]
    assert len(found) == 1, kinds(documents)
    return found[0]


@pytest.mark.helm
def test_helm_lint_is_clean(helm: Path) -> None:
    done = _helm(helm, "lint", "--strict", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout


@pytest.mark.helm
def test_defaults_render_the_in_cluster_webhook_with_certificate_hooks(helm: Path) -> None:
    documents = render(helm)
    assert kinds(documents) == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Service", "Deployment"]
        + ["PodDisruptionBudget", "ValidatingWebhookConfiguration"]
        + ["ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Job", "Job"]
    )
    deployment = one(documents, "Deployment")["spec"]
    assert deployment["replicas"] == 2
    pod = deployment["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["args"][:5] == [
        "serve",
        "--in-cluster",
        "--config=/etc/pullcheck/policy/policy.yaml",
        "--cert=/etc/pullcheck/tls/tls.crt",
        "--key=/etc/pullcheck/tls/tls.key",
    ]
    assert one(documents, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    jobs = [d for d in documents if d["kind"] == "Job"]
    hooks = {d["metadata"]["annotations"]["helm.sh/hook"] for d in jobs}
    assert hooks == {"pre-install,pre-upgrade", "post-install,post-upgrade"}
    args = [d["spec"]["template"]["spec"]["containers"][0]["args"] for d in jobs]
    assert ["certs", "create", "--in-cluster", "--service=rel-pullcheck", "--namespace=pc"] == args[0][:5]
    assert ["certs", "patch", "--in-cluster", "--webhook=rel-pullcheck", "--namespace=pc"] == args[1][:5]


@pytest.mark.helm
def test_webhook_configuration(helm: Path) -> None:
    configuration = one(render(helm), "ValidatingWebhookConfiguration")
    (webhook,) = configuration["webhooks"]
    assert webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["failurePolicy"] == "Ignore" and webhook["timeoutSeconds"] == 10
    assert webhook["clientConfig"]["service"] == {
        "name": "rel-pullcheck",
        "namespace": "pc",
        "path": "/validate",
        "port": 443,
    }
    expressions = webhook["namespaceSelector"]["matchExpressions"]
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "pc"]} in (
        expressions
    )
    assert {"key": "pullcheck.io/ignore", "operator": "NotIn", "values": ["true"]} in expressions
    assert "kubernetes.io/config.mirror" in webhook["matchConditions"][0]["expression"]
    resources = {r for rule in webhook["rules"] for r in rule["resources"]}
    assert {
        "pods",
        "pods/ephemeralcontainers",
        "deployments",
        "cronjobs",
        "replicationcontrollers",
    } <= resources
    only_pods = one(render(helm, "--set", "webhook.workloads=false"), "ValidatingWebhookConfiguration")
    assert [r["resources"] for r in only_pods["webhooks"][0]["rules"]] == [
        ["pods", "pods/ephemeralcontainers"]
    ]


@pytest.mark.helm
def test_digest_pinning_adds_a_mutating_webhook_like_the_validating_one(helm: Path, tmp_path: Path) -> None:
    assert "MutatingWebhookConfiguration" not in kinds(render(helm))
    values = ["--set", "policy.pinDigests=true", "--set", "webhook.failurePolicy=Fail"]
    values += ["--set-json", 'webhook.namespaceSelector={"matchLabels": {"team": "a"}}']
    documents = render(helm, *values)
    assert _configmap_policy(documents, tmp_path / "policy.yaml").pin_digests is True
    (validating,) = one(documents, "ValidatingWebhookConfiguration")["webhooks"]
    mutating = one(documents, "MutatingWebhookConfiguration")
    assert mutating["metadata"]["name"] == "rel-pullcheck"
    (webhook,) = mutating["webhooks"]
    assert webhook["name"] == "pin.pullcheck.io"
    # Pinning never refuses, whatever the validating webhook's failurePolicy.
    assert webhook["failurePolicy"] == "Ignore" and validating["failurePolicy"] == "Fail"
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["clientConfig"]["service"] == {**validating["clientConfig"]["service"], "path": "/mutate"}
    shared = ("namespaceSelector", "matchConditions", "rules", "sideEffects", "timeoutSeconds")
    assert {k: webhook[k] for k in shared} == {k: validating[k] for k in shared}
    assert webhook["namespaceSelector"]["matchLabels"] == {"team": "a"}
    by_url = render(
        helm, "--set", "policy.pinDigests=true", "--set", "webhook.url=https://127.0.0.1:8443/validate"
    )
    client = one(by_url, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]
    assert client == {"url": "https://127.0.0.1:8443/mutate"}
    cert_manager = render(
        helm, "--set", "policy.pinDigests=true", "--set", "certificates.method=cert-manager"
    )
    annotations = one(cert_manager, "MutatingWebhookConfiguration")["metadata"]["annotations"]
    assert annotations == {"cert-manager.io/inject-ca-from": "pc/rel-pullcheck"}


def _configmap_policy(documents: list[dict[str, Any]], path: Path) -> Policy:
    path.write_text(one(documents, "ConfigMap")["data"]["policy.yaml"])
    return load_policy(str(path))


@pytest.mark.helm
def test_the_policy_configmap_is_a_policy_pullcheck_accepts(helm: Path, tmp_path: Path) -> None:
    values = [
        "--set",
        "policy.mode=enforce",
        "--set-json",
        'policy.targets=[{"runtime": "cri-o://1.33.2", "platform": "linux/arm64"}]',
        "--set",
        "nodeCredentials.secretName=node-creds",
    ]
    documents = render(helm, *values)
    policy = _configmap_policy(documents, tmp_path / "policy.yaml")
    assert policy.mode == "enforce"
    assert [str(t.platform) for t in policy.targets] == ["linux/arm64"]
    assert policy.docker_config == "/etc/pullcheck/docker/.dockerconfigjson"
    default = _configmap_policy(render(helm), tmp_path / "default.yaml")
    assert default.mode == "warn"


@pytest.mark.helm
def test_url_mode_renders_no_in_cluster_server(helm: Path) -> None:
    documents = render(
        helm, "--set", "webhook.url=https://127.0.0.1:8443/validate", "--set", "webhook.caBundle=Q0E="
    )
    assert kinds(documents) == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "ValidatingWebhookConfiguration"]
    )
    client = one(documents, "ValidatingWebhookConfiguration")["webhooks"][0]["clientConfig"]
    assert client == {"url": "https://127.0.0.1:8443/validate", "caBundle": "Q0E="}


@pytest.mark.helm
def test_cert_manager_and_existing_secret_methods(helm: Path) -> None:
    documents = render(helm, "--set", "certificates.method=cert-manager")
    assert "Job" not in kinds(documents)
    certificate = one(documents, "Certificate")["spec"]
    assert certificate["secretName"] == "rel-pullcheck-tls"
    assert certificate["dnsNames"][0] == "rel-pullcheck.pc.svc"
    assert certificate["issuerRef"]["name"] == one(documents, "Issuer")["metadata"]["name"]
    annotations = one(documents, "ValidatingWebhookConfiguration")["metadata"]["annotations"]
    assert annotations == {"cert-manager.io/inject-ca-from": "pc/rel-pullcheck"}
    existing = render(
        helm,
        "--set",
        "certificates.method=secret",
        "--set",
        "certificates.secretName=mine",
        "--set",
        "webhook.caBundle=Q0E=",
    )
    assert not {"Job", "Certificate"} & set(kinds(existing))
    volumes = one(existing, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "mine"}} in volumes
    webhook = one(existing, "ValidatingWebhookConfiguration")["webhooks"][0]
    assert webhook["clientConfig"]["caBundle"] == "Q0E="


def _rules(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [
        rule
        for d in documents
        if d["kind"] == kind and "certs" not in d["metadata"]["name"]
        for rule in d["rules"]
    ]


@pytest.mark.helm
def test_rbac_is_least_privilege_and_values_narrow_it(helm: Path) -> None:
    assert _rules(render(helm), "ClusterRole") == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"], "verbs": ["get"]},
    ]
    narrowed = render(helm, "--set-json", 'rbac.pullSecretNamespaces=["team-a","team-b"]')
    assert _rules(narrowed, "ClusterRole") == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]}
    ]
    roles = [d for d in narrowed if d["kind"] == "Role" and "certs" not in d["metadata"]["name"]]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    no_secrets = render(helm, "--set", "rbac.readPullSecrets=false", "--set", "staticTargets=true")
    assert "ClusterRole" not in kinds([d for d in no_secrets if "certs" not in d["metadata"]["name"]])


@pytest.mark.helm
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("webhook.timeoutSeconds=0", "/webhook/timeoutSeconds"),
        ("webhook.timeoutSeconds=31", "/webhook/timeoutSeconds"),
        ("webhook.failurePolicy=Never", "/webhook/failurePolicy"),
        ("policy.mode=block", "/policy/mode"),
        ("policy.severities.SCHEMA1=loud", "/policy/severities/SCHEMA1"),
        ("webhook.url=http://127.0.0.1/validate", "/webhook/url"),
        ("certificates.method=vault", "/certificates/method"),
        ("certificates.method=secret", "/certificates/secretName"),
        ("replicaCount=0", "/replicaCount"),
        ("unknownValue=1", "unknownValue"),
        ("policy.resolutionTimeoutSeconds=10", "must be below webhook.timeoutSeconds"),
    ],
)
def test_bad_values_fail_with_the_field_named(helm: Path, value: str, message: str) -> None:
    done = _helm(helm, "template", "rel", str(CHART), "--set", value)
    assert done.returncode == 1
    assert message in done.stderr, done.stderr


def _value_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "resources":
            paths += _value_paths(value, f"{path}.")
        else:
            paths.append(path)
    return paths


def test_the_chart_readme_lists_every_value(helm: Path) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    listed = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))
    assert set(_value_paths(values)) - listed == set()
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) <= set(schema["properties"])


@pytest.mark.helm
def test_manifests_are_rendered_from_the_chart() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render_manifests.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.helm
def test_node_registry_files_are_configmaps_mounted_where_the_policy_names_them(
    helm: Path, tmp_path: Path
) -> None:
    hosts = 'server = "https://registry-1.docker.io"\n[host."https://mirror.internal"]\n'
    conf = 'unqualified-search-registries = ["docker.io"]\n'
    documents = render(
        helm,
        "--set-json",
        "nodeConfig.containerdHosts=" + json.dumps({"docker.io": hosts}),
        "--set-string",
        f"nodeConfig.crioRegistriesConf={conf}",
    )
    maps = {d["metadata"]["name"]: d["data"] for d in documents if d["kind"] == "ConfigMap"}
    assert maps["rel-pullcheck-containerd-hosts"] == {"docker.io": hosts}
    assert maps["rel-pullcheck-crio-registries"] == {"registries.conf": conf}
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v["configMap"] for v in pod["volumes"] if "configMap" in v}
    assert volumes["containerd-hosts"]["items"] == [{"key": "docker.io", "path": "docker.io/hosts.toml"}]
    assert volumes["crio-registries"]["items"] == [{"key": "registries.conf", "path": "registries.conf"}]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    # Lay the files out as the kubelet mounts them: the rendered policy then loads and reads them.
    certs = tmp_path / mounts["containerd-hosts"].lstrip("/")
    (certs / "docker.io").mkdir(parents=True)
    (certs / "docker.io" / "hosts.toml").write_text(hosts)
    crio = tmp_path / mounts["crio-registries"].lstrip("/")
    crio.mkdir(parents=True)
    (crio / "registries.conf").write_text(conf)
    policy_text = maps["rel-pullcheck"]["policy.yaml"]
    policy_text = policy_text.replace("/etc/pullcheck/", f"{tmp_path}/etc/pullcheck/")
    (tmp_path / "policy.yaml").write_text(policy_text)
    policy = load_policy(str(tmp_path / "policy.yaml"))
    assert policy.node.containerd is not None and policy.node.crio is not None
    assert [h.host for h in policy.node.containerd.hosts("docker.io") or ()] == [
        "mirror.internal",
        "registry-1.docker.io",
    ]
    assert policy.node.crio.unqualified_search_registries == ("docker.io",)
    default = _configmap_policy(render(helm), tmp_path / "default.yaml")
    assert default.node.containerd is None and default.node.crio is None


@pytest.mark.helm
def test_the_policyreport_crd_is_installed_only_on_request(helm: Path) -> None:
    assert "CustomResourceDefinition" not in kinds(render(helm))
    crd = one(render(helm, "--set", "policyReportCRD.install=true"), "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "policyreports.wgpolicyk8s.io"
    assert [v["name"] for v in crd["spec"]["versions"]] == ["v1alpha2"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
