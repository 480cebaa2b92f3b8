"""One registry's trouble stays its own: every response is closed, connections are counted per registry
origin, and work abandoned at the deadline gives its connections back.

Hostile registries (tests/harness/hostile.py) stall or leak; the healthy registry beside them is the
Debian docker-registry, whose schema 1 image must be denied whatever the hostile ones do.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import hostile
from tests.harness.hostile import HostileServer
from tests.harness.registry import Registry
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.findings import ImageResult
from webhook.policy import Policy, RegistryOptions
from webhook.registry import RegistryClient
from webhook.registry.transport import RegistryTransport, ssl_context
from webhook.resolve import Checker
from webhook.runtimes import parse_target

TARGET = parse_target("containerd://2.1.0", "linux/amd64")  # where schema 1 is a deny


@pytest.fixture
def server() -> Iterator[HostileServer]:
    hostile_server = HostileServer()
    yield hostile_server
    hostile_server.close()


@pytest.fixture(scope="module")
def schema1_image(registry: Registry) -> str:
    registry.push_schema1("isolation/schema1", "v1", "isolation")
    return registry.ref("isolation/schema1", "v1")


def _checker(*hosts: str) -> Checker:
    options = [RegistryOptions(host=h, insecure=True, allow_private_network=True) for h in hosts]
    return Checker(RegistryClient(options, network_guard=True))


def _check(checker: Checker, images: list[str], seconds: float = 2.0) -> list[ImageResult]:
    return checker.check(
        images, [TARGET], Policy(on_resolution_error="warn"), Keyring.empty(), Deadline(seconds)
    )


def _codes(result: ImageResult) -> set[str]:
    return {f.code for f in result.findings}


def _settled(read: Any, limit: int, seconds: float = 10.0) -> int:
    """`read()` once it is at most `limit`, or its value after `seconds`."""
    end = time.monotonic() + seconds
    value = read()
    while value > limit and time.monotonic() < end:
        time.sleep(0.05)
        value = read()
    return int(value)


def _steady(read: Any, at_least: int, seconds: float = 10.0) -> int:
    """`read()` once it reached `at_least` and then stopped rising for half a second."""
    end = time.monotonic() + seconds
    value = read()
    while time.monotonic() < end:
        time.sleep(0.5)
        again = read()
        if again >= at_least and again == value:
            break
        value = again
    return int(value)


def _transports(checker: Checker) -> list[RegistryTransport]:
    client = checker.registry
    assert isinstance(client, RegistryClient)
    return [t for t in client._exchanger._transports.values() if isinstance(t, RegistryTransport)]


def _slots_in_use(checker: Checker) -> int:
    return sum(t.slots.in_use() for t in _transports(checker))


def _good_image(server: HostileServer) -> None:
    layer = hostile.digest_of(b"layer")
    rootfs = {"type": "layers", "diff_ids": [hostile.digest_of(b"layer tar")]}
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": rootfs}).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": hostile.OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": hostile.digest_of(config),
            "size": len(config),
        },
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 1}],
    }
    server.route("/v2/good/app/manifests/", hostile.document(json.dumps(manifest).encode()))
    server.route(f"/v2/good/app/blobs/{hostile.digest_of(config)}", hostile.document(config, None))
    server.route(f"/v2/good/app/blobs/{layer}", hostile.document(b"x", None))


@pytest.mark.registry
def test_challenges_whose_token_fetch_fails_are_closed(
    server: HostileServer, registry: Registry, schema1_image: str
) -> None:
    hostile.realm_rotating(server)
    _good_image(server)
    checker = _checker(server.host, registry.host)
    try:
        for n in range(110):  # more than a connection pool of 100 would hold
            [result] = _check(checker, [f"{server.host}/rotating/app:t{n}"])
            assert result.findings  # refused or unreachable, under onResolutionError
        # Every challenge was closed: none of those connections is still open or counted.
        assert _settled(lambda: server.open_connections, 2) <= 2
        assert _slots_in_use(checker) == 0
        # The same registry and another one still answer.
        good, schema1 = _check(checker, [f"{server.host}/good/app:v1", schema1_image])
    finally:
        checker.close()
    assert _codes(good) == set(), good.findings
    assert "SCHEMA1" in _codes(schema1) and schema1.verdict == "deny"


@pytest.mark.registry
def test_a_stalling_registry_changes_no_verdict_on_another_registry(
    server: HostileServer, registry: Registry, schema1_image: str
) -> None:
    # Eight images whose config and 40 layers never answer: more requests than any one pool holds.
    for n in range(8):
        server.route(f"/v2/stall/app{n}/manifests/", hostile.document(hostile.wide_manifest(40)))
        server.route(f"/v2/stall/app{n}/blobs/", hostile.headers_late(30))
    _good_image(server)
    checker = _checker(server.host, registry.host)
    stalled: list[ImageResult] = []
    stalling = threading.Thread(
        target=lambda: stalled.extend(
            _check(checker, [f"{server.host}/stall/app{n}:v1" for n in range(8)], 4.0)
        )
    )
    try:
        stalling.start()
        busy = _steady(lambda: server.open_connections, at_least=32)
        [schema1] = _check(checker, [schema1_image])
        assert busy >= 32
        assert "SCHEMA1" in _codes(schema1) and schema1.verdict == "deny", schema1.findings
        stalling.join()
        # The stalled work ended at its deadline and gave back every connection it held, so the
        # stalling registry itself answers its healthy repository afterwards.
        assert _settled(lambda: _slots_in_use(checker), 0) == 0
        assert _settled(lambda: server.open_connections, 2) <= 2
        [good] = _check(checker, [f"{server.host}/good/app:v1"])
    finally:
        server.closing.set()
        checker.close()
    assert all(_codes(r) == {"REGISTRY_UNREACHABLE"} for r in stalled)
    assert _codes(good) == set(), good.findings


@pytest.mark.served
def test_a_response_never_closed_gives_its_slot_back_after_any_deadline(server: HostileServer) -> None:
    server.route("/v2/", hostile.document(b"{}", "application/json"))
    transport = RegistryTransport(ssl_context(None), guard=False, connections_per_origin=1, stale_after=0.5)
    with httpx.Client(transport=transport, timeout=10) as client:
        leaked = client.send(client.build_request("GET", f"{server.url}/v2/leak"), stream=True)
        assert transport.slots.in_use() == 1
        # The only slot of this origin is held by a response nobody closes: the next request waits
        # until the slot is older than any deadline, then takes it back (and closes the stream).
        answer = client.get(f"{server.url}/v2/next")
        assert answer.status_code == 200
        assert leaked.is_stream_consumed is False
    assert transport.slots.in_use() == 0


@pytest.mark.served
def test_connections_are_counted_per_origin(server: HostileServer) -> None:
    server.route("/v2/slow/", hostile.headers_late(30))
    server.route("/v2/fast/", hostile.document(b"{}", "application/json"))
    other = HostileServer()
    other.route("/v2/", hostile.document(b"{}", "application/json"))
    transport = RegistryTransport(ssl_context(None), guard=False, connections_per_origin=2)
    try:
        with httpx.Client(transport=transport, timeout=httpx.Timeout(10, pool=0.3)) as client:
            stalls = [
                threading.Thread(target=lambda: _ignore_errors(client.get, f"{server.url}/v2/slow/x"))
                for _ in range(2)
            ]
            for stall in stalls:
                stall.start()
            _steady(lambda: server.open_connections, at_least=2)
            # This origin's two slots are taken: a third request waits and gives up; another origin
            # is not affected.
            with pytest.raises(httpx.PoolTimeout):
                client.get(f"{server.url}/v2/fast/x")
            assert client.get(f"{other.url}/v2/x").status_code == 200
            server.closing.set()
            for stall in stalls:
                stall.join()
    finally:
        other.close()
    assert transport.slots.in_use() == 0


def _ignore_errors(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except httpx.HTTPError:
        pass


@pytest.mark.served
def test_an_admission_is_answered_by_its_deadline_whatever_its_size(server: HostileServer) -> None:
    # Sixteen images of 2,000 layers each, every layer HEAD stalling: the answer comes once, at the
    # deadline plus one margin, not a grace per image one after another (that was 16 x 0.5 s more).
    for n in range(16):
        server.route(f"/v2/wide/app{n}/manifests/", hostile.document(hostile.wide_manifest(2000)))
        server.route(f"/v2/wide/app{n}/blobs/", hostile.headers_late(30))
    checker = _checker(server.host)
    started = time.monotonic()
    try:
        results = _check(checker, [f"{server.host}/wide/app{n}:v1" for n in range(16)], 1.0)
        answered = time.monotonic() - started
    finally:
        server.closing.set()
        checker.close()
    assert all(_codes(r) == {"REGISTRY_UNREACHABLE"} for r in results)
    assert answered < 1.0 + 2.0  # a generous bound: the old per-image grace needed 9 s
