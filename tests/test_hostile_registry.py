"""A hostile registry against the resolver, then against `pullcheck serve` as it ships.

Every misbehaviour ends in a finding before the deadline, with bounded memory and nothing left
running: the resolver's own threads are joined and the worker's threads, sockets and memory are
counted from /proc before and after.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.harness import hostile
from tests.harness.hostile import HostileServer, LoudServe, small_manifest
from tests.harness.pki import CertificateAuthority
from tests.harness.serving import write_policy
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.findings import ImageResult
from webhook.policy import Policy, RegistryOptions
from webhook.profiles import CONTAINERD_MANIFEST_CAP
from webhook.registry import RegistryClient
from webhook.resolve import Checker
from webhook.runtimes import default_targets

DEADLINE = 1.0
MIB = 1024 * 1024


@pytest.fixture
def server() -> Iterator[HostileServer]:
    hostile_server = HostileServer()
    yield hostile_server
    hostile_server.close()


def _checker(server: HostileServer, *, negative_ttl: float = 10.0) -> Checker:
    options = RegistryOptions(host=server.host, insecure=True, allow_private_network=True)
    return Checker(RegistryClient([options], network_guard=True), negative_ttl=negative_ttl)


def _resolver_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pullcheck-")]


def _check(server: HostileServer, *images: str, deadline: float = DEADLINE) -> list[ImageResult]:
    """Judge `images` (repositories on `server`) once, on a checker closed afterwards; answers in time."""
    checker = _checker(server)
    started = time.monotonic()
    try:
        results = checker.check(
            [f"{server.host}/{image}" for image in images],
            default_targets(),
            Policy(),
            Keyring.empty(),
            Deadline(deadline),
        )
    finally:
        checker.close()
    # The answer comes by the deadline plus the resolver's half-second margin; the rest is room for a
    # loaded machine. A stall the deadline did not cut would last 30 s or more (the hostile behaviours).
    assert time.monotonic() - started < deadline + 3.0
    return results


def _codes(result: ImageResult) -> set[str]:
    return {f.code for f in result.findings}


@pytest.fixture(autouse=True)
def no_threads_left() -> Iterator[None]:
    """Whatever the registry did, the resolver's threads all end once its checker is closed."""
    before = {t.ident for t in _resolver_threads()}
    yield
    for thread in _resolver_threads():
        if thread.ident not in before:
            thread.join(timeout=DEADLINE + 5)
            assert not thread.is_alive(), f"{thread.name} still running"


# ---- slow registries -----------------------------------------------------------------------------


@pytest.mark.served
@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(hostile.headers_late(30), id="headers-late"),
        pytest.param(hostile.drip(small_manifest(), interval=1.0), id="one-byte-a-second"),
        pytest.param(hostile.endless(), id="never-ending-body"),
        pytest.param(hostile.status(500), id="500-forever"),
        pytest.param(hostile.document(small_manifest(), length=len(small_manifest()) + 100), id="short-body"),
    ],
)
def test_a_slow_or_broken_registry_is_unreachable_by_the_deadline(
    server: HostileServer, behaviour: hostile.Behaviour
) -> None:
    server.route("/v2/bad/", behaviour)
    [result] = _check(server, "bad/app:v1")
    assert _codes(result) == {"REGISTRY_UNREACHABLE"}
    assert result.verdict == "warn"  # onResolutionError's default
    server.closing.set()  # the server's own stalls end too
    assert server.open_connections <= 1  # the client hung up on the stalled exchange


@pytest.mark.served
def test_bytes_that_are_not_http_stay_out_of_the_messages(server: HostileServer) -> None:
    def garbage(handler: hostile.Handler) -> None:
        handler.wfile.write(b"EVIL-PAYLOAD \x1b[31m not a status line\r\n\r\n")
        handler.close_connection = True

    server.route("/v2/garbage/", garbage)
    [result] = _check(server, "garbage/app:v1")
    assert _codes(result) == {"REGISTRY_UNREACHABLE"}
    assert all("EVIL" not in f.message and "valid HTTP" in f.message for f in result.findings)


@pytest.mark.served
def test_a_manifest_one_byte_a_chunk_is_refused_not_framed_to_the_end(server: HostileServer) -> None:
    server.route("/v2/tiny/", hostile.tiny_chunks(small_manifest() + b" " * 20_000))
    [result] = _check(server, "tiny/app:v1")
    assert _codes(result) == {"REGISTRY_UNREACHABLE"}
    assert all("valid HTTP" in f.message for f in result.findings)


@pytest.mark.served
def test_a_registry_answering_with_ever_more_layers_is_stopped_by_the_request_count(
    server: HostileServer,
) -> None:
    """2,000 layers, each HEAD answered at once: without a count the deadline alone would bound it."""
    server.route("/v2/many/app/manifests/", hostile.document(hostile.wide_manifest(2_000)))
    server.route("/v2/many/app/blobs/", hostile.document(b"x", content_type=None))
    checker = _checker(server)
    try:
        [result] = checker.check(
            [f"{server.host}/many/app:v1"],
            default_targets(),
            Policy(),
            Keyring.empty(),
            Deadline(DEADLINE, requests=100),
        )
    finally:
        checker.close()
    assert len(server.requests("/v2/many/")) == 100
    assert any("registryRequestsPerAdmission" in f.message for f in result.findings)


@pytest.mark.served
def test_a_content_length_shorter_than_the_body_spoils_no_other_answer(server: HostileServer) -> None:
    body = small_manifest()
    server.route("/v2/short/", hostile.document(body, length=len(body) - 10))
    server.route("/v2/good/", hostile.document(small_manifest("good")))
    server.route("/v2/good/app/blobs/", hostile.document(b"{}", None))
    checker = _checker(server)
    images = [f"{server.host}/short/app:v1", f"{server.host}/good/app:v1", f"{server.host}/good/app:v2"]
    try:
        short, next_on_that_connection, after = (
            checker.check([image], default_targets(), Policy(), Keyring.empty(), Deadline(DEADLINE))[0]
            for image in images
        )
    finally:
        checker.close()
    # The announced bytes are the body, which misses its digest. The ten left over spoil the next
    # answer on that keep-alive connection; the client drops it and asks again on a new one.
    assert _codes(short) == {"DIGEST_MISMATCH"}
    assert _codes(next_on_that_connection) == _codes(after)
    assert "REGISTRY_UNREACHABLE" not in _codes(after)


# ---- big bodies ------------------------------------------------------------------------------------


def _peak_while(action: Any) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.served
@pytest.mark.parametrize("announce_length", [False, True], ids=["no-length", "content-length"])
def test_a_100_mb_manifest_stops_at_the_cap(server: HostileServer, announce_length: bool) -> None:
    server.route("/v2/giant/", hostile.giant(100 * MIB, announce_length=announce_length))
    results: list[ImageResult] = []
    peak = _peak_while(lambda: results.extend(_check(server, "giant/app:v1", deadline=10)))
    assert _codes(results[0]) == {"MANIFEST_TOO_LARGE"}
    # The body is held once and joined once: never more than twice the cap, whatever was offered.
    assert peak < 2 * CONTAINERD_MANIFEST_CAP + 2 * MIB
    server.closing.set()
    assert sum(server.sent.values()) < 100 * MIB / 4  # the client hung up; the kernel's buffers aside


@pytest.mark.served
def test_a_gzip_bomb_is_never_inflated(server: HostileServer) -> None:
    compressed, serve_bomb = hostile.gzip_bomb(200 * MIB)
    server.route("/v2/bomb/", serve_bomb)
    results: list[ImageResult] = []
    peak = _peak_while(lambda: results.extend(_check(server, "bomb/app:v1", deadline=5)))
    # The digest announced is that of the inflated manifest: only a client that inflated would match it.
    assert _codes(results[0]) == {"DIGEST_MISMATCH"}
    assert peak < 4 * len(compressed) + 2 * MIB
    assert {r.headers.get("accept-encoding") for r in server.requests("/v2/bomb/")} == {"identity"}


@pytest.mark.served
def test_json_nested_100000_deep_is_judged_not_crashed(server: HostileServer) -> None:
    server.route("/v2/deep/", hostile.document(hostile.deep_json(100_000)))
    [result] = _check(server, "deep/app:v1", deadline=5)
    assert _codes(result) == {"MEDIA_TYPE_MISMATCH"} and result.verdict == "deny"


# ---- lying headers and integrity ----------------------------------------------------------------


@pytest.mark.served
def test_a_body_that_misses_the_announced_digest_is_never_trusted(server: HostileServer) -> None:
    announced = hostile.digest_of(b"something else")
    server.route("/v2/liar/", hostile.document(small_manifest(), digest=announced))
    [result] = _check(server, "liar/app:v1")
    assert _codes(result) == {"DIGEST_MISMATCH"} and result.verdict == "deny"
    assert result.digest is None


@pytest.mark.served
def test_a_body_that_misses_the_pinned_digest_is_never_trusted(server: HostileServer) -> None:
    pinned = hostile.digest_of(b"the image I meant")
    server.route("/v2/swap/", hostile.document(small_manifest(), digest=pinned))
    [result] = _check(server, f"swap/app@{pinned}")
    assert _codes(result) == {"DIGEST_MISMATCH"} and result.digest is None


@pytest.mark.served
def test_content_type_that_lies_about_the_body(server: HostileServer) -> None:
    index = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    server.route("/v2/typed/", hostile.document(index, content_type=hostile.OCI_MANIFEST))
    [result] = _check(server, "typed/app:v1")
    assert "MEDIA_TYPE_MISMATCH" in _codes(result)


MALFORMED = ["sha256:../../../v2/evil/blobs/x", "sha256:" + "A" * 64, "md5:abc", "sha256:0\r\nX-Injected: 1"]


@pytest.mark.served
@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_digests_never_reach_a_url_or_a_log(
    server: HostileServer, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    child = {
        "mediaType": hostile.OCI_MANIFEST,
        "digest": bad,
        "size": 10,
        "platform": {"os": "linux", "architecture": "amd64"},
    }
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [child]}
    )
    # The index announces the malformed digest too (ignored), and names it as its child.
    server.route(
        "/v2/odd/", hostile.document(index.encode(), "application/vnd.oci.image.index.v1+json", digest=bad)
    )
    caplog.set_level(logging.DEBUG)
    [result] = _check(server, "odd/app:v1")
    paths = [seen.path for seen in server.requests()]
    assert paths and all(p.startswith("/v2/odd/app/manifests/sha256:") or p.endswith("/v1") for p in paths)
    assert not any(bad in p or "evil" in p or "\r" in p for p in paths)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(("webhook", "pullcheck"))]
    messages = [f.message for f in result.findings] + ours
    assert messages and not any(c in m for m in messages for c in "\r\n\x00")
    assert result.verdict == "deny"


# ---- redirects --------------------------------------------------------------------------------------


@pytest.mark.served
def test_a_redirect_loop_ends_after_five(server: HostileServer) -> None:
    server.route("/v2/loop/", hostile.redirect("/v2/loop/app/manifests/v1"))
    [result] = _check(server, "loop/app:v1")
    assert _codes(result) == {"REGISTRY_UNREACHABLE"}
    assert "redirects" in result.findings[0].message
    assert len(server.requests("/v2/loop/")) == 6  # the request and five redirects


@pytest.mark.served
def test_a_redirect_from_https_to_http_is_not_followed(test_ca: CertificateAuthority) -> None:
    plain, secure = HostileServer(), HostileServer(test_ca.server_pair("hostile"))
    try:
        plain.route("/", hostile.document(small_manifest()))
        secure.route("/v2/", hostile.redirect(f"{plain.url}/v2/app/manifests/v1"))
        options = RegistryOptions(
            host=secure.host, ca_file=str(test_ca.ca_file), allow_private_network=True, insecure=False
        )
        checker = Checker(RegistryClient([options], network_guard=True))
        try:
            [result] = checker.check(
                [f"{secure.host}/app:v1"], default_targets(), Policy(), Keyring.empty(), Deadline(DEADLINE)
            )
        finally:
            checker.close()
        assert _codes(result) == {"REGISTRY_UNREACHABLE"} and "plain http" in result.findings[0].message
        assert plain.requests() == []
    finally:
        plain.close()
        secure.close()


@pytest.mark.served
def test_a_redirect_to_another_host_meets_the_network_guard(server: HostileServer) -> None:
    other = HostileServer().route("/", hostile.document(small_manifest()))
    try:
        server.route("/v2/away/", hostile.redirect(f"https://localhost:{other.server_address[1]}/v2/x"))
        [result] = _check(server, "away/app:v1")
        assert _codes(result) == {"BLOCKED_REGISTRY"}
        assert other.requests() == []
    finally:
        other.close()


# ---- rate limits ------------------------------------------------------------------------------------


@pytest.mark.served
def test_429_is_retried_once_inside_the_deadline(server: HostileServer) -> None:
    server.route("/v2/busy/", hostile.status(429, [("Retry-After", "0")]))
    [result] = _check(server, "busy/app:v1")
    assert _codes(result) == {"RATE_LIMITED"}
    assert len(server.requests("/v2/busy/")) == 2


@pytest.mark.served
def test_429_whose_retry_after_passes_the_deadline_is_not_retried(server: HostileServer) -> None:
    server.route("/v2/busy/", hostile.status(429, [("Retry-After", "30")]))
    [result] = _check(server, "busy/app:v1")
    assert _codes(result) == {"RATE_LIMITED"}
    assert len(server.requests("/v2/busy/")) == 1


@pytest.mark.served
def test_a_burst_of_the_same_rate_limited_image_costs_one_lookup(server: HostileServer) -> None:
    server.route("/v2/busy/", hostile.status(429, [("Retry-After", "30")]))
    checker = _checker(server)
    image = f"{server.host}/busy/app:v1"

    def admit(_: int) -> set[str]:
        [result] = checker.check([image], default_targets(), Policy(), Keyring.empty(), Deadline(DEADLINE))
        return _codes(result)

    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(pool.map(admit, range(30)))
    finally:
        checker.close()
    assert all(codes == {"RATE_LIMITED"} for codes in answers)
    assert len(server.requests("/v2/busy/")) == 1


# ---- the webhook as it ships --------------------------------------------------------------------------

# Long enough for the quick hostile answers (a 429, a body over the cap, a bomb) on a loaded machine
# whose other tests compete for both cores, far shorter than every stall (30 s, a byte a second, forever).
SERVE_DEADLINE = 4.0
WEBHOOK_TIMEOUT = SERVE_DEADLINE + 2.0  # what the apiserver's timeoutSeconds would be


def _hostile_routes(server: HostileServer) -> dict[str, str]:
    """repository -> the finding code its image must get."""
    _, bomb = hostile.gzip_bomb(50 * MIB)
    routes = {
        "late": (hostile.headers_late(30), "REGISTRY_UNREACHABLE"),
        "drip": (hostile.drip(small_manifest()), "REGISTRY_UNREACHABLE"),
        "endless": (hostile.endless(), "REGISTRY_UNREACHABLE"),
        "error": (hostile.status(500), "REGISTRY_UNREACHABLE"),
        "giant": (hostile.giant(100 * MIB), "MANIFEST_TOO_LARGE"),
        "bomb": (bomb, "DIGEST_MISMATCH"),
        "deep": (hostile.document(hostile.deep_json()), "MEDIA_TYPE_MISMATCH"),
        "busy": (hostile.status(429, [("Retry-After", "0")]), "RATE_LIMITED"),
    }
    for name, (behaviour, _) in routes.items():
        server.route(f"/v2/{name}/", behaviour)
    # An image whose config and twenty layers never answer: every pool the resolver has is filled.
    server.route("/v2/wide/", hostile.document(_wide_manifest(20)))
    server.route("/v2/wide/app/blobs/", hostile.headers_late(30))
    return {name: code for name, (_, code) in routes.items()} | {"wide": "REGISTRY_UNREACHABLE"}


def _wide_manifest(layers: int) -> bytes:
    def blob(n: int) -> dict[str, Any]:
        return {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": hostile.digest_of(b"%d" % n),
            "size": 1,
        }

    config = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": hostile.digest_of(b"config"),
        "size": 2,
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": hostile.OCI_MANIFEST,
        "config": config,
        "layers": [blob(n) for n in range(layers)],
    }
    return json.dumps(manifest).encode()


def _round(webhook: LoudServe, server: HostileServer, expected: dict[str, str], round_number: int) -> None:
    """One admission with twenty tags of each slow image (more than one admission may use threads), one
    per hostile image and one with all of them, four at a time; each answered in time, with the right
    finding: the wide admission holds threads of its own, none the others need."""
    images = [f"{server.host}/{name}/app:r{round_number}" for name in expected]
    slow = [name for name, code in expected.items() if code == "REGISTRY_UNREACHABLE"]
    many = [f"{server.host}/{name}/app:r{round_number}-{n}" for name in slow for n in range(20)]
    # The wide admission and the one with every hostile image start together.
    bodies = [hostile.review(*many), hostile.review(*images)] + [hostile.review(image) for image in images]
    with webhook.client(WEBHOOK_TIMEOUT) as client, ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda body: client.post("/validate", json=body), bodies))
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.status_code == 200, answer.text
        response = answer.json()["response"]
        assert response["allowed"] is False  # enforce, and onResolutionError: deny
        containers = body["request"]["object"]["spec"]["containers"]
        assert response["status"]["message"].startswith(f"pullcheck denied {len(containers)} image")
        for judged in json.loads(response["auditAnnotations"]["images"]):  # the first 20 images
            name = judged["image"].split("/")[1]
            assert list(judged["findings"]) == [expected[name]], response["status"]["message"]


def _settled(read: Any, limit: int, seconds: float = 15.0) -> int:
    """`read()` once it is at most `limit` (connections closing take a moment to be noticed)."""
    deadline = time.monotonic() + seconds
    value = read()
    while value > limit and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return int(value)


def _steady(read: Any, seconds: float = 15.0) -> int:
    """`read()` once it has stopped falling for a second (threads of timed-out admissions ending)."""
    deadline = time.monotonic() + seconds
    value = read()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        again = read()
        if again >= value:
            return int(value)
        value = again
    return int(value)


@pytest.mark.served
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads the worker's threads from /proc")
def test_the_webhook_answers_every_hostile_image_in_time_and_comes_back_to_baseline(tmp_path: Path) -> None:
    server = HostileServer()
    expected = _hostile_routes(server)
    policy = write_policy(
        tmp_path / "policy.yaml",
        [{"host": server.host, "insecure": True, "allowPrivateNetwork": True}],
        mode="enforce",
        onResolutionError="deny",
        resolutionTimeoutSeconds=SERVE_DEADLINE,
        # Every hostile image is on this one origin: with the default 32 connections the stalled ones
        # hold them all and a quick image (the 429) waits for one until the deadline. That limit has
        # tests of its own (test_registry_isolation.py); here every image must reach its registry.
        connectionsPerRegistry=1024,
    )
    webhook = LoudServe(tmp_path, policy, "--threads", "4")
    try:
        webhook.wait_ready()
        _round(webhook, server, expected, 0)  # the pools grow to their size once
        threads = _steady(webhook.threads)
        sockets, memory = webhook.sockets(), webhook.memory_kib()
        for round_number in (1, 2):
            _round(webhook, server, expected, round_number)
        # Threads of a timed-out admission end by themselves soon after its deadline: none may stay.
        assert _settled(webhook.threads, threads) <= threads
        assert _settled(webhook.sockets, sockets) <= sockets
        # Four more 100 MB manifests and 50 MB bombs came and went; the worker kept a few MiB at most.
        assert webhook.memory_kib() - memory < 32 * 1024
        assert webhook.process.poll() is None
        assert webhook.refused_connects() == []
        assert "Traceback" not in webhook.output()
    finally:
        webhook.stop()
        server.close()
