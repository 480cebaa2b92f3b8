"""The registry client: what it asks, what it verifies, how it fails, and the network guard.

Edge cases no real registry produces run on httpx.MockTransport; the rest runs against Debian's
docker-registry on 127.0.0.1 (plain, TLS, htpasswd and token flavours from tests/conftest.py).
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.harness.images import make_layer
from tests.harness.registry import Registry
from tests.harness.sinks import accepted, loopback_sink
from webhook import mediatypes as mt
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.digests import digest_of
from webhook.errors import (
    BlockedRegistry,
    DeadlineExceeded,
    DigestMismatch,
    ManifestTooLarge,
    NotFound,
    RateLimited,
    RegistryUnreachable,
    Unauthorized,
)
from webhook.policy import MirrorOptions, RegistryOptions
from webhook.profiles import CONFIG_READ_CAP
from webhook.reference import ImageReference, parse
from webhook.registry import ManifestHead, RegistryClient, RequestEvent

REF = parse("registry.example.com/team/app:v1")
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": digest_of(b"{}"), "size": 2},
        "layers": [],
    }
).encode()
MANIFEST_DIGEST = digest_of(MANIFEST)
CRIO_CAP = 4_194_304


Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler, **options: Any) -> RegistryClient:
    return RegistryClient(transport=httpx.MockTransport(handler), **options)


def _serving(
    body: bytes = MANIFEST, content_type: str = mt.OCI_MANIFEST, **headers: str
) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            content=body,
            headers={"Content-Type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}},
        )

    return handler, seen


class _Stream(httpx.SyncByteStream):
    """A body that arrives in pieces, optionally slowly; records whether anyone read it."""

    def __init__(self, pieces: Iterator[bytes], pause: float = 0.0) -> None:
        self.pieces, self.pause, self.read = pieces, pause, False

    def __iter__(self) -> Iterator[bytes]:
        self.read = True
        for piece in self.pieces:
            if self.pause:
                time.sleep(self.pause)
            yield piece


def _deadline(seconds: float = 10) -> Deadline:
    return Deadline(seconds)


# ---- how it asks --------------------------------------------------------------------------------


def test_head_first_with_the_full_accept_list() -> None:
    handler, seen = _serving(docker_content_digest=MANIFEST_DIGEST)
    head = _client(handler).head_manifest(REF, "v1", Keyring.empty(), _deadline())
    assert head == ManifestHead(MANIFEST_DIGEST, mt.OCI_MANIFEST, len(MANIFEST))
    (request,) = seen
    assert request.method == "HEAD"
    assert str(request.url) == "https://registry.example.com/v2/team/app/manifests/v1"
    assert request.headers["accept"] == ", ".join(mt.MANIFEST_ACCEPT)
    assert "authorization" not in request.headers


def test_get_sends_the_same_accept_list() -> None:
    handler, seen = _serving()
    _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline())
    assert [r.method for r in seen] == ["GET"]
    assert seen[0].headers["accept"] == ", ".join(mt.MANIFEST_ACCEPT)


def test_insecure_registry_is_spoken_to_over_http() -> None:
    handler, seen = _serving()
    ref = parse("127.0.0.1:5000/team/app:v1")
    _client(handler, registries=[RegistryOptions(host="127.0.0.1:5000", insecure=True)]).get_manifest(
        ref, "v1", Keyring.empty(), _deadline()
    )
    assert seen[0].url.scheme == "http"


def test_docker_hub_is_contacted_as_registry_1() -> None:
    handler, seen = _serving()
    _client(handler).get_manifest(parse("nginx"), "latest", Keyring.empty(), _deadline())
    assert str(seen[0].url) == "https://registry-1.docker.io/v2/library/nginx/manifests/latest"


def test_request_events_name_the_policy_registries_and_no_other() -> None:
    handler, _ = _serving(ratelimit_remaining="99;w=21600")
    events: list[RequestEvent] = []
    listed = [RegistryOptions(host="registry.example.com", mirrors=(MirrorOptions("mirror.example.com"),))]
    client = _client(handler, registries=listed, on_request=events.append)
    client.head_manifest(REF, "v1", Keyring.empty(), _deadline())
    for chosen in ("elsewhere.example.org", "pod-chosen-1.example.net:5000"):
        client.head_manifest(parse(f"{chosen}/app:v1"), "v1", Keyring.empty(), _deadline())
    assert events == [
        RequestEvent("mirror.example.com", "HEAD", 200, "manifest", "99;w=21600"),
        RequestEvent("other", "HEAD", 200, "manifest", "99;w=21600"),
        RequestEvent("other", "HEAD", 200, "manifest", "99;w=21600"),
    ]


def test_a_failing_request_hook_does_not_break_the_request() -> None:
    def hook(event: RequestEvent) -> None:
        raise RuntimeError("metrics are down")

    handler, _ = _serving()
    assert _client(handler, on_request=hook).get_manifest(REF, "v1", Keyring.empty(), _deadline()).size


# ---- what it verifies ---------------------------------------------------------------------------


def test_content_type_is_kept_as_served() -> None:
    handler, _ = _serving(content_type="Application/JSON; charset=utf-8")
    document = _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline())
    assert document.content_type == "application/json"
    assert document.digest == MANIFEST_DIGEST and document.body["mediaType"] == mt.OCI_MANIFEST


def test_pinned_digest_mismatch() -> None:
    handler, _ = _serving()
    pinned = digest_of(b"something else")
    with pytest.raises(DigestMismatch, match="registry.example.com/team/app"):
        _client(handler).get_manifest(REF, pinned, Keyring.empty(), _deadline())


def test_expected_digest_mismatch_by_tag() -> None:
    handler, _ = _serving(docker_content_digest=MANIFEST_DIGEST)
    with pytest.raises(DigestMismatch):
        _client(handler).get_manifest(
            REF, "v1", Keyring.empty(), _deadline(), expected_digest=digest_of(b"x")
        )


def test_announced_digest_mismatch() -> None:
    handler, _ = _serving(docker_content_digest=digest_of(b"another manifest"))
    with pytest.raises(DigestMismatch):
        _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline())


@pytest.mark.parametrize("announced", ["sha256:XYZ", "md5:abc", "sha256:" + "A" * 64, "sha256:../../etc"])
def test_malformed_docker_content_digest_is_ignored(announced: str) -> None:
    handler, _ = _serving(docker_content_digest=announced)
    client = _client(handler)
    assert client.head_manifest(REF, "v1", Keyring.empty(), _deadline()).digest is None
    assert client.get_manifest(REF, "v1", Keyring.empty(), _deadline()).digest == MANIFEST_DIGEST


@pytest.mark.parametrize(
    "bad", ["sha256:../../v2/_catalog", "sha256:" + "a" * 63, "SHA256:" + "a" * 64, "md5:" + "a" * 32]
)
def test_malformed_digest_arguments_never_reach_a_url(bad: str) -> None:
    handler, seen = _serving()
    client = _client(handler)
    for call in (
        lambda: client.get_manifest(REF, bad, Keyring.empty(), _deadline()),
        lambda: client.get_manifest(REF, "v1", Keyring.empty(), _deadline(), expected_digest=bad),
        lambda: client.get_blob(REF, bad, Keyring.empty(), _deadline()),
        lambda: client.stat_blob(REF, bad, Keyring.empty(), _deadline()),
    ):
        with pytest.raises(DigestMismatch, match="digest"):
            call()
    assert seen == []


def test_sha512_pinned_digest() -> None:
    handler, _ = _serving()
    pinned = digest_of(MANIFEST, "sha512")
    assert _client(handler).get_manifest(REF, pinned, Keyring.empty(), _deadline()).digest == pinned


def _signed_schema1() -> tuple[bytes, bytes]:
    """A signed schema 1 manifest as libtrust lays it out, and its payload."""
    payload = b'{\n   "schemaVersion": 1,\n   "name": "team/app",\n   "tag": "v1",\n   "fsLayers": []\n}'
    cut = payload.rindex(b"\n}")

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    protected = b64(json.dumps({"formatLength": cut, "formatTail": b64(payload[cut:])}).encode())
    signature = json.dumps([{"header": {"alg": "ES256"}, "signature": "c2ln", "protected": protected}])
    return payload[:cut] + b',\n   "signatures": ' + signature.encode() + b"\n}", payload


def test_signed_schema1_is_identified_by_its_payload() -> None:
    body, payload = _signed_schema1()
    handler, _ = _serving(body, mt.DOCKER_SCHEMA1_SIGNED, docker_content_digest=digest_of(payload))
    document = _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline())
    assert document.digest == digest_of(payload) and document.content_type == mt.DOCKER_SCHEMA1_SIGNED
    pinned = _client(handler).get_manifest(REF, digest_of(payload), Keyring.empty(), _deadline())
    assert pinned.size == len(body)


def test_blob_digest_is_verified() -> None:
    handler, _ = _serving(b'{"os": "linux"}', "application/octet-stream")
    client = _client(handler)
    config = client.get_blob(REF, digest_of(b'{"os": "linux"}'), Keyring.empty(), _deadline())
    assert config.body == {"os": "linux"} and config.content_type == "application/octet-stream"
    with pytest.raises(DigestMismatch):
        client.get_blob(REF, digest_of(b"{}"), Keyring.empty(), _deadline())


# ---- caps and deadlines ---------------------------------------------------------------------------


def test_content_length_over_the_cap_is_refused_before_reading() -> None:
    stream = _Stream(iter([b"x"]))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=stream, headers={"Content-Length": str(5_000_000)})

    with pytest.raises(ManifestTooLarge) as raised:
        _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline())
    assert raised.value.size == 5_000_000 and not stream.read


def test_giant_body_without_content_length_stops_at_the_cap() -> None:
    pieces = (b"x" * 65536 for _ in range(10_000))  # 655 MB if read to the end

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Stream(pieces))

    with pytest.raises(ManifestTooLarge, match="4393216-byte limit"):
        _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline())
    assert next(pieces, None) is not None  # the rest was never pulled


def test_manifest_between_the_two_runtime_caps_is_returned() -> None:
    body = json.dumps({"schemaVersion": 2, "layers": [], "padding": "x" * (CRIO_CAP + 100)}).encode()
    handler, _ = _serving(body)
    document = _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline())
    assert CRIO_CAP < document.size <= 4_393_216


def test_config_over_the_blob_cap() -> None:
    handler, _ = _serving(b"x" * (CONFIG_READ_CAP + 1), "application/octet-stream")
    with pytest.raises(ManifestTooLarge):
        _client(handler).get_blob(REF, digest_of(b"x" * (CONFIG_READ_CAP + 1)), Keyring.empty(), _deadline())


def test_config_between_crio_cap_and_the_read_cap_is_returned() -> None:
    # containerd has no config cap: the rules, not the client, refuse it for CRI-O only.
    body = json.dumps({"os": "linux", "architecture": "amd64", "padding": "x" * CRIO_CAP}).encode()
    handler, _ = _serving(body, "application/octet-stream")
    assert _client(handler).get_blob(REF, digest_of(body), Keyring.empty(), _deadline()).size == len(body)


@pytest.mark.parametrize("announced", [len(MANIFEST) - 10, len(MANIFEST) + 10])
def test_content_length_that_lies(announced: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, stream=_Stream(iter([MANIFEST])), headers={"Content-Length": str(announced)}
        )

    with pytest.raises(RegistryUnreachable, match="Content-Length"):
        _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline())


def test_slow_drip_ends_at_the_deadline() -> None:
    pieces = (b"{" for _ in range(600))  # one byte every 0.1 s: a minute if read to the end

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Stream(pieces, pause=0.1))

    with pytest.raises(DeadlineExceeded, match="registry.example.com/team/app"):
        _client(handler).get_manifest(REF, "v1", Keyring.empty(), Deadline(0.5))
    assert len(list(pieces)) > 500  # stopped after a few pieces, not at the end of the body


def test_an_expired_deadline_sends_nothing() -> None:
    handler, seen = _serving()
    deadline = Deadline(0)
    with pytest.raises(DeadlineExceeded):
        _client(handler).head_manifest(REF, "v1", Keyring.empty(), deadline)
    assert seen == []


# ---- how it fails -------------------------------------------------------------------------------


def _statuses(*answers: httpx.Response) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler, seen


def test_not_found() -> None:
    handler, _ = _statuses(httpx.Response(404))
    with pytest.raises(NotFound, match="registry.example.com/team/app: manifest v1 not found"):
        _client(handler).head_manifest(REF, "v1", Keyring.empty(), _deadline())


def test_blob_exists() -> None:
    client = _client(lambda request: httpx.Response(200 if request.url.path.endswith("a" * 64) else 404))
    assert client.stat_blob(REF, "sha256:" + "a" * 64, Keyring.empty(), _deadline()) is not None
    assert client.stat_blob(REF, "sha256:" + "b" * 64, Keyring.empty(), _deadline()) is None


def test_server_error_is_unreachable() -> None:
    handler, _ = _statuses(httpx.Response(500))
    with pytest.raises(RegistryUnreachable, match="answered 500"):
        _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline())


def test_connection_error_is_one_line() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111]\nConnection refused")

    with pytest.raises(RegistryUnreachable) as raised:
        _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline())
    assert "\n" not in str(raised.value) and "registry.example.com" in str(raised.value)


def test_429_is_retried_once_when_retry_after_fits() -> None:
    handler, seen = _statuses(
        httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(200, content=MANIFEST)
    )
    assert _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline()).size == len(MANIFEST)
    assert len(seen) == 2


def test_429_twice_keeps_the_rate_limit_headers() -> None:
    limited = httpx.Response(
        429,
        headers={
            "Retry-After": "0",
            "RateLimit-Limit": "100;w=21600",
            "RateLimit-Remaining": "0;w=21600",
            "Docker-RateLimit-Source": "203.0.113.7",
        },
    )
    handler, seen = _statuses(limited)
    with pytest.raises(RateLimited) as raised:
        _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline())
    assert len(seen) == 2
    assert raised.value.retry_after == 0
    assert raised.value.headers == {
        "retry-after": "0",
        "ratelimit-limit": "100;w=21600",
        "ratelimit-remaining": "0;w=21600",
        "docker-ratelimit-source": "203.0.113.7",
    }


def test_429_is_not_retried_past_the_deadline() -> None:
    handler, seen = _statuses(httpx.Response(429, headers={"Retry-After": "3600"}))
    with pytest.raises(RateLimited, match="retry after 3600s") as raised:
        _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline())
    assert len(seen) == 1 and raised.value.retry_after == 3600


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "1\u00b9"])
def test_retry_after_in_non_ascii_digits_is_no_hint(value: str) -> None:
    handler, seen = _statuses(httpx.Response(429, headers=[(b"Retry-After", value.encode())]))
    with pytest.raises(RateLimited) as raised:
        _client(handler).get_manifest(REF, "v1", Keyring.empty(), _deadline())
    assert len(seen) == 1 and raised.value.retry_after is None


# ---- redirects ------------------------------------------------------------------------------------


def _redirecting(location: str, final: httpx.Response | None = None) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "registry.example.com":
            return httpx.Response(307, headers={"Location": location})
        return final or httpx.Response(200, content=b"{}")

    return handler, seen


def test_cross_origin_redirect_drops_authorization() -> None:
    handler, seen = _redirecting("https://cdn.example.net/blob?sig=abc")
    keyring = Keyring.from_docker_config(
        {"auths": {"registry.example.com": {"username": "u", "password": "p"}}}, "test"
    )

    def with_basic(request: httpx.Request) -> httpx.Response:
        if request.url.host == "registry.example.com" and "authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return handler(request)

    _client(with_basic).get_blob(REF, digest_of(b"{}"), keyring, _deadline())
    assert seen[0].headers["authorization"].startswith("Basic ")
    assert seen[-1].url.host == "cdn.example.net" and "authorization" not in seen[-1].headers


def test_redirect_from_https_to_http_is_refused() -> None:
    handler, seen = _redirecting("http://cdn.example.net/blob")
    with pytest.raises(RegistryUnreachable, match="plain http"):
        _client(handler).get_blob(REF, digest_of(b"{}"), Keyring.empty(), _deadline())
    assert [r.url.host for r in seen] == ["registry.example.com"]


def test_redirect_loop_ends() -> None:
    handler, seen = _redirecting("/v2/team/app/blobs/elsewhere")
    with pytest.raises(RegistryUnreachable, match="more than 5 redirects"):
        _client(handler).get_blob(REF, digest_of(b"{}"), Keyring.empty(), _deadline())
    assert len(seen) == 6


@pytest.mark.parametrize(
    "target", ["https://169.254.169.254/latest/meta-data/", "https://[::ffff:10.0.0.1]/x"]
)
def test_redirect_to_a_guarded_address_is_refused(target: str) -> None:
    handler, seen = _redirecting(target)
    with pytest.raises(BlockedRegistry, match="network guard"):
        _client(handler, network_guard=True).get_blob(REF, digest_of(b"{}"), Keyring.empty(), _deadline())
    assert len(seen) == 1


# ---- mirrors ---------------------------------------------------------------------------------------


def test_mirror_first_then_registry_on_not_found() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        if request.url.host == "mirror.example.com":
            return httpx.Response(404)
        return httpx.Response(200, content=MANIFEST)

    options = RegistryOptions(host="registry.example.com", mirrors=(MirrorOptions("mirror.example.com"),))
    _client(handler, registries=[options]).get_manifest(REF, "v1", Keyring.empty(), _deadline())
    assert seen == ["mirror.example.com", "registry.example.com"]


def test_mirror_gets_only_the_mirrors_credentials() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(200, content=MANIFEST)

    keyring = Keyring.from_docker_config(
        {"auths": {"registry.example.com": {"username": "registry-user", "password": "p"}}}, "test"
    )
    options = RegistryOptions(host="registry.example.com", mirrors=(MirrorOptions("mirror.example.com"),))
    _client(handler, registries=[options]).get_manifest(REF, "v1", keyring, _deadline())
    mirror = [r for r in seen if r.url.host == "mirror.example.com"]
    assert mirror and all("authorization" not in r.headers for r in mirror)
    assert seen[-1].url.host == "registry.example.com" and "authorization" in seen[-1].headers


# ---- the network guard ------------------------------------------------------------------------------


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    """A listener on 127.0.0.2 that the guarded client must never connect to."""
    with loopback_sink("127.0.0.2") as listener:
        yield listener


def _ref_at(host: str) -> ImageReference:
    return ImageReference(registry=host, repository="team/app", tag="v1", digest=None)


@pytest.mark.served
@pytest.mark.parametrize(
    "spelling",
    ["127.0.0.2", "2130706434", "0x7f.0.0.2", "0x7f000002", "0177.0.0.2", "127.2", "[::ffff:127.0.0.2]"],
)
def test_guard_refuses_every_spelling_of_a_loopback_sink(sink: socket.socket, spelling: str) -> None:
    port = sink.getsockname()[1]
    client = RegistryClient(network_guard=True)
    with pytest.raises(BlockedRegistry, match="loopback"):
        client.head_manifest(_ref_at(f"{spelling}:{port}"), "v1", Keyring.empty(), _deadline())
    client.close()
    assert accepted(sink) == 0


@pytest.mark.served
def test_without_the_guard_the_sink_is_reached(sink: socket.socket) -> None:
    """The control for the test above: the same request does connect when the guard is off."""
    port = sink.getsockname()[1]
    client = RegistryClient([RegistryOptions(host=f"127.0.0.2:{port}", insecure=True)])
    with pytest.raises(DeadlineExceeded):
        client.head_manifest(_ref_at(f"127.0.0.2:{port}"), "v1", Keyring.empty(), Deadline(0.5))
    client.close()
    assert accepted(sink) == 1


class FakeDns:
    """Names resolve from `answers` (each lookup takes the next list, the last one repeats); IP
    literals resolve to themselves as the real resolver does, without any network."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []
        self._real = real

    def getaddrinfo(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if host not in self.answers:
            return self._real(host, port, *args, **kwargs)
        self.lookups.append(host)
        queue = self.answers[host]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses]


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    dns = FakeDns(socket.getaddrinfo)
    # The resolver the guarded transport calls (webhook.registry.transport.resolve).
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    return dns


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """socket.connect fails loudly (and records where it was asked to go)."""
    attempts: list[Any] = []

    def connect(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("connect() is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


@pytest.mark.served
def test_a_name_resolving_to_loopback_is_refused(sink: socket.socket, fake_dns: FakeDns) -> None:
    port = sink.getsockname()[1]
    fake_dns.answers["registry.test"] = [["127.0.0.2"]]
    with pytest.raises(BlockedRegistry, match="registry.test resolves to 127.0.0.2"):
        RegistryClient(network_guard=True).head_manifest(
            _ref_at(f"registry.test:{port}"), "v1", Keyring.empty(), _deadline()
        )
    assert accepted(sink) == 0


def test_any_blocked_address_refuses_the_name(fake_dns: FakeDns, no_connect: list[Any]) -> None:
    fake_dns.answers["mixed.test"] = [["93.184.216.34", "10.1.2.3"]]
    with pytest.raises(BlockedRegistry, match="private"):
        RegistryClient(network_guard=True).head_manifest(
            _ref_at("mixed.test"), "v1", Keyring.empty(), _deadline()
        )
    assert no_connect == []


def test_the_checked_address_is_the_one_connected_to(fake_dns: FakeDns, no_connect: list[Any]) -> None:
    # DNS rebinding: a second lookup would answer loopback; the client must not make one.
    fake_dns.answers["rebind.test"] = [["93.184.216.34"], ["127.0.0.1"]]
    with pytest.raises(RegistryUnreachable, match="cannot connect"):
        RegistryClient(network_guard=True).head_manifest(
            _ref_at("rebind.test"), "v1", Keyring.empty(), _deadline()
        )
    assert fake_dns.lookups == ["rebind.test"]
    assert [address[0] for address in no_connect] == ["93.184.216.34"]


@pytest.mark.parametrize("guard", [True, False])
def test_a_lookup_that_hangs_ends_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch, no_connect: list[Any], guard: bool
) -> None:
    # A name whose DNS server never answers: the resolver's own timeouts would outlast the deadline.
    release = threading.Event()

    def hanging(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceeded, match="slow-dns.test"):
            RegistryClient(network_guard=guard).head_manifest(
                _ref_at("slow-dns.test"), "v1", Keyring.empty(), Deadline(0.5)
            )
        assert time.monotonic() - started < 2
    finally:
        release.set()
    assert no_connect == []


@pytest.mark.parametrize(
    "host", ["10.0.0.5:5000", "169.254.169.254", "[fe80::1]:5000", "100.64.1.1", "metadata.google.internal"]
)
def test_private_link_local_and_metadata_registries_are_refused(host: str, no_connect: list[Any]) -> None:
    with pytest.raises(BlockedRegistry, match="network guard"):
        RegistryClient(network_guard=True).get_manifest(_ref_at(host), "v1", Keyring.empty(), _deadline())
    assert no_connect == []


def test_allow_private_network_lifts_the_guard_for_that_host_only(no_connect: list[Any]) -> None:
    client = RegistryClient(
        [RegistryOptions(host="10.0.0.5:5000", allow_private_network=True)], network_guard=True
    )
    with pytest.raises(RegistryUnreachable, match="cannot connect"):
        client.head_manifest(_ref_at("10.0.0.5:5000"), "v1", Keyring.empty(), _deadline())
    assert [a[0] for a in no_connect] == ["10.0.0.5"]
    with pytest.raises(BlockedRegistry):
        client.head_manifest(_ref_at("10.0.0.6:5000"), "v1", Keyring.empty(), _deadline())


# ---- against the real docker-registry ----------------------------------------------------------------


def _options(registry: Registry, **extra: Any) -> RegistryOptions:
    return RegistryOptions(
        host=registry.host,
        insecure=registry.ca_file is None,
        ca_file=str(registry.ca_file) if registry.ca_file else None,
        allow_private_network=True,
        **extra,
    )


def _keyring_for(registry: Registry, username: str | None, password: str | None) -> Keyring:
    assert username and password
    return Keyring.from_docker_config(
        {"auths": {registry.host: {"username": username, "password": password}}}, "secret test/regcred"
    )


@pytest.mark.registry
def test_push_then_head_get_and_blobs(registry: Registry) -> None:
    layer = make_layer("client test layer")
    digest = registry.push_image("client/app", "v1", [layer])
    ref = parse(registry.ref("client/app", "v1"))
    events: list[RequestEvent] = []
    client = RegistryClient([_options(registry)], network_guard=True, on_request=events.append)
    head = client.head_manifest(ref, "v1", Keyring.empty(), _deadline())
    assert head == ManifestHead(digest, mt.OCI_MANIFEST, head.size) and head.size
    manifest = client.get_manifest(ref, digest, Keyring.empty(), _deadline())
    assert (
        manifest.digest == digest and manifest.content_type == mt.OCI_MANIFEST and manifest.size == head.size
    )
    config = client.get_blob(ref, manifest.body["config"]["digest"], Keyring.empty(), _deadline())
    assert config.body["rootfs"]["diff_ids"] == [layer.diff_id]
    stat = client.stat_blob(ref, layer.digest, Keyring.empty(), _deadline())
    assert stat is not None and stat.size == len(layer.data)
    assert client.stat_blob(ref, digest_of(b"never pushed"), Keyring.empty(), _deadline()) is None
    with pytest.raises(NotFound):
        client.head_manifest(ref, "no-such-tag", Keyring.empty(), _deadline())
    assert {e.kind for e in events} == {"manifest", "blob"} and all(
        e.method in ("HEAD", "GET") for e in events
    )
    client.close()


@pytest.mark.registry
def test_one_connection_serves_a_cold_image_heads_included(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A HEAD answer is read to its end, so its connection serves the next request: the manifest HEAD,
    # a HEAD answered 404, the manifest GET, the config GET and the layer HEAD all go over one.
    layer = make_layer("one connection")
    registry.push_image("client/pooled", "v1", [layer])
    connected: list[Any] = []
    connect = socket.create_connection

    def counted(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        connected.append(address)
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counted)
    client = RegistryClient([_options(registry)], network_guard=True)
    ref = parse(registry.ref("client/pooled", "v1"))
    head = client.head_manifest(ref, "v1", Keyring.empty(), _deadline())
    assert head.digest is not None
    assert client.stat_blob(ref, digest_of(b"never pushed"), Keyring.empty(), _deadline()) is None
    manifest = client.get_manifest(ref, head.digest, Keyring.empty(), _deadline())
    client.get_blob(ref, manifest.body["config"]["digest"], Keyring.empty(), _deadline())
    assert client.stat_blob(ref, layer.digest, Keyring.empty(), _deadline()) is not None
    client.head_manifest(ref, "v1", Keyring.empty(), _deadline())
    client.close()
    assert len(connected) == 1


@pytest.mark.registry
def test_accept_list_prevents_schema1_down_conversion(registry: Registry) -> None:
    digest = registry.push_image(
        "client/docker", "v1", [make_layer("docker v2")], manifest_type=mt.DOCKER_MANIFEST
    )
    # Asked without the docker v2 type, this registry converts the manifest to schema 1 on the fly...
    bare = httpx.get(f"{registry.url}/v2/client/docker/manifests/v1", headers={"Accept": "*/*"})
    assert mt.strip_parameters(bare.headers["content-type"]) in mt.SCHEMA1_TYPES
    # ...which the client's Accept list prevents.
    client = RegistryClient([_options(registry)])
    manifest = client.get_manifest(
        parse(registry.ref("client/docker", "v1")), "v1", Keyring.empty(), _deadline()
    )
    assert manifest.content_type == mt.DOCKER_MANIFEST and manifest.digest == digest
    client.close()


@pytest.mark.registry
def test_real_signed_schema1_digest(registry: Registry) -> None:
    digest = registry.push_schema1("client/legacy", "v1", "schema 1 content")
    client = RegistryClient([_options(registry)])
    ref = parse(registry.ref("client/legacy", "v1"))
    manifest = client.get_manifest(ref, "v1", Keyring.empty(), _deadline())
    assert manifest.content_type == mt.DOCKER_SCHEMA1_SIGNED and manifest.digest == digest
    assert client.get_manifest(ref, digest, Keyring.empty(), _deadline()).digest == digest
    client.close()


@pytest.mark.registry
def test_tls_registry_needs_its_ca(tls_registry: Registry) -> None:
    tls_registry.push_image("client/tls", "v1", [make_layer("tls")])
    ref = parse(tls_registry.ref("client/tls", "v1"))
    trusted = RegistryClient([_options(tls_registry)])
    assert trusted.head_manifest(ref, "v1", Keyring.empty(), _deadline()).digest
    untrusted = RegistryClient([RegistryOptions(host=tls_registry.host, allow_private_network=True)])
    with pytest.raises(RegistryUnreachable, match="certificate"):
        untrusted.head_manifest(ref, "v1", Keyring.empty(), _deadline())
    trusted.close()
    untrusted.close()


@pytest.mark.registry
def test_guard_refuses_the_real_registry_on_loopback(registry: Registry) -> None:
    client = RegistryClient([RegistryOptions(host=registry.host, insecure=True)], network_guard=True)
    with pytest.raises(BlockedRegistry, match="loopback"):
        client.head_manifest(parse(registry.ref("client/app", "v1")), "v1", Keyring.empty(), _deadline())


@pytest.mark.registry
def test_htpasswd_basic_auth(htpasswd_registry: Registry) -> None:
    registry = htpasswd_registry
    ref = parse(registry.push_private_image("client/basic", "v1"))
    client = RegistryClient([_options(registry)])
    reader = _keyring_for(registry, registry.username, registry.password)
    assert client.get_manifest(ref, "v1", reader, _deadline()).digest
    wrong = _keyring_for(registry, registry.username, "wrong-password")
    with pytest.raises(Unauthorized) as raised:
        client.get_manifest(ref, "v1", wrong, _deadline())
    assert "wrong-password" not in str(raised.value) and "secret test/regcred" in str(raised.value)
    with pytest.raises(Unauthorized, match="anonymous"):
        client.get_manifest(ref, "v1", Keyring.empty(), _deadline())
    # The wrong credential first, the right one second: the kubelet's order, and the second one works.
    assert client.get_manifest(ref, "v1", wrong.merged(reader), _deadline()).digest
    client.close()


@pytest.mark.registry
def test_token_auth(token_registry: Registry) -> None:
    registry = token_registry
    assert registry.token_server is not None
    private = parse(registry.push_private_image("private/client", "v1"))
    registry.push_image("public/client", "v1", [make_layer("public client")])
    public = parse(registry.ref("public/client", "v1"))
    client = RegistryClient([_options(registry)], network_guard=True)
    reader = _keyring_for(registry, registry.username, registry.password)
    outsider = _keyring_for(registry, registry.outsider_username, registry.outsider_password)

    manifest = client.get_manifest(private, "v1", reader, _deadline())
    assert client.get_blob(private, manifest.body["config"]["digest"], reader, _deadline()).size
    with pytest.raises(Unauthorized):
        client.get_manifest(private, "v1", outsider, _deadline())
    with pytest.raises(Unauthorized):
        client.get_manifest(private, "v1", Keyring.empty(), _deadline())  # the reader's token is not reused
    assert client.get_manifest(public, "v1", Keyring.empty(), _deadline()).digest

    served = registry.token_server.requests_served
    client.get_manifest(private, "v1", reader, _deadline())
    assert registry.token_server.requests_served == served  # the reader's token came from the cache
    client.close()
