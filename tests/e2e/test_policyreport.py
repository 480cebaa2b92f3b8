"""The background audit of `pullcheck serve`: metrics and PolicyReports, with the chart's audit RBAC."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client as k8s

from tests.e2e.harness import ControlPlane
from tests.e2e.test_audit import plant
from tests.harness.corpus import CorpusImage
from tests.harness.registry import Registry
from tests.harness.serving import Webhook, local_registries, trust, write_policy
from webhook.auditreport import AuditReport
from webhook.kube.policyreport import PolicyReportWriter

pytestmark = [pytest.mark.e2e, pytest.mark.registry]

CHART = Path(__file__).resolve().parents[2] / "charts" / "pullcheck"
RELEASE, RELEASE_NAMESPACE = "pc", "pullcheck-system"
GROUP, VERSION = "wgpolicyk8s.io", "v1alpha2"


@pytest.fixture(scope="module")
def audited_cluster(
    tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, CorpusImage]
) -> Iterator[ControlPlane]:
    plane = ControlPlane.start(tmp_path_factory.mktemp("policyreport-cluster"))
    try:
        plant(plane, corpus)
        yield plane
    finally:
        plane.stop()


def _chart_identity(cluster: ControlPlane, tmp_path: Path) -> Path:
    """The chart's ServiceAccount and RBAC with the audit on, applied; a kubeconfig acting as that account."""
    cluster.create_namespace(RELEASE_NAMESPACE)
    rendered = cluster.helm(
        "template",
        RELEASE,
        str(CHART),
        "-n",
        RELEASE_NAMESPACE,
        "--set",
        "policy.auditIntervalSeconds=60",
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
        "--show-only",
        "templates/audit-rbac.yaml",
        check=True,
    ).stdout
    cluster.kubectl("apply", "-n", RELEASE_NAMESPACE, "-f", "-", input=rendered, check=True)
    account = next(
        d["metadata"]["name"] for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ServiceAccount"
    )
    token = cluster.service_account_token(RELEASE_NAMESPACE, account)
    return cluster.token_kubeconfig(token, tmp_path / "kubeconfig")


def _reports(cluster: ControlPlane) -> dict[str, dict[str, Any]]:
    found: Any = k8s.CustomObjectsApi(cluster.api_client).list_cluster_custom_object(
        GROUP, VERSION, "policyreports"
    )
    return {item["metadata"]["namespace"]: item for item in found["items"]}


def _wait(check: Any, what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {seconds:g}s")


def test_background_audit_writes_policy_reports_and_metrics(
    audited_cluster: ControlPlane, registry: Registry, tmp_path: Path
) -> None:
    cluster = audited_cluster
    # Without the CRD the writer writes nothing and says so.
    empty = AuditReport(entries=(), problems=(), workloads=0, resolutions=0)
    assert PolicyReportWriter(cluster.api_client).write(empty) is None

    crd = cluster.helm(
        "template", RELEASE, str(CHART), "--set", "policyReportCRD.install=true",
        "--show-only", "templates/policyreport-crd.yaml", check=True,
    ).stdout  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=crd, check=True)
    cluster.kubectl("wait", "--for", "condition=established", "crd/policyreports.wgpolicyk8s.io", check=True)
    # A stale report of pullcheck's in a namespace without workloads: the audit removes it.
    stale = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PolicyReport",
        "metadata": {"name": "pullcheck", "labels": {"app.kubernetes.io/managed-by": "pullcheck"}},
        "results": [],
    }
    k8s.CustomObjectsApi(cluster.api_client).create_namespaced_custom_object(
        GROUP, VERSION, "default", "policyreports", stale
    )
    kubeconfig = _chart_identity(cluster, tmp_path)
    policy = write_policy(tmp_path / "policy.yaml", local_registries([registry.host]), mode="audit")
    webhook = Webhook(
        tmp_path, "--config", str(policy), "--cert-dir", str(tmp_path / "pki"),
        "--kubeconfig", str(kubeconfig), "--audit-interval", "2",
    )  # fmt: skip
    try:
        _wait(lambda: "CA at" in webhook.output(), "the CA file")
        ca = webhook.ca_file()
        webhook.wait_ready(ca)
        reports = _wait(
            lambda: (
                (r := _reports(cluster)) and "default" not in r and {"team-a", "team-b"} <= r.keys() and r
            ),
            "PolicyReports for team-a and team-b",
        )
        team_b = reports["team-b"]
        assert team_b["summary"] == {"pass": 1, "fail": 3, "warn": 0, "error": 0, "skip": 0}
        failed = {
            (r["resources"][0]["kind"], r["resources"][0]["name"], r["rule"])
            for r in team_b["results"]
            if r["result"] == "fail"
        }
        assert failed == {
            ("StatefulSet", "chart-as-image", "NOT_AN_IMAGE"),
            ("Pod", "wrong-platform", "PLATFORM_MISMATCH"),
            ("DaemonSet", "i386-anywhere", "NO_MATCHING_PLATFORM"),
        }
        warned = [r for r in reports["team-a"]["results"] if r["result"] == "warn"]
        assert {r["resources"][0]["name"] for r in warned} == {"legacy", "nightly"}
        assert all(r["rule"] == "SCHEMA1" and r["source"] == "pullcheck" for r in warned)
        assert all(r["resources"][0]["uid"] for r in warned)

        metrics = httpx.get(f"{webhook.url}/metrics", verify=trust(ca), timeout=5).text
        series = set(re.findall(r"^pullcheck_workload_findings\{([^}]*)\} 1\.0$", metrics, re.MULTILINE))
        labels = [dict(re.findall(r'(\w+)="([^"]*)"', s)) for s in series]
        assert {(s["namespace"], s["kind"], s["name"], s["code"], s["severity"]) for s in labels} == {
            ("team-a", "Deployment", "legacy", "SCHEMA1", "warn"),
            ("team-a", "CronJob", "nightly", "SCHEMA1", "warn"),
            ("team-b", "StatefulSet", "chart-as-image", "NOT_AN_IMAGE", "deny"),
            ("team-b", "Pod", "wrong-platform", "PLATFORM_MISMATCH", "deny"),
            ("team-b", "DaemonSet", "i386-anywhere", "NO_MATCHING_PLATFORM", "deny"),
        }
    finally:
        webhook.stop()
    # Nothing but PolicyReports was written by the webhook's account.
    writes = {
        (e["objectRef"]["resource"], e["verb"])
        for e in cluster.audit_events()
        if e["user"]["username"].startswith(f"system:serviceaccount:{RELEASE_NAMESPACE}:")
        and e["verb"] not in ("get", "list", "watch")
    }
    assert writes and {resource for resource, _ in writes} == {"policyreports"}
