"""Pull secrets as the API returns them, turned into keyrings; unusable ones ignored, content unlogged."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from webhook.kube import secret_keyring


def secret(kind: str, key: str, payload: Any, name: str = "regcred") -> dict[str, Any]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return {
        "metadata": {"name": name, "namespace": "team-a"},
        "type": kind,
        "data": {key: base64.b64encode(raw).decode()},
    }


AUTH = {"registry.example": {"username": "robot", "password": "s3cret-value"}}
NOT_A_URL = {"auths": {"[bad": AUTH["registry.example"]}}


def test_dockerconfigjson_secret() -> None:
    keyring = secret_keyring(secret("kubernetes.io/dockerconfigjson", ".dockerconfigjson", {"auths": AUTH}))
    assert [c.username for c in keyring.lookup("registry.example", "team/app")] == ["robot"]


def test_legacy_dockercfg_secret() -> None:
    keyring = secret_keyring(secret("kubernetes.io/dockercfg", ".dockercfg", AUTH))
    assert [c.username for c in keyring.lookup("registry.example", "team/app")] == ["robot"]


@pytest.mark.parametrize(
    "broken",
    [
        secret("Opaque", ".dockerconfigjson", {"auths": AUTH}),
        secret("kubernetes.io/dockerconfigjson", ".dockercfg", AUTH),
        secret("kubernetes.io/dockerconfigjson", ".dockerconfigjson", b"s3cret-value not json"),
        secret("kubernetes.io/dockerconfigjson", ".dockerconfigjson", ["s3cret-value"]),
        secret("kubernetes.io/dockerconfigjson", ".dockerconfigjson", b"[" * 100_000),
        secret("kubernetes.io/dockerconfigjson", ".dockerconfigjson", NOT_A_URL),
        {
            "metadata": {"name": "regcred", "namespace": "team-a"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": "!!! s3cret-value"},
        },
    ],
)
def test_unusable_secrets_give_an_empty_keyring_and_a_log_line_without_content(
    broken: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        keyring = secret_keyring(broken)
    assert len(keyring) == 0
    assert "team-a/regcred" in caplog.text
    assert "s3cret-value" not in caplog.text
