"""Registry authentication: challenge parsing, where credentials may go, tokens per identity.

The flows run against a fake registry and token service on httpx.MockTransport (what no real
registry can be made to do: realms on other hosts, over http, on private addresses); the
real-registry flows are in test_registry_client.py.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
from collections.abc import Iterator
from urllib.parse import parse_qs

import httpx
import pytest

from webhook import cache
from webhook import mediatypes as mt
from webhook.credentials import Credential, Keyring
from webhook.deadline import Deadline
from webhook.digests import digest_of
from webhook.errors import BlockedRegistry, RegistryError, RegistryUnreachable, Unauthorized
from webhook.findings import RESOLUTION_CODES
from webhook.policy import RegistryOptions
from webhook.reference import parse
from webhook.registry import RegistryClient, RequestEvent, auth
from webhook.registry.auth import (
    CHALLENGES_LIMIT,
    Challenge,
    parse_challenges,
    parse_token_response,
    pick_challenge,
    realm_may_receive_credentials,
    registrable_domain,
)
from webhook.routes import Endpoint

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": 2},
        "layers": [],
    }
).encode()
REF = parse("registry.example.com/team/app:v1")
PASSWORDS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw"}


def _keyring(*users: str, host: str = "registry.example.com") -> Keyring:
    ring = Keyring.empty()
    for user in users:
        entry = {host: {"username": user, "password": PASSWORDS[user]}}
        ring = ring.merged(Keyring.from_docker_config({"auths": entry}, f"secret ns/{user}"))
    return ring


def _basic_user(request: httpx.Request) -> str | None:
    header = request.headers.get("authorization", "")
    if not header.startswith("Basic "):
        return None
    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    return user if PASSWORDS.get(user) == password else "!refused"


class FakeTokenRegistry:
    """A registry at registry.example.com with Bearer auth against a token service at `realm`."""

    def __init__(
        self,
        realm: str = "https://auth.example.com/token",
        readers: frozenset[str] = frozenset({"alice"}),
        anonymous_reads: bool = False,
        expires_in: int | None = 300,
        token_field: str = "token",
        token_status: int = 200,
        padding: int = 0,
    ) -> None:
        self.realm = httpx.URL(realm)
        self.readers, self.anonymous_reads = readers, anonymous_reads
        self.expires_in, self.token_field, self.token_status = expires_in, token_field, token_status
        self.padding = padding  # characters added to each token
        self.tokens: dict[str, str | None] = {}  # token -> user it was issued to (None: anonymous)
        self.token_requests: list[httpx.Request] = []
        self.registry_requests: list[httpx.Request] = []
        self._serial = itertools.count(1)

    def handler(self, request: httpx.Request) -> httpx.Response:
        if (request.url.host, request.url.path) == (self.realm.host, self.realm.path):
            return self._token(request)
        self.registry_requests.append(request)
        header = request.headers.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        if token in self.tokens:
            user = self.tokens[token]
            if user in self.readers or self.anonymous_reads:
                return httpx.Response(
                    200, content=MANIFEST, headers={"Content-Type": mt.OCI_MANIFEST}, request=request
                )
        challenge = (
            f'Bearer realm="{self.realm}",service="registry.example.com",scope="repository:team/app:pull"'
        )
        if token is not None:
            challenge += ',error="insufficient_scope"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request)
        if self.token_status != 200:
            return httpx.Response(self.token_status)
        user = _basic_user(request)
        if request.method == "POST":
            form = parse_qs(request.content.decode())
            user = "alice" if form.get("refresh_token") == ["alice-refresh"] else "!refused"
        if user == "!refused":
            return httpx.Response(401)
        token = f"token-{next(self._serial)}" + "x" * self.padding
        self.tokens[token] = user
        answer: dict[str, object] = {self.token_field: token}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return httpx.Response(200, json=answer)

    def token_users(self) -> list[str | None]:
        return [_basic_user(r) for r in self.token_requests]


def _client(fake: FakeTokenRegistry, **options: object) -> RegistryClient:
    return RegistryClient(transport=httpx.MockTransport(fake.handler), **options)  # type: ignore[arg-type]


def _get(client: RegistryClient, keyring: Keyring, ref: object = REF) -> None:
    client.get_manifest(ref, "v1", keyring, Deadline(10))  # type: ignore[arg-type]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    now = [1000.0]
    monkeypatch.setattr(cache, "monotonic", lambda: now[0])
    yield now


# ---- WWW-Authenticate parsing --------------------------------------------------------------------


def test_docker_hub_challenge() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"'
    )
    assert parse_challenges([header]) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/nginx:pull",
            },
        )
    ]


def test_several_challenges_in_one_header_with_commas_inside_quotes() -> None:
    challenges = parse_challenges(['Basic realm="a, b", Bearer realm="https://x.example/t", service="s"'])
    assert challenges == [
        Challenge("basic", {"realm": "a, b"}),
        Challenge("bearer", {"realm": "https://x.example/t", "service": "s"}),
    ]


def test_several_headers() -> None:
    challenges = parse_challenges(['Basic realm="r"', 'Bearer realm="https://t.example/"'])
    assert [c.scheme for c in challenges] == ["basic", "bearer"]


def test_scheme_and_parameter_names_are_case_insensitive() -> None:
    (challenge,) = parse_challenges(['BEARER Realm="https://t.example/token", SERVICE=svc'])
    assert challenge == Challenge("bearer", {"realm": "https://t.example/token", "service": "svc"})


def test_quoted_string_escapes() -> None:
    (challenge,) = parse_challenges([r'Bearer realm="say \"hi\", then \\ go",service=s'])
    assert challenge.params == {"realm": 'say "hi", then \\ go', "service": "s"}


def test_token68_and_whitespace_around_equals() -> None:
    challenges = parse_challenges(['Negotiate abc123==, Basic realm = "spaced" , charset = UTF-8'])
    assert challenges == [
        Challenge("negotiate", {}, "abc123=="),
        Challenge("basic", {"realm": "spaced", "charset": "UTF-8"}),
    ]


def test_repeated_parameter_keeps_the_first() -> None:
    (challenge,) = parse_challenges(['Bearer realm="https://one.example/",realm="https://two.example/"'])
    assert challenge.params["realm"] == "https://one.example/"


@pytest.mark.parametrize("header", ["", " , ,", "=", '"quoted"'])
def test_junk_yields_no_challenge(header: str) -> None:
    assert parse_challenges([header]) == []


def test_a_header_of_thousands_of_challenges_is_read_up_to_the_limit() -> None:
    bearer = 'Bearer realm="https://t.example/token"'
    challenges = parse_challenges([bearer + ", " + "a " * 30_000, "Basic realm=r"])
    assert len(challenges) == CHALLENGES_LIMIT
    assert challenges[0] == Challenge("bearer", {"realm": "https://t.example/token"})
    assert pick_challenge(challenges) == challenges[0]


def test_unterminated_quote_runs_to_the_end() -> None:
    (challenge,) = parse_challenges(['Bearer realm="https://t.example/token, service=x'])
    assert challenge.params == {"realm": "https://t.example/token, service=x"}


def test_bare_scheme() -> None:
    assert parse_challenges(["Bearer"]) == [Challenge("bearer", {})]


def test_pick_prefers_bearer_with_a_realm() -> None:
    basic, bearer = Challenge("basic", {"realm": "r"}), Challenge("bearer", {"realm": "https://t/"})
    assert pick_challenge([basic, bearer]) == bearer
    assert pick_challenge([basic, Challenge("bearer", {})]) == basic
    assert pick_challenge([Challenge("negotiate", {}, "x")]) is None


# ---- where credentials may go --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("registry-1.docker.io", "docker.io"),
        ("auth.docker.io", "docker.io"),
        ("docker.io", "docker.io"),
        ("registry.example.co.uk", "example.co.uk"),
        ("myregistry.azurecr.io", "myregistry.azurecr.io"),
        ("123.dkr.ecr.us-east-1.amazonaws.com", "123.dkr.ecr.us-east-1.amazonaws.com"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_registrable_domain(host: str, domain: str) -> None:
    assert registrable_domain(host) == domain


@pytest.mark.parametrize(
    ("scheme", "realm", "port", "registry", "extra", "allowed"),
    [
        ("https", "auth.docker.io", None, "registry-1.docker.io", (), True),
        ("https", "registry.example.com", 8443, "registry.example.com", (), True),
        ("http", "registry.example.com", None, "registry.example.com", (), False),
        ("http", "registry.example.com", 5001, "registry.example.com", (), False),
        ("https", "tokens.other.net", None, "registry.example.com", (), False),
        ("https", "tokens.other.net", None, "registry.example.com", ("tokens.other.net",), True),
        ("https", "tokens.other.net", 444, "registry.example.com", ("tokens.other.net:444",), True),
        ("https", "evil.s3.amazonaws.com", None, "1.dkr.ecr.us-east-1.amazonaws.com", (), False),
        ("https", "127.0.0.1", 5001, "127.0.0.1", (), True),
        ("https", "127.0.0.2", None, "127.0.0.1", (), False),
    ],
)
def test_realm_may_receive_credentials(
    scheme: str, realm: str, port: int | None, registry: str, extra: tuple[str, ...], allowed: bool
) -> None:
    assert realm_may_receive_credentials(scheme, realm, port, registry, extra) is allowed


@pytest.mark.parametrize(
    ("realm", "port", "allowed"),
    [
        ("registry.example.com", 5001, True),  # containerd sends them too
        ("registry.example.com", 5002, False),  # another server of the same host
        ("tokens.example.com", 5001, False),  # another host, over plain http
    ],
)
def test_a_plain_http_realm_on_an_insecure_registrys_own_host(realm: str, port: int, allowed: bool) -> None:
    plain = "registry.example.com:5001"
    assert realm_may_receive_credentials("http", realm, port, "registry.example.com", (), plain) is allowed
    assert realm_may_receive_credentials("http", realm, port, "registry.example.com", ()) is False


def test_credentials_reach_a_plain_http_realm_on_an_insecure_registrys_host() -> None:
    fake = FakeTokenRegistry(realm="http://registry.example.com/token")
    client = _client(fake, registries=[RegistryOptions("registry.example.com", insecure=True)])
    _get(client, _keyring("alice"))
    assert fake.token_users() == ["alice"]


def test_withheld_credentials_are_named_with_the_setting() -> None:
    fake = FakeTokenRegistry(realm="https://tokens.other.net/token")
    with pytest.raises(Unauthorized) as refused:
        _get(_client(fake), _keyring("alice"))
    message = str(refused.value)
    assert "withheld" in message and "tokens.other.net" in message and "tokenRealmHosts" in message
    assert "every credential was refused" not in message
    assert fake.token_users() == [None]  # asked anonymously, never with alice's password


@pytest.mark.parametrize("status", [400, 401, 404, 405])
def test_refresh_token_falls_back_to_get_as_containerd_does(status: int) -> None:
    fake = FakeTokenRegistry(token_field="access_token")

    basic = "Basic " + base64.b64encode(b"alice:alice-refresh").decode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host != "auth.example.com":
            return fake.handler(request)
        fake.token_requests.append(request)
        if request.method == "POST":
            return httpx.Response(status)
        if request.headers.get("authorization") != basic:
            return httpx.Response(401)
        fake.tokens["from-get"] = "alice"
        return httpx.Response(200, json={"access_token": "from-get"})

    keyring = Keyring.from_docker_config(
        {"auths": {"registry.example.com": {"username": "alice", "identitytoken": "alice-refresh"}}},
        "config.json",
    )
    _get(RegistryClient(transport=httpx.MockTransport(handler)), keyring)
    assert [r.method for r in fake.token_requests] == ["POST", "GET"]


def test_refresh_token_refused_with_403_is_not_retried_with_get() -> None:
    fake = FakeTokenRegistry(token_status=403)
    keyring = Keyring.from_docker_config(
        {"auths": {"registry.example.com": {"identitytoken": "alice-refresh"}}}, "config.json"
    )
    with pytest.raises(Unauthorized):
        _get(_client(fake), keyring)
    assert [r.method for r in fake.token_requests] == ["POST"]


def test_token_answer_parsing() -> None:
    assert parse_token_response(b'{"token": "t", "expires_in": 120}') == auth.Token("t", 120.0)
    assert parse_token_response(b'{"access_token": "a"}') == auth.Token("a", 60.0)
    assert parse_token_response(b'{"token": "t", "expires_in": -5}') == auth.Token("t", 60.0)
    for bad in (b"not json", b"[]", b'{"token": ""}', b'{"token": "a\\r\\nX-Evil: 1"}'):
        assert parse_token_response(bad) is None


# ---- Bearer flow -----------------------------------------------------------------------------------


def test_bearer_flow_sends_credentials_to_the_realm_and_reuses_the_token() -> None:
    fake = FakeTokenRegistry()
    client = _client(fake)
    _get(client, _keyring("alice"))
    _get(client, _keyring("alice"))
    assert len(fake.token_requests) == 1
    (token_request,) = fake.token_requests
    assert _basic_user(token_request) == "alice"
    assert token_request.url.params["service"] == "registry.example.com"
    assert token_request.url.params["scope"] == "repository:team/app:pull"
    first, *rest = fake.registry_requests
    assert "authorization" not in first.headers and first.url.path == "/v2/team/app/manifests/v1"
    assert all(r.headers["authorization"].startswith("Bearer ") for r in rest)


def test_tokens_are_kept_per_identity() -> None:
    fake = FakeTokenRegistry()
    client = _client(fake)
    _get(client, _keyring("alice"))
    alice_tokens = {t for t, user in fake.tokens.items() if user == "alice"}
    seen_before = len(fake.registry_requests)
    with pytest.raises(Unauthorized):
        _get(client, _keyring("bob"))
    with pytest.raises(Unauthorized):
        _get(client, Keyring.empty())
    for request in fake.registry_requests[seen_before:]:
        assert request.headers.get("authorization", "")[7:] not in alice_tokens
    assert fake.token_users()[1:] == ["bob", None]
    _get(client, _keyring("alice"))  # alice's token is still cached for alice
    assert len(fake.token_requests) == 3


def test_credentials_are_tried_in_order() -> None:
    fake = FakeTokenRegistry()
    client = _client(fake)
    _get(client, _keyring("bob", "alice"))
    assert fake.token_users() == ["bob", "alice"]


def test_a_credential_the_token_service_refuses_costs_one_token_request() -> None:
    fake = FakeTokenRegistry()
    stale = Keyring.from_docker_config(
        {"auths": {"registry.example.com": {"username": "alice", "password": "rotated-away"}}},
        "secret ns/stale",
    )
    _get(_client(fake), stale.merged(_keyring("alice")))
    assert fake.token_users() == ["!refused", "alice"]
    assert len(fake.registry_requests) == 2


def test_every_credential_refused_names_sources_never_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeTokenRegistry(readers=frozenset())
    client = _client(fake)
    with pytest.raises(Unauthorized) as raised:
        _get(client, _keyring("alice", "bob"))
    message = str(raised.value)
    assert "secret ns/alice" in message and "secret ns/bob" in message and "registry.example.com" in message
    for secret in (*PASSWORDS.values(), *fake.tokens):
        assert secret not in message and secret not in caplog.text


def test_token_expiry(clock: list[float]) -> None:
    fake = FakeTokenRegistry(expires_in=100)
    client = _client(fake)
    _get(client, _keyring("alice"))
    clock[0] += 80
    _get(client, _keyring("alice"))
    assert len(fake.token_requests) == 1
    clock[0] += 15  # past 90% of the lifetime
    _get(client, _keyring("alice"))
    assert len(fake.token_requests) == 2


def test_a_token_is_kept_ten_minutes_at_most(clock: list[float]) -> None:
    fake = FakeTokenRegistry(expires_in=10**9)
    client = _client(fake)
    _get(client, _keyring("alice"))
    clock[0] += 541  # past 90% of ten minutes
    _get(client, _keyring("alice"))
    assert len(fake.token_requests) == 2


@pytest.mark.parametrize(
    ("padding", "message"),
    [
        (2 * 1024 * 1024, "the token answer is .*over the 65536-byte limit"),
        (20 * 1024, "without a token"),  # fits the answer, too long for a header line
    ],
)
def test_an_oversized_token_is_registry_trouble_not_the_image(padding: int, message: str) -> None:
    fake = FakeTokenRegistry(padding=padding)
    with pytest.raises(RegistryError, match=message) as raised:
        _get(_client(fake), _keyring("alice"))
    assert raised.value.code in RESOLUTION_CODES  # onResolutionError decides, not MANIFEST_TOO_LARGE


def test_tokens_of_many_repositories_stay_within_the_cache_bound() -> None:
    fake = FakeTokenRegistry(padding=15 * 1024, anonymous_reads=True)
    client = _client(fake, token_cache_bytes=256 * 1024)
    for n in range(64):  # a token per repository: 64 x 15 KiB, four times the bound
        _get(client, Keyring.empty(), parse(f"registry.example.com/team/app{n}:v1"))
    assert client._auth._tokens._tokens.bytes <= 256 * 1024
    assert len(client._auth._tokens._tokens) < 20


def test_missing_expires_in_means_sixty_seconds(clock: list[float]) -> None:
    fake = FakeTokenRegistry(expires_in=None, token_field="access_token")
    client = _client(fake)
    _get(client, _keyring("alice"))
    clock[0] += 50
    _get(client, _keyring("alice"))
    assert len(fake.token_requests) == 1
    clock[0] += 10
    _get(client, _keyring("alice"))
    assert len(fake.token_requests) == 2


def test_a_revoked_cached_token_is_renewed_once() -> None:
    fake = FakeTokenRegistry()
    client = _client(fake)
    _get(client, _keyring("alice"))
    fake.tokens.clear()  # the registry forgets every token it issued
    _get(client, _keyring("alice"))
    assert len(fake.token_requests) == 2


def test_anonymous_token_for_public_repositories() -> None:
    fake = FakeTokenRegistry(anonymous_reads=True)
    _get(_client(fake), Keyring.empty())
    assert fake.token_users() == [None]


def test_realm_on_another_domain_gets_no_credentials() -> None:
    fake = FakeTokenRegistry(realm="https://tokens.other.net/token", anonymous_reads=True)
    _get(_client(fake), _keyring("alice"))
    assert fake.token_users() == [None]


def test_token_realm_hosts_lets_credentials_through() -> None:
    fake = FakeTokenRegistry(realm="https://tokens.other.net/token")
    options = RegistryOptions(host="registry.example.com", token_realm_hosts=("tokens.other.net",))
    _get(_client(fake, registries=[options]), _keyring("alice"))
    assert fake.token_users() == ["alice"]


def test_realm_over_plain_http_gets_no_credentials() -> None:
    fake = FakeTokenRegistry(realm="http://registry.example.com/token", anonymous_reads=True)
    _get(_client(fake), _keyring("alice"))
    assert fake.token_users() == [None]


def test_docker_hub_realm_gets_docker_hub_credentials() -> None:
    fake = FakeTokenRegistry(realm="https://auth.docker.io/token")
    keyring = Keyring.from_docker_config(
        {"auths": {"https://index.docker.io/v1/": {"username": "alice", "password": PASSWORDS["alice"]}}},
        "hub",
    )
    _get(_client(fake), keyring, parse("docker.io/team/app:v1"))
    assert fake.token_users() == ["alice"]
    assert {r.url.host for r in fake.registry_requests} == {"registry-1.docker.io"}


@pytest.mark.parametrize(
    "realm",
    [
        "https://10.0.0.1/token",
        "https://metadata.google.internal/token",
        "http://169.254.169.254/",
        "https://[::1]/t",
    ],
)
def test_realm_on_a_guarded_address_is_refused(realm: str) -> None:
    fake = FakeTokenRegistry(realm=realm, anonymous_reads=True)
    with pytest.raises(BlockedRegistry, match="network guard"):
        _get(_client(fake, network_guard=True), Keyring.empty())
    assert fake.token_requests == []


def test_identity_token_is_an_oauth_refresh_token() -> None:
    fake = FakeTokenRegistry(token_field="access_token")
    keyring = Keyring.from_docker_config(
        {"auths": {"registry.example.com": {"identitytoken": "alice-refresh"}}}, "config.json"
    )
    _get(_client(fake), keyring)
    (request,) = fake.token_requests
    assert request.method == "POST" and "authorization" not in request.headers
    form = parse_qs(request.content.decode())
    assert form["grant_type"] == ["refresh_token"] and form["scope"] == ["repository:team/app:pull"]
    assert form["service"] == ["registry.example.com"]


@pytest.mark.parametrize("status", [307, 308])
def test_refresh_token_never_follows_a_redirect_to_another_origin(status: int) -> None:
    fake = FakeTokenRegistry(token_field="access_token")
    elsewhere: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "collector.example.net":
            elsewhere.append(request)
            return httpx.Response(200, json={"access_token": "stolen"})
        if request.url.host == "auth.example.com":
            return httpx.Response(status, headers={"Location": "https://collector.example.net/token"})
        return fake.handler(request)

    keyring = Keyring.from_docker_config(
        {"auths": {"registry.example.com": {"identitytoken": "alice-refresh"}}}, "config.json"
    )
    with pytest.raises(RegistryUnreachable, match="refused a redirect"):
        _get(RegistryClient(transport=httpx.MockTransport(handler)), keyring)
    assert elsewhere == []


def test_token_service_failure_is_unreachable() -> None:
    fake = FakeTokenRegistry(token_status=503)
    with pytest.raises(RegistryUnreachable, match="503"):
        _get(_client(fake), _keyring("alice"))


def test_token_answer_without_a_token_is_unauthorized() -> None:
    fake = FakeTokenRegistry(token_field="nothing")
    with pytest.raises(Unauthorized, match="without a token"):
        _get(_client(fake), _keyring("alice"))


def test_token_requests_are_reported() -> None:
    fake = FakeTokenRegistry()
    events: list[RequestEvent] = []
    client = RegistryClient(
        [RegistryOptions(host="registry.example.com")],
        transport=httpx.MockTransport(fake.handler),
        on_request=events.append,
    )
    _get(client, _keyring("alice"))
    # The token realm's request counts under the registry it served.
    assert [(e.registry, e.kind, e.status) for e in events] == [
        ("registry.example.com", "manifest", 401),
        ("registry.example.com", "token", 200),
        ("registry.example.com", "manifest", 200),
    ]


# ---- Basic ------------------------------------------------------------------------------------------


def _basic_registry(requests: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.host == "cdn.example.net":
            return httpx.Response(200, content=b"{}")
        if _basic_user(request) != "alice":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="registry"'})
        if "/blobs/" in request.url.path:
            return httpx.Response(307, headers={"Location": "https://cdn.example.net/blob?sig=1"})
        return httpx.Response(200, content=MANIFEST, headers={"Content-Type": mt.OCI_MANIFEST})

    return httpx.MockTransport(handler)


def test_basic_auth_goes_to_the_registry_only() -> None:
    requests: list[httpx.Request] = []
    client = RegistryClient(transport=_basic_registry(requests))
    _get(client, _keyring("alice"))
    assert _basic_user(requests[-1]) == "alice"
    blob = client.get_blob(REF, digest_of(b"{}"), _keyring("alice"), Deadline(10))
    assert blob.size == 2
    cdn = [r for r in requests if r.url.host == "cdn.example.net"]
    assert cdn and all("authorization" not in r.headers for r in cdn)


def test_basic_auth_refused_without_credentials() -> None:
    requests: list[httpx.Request] = []
    with pytest.raises(Unauthorized, match="anonymous access refused"):
        _get(RegistryClient(transport=_basic_registry(requests)), Keyring.empty())
    assert len(requests) == 1


# ---- the authorization flow, driven by hand: no registry, no socket --------------------------------

FLOW_URL = httpx.URL("https://registry.example.com/v2/team/app/manifests/v1")


def _flow_endpoint() -> Endpoint:
    return Endpoint(
        "registry.example.com", "registry.example.com", "team/app", RegistryOptions("registry.example.com")
    )


def _reply(
    status: int, url: httpx.URL, headers: dict[str, str] | None = None, body: bytes = b""
) -> auth.Reply:
    return auth.Reply(status, url, httpx.Headers(headers or {}), body)


def test_the_flow_fetches_a_token_after_a_bearer_challenge_then_reuses_it() -> None:
    authorizer = auth.Authorizer(64 * 1024)
    endpoint = _flow_endpoint()
    credential = Credential("alice", "secret", source="Secret default/pull")
    flow = authorizer.flow(endpoint, FLOW_URL, [credential])
    first = next(flow)
    assert (first.url, first.authorization, first.token) == (FLOW_URL, None, False)
    challenge = 'Bearer realm="https://auth.example.com/token",service="registry.example.com"'
    to_realm = flow.send(_reply(401, FLOW_URL, {"www-authenticate": challenge}))
    assert to_realm.token and to_realm.form is None
    assert to_realm.url.host == "auth.example.com"
    assert to_realm.url.params["scope"] == "repository:team/app:pull"
    assert to_realm.authorization == "Basic " + base64.b64encode(b"alice:secret").decode()
    again = flow.send(_reply(200, to_realm.url, body=b'{"token": "t0k3n", "expires_in": 300}'))
    assert (again.url, again.authorization, again.token) == (FLOW_URL, "Bearer t0k3n", False)
    with pytest.raises(StopIteration):
        flow.send(_reply(200, FLOW_URL))
    # The next request knows the challenge and has the token: one request, authorized at once.
    second = authorizer.flow(endpoint, FLOW_URL, [credential])
    assert next(second).authorization == "Bearer t0k3n"


def test_the_flow_withholds_credentials_from_a_foreign_realm_and_says_so() -> None:
    authorizer = auth.Authorizer(64 * 1024)
    credential = Credential("alice", "secret", source="Secret default/pull")
    flow = authorizer.flow(_flow_endpoint(), FLOW_URL, [credential])
    next(flow)
    challenge = 'Bearer realm="https://tokens.elsewhere.test/token"'
    to_realm = flow.send(_reply(401, FLOW_URL, {"www-authenticate": challenge}))
    assert to_realm.token and to_realm.authorization is None  # asked anonymously
    again = flow.send(_reply(200, to_realm.url, body=b'{"token": "anonymous-token"}'))
    assert again.authorization == "Bearer anonymous-token"
    with pytest.raises(
        Unauthorized, match=r"withheld the credentials \(Secret default/pull\).*tokens\.elsewhere\.test"
    ):
        flow.send(_reply(401, FLOW_URL, {"www-authenticate": challenge}))
