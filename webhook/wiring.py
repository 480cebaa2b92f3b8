"""What the command line and the webhook build the same way: credentials from files, and the checker.

`CheckerPerRegistries` rebuilds the checker when the policy's registry settings change, `NodeKeyring`
re-reads the node's docker config when its file changes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from webhook.credentials import Keyring
from webhook.errors import ConfigError, PullcheckError
from webhook.files import FileStamp, file_stamp
from webhook.policy import Policy
from webhook.ports import ImageChecker
from webhook.registry import RegistryClient, RequestEvent
from webhook.resolve import Checker

log = logging.getLogger("pullcheck.admission")


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
    on_cache: Callable[[str, bool, int], None] | None = None,
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


class CheckerPerRegistries:
    """The checker for the current policy's registry, cache and connection settings; rebuilt when they change.

    The previous checker is closed only at the next change, so admissions still using it finish."""

    def __init__(self, build: Callable[[Policy], ImageChecker]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._current: tuple[Any, ImageChecker] | None = None
        self._retired: ImageChecker | None = None

    def __call__(self, policy: Policy) -> ImageChecker:
        current = self._current
        settings = _client_settings(policy)
        if current is not None and current[0] == settings:
            return current[1]
        with self._lock:
            if self._current is None or self._current[0] != settings:
                if self._retired is not None:
                    _close(self._retired)
                self._retired = self._current[1] if self._current else None
                self._current = (settings, self._build(policy))
            return self._current[1]


def _client_settings(policy: Policy) -> tuple[Any, ...]:
    """What a checker is built from: a change of any of these builds a new one."""
    return (policy.registries, policy.caches, policy.connections_per_registry)


def _close(checker: object) -> None:
    close = getattr(checker, "close", None)
    if callable(close):
        close()


class NodeKeyring:
    """The policy's node-level docker config, re-read when the path or the file changes."""

    def __init__(self, read: Callable[[str], Keyring]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._key: tuple[str | None, FileStamp | None] = (None, None)
        self._keyring = Keyring.empty()

    def __call__(self, policy: Policy) -> Keyring:
        path = policy.docker_config
        try:
            stamp = file_stamp(path) if path else None
        except OSError:
            stamp = None
        with self._lock:
            if (path, stamp) != self._key:
                try:
                    self._keyring = self._read(path) if path and stamp is not None else Keyring.empty()
                except PullcheckError as exc:
                    log.error("node docker config ignored: %s", exc)
                    self._keyring = Keyring.empty()
                self._key = (path, stamp)
            return self._keyring
