"""What the command line and the webhook build the same way: credentials from files, and the checker."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from webhook.credentials import Keyring
from webhook.errors import ConfigError
from webhook.policy import Policy
from webhook.registry import RegistryClient, RequestEvent
from webhook.resolve import Checker


def read_keyring(path: str | None) -> Keyring:
    """Credentials of a docker config file; an empty keyring without a path."""
    if path is None:
        return Keyring.empty()
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the docker config: {exc.strerror or exc}") from None
    except (ValueError, RecursionError):
        raise ConfigError(f"{path}: the docker config is not valid JSON") from None
    return Keyring.from_docker_config(data, source=f"docker config {path}")


def default_docker_config() -> str | None:
    """Where docker and skopeo keep a person's credentials, when that file exists."""
    directory = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    path = os.path.join(directory, "config.json")
    return path if os.path.isfile(path) else None


def make_checker(
    policy: Policy,
    *,
    network_guard: bool,
    on_request: Callable[[RequestEvent], None] | None = None,
    on_cache: Callable[[str, bool], None] | None = None,
) -> Checker:
    client = RegistryClient(
        policy.registries,
        network_guard=network_guard,
        on_request=on_request,
        connections_per_origin=policy.connections_per_registry,
        token_cache_bytes=policy.caches.tokens,
    )
    return Checker(
        client,
        document_bytes=policy.caches.documents,
        answer_bytes=policy.caches.answers,
        on_cache=on_cache,
    )
