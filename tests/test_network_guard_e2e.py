"""The network guard in `pullcheck serve`: no connection to loopback, private, link-local or metadata
addresses on a Pod author's say-so, however the address is written, unless the policy allows it.

The webhook runs under the LOUD_NETWORK bootstrap: a connect() off the loopback fails and leaves a
line in its output (so a guard that let one through is seen, and no packet leaves), and a few names
resolve from a fake DNS table. Loopback spellings point at a listening sink that counts connections.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import hostile
from tests.harness.hostile import LoudServe
from tests.harness.serving import write_policy
from tests.harness.sinks import accepted, loopback_sink

DEADLINE = 1.5
DNS = {
    "loopback.rebind.test": "127.0.0.1",
    "metadata.rebind.test": "169.254.169.254",
    "private.rebind.test": "10.1.2.3",
    "aws6.rebind.test": "fd00:ec2::254",
}


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    """A listener on 127.0.0.1 that the guarded client must never connect to."""
    with loopback_sink("127.0.0.1") as listener:
        yield listener


def _loopback_spellings(port: int) -> list[str]:
    return [
        f"127.0.0.1:{port}",
        f"127.1:{port}",
        f"2130706433:{port}",  # decimal
        f"0x7f000001:{port}",  # hex
        f"0x7f.1:{port}",
        f"0177.0.0.1:{port}",  # octal
        f"[::ffff:7f00:1]:{port}",  # IPv4-mapped IPv6
        f"[::1]:{port}",
        f"localhost:{port}",  # a name that resolves to loopback when the webhook connects
        f"loopback.rebind.test:{port}",
    ]


ELSEWHERE = [
    "169.254.169.254",
    "0xa9fea9fe:80",  # the metadata address in hex
    "2852039166:80",  # ... and in decimal
    "[::ffff:a9fe:a9fe]",  # ... IPv4-mapped
    "[fd00:ec2::254]",  # AWS metadata over IPv6
    "metadata.google.internal",
    "10.0.0.1:5000",
    "172.16.5.4",
    "192.168.1.1:5000",
    "100.64.0.1",
    "[fe80::1]:5000",
    "[fd12:3456::1]:5000",
    "metadata.rebind.test",
    "private.rebind.test:5000",
    "aws6.rebind.test",
]


def _serve(tmp_path: Path, registries: list[dict[str, object]]) -> LoudServe:
    policy = write_policy(
        tmp_path / "policy.yaml",
        registries,
        mode="enforce",
        onResolutionError="deny",
        resolutionTimeoutSeconds=DEADLINE,
    )
    return LoudServe(tmp_path, policy, dns=DNS).wait_ready()


def _findings(webhook: LoudServe, images: list[str]) -> dict[str, list[str]]:
    """image -> its finding codes, from the audit annotations of one admission per image."""
    codes = {}
    with webhook.client(DEADLINE + 3) as client:
        for image in images:
            answer = client.post("/validate", json=hostile.review(image))
            assert answer.status_code == 200, answer.text
            [judged] = json.loads(answer.json()["response"]["auditAnnotations"]["images"])
            codes[image] = list(judged["findings"])
    return codes


@pytest.mark.served
def test_every_spelling_of_a_guarded_address_is_blocked_without_a_connection(
    tmp_path: Path, sink: socket.socket
) -> None:
    images = [f"{host}/team/app:v1" for host in _loopback_spellings(sink.getsockname()[1]) + ELSEWHERE]
    webhook = _serve(tmp_path, [])
    try:
        findings = _findings(webhook, images)
        assert webhook.refused_connects() == []
    finally:
        webhook.stop()
    assert findings == {image: ["BLOCKED_REGISTRY"] for image in images}
    assert accepted(sink) == 0


@pytest.mark.served
def test_a_registry_the_policy_allows_is_reached_and_no_other(tmp_path: Path, sink: socket.socket) -> None:
    allowed = f"127.0.0.1:{sink.getsockname()[1]}"
    registries: list[dict[str, object]] = [
        {"host": allowed, "insecure": True, "allowPrivateNetwork": True},
        {"host": "10.0.0.1:5000", "allowPrivateNetwork": True},
    ]
    webhook = _serve(tmp_path, registries)
    try:
        findings = _findings(
            webhook, [f"{allowed}/team/app:v1", "10.0.0.1:5000/team/app:v1", "10.0.0.2:5000/a:v1"]
        )
        refused = webhook.refused_connects()
    finally:
        webhook.stop()
    # The sink accepts and never answers; 10.0.0.1 is tried (and stopped here, off the loopback).
    assert findings == {
        f"{allowed}/team/app:v1": ["REGISTRY_UNREACHABLE"],
        "10.0.0.1:5000/team/app:v1": ["REGISTRY_UNREACHABLE"],
        "10.0.0.2:5000/a:v1": ["BLOCKED_REGISTRY"],
    }
    assert accepted(sink) == 1
    assert refused == ["LOUD-NETWORK: refused connect to 10.0.0.1"]
