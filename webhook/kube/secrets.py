"""A Pod's registry credentials: its imagePullSecrets, else its ServiceAccount's, as the kubelet uses them.

The ServiceAccount admission plugin copies the account's imagePullSecrets into a Pod that names none;
a workload's pod template has not been through it yet, so pullcheck does the same. Secrets are read
from the request's namespace only, kept a short while, and never logged: only their names are.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernetes import client

from webhook.cache import Cache
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.errors import ClusterError, ConfigError
from webhook.policy import DEFAULT_CACHES

log = logging.getLogger(__name__)

# A Pod names one pull secret or a few; the API server sets no bound, and each name not read before is
# one API request: thousands would hold the admission past its deadline and load the API server.
MAX_PULL_SECRETS = 64

# Where each pull-secret type keeps its docker config.
DOCKER_CONFIG_KEYS = {
    "kubernetes.io/dockerconfigjson": ".dockerconfigjson",
    "kubernetes.io/dockercfg": ".dockercfg",
}


def secret_keyring(secret: Mapping[str, Any]) -> Keyring:
    """The credentials of one Secret (as the API returns it); empty, with one log line, when unusable."""
    metadata = secret.get("metadata") or {}
    name = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
    key = DOCKER_CONFIG_KEYS.get(str(secret.get("type") or ""))
    encoded = (secret.get("data") or {}).get(key) if key else None
    if not isinstance(encoded, str):
        log.warning("pull secret %s is not a docker config secret; ignored", name)
        return Keyring.empty()
    try:
        data = json.loads(base64.b64decode(encoded, validate=True))
        return Keyring.from_docker_config(data, source=f"pull secret {name}")
    except (binascii.Error, ValueError, RecursionError):
        log.warning("pull secret %s does not hold a JSON docker config; ignored", name)
    except ConfigError as exc:
        log.warning("pull secret ignored: %s", exc)
    return Keyring.empty()


class PullSecrets:
    """Keyrings of pull secrets, read through the API and kept `ttl` seconds, at most `max_bytes` of them."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        ttl: float = 30.0,
        timeout: float = 2.0,
        max_bytes: int = DEFAULT_CACHES.pull_secrets,
    ) -> None:
        self._core: Any = client.CoreV1Api(api)  # raw JSON answers, not the typed models
        self._timeout = timeout
        self._ttl = ttl
        self._cache: Cache[tuple[str, ...], Any] = Cache(max_bytes)

    def keyring(
        self,
        namespace: str,
        secret_names: Sequence[str],
        service_account: str,
        deadline: Deadline | None = None,
    ) -> Keyring:
        """The first MAX_PULL_SECRETS secrets' credentials, in order, those read before `deadline`."""
        names = secret_names or self._account_secrets(namespace, service_account)
        if len(names) > MAX_PULL_SECRETS:
            log.warning(
                "%d pull secrets named in namespace %s: the first %d are read",
                len(names),
                namespace,
                MAX_PULL_SECRETS,
            )
            names = names[:MAX_PULL_SECRETS]
        keyring = Keyring.empty()
        for name in names:
            timeout = self._timeout if deadline is None else min(self._timeout, deadline.remaining())
            if timeout <= 0:
                log.warning(
                    "pull secrets of namespace %s: the deadline passed before %s was read", namespace, name
                )
                break
            keyring = keyring.merged(self._secret(namespace, name, timeout))
        return keyring

    def _read(self, what: str, read: Callable[[], Any]) -> Any:
        """The object as JSON, or None (logged by name) when it is absent or cannot be read."""
        try:
            response = read()
        except client.ApiException as exc:
            if exc.status != 404:
                log.warning("cannot read %s (HTTP %s %s)", what, exc.status, exc.reason)
            return None
        except ClusterError as exc:  # the API server did not answer: the one line says why
            log.warning("cannot read %s: %s", what, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - an API outage must not fail the admission
            log.warning("cannot read %s (%s)", what, type(exc).__name__)
            return None
        return json.loads(response.data)

    def _account_secrets(self, namespace: str, account: str) -> tuple[str, ...]:
        def load() -> tuple[str, ...]:
            found = self._read(
                f"service account {namespace}/{account}",
                lambda: self._core.read_namespaced_service_account(
                    account, namespace, _preload_content=False, _request_timeout=self._timeout
                ),
            )
            entries = (found or {}).get("imagePullSecrets") or []
            return tuple(str(e["name"]) for e in entries if isinstance(e, Mapping) and e.get("name"))

        names: tuple[str, ...] = self._cache.get_or_load(
            ("serviceaccount", namespace, account), load, self._ttl
        )
        return names

    def _secret(self, namespace: str, name: str, timeout: float) -> Keyring:
        def load() -> Keyring:
            found = self._read(
                f"pull secret {namespace}/{name}",
                lambda: self._core.read_namespaced_secret(
                    name, namespace, _preload_content=False, _request_timeout=timeout
                ),
            )
            return secret_keyring(found) if found is not None else Keyring.empty()

        keyring: Keyring = self._cache.get_or_load(("secret", namespace, name), load, self._ttl)
        return keyring
