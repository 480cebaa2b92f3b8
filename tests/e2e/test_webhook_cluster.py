"""What the webhook reads from the cluster with the chart's ServiceAccount: Nodes and pull secrets.

The local webhook authenticates with a TokenRequest token of the chart's ServiceAccount, so every answer
here also proves the chart's RBAC is enough; `kubectl auth can-i` proves it is no more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.e2e.harness import CONTAINERD_2_1, CRIO_1_33, ControlPlane
from tests.e2e.pullcheck_webhook import (
    Release,
    deployment_manifest,
    install,
    pod_manifest,
    registry_policy,
    serving,
    unique,
)
from tests.harness.corpus import CorpusImage
from tests.harness.pki import CertificateAuthority
from tests.harness.registry import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.registry]

_NODE_VIEW_SECONDS = 20.0  # the webhook learns of Node changes through its watch


@pytest.fixture
def make_nodes(cluster: ControlPlane) -> Iterator[Callable[..., list[str]]]:
    created: list[str] = []

    def make(count: int, runtime: str, platform: str = "linux/amd64") -> list[str]:
        names = [unique("node") for _ in range(count)]
        for name in names:
            cluster.create_node(name, runtime=runtime, platform=platform)
        created.extend(names)
        return names

    yield make
    if created:  # a test may have deleted some already
        cluster.kubectl("delete", "node", "--ignore-not-found", "--wait=false", *created, check=True)


def _dry_run_until(
    cluster: ControlPlane, manifest: str, settled: Callable[[CompletedProcess[str]], bool]
) -> CompletedProcess[str]:
    """Server dry runs of `manifest` until the answer shows the webhook's Node view has caught up."""
    deadline = time.monotonic() + _NODE_VIEW_SECONDS
    while True:
        answer = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
        if settled(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


@pytest.fixture
def by_nodes(cluster: ControlPlane, tmp_path: Path, registry: Registry) -> Iterator[Release]:
    release = install(
        cluster,
        tmp_path,
        {"policy": {"mode": "enforce", **registry_policy({"host": registry.host, "insecure": True})}},
    )
    try:
        release.start_webhook()
        yield release
    finally:
        release.uninstall()


def test_the_same_image_is_denied_on_containerd_2_1_nodes_and_warned_on_cri_o_only(
    cluster: ControlPlane,
    by_nodes: Release,
    make_nodes: Callable[..., list[str]],
    corpus: dict[str, CorpusImage],
) -> None:
    namespace = by_nodes.judged_namespace()
    schema1 = corpus["schema1_signed"].ref
    manifest = pod_manifest("legacy", namespace, schema1)
    containerd = make_nodes(2, CONTAINERD_2_1)
    denied = _dry_run_until(cluster, manifest, lambda a: "on 2 nodes running containerd 2.1" in a.stderr)
    assert denied.returncode == 1
    assert f"{schema1}: SCHEMA1 fails on 2 nodes running containerd 2.1" in denied.stderr
    for name in containerd:
        cluster.delete_node(name)
    make_nodes(3, CRIO_1_33)
    warned = _dry_run_until(cluster, manifest, lambda a: a.returncode == 0)
    assert warned.returncode == 0, warned.stderr
    assert "Warning:" in warned.stderr and "SCHEMA1 warns on 3 nodes running CRI-O 1.33" in warned.stderr


def test_a_pod_pinned_to_arm64_is_judged_for_arm64_only(
    cluster: ControlPlane,
    by_nodes: Release,
    make_nodes: Callable[..., list[str]],
    corpus: dict[str, CorpusImage],
) -> None:
    namespace = by_nodes.judged_namespace()
    image = corpus["index_missing_platform"].ref  # linux/arm64 and linux/s390x only
    make_nodes(2, CONTAINERD_2_1, "linux/amd64")
    make_nodes(1, CONTAINERD_2_1, "linux/arm64")
    anywhere = pod_manifest("anywhere", namespace, image)
    denied = _dry_run_until(cluster, anywhere, lambda a: "on 2 nodes" in a.stderr)
    assert denied.returncode == 1
    assert "NO_MATCHING_PLATFORM fails on 2 nodes running containerd 2.1 (linux/amd64)" in denied.stderr
    pinned = pod_manifest("pinned", namespace, image, nodeSelector={"kubernetes.io/arch": "arm64"})
    created = cluster.kubectl("apply", "-f", "-", input=pinned)
    assert created.returncode == 0, created.stderr
    assert "Warning:" not in created.stderr


@pytest.fixture
def private(
    cluster: ControlPlane, tmp_path: Path, htpasswd_registry: Registry, test_ca: CertificateAuthority
) -> Iterator[Release]:
    policy = {
        "mode": "enforce",
        "onResolutionError": "deny",
        **registry_policy({"host": htpasswd_registry.host, "caFile": str(test_ca.ca_file)}),
    }
    yield from serving(cluster, tmp_path, {"policy": policy})


def test_a_private_image_is_resolved_with_the_pods_and_the_service_accounts_pull_secret(
    cluster: ControlPlane, private: Release, htpasswd_registry: Registry
) -> None:
    registry = htpasswd_registry
    assert registry.username and registry.password
    image = registry.push_private_image(unique("private/app"))
    namespace = private.judged_namespace()
    refused = cluster.kubectl("apply", "-f", "-", input=pod_manifest("anonymous", namespace, image))
    assert refused.returncode == 1 and "UNAUTHORIZED" in refused.stderr, refused.stderr
    cluster.create_pull_secret(
        namespace, "registry-creds", registry.host, registry.username, registry.password
    )
    with_secret = pod_manifest("with-secret", namespace, image, imagePullSecrets=[{"name": "registry-creds"}])
    admitted = cluster.kubectl("apply", "-f", "-", input=with_secret)
    assert admitted.returncode == 0, admitted.stderr
    cluster.create_service_account(namespace, "app", image_pull_secrets=["registry-creds"])
    # A pod template has not met the ServiceAccount admission plugin: the webhook reads the account.
    by_account = deployment_manifest("by-account", namespace, image, serviceAccountName="app")
    admitted = cluster.kubectl("apply", "-f", "-", input=by_account)
    assert admitted.returncode == 0, admitted.stderr
    assert "Warning:" not in admitted.stderr


def _can_i(cluster: ControlPlane, kubeconfig: Path, *request: str) -> bool:
    answer = cluster.kubectl("auth", "can-i", *request, kubeconfig=kubeconfig)
    assert answer.stdout.strip() in ("yes", "no"), answer.stderr
    return answer.stdout.strip() == "yes"


def test_the_charts_service_account_may_read_what_the_webhook_needs_and_nothing_more(
    cluster: ControlPlane, tmp_path: Path
) -> None:
    elsewhere = cluster.create_namespace(unique("elsewhere")).metadata.name
    wide = install(cluster, tmp_path, {})
    narrow = install(cluster, tmp_path, {"rbac": {"pullSecretNamespaces": [elsewhere]}})
    try:
        kubeconfig = wide.service_account_kubeconfig()
        for request in (("list", "nodes"), ("watch", "nodes"), ("get", "secrets", "-n", elsewhere)):
            assert _can_i(cluster, kubeconfig, *request), request
        assert _can_i(cluster, kubeconfig, "get", "serviceaccounts", "-n", elsewhere)
        for request in (
            ("list", "secrets", "-n", elsewhere),
            ("watch", "secrets", "-n", elsewhere),
            ("get", "nodes"),
            ("create", "pods", "-n", elsewhere),
            ("get", "configmaps", "-n", wide.namespace),
            ("update", "validatingwebhookconfigurations"),
        ):
            assert not _can_i(cluster, kubeconfig, *request), request
        narrowed = narrow.service_account_kubeconfig()
        assert _can_i(cluster, narrowed, "get", "secrets", "-n", elsewhere)
        assert not _can_i(cluster, narrowed, "get", "secrets", "-n", wide.namespace)
        assert _can_i(cluster, narrowed, "list", "nodes")
    finally:
        wide.uninstall()
        narrow.uninstall()


def test_a_pod_bound_to_a_node_is_judged_for_that_node_only(
    cluster: ControlPlane,
    by_nodes: Release,
    make_nodes: Callable[..., list[str]],
    corpus: dict[str, CorpusImage],
) -> None:
    """A rolling upgrade: a schema 1 Pod bound to a CRI-O node is admitted with a warning while containerd
    2.1 nodes exist; bound (as the DaemonSet controller binds) to a containerd 2.1 node it is refused."""
    namespace = by_nodes.judged_namespace()
    schema1 = corpus["schema1_signed"].ref
    containerd = make_nodes(2, CONTAINERD_2_1)
    [crio] = make_nodes(1, CRIO_1_33)
    anywhere = pod_manifest("anywhere", namespace, schema1)
    denied = _dry_run_until(cluster, anywhere, lambda a: "1 CRI-O 1.33" in a.stderr)
    assert denied.returncode == 1 and "SCHEMA1 fails on 2 nodes running containerd 2.1" in denied.stderr
    on_crio = pod_manifest("on-crio", namespace, schema1, nodeName=crio)
    warned = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=on_crio)
    assert warned.returncode == 0, warned.stderr
    assert "SCHEMA1 warns on 1 node running CRI-O 1.33" in warned.stderr
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [containerd[0]]}]}
                ]
            }
        }
    }
    on_containerd = pod_manifest("on-containerd", namespace, schema1, affinity=affinity)
    refused = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=on_containerd)
    assert refused.returncode == 1
    assert "SCHEMA1 fails on 1 node running containerd 2.1" in refused.stderr
