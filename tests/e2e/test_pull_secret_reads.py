"""How many pull secrets one admission reads from a real API server, counted in its audit log.

A Pod may name any number of imagePullSecrets and each name not read before is one API request: without
a bound, one Pod naming thousands would hold its admission past the deadline and load the API server.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.e2e.harness import ControlPlane
from webhook.deadline import Deadline
from webhook.kube import PullSecrets
from webhook.kube.secrets import MAX_PULL_SECRETS

pytestmark = pytest.mark.e2e

REGISTRY = "registry.example:5000"


def _namespace(cluster: ControlPlane) -> str:
    name = f"secrets-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(name)
    cluster.create_pull_secret(name, "regcred", REGISTRY, "robot", "s3cret")
    return name


def _secret_reads(cluster: ControlPlane, namespace: str) -> list[str]:
    """The names of the Secrets read in `namespace`, from the audit log, once it has settled."""

    def reads() -> list[str]:
        return [
            str(e["objectRef"].get("name")) for e in cluster.audit_events() if _is_secret_get(e, namespace)
        ]

    seen = reads()
    for _ in range(20):
        time.sleep(0.25)
        again = reads()
        if again == seen:
            return seen
        seen = again
    return seen


def _is_secret_get(event: dict[str, Any], namespace: str) -> bool:
    ref = event.get("objectRef") or {}
    return (
        event.get("verb") == "get"
        and ref.get("resource") == "secrets"
        and ref.get("namespace") == namespace
        and event.get("stage") == "ResponseComplete"
    )


def test_a_pod_naming_thousands_of_pull_secrets_costs_at_most_the_bound(cluster: ControlPlane) -> None:
    namespace = _namespace(cluster)
    names = ["regcred", *(f"absent-{n}" for n in range(2_000))]
    keyring = PullSecrets(cluster.api_client).keyring(namespace, names, "default", Deadline(8))
    assert [c.username for c in keyring.lookup(REGISTRY, "team/app")] == ["robot"]
    assert _secret_reads(cluster, namespace) == names[:MAX_PULL_SECRETS]


def test_no_pull_secret_is_read_once_the_admissions_deadline_passed(cluster: ControlPlane) -> None:
    namespace = _namespace(cluster)
    passed = Deadline(0.001)
    time.sleep(0.01)
    keyring = PullSecrets(cluster.api_client).keyring(namespace, ["regcred"], "default", passed)
    assert len(keyring) == 0
    assert _secret_reads(cluster, namespace) == []
