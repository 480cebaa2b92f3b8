"""The webhook's own objects: its TLS Secret and the caBundle of its webhook configurations.

Used by `pullcheck certs`, which the chart runs in Helm hook Jobs: create the Secret once (and keep it on
upgrade), then put its CA into every webhook of the configuration. Key material is never logged.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from webhook.errors import ClusterError

TLS_SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 - a type name, not a password
_CONFLICT_RETRIES = 5


def _failure(what: str, exc: client.ApiException) -> ClusterError:
    return ClusterError(f"cannot {what}: HTTP {exc.status} {exc.reason}")


def read_tls_secret(api: client.ApiClient, namespace: str, name: str) -> dict[str, bytes] | None:
    """The Secret's data, decoded; None when it does not exist."""
    core: Any = client.CoreV1Api(api)
    try:
        response = core.read_namespaced_secret(name, namespace, _preload_content=False)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise _failure(f"read secret {namespace}/{name}", exc) from None
    data = json.loads(response.data).get("data") or {}
    return {str(key): base64.b64decode(value) for key, value in data.items()}


def write_tls_secret(api: client.ApiClient, namespace: str, name: str, files: Mapping[str, bytes]) -> None:
    """Create the `kubernetes.io/tls` Secret of `files` (tls.crt, tls.key, ca.crt), or replace its data."""
    core: Any = client.CoreV1Api(api)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "pullcheck"}},
        "type": TLS_SECRET_TYPE,
        "data": {key: base64.b64encode(value).decode() for key, value in files.items()},
    }
    try:
        core.create_namespaced_secret(namespace, body, _preload_content=False)
        return
    except client.ApiException as exc:
        if exc.status != 409:
            raise _failure(f"create secret {namespace}/{name}", exc) from None
    try:
        core.patch_namespaced_secret(name, namespace, {"data": body["data"]}, _preload_content=False)
    except client.ApiException as exc:
        raise _failure(f"update secret {namespace}/{name}", exc) from None


def patch_ca_bundle(api: client.ApiClient, configuration: str, ca_pem: bytes) -> int:
    """Set caBundle in every webhook of the ValidatingWebhookConfiguration and, when there is one of the
    same name (digest pinning on), of the MutatingWebhookConfiguration; returns how many webhooks in all."""
    admission: Any = client.AdmissionregistrationV1Api(api)
    bundle = base64.b64encode(ca_pem).decode()
    count = _patch_one(
        f"validatingwebhookconfiguration {configuration}",
        lambda: admission.read_validating_webhook_configuration(configuration, _preload_content=False),
        lambda body: admission.replace_validating_webhook_configuration(
            configuration, body, _preload_content=False
        ),
        bundle,
    )
    mutating = _patch_one(
        f"mutatingwebhookconfiguration {configuration}",
        lambda: admission.read_mutating_webhook_configuration(configuration, _preload_content=False),
        lambda body: admission.replace_mutating_webhook_configuration(
            configuration, body, _preload_content=False
        ),
        bundle,
        missing_ok=True,
    )
    return count + mutating


def _patch_one(
    what: str,
    read: Callable[[], Any],
    replace: Callable[[Any], Any],
    bundle: str,
    *,
    missing_ok: bool = False,
) -> int:
    for _ in range(_CONFLICT_RETRIES):
        try:
            response = read()
        except client.ApiException as exc:
            if missing_ok and exc.status == 404:
                return 0
            raise _failure(f"read {what}", exc) from None
        current = json.loads(response.data)
        webhooks = current.get("webhooks") or []
        for webhook in webhooks:
            webhook.setdefault("clientConfig", {})["caBundle"] = bundle
        try:
            # The read's resourceVersion goes along: a concurrent writer makes this a 409; read again.
            replace(current)
            return len(webhooks)
        except client.ApiException as exc:
            if exc.status != 409:
                raise _failure(f"update {what}", exc) from None
    raise ClusterError(f"cannot update {what}: it kept changing under us")
