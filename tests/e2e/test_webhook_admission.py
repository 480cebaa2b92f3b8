"""The chart's webhook in a real API server: kubectl's answers in enforce, warn and audit modes.

Each module-scoped release runs its webhook with `--static-targets` (the policy's default targets,
containerd 2.1 and CRI-O 1.33 on linux/amd64), so Nodes other tests create cannot change its answers;
tests/e2e/test_webhook_nodes.py covers judging by the cluster's Nodes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import ControlPlane
from tests.e2e.pullcheck_webhook import (
    WEBHOOK_NAME,
    Release,
    deployment_manifest,
    install,
    pod_manifest,
    registry_policy,
    serving,
    unique,
)
from tests.harness.corpus import CorpusImage
from tests.harness.registry import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.registry]

DENIED = f'admission webhook "{WEBHOOK_NAME}" denied the request'


def _release(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory, registry: Registry, mode: str
) -> Iterator[Release]:
    yield from serving(
        cluster,
        tmp_path_factory.mktemp(mode),
        {"policy": {"mode": mode, **registry_policy({"host": registry.host, "insecure": True})}},
    )


@pytest.fixture(scope="module")
def enforce(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory, registry: Registry
) -> Iterator[Release]:
    yield from _release(cluster, tmp_path_factory, registry, "enforce")


@pytest.fixture(scope="module")
def warn(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory, registry: Registry
) -> Iterator[Release]:
    yield from _release(cluster, tmp_path_factory, registry, "warn")


@pytest.fixture(scope="module")
def audit(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory, registry: Registry
) -> Iterator[Release]:
    yield from _release(cluster, tmp_path_factory, registry, "audit")


def _stored(cluster: ControlPlane, kind: str, name: str, namespace: str) -> bool:
    found = cluster.kubectl("get", kind, name, "-n", namespace, "--ignore-not-found", "-o", "name")
    assert found.returncode == 0, found.stderr
    return bool(found.stdout.strip())


def test_enforce_refuses_a_schema1_pod_at_kubectl_run_and_apply(
    cluster: ControlPlane, enforce: Release, corpus: dict[str, CorpusImage]
) -> None:
    namespace = enforce.judged_namespace()
    schema1 = corpus["schema1_signed"].ref
    run = cluster.kubectl("run", "legacy", "-n", namespace, f"--image={schema1}", "--restart=Never")
    assert run.returncode == 1
    assert DENIED in run.stderr
    assert f"{schema1}: SCHEMA1 fails on containerd 2.1" in run.stderr
    applied = cluster.kubectl("apply", "-f", "-", input=pod_manifest("legacy", namespace, schema1))
    assert applied.returncode == 1 and DENIED in applied.stderr and "SCHEMA1" in applied.stderr
    assert not _stored(cluster, "pod", "legacy", namespace)
    healthy = cluster.kubectl("run", "fine", "-n", namespace, f"--image={corpus['oci_index'].ref}")
    assert healthy.returncode == 0, healthy.stderr
    assert "Warning:" not in healthy.stderr
    assert _stored(cluster, "pod", "fine", namespace)


def test_server_dry_run_gets_the_same_answer_and_stores_nothing(
    cluster: ControlPlane, enforce: Release, warn: Release, corpus: dict[str, CorpusImage]
) -> None:
    schema1 = corpus["schema1_signed"].ref
    refused_namespace = enforce.judged_namespace()
    refused = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=pod_manifest("dry", refused_namespace, schema1)
    )
    assert refused.returncode == 1 and DENIED in refused.stderr and "SCHEMA1" in refused.stderr
    warned_namespace = warn.judged_namespace()
    warned = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=pod_manifest("dry", warned_namespace, schema1)
    )
    assert warned.returncode == 0, warned.stderr
    assert "Warning:" in warned.stderr and "(server dry run)" in warned.stdout
    assert not _stored(cluster, "pod", "dry", warned_namespace)
    dry = [r for r in warn.webhooks[0].admissions() if r["namespace"] == warned_namespace]
    assert [r["dryRun"] for r in dry] == [True]


def test_a_deployment_with_a_bad_image_is_refused_at_apply(
    cluster: ControlPlane, enforce: Release, corpus: dict[str, CorpusImage]
) -> None:
    namespace = enforce.judged_namespace()
    manifest = deployment_manifest("web", namespace, corpus["schema1_signed"].ref)
    applied = cluster.kubectl("apply", "-f", "-", input=manifest)
    assert applied.returncode == 1
    assert DENIED in applied.stderr and "SCHEMA1" in applied.stderr
    assert not _stored(cluster, "deployment", "web", namespace)


def test_an_update_of_a_large_deployment_is_judged(
    cluster: ControlPlane, enforce: Release, corpus: dict[str, CorpusImage]
) -> None:
    # An UPDATE review carries the object and the oldObject. A control character in an env value is one
    # byte in etcd and six in the review's JSON, so two 400 KB Deployments make a review of about 5 MB:
    # past the old 3 MiB body limit, within two objects of the apiserver's 3 MiB and the envelope.
    namespace = enforce.judged_namespace()

    def manifest(image: str) -> str:
        deployment = yaml.safe_load(deployment_manifest("large", namespace, image))
        deployment["spec"]["template"]["spec"]["containers"][0]["env"] = [
            {"name": f"FILLER_{n}", "value": "\x01" * 100_000} for n in range(4)
        ]
        return json.dumps(deployment)

    created = cluster.kubectl("create", "-f", "-", input=manifest(corpus["schema2"].ref))
    assert created.returncode == 0, created.stderr
    replaced = cluster.kubectl("replace", "-f", "-", input=manifest(corpus["oci"].ref))
    assert replaced.returncode == 0, replaced.stderr
    judged = [
        record
        for record in enforce.webhooks[-1].admissions()
        if record["name"] == "large" and record["namespace"] == namespace
    ]
    assert [record["operation"] for record in judged] == ["CREATE", "UPDATE"]


def test_warn_admits_with_warning_lines(
    cluster: ControlPlane, warn: Release, corpus: dict[str, CorpusImage]
) -> None:
    namespace = warn.judged_namespace()
    schema1 = corpus["schema1_signed"].ref
    run = cluster.kubectl("run", "legacy", "-n", namespace, f"--image={schema1}")
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("Warning: ")]
    assert warnings and any("SCHEMA1" in line for line in warnings), run.stderr
    assert _stored(cluster, "pod", "legacy", namespace)


def test_audit_admits_silently_and_the_audit_log_carries_the_findings(
    cluster: ControlPlane, audit: Release, corpus: dict[str, CorpusImage]
) -> None:
    namespace = audit.judged_namespace()
    schema1 = corpus["schema1_signed"].ref
    run = cluster.kubectl("run", "legacy", "-n", namespace, f"--image={schema1}")
    assert run.returncode == 0, run.stderr
    assert "Warning" not in run.stderr
    event = cluster.wait_for_audit_event(
        lambda e: (
            e.get("verb") == "create"
            and (e.get("objectRef") or {}).get("namespace") == namespace
            and (e.get("objectRef") or {}).get("resource") == "pods"
            and e.get("stage") == "ResponseComplete"
        )
    )
    annotations = event.get("annotations") or {}
    assert annotations.get(f"{WEBHOOK_NAME}/verdict") == "deny", annotations
    assert schema1 in annotations[f"{WEBHOOK_NAME}/images"]
    assert "SCHEMA1" in annotations[f"{WEBHOOK_NAME}/images"]


def test_mirror_pods_are_not_sent_to_the_webhook(
    cluster: ControlPlane, enforce: Release, corpus: dict[str, CorpusImage]
) -> None:
    namespace = enforce.judged_namespace()
    node = unique("mirror-node")
    cluster.create_node(node)
    try:
        mirror = pod_manifest(
            "static",
            namespace,
            corpus["schema1_signed"].ref,
            annotations={"kubernetes.io/config.mirror": "checksum"},
            nodeName=node,
        )
        created = cluster.kubectl("create", "-f", "-", input=mirror)
        assert created.returncode == 0, created.stderr
        assert not [r for r in enforce.webhooks[0].admissions() if r["namespace"] == namespace]
    finally:
        cluster.delete_node(node)


def test_kube_system_the_release_namespace_and_opted_out_namespaces_are_never_sent(
    cluster: ControlPlane, enforce: Release, corpus: dict[str, CorpusImage]
) -> None:
    schema1 = corpus["schema1_signed"].ref
    opted_out = enforce.judged_namespace(labels={"pullcheck.io/ignore": "true"})
    # Give kube-system and the release namespace the label that selects them: the chart's own
    # expressions must still leave them out.
    label = f"pullcheck-e2e/release={enforce.name}"
    for namespace in ("kube-system", enforce.namespace):
        cluster.kubectl("label", "namespace", namespace, label, "--overwrite", check=True)
    try:
        for namespace in ("kube-system", enforce.namespace, opted_out):
            name = unique("legacy")
            run = cluster.kubectl("run", name, "-n", namespace, f"--image={schema1}")
            assert run.returncode == 0, f"{namespace}: {run.stderr}"
        sent = {r["namespace"] for r in enforce.webhooks[0].admissions()}
        assert not sent & {"kube-system", enforce.namespace, opted_out}
    finally:
        for namespace in ("kube-system", enforce.namespace):
            cluster.kubectl("label", "namespace", namespace, "pullcheck-e2e/release-", check=True)


def test_failure_policy_ignore_admits_and_fail_refuses_when_the_webhook_is_down(
    cluster: ControlPlane, tmp_path: Path, registry: Registry, corpus: dict[str, CorpusImage]
) -> None:
    release = install(
        cluster,
        tmp_path,
        {
            "webhook": {"failurePolicy": "Fail"},
            "policy": {"mode": "enforce", **registry_policy({"host": registry.host, "insecure": True})},
        },
    )
    try:
        namespace = release.judged_namespace()
        healthy = corpus["oci_index"].ref
        webhook = release.start_webhook("--static-targets")
        assert cluster.kubectl("run", "up", "-n", namespace, f"--image={healthy}").returncode == 0
        webhook.stop()
        refused = cluster.kubectl("run", "down", "-n", namespace, f"--image={healthy}")
        assert refused.returncode == 1
        assert f'failed calling webhook "{WEBHOOK_NAME}"' in refused.stderr
        release.helm("upgrade", {"webhook": {"failurePolicy": "Ignore"}})
        admitted = cluster.kubectl("run", "down", "-n", namespace, f"--image={corpus['schema1_signed'].ref}")
        assert admitted.returncode == 0, admitted.stderr
    finally:
        release.uninstall()
