"""Registry authorization without I/O: challenges, where credentials may go, the token cache, and the
flow that ties them together.

`Authorizer.flow` is a generator in the manner of httpx's `Auth.auth_flow`: it yields the requests it
wants sent (`Send`) and is sent back what each was answered (`Reply`); the client does the sending
(client.py), this module decides what the requests carry.  When the flow stops, the registry's last
answer is the one to use.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx

from webhook.cache import Cache, kept_when_short
from webhook.credentials import Credential
from webhook.errors import RateLimited, RegistryUnreachable, Unauthorized
from webhook.netguard import parse_address
from webhook.registry.exchange import hostname, netloc, origin, rate_limit_headers, retry_after
from webhook.routes import Endpoint

DEFAULT_TOKEN_LIFETIME = 60.0  # seconds, when the token answer has no (usable) expires_in
# A token is kept at most this long whatever expires_in says, and is refused when longer than MAX_TOKEN
# (it goes into a header line, which registries and proxies cap at 8-16 KiB).
MAX_TOKEN_LIFETIME = 600.0
MAX_TOKEN = 16 * 1024
ANONYMOUS = "anonymous"  # the token cache's identity for requests sent without a credential
# A token answer is a small JSON object; the token goes into a header line, which registries and their
# proxies cap at 8-16 KiB.  Anything bigger is the token service's fault, not the image's.
TOKEN_BODY_CAP = 64 * 1024
# Answers to the OAuth2 POST after which containerd asks the realm with GET (GCR 404, Artifactory 401,
# ACR 400, servers without POST 405): docker/auth in containerd's remotes.
_NO_OAUTH = frozenset({400, 401, 404, 405})

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68 = _TCHAR | frozenset("/=")
# A registry offers one challenge or two; 64 KiB of "a a a …" would be 30,000 of them and 0.2 s of CPU.
CHALLENGES_LIMIT = 16


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header; scheme and parameter names lower-cased."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def skip(self, characters: str = " \t") -> None:
        while self.pos < len(self.text) and self.text[self.pos] in characters:
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def token(self, allowed: frozenset[str] = _TCHAR) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in allowed:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        """A quoted-string at the cursor, escapes undone; an unterminated one runs to the end."""
        self.pos += 1  # the opening quote
        out: list[str] = []
        while self.pos < len(self.text):
            character = self.text[self.pos]
            if character == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif character == '"':
                self.pos += 1
                return "".join(out)
            else:
                out.append(character)
                self.pos += 1
        return "".join(out)

    def param(self) -> tuple[str, str] | None:
        """`name = value` at the cursor, consumed; None (cursor unchanged) when there is none."""
        start = self.pos
        name = self.token()
        self.skip()
        if not name or self.peek() != "=":
            self.pos = start
            return None
        self.pos += 1
        self.skip()
        value = self.quoted() if self.peek() == '"' else self.token()
        if not value and self.peek() not in ("", ",", " ", "\t"):
            self.pos = start
            return None
        return name.lower(), value


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """The challenges in the WWW-Authenticate headers (RFC 7235), in order, the first CHALLENGES_LIMIT
    of them; junk is skipped.

    One header may hold several challenges (`Basic realm="a", Bearer realm="b"`): after a
    challenge's first parameter, a comma-separated item that is not `name=value` starts the next one.
    """
    challenges: list[Challenge] = []
    for header in headers:
        scanner = _Scanner(header)
        current: Challenge | None = None
        while True:
            scanner.skip(" \t,")
            if not scanner.peek():
                break
            if current is not None and current.token68 is None:
                param = scanner.param()
                if param is not None:
                    current.params.setdefault(*param)  # a repeated parameter: the first one counts
                    continue
            scheme = scanner.token()
            if not scheme:  # not a challenge: skip to the next comma
                while scanner.peek() not in ("", ","):
                    scanner.pos += 1
                continue
            if len(challenges) == CHALLENGES_LIMIT:
                return challenges  # the rest is not read
            current = Challenge(scheme.lower(), {})
            challenges.append(current)
            scanner.skip()
            if scanner.peek() in ("", ","):
                continue
            param = scanner.param()
            if param is not None:
                current.params[param[0]] = param[1]
                continue
            start = scanner.pos
            token68 = scanner.token(_TOKEN68)
            scanner.skip()
            if token68 and scanner.peek() in ("", ","):
                current = Challenge(current.scheme, {}, token68)
                challenges[-1] = current
            else:
                scanner.pos = start
    return challenges


def pick_challenge(challenges: Sequence[Challenge]) -> Challenge | None:
    """Bearer (with a realm) over Basic, as containerd prefers; None when neither is offered."""
    for challenge in challenges:
        if challenge.scheme == "bearer" and challenge.params.get("realm"):
            return challenge
    for challenge in challenges:
        if challenge.scheme == "basic":
            return challenge
    return None


# Suffixes under which unrelated parties get their own names (S3 buckets, ECR registries, pages): a
# host under one of these shares its registrable domain with no other host.  A short list, not the
# Public Suffix List: for a realm it misjudges, list the realm in `token_realm_hosts`.
_SHARED_SUFFIXES = frozenset(
    {
        "amazonaws.com",
        "cloudfront.net",
        "azurecr.io",
        "azurewebsites.net",
        "core.windows.net",
        "appspot.com",
        "pkg.dev",
        "run.app",
        "web.app",
        "firebaseapp.com",
        "herokuapp.com",
        "github.io",
        "gitlab.io",
        "pages.dev",
        "workers.dev",
        "vercel.app",
        "netlify.app",
        "fly.dev",
        "onrender.com",
        "ngrok.io",
        "ngrok-free.app",
        "nip.io",
        "sslip.io",
    }
)
# Second-level labels that country-code domains hand out to the public (example.co.uk, example.com.au).
_COUNTRY_SECOND_LEVELS = frozenset(
    {"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go", "ltd", "plc"}
)


def registrable_domain(hostname: str) -> str:
    """The part of a host name one owner controls: `registry-1.docker.io` -> `docker.io`."""
    name = hostname.lower().rstrip(".")
    if parse_address(name) is not None:
        return name
    labels = name.split(".")
    if any(".".join(labels[-size:]) in _SHARED_SUFFIXES for size in range(1, len(labels))):
        return name
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _COUNTRY_SECOND_LEVELS:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def realm_may_receive_credentials(
    realm_scheme: str,
    realm_host: str,
    realm_port: int | None,
    registry_host: str,
    extra_hosts: Sequence[str],
    plain_http_registry: str | None = None,
) -> bool:
    """Whether a token realm may be sent the registry's credentials.

    Only over https, and only to the registry's own host, a host of the same registrable domain
    (registry-1.docker.io -> auth.docker.io), or a host the policy lists in `token_realm_hosts`.  A
    registry the policy lets speak plain http (`plain_http_registry`, its host[:port]) may have its realm
    on that same host and port over http too, as containerd allows: Basic auth to that registry would
    expose the same credentials.
    """
    realm = realm_host.lower().strip("[]")
    registry = registry_host.lower().strip("[]")
    with_port = realm if realm_port is None else f"{realm}:{realm_port}"
    if realm_scheme != "https":
        return realm_scheme == "http" and plain_http_registry is not None and with_port == plain_http_registry
    if any(h.lower().strip() in (realm, with_port) for h in extra_hosts):
        return True
    if realm == registry:
        return True
    if parse_address(realm) is not None or parse_address(registry) is not None:
        return False
    return registrable_domain(realm) == registrable_domain(registry)


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)
    lifetime: float


def parse_token_response(body: bytes) -> Token | None:
    """`token` or `access_token` from a token service answer, None when it holds neither (or one over
    MAX_TOKEN characters); the lifetime at most MAX_TOKEN_LIFETIME."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    value = document.get("token") or document.get("access_token")
    if not isinstance(value, str) or not value or len(value) > MAX_TOKEN or any(c in value for c in "\r\n"):
        return None
    lifetime = document.get("expires_in")
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    return Token(value, min(float(lifetime), MAX_TOKEN_LIFETIME))


TokenKey = tuple[str, str, str, str]  # (realm, service, scope, credential identity)


class TokenCache:
    """Bearer tokens per (realm, service, scope, identity), kept until 90% of their lifetime has passed,
    at most `max_bytes` of them (the least recently used go first).

    The identity is part of the key so a token got with one Secret never serves a request made
    with another credential, or anonymously.
    """

    def __init__(self, max_bytes: int) -> None:
        self._tokens: Cache[TokenKey, str] = Cache(max_bytes)

    def get(self, key: TokenKey) -> str | None:
        return self._tokens.get(key)

    def put(self, key: TokenKey, token: Token) -> None:
        self._tokens.put(key, token.value, 0.9 * token.lifetime)

    def discard(self, key: TokenKey, value: str) -> None:
        """Forget a token the registry refused (unless another thread already replaced it)."""
        self._tokens.discard(key, value)


@dataclass(frozen=True)
class Send:
    """A request the flow wants sent: the registry request itself with `authorization`, or (`token`) a
    request to a token service, sent as a form POST when `form` is given, else as a GET.  The body of
    a token service's 2xx answer is read (at most TOKEN_BODY_CAP bytes) into the `Reply`."""

    url: httpx.URL
    authorization: str | None = field(default=None, repr=False)
    token: bool = False
    form: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Reply:
    """What a `Send` was answered; `url` is where the answer came from (after redirects)."""

    status: int
    url: httpx.URL
    headers: httpx.Headers
    body: bytes = field(default=b"", repr=False)


Flow = Generator[Send, Reply, None]


class _CredentialRefused(Exception):
    """The token service refused one credential: the next one is tried (never leaves the flow)."""


class Authorizer:
    """The authorization state a client shares across threads: tokens, and the last challenge per origin."""

    def __init__(self, cache_bytes: int) -> None:
        self._tokens = TokenCache(cache_bytes)
        # A Pod spec names any number of registries, so the challenges are bounded too.
        self._challenges: Cache[tuple[str, str, int | None], Challenge] = Cache(cache_bytes // 4)

    def flow(self, endpoint: Endpoint, url: httpx.URL, credentials: Sequence[Credential | None]) -> Flow:
        """The registry's first answer to `url` that is not a refusal, trying each credential in turn
        (the kubelet's rule); Unauthorized when every one was refused."""
        for credential in credentials:
            try:
                reply = yield from self._with_credential(endpoint, url, credential)
            except _CredentialRefused:
                continue
            if reply.status not in (401, 403):
                return
        where = _where(endpoint)
        sources = sorted({c.source or "unnamed credential" for c in credentials if c is not None})
        tried = (
            f"every credential was refused ({', '.join(sources)})" if sources else "anonymous access refused"
        )
        withheld = self._withheld_realm(endpoint, url) if sources else None
        if withheld is not None:
            tried = (
                f"access refused: pullcheck withheld the credentials ({', '.join(sources)}) from the token "
                f"realm {withheld}, which is not {endpoint.name}'s host or domain (or not https); if it "
                f"belongs to the registry, list it in registries[].tokenRealmHosts"
            )
        raise Unauthorized(f"{where}: {tried}")

    def _withheld_realm(self, endpoint: Endpoint, url: httpx.URL) -> str | None:
        """The token realm of the registry's last challenge when credentials may not go there."""
        challenge = self._challenges.get(origin(url))
        if challenge is None or challenge.scheme == "basic":
            return None
        realm = _realm_url(challenge.params.get("realm", ""))
        if realm is None or _may_receive_credentials(realm, endpoint):
            return None
        return f"{realm.scheme}://{netloc(realm)}"

    def _with_credential(
        self, endpoint: Endpoint, url: httpx.URL, credential: Credential | None
    ) -> Generator[Send, Reply, Reply]:
        challenged = origin(url)
        known = self._challenges.get(challenged)
        authorization, fresh = (None, False)
        if known is not None:
            authorization, fresh = yield from self._authorization(endpoint, known, credential)
        reply = yield Send(url, authorization)
        if reply.status != 401 or origin(reply.url) != challenged:
            return reply  # a challenge from a redirect target is not the registry's to make
        challenge = pick_challenge(parse_challenges(reply.headers.get_list("www-authenticate")))
        if challenge is None:
            return reply
        self._challenges.put(challenged, challenge)
        if fresh and known is not None and _same_authority(challenge, known):
            return reply  # refused what we just obtained for this credential: it lacks access
        renewed, _ = yield from self._authorization(endpoint, challenge, credential, refused=authorization)
        if renewed is None:
            return reply
        return (yield Send(url, renewed))

    def _authorization(
        self,
        endpoint: Endpoint,
        challenge: Challenge,
        credential: Credential | None,
        refused: str | None = None,
    ) -> Generator[Send, Reply, tuple[str | None, bool]]:
        """(Authorization header or None, whether it was just obtained) for one credential.

        `refused` is a header the registry just turned down: a cached token equal to it is renewed.
        """
        if challenge.scheme == "basic":
            # Basic goes only to the registry that challenged: the header is dropped on redirects
            # to another origin, and challenges from other origins are ignored.
            if credential is None or not (credential.username or credential.password):
                return None, False
            return _basic(credential), True
        realm = _realm_url(challenge.params.get("realm", ""))
        if realm is None:
            return None, False
        eligible = credential is not None and _may_receive_credentials(realm, endpoint)
        identity = credential.identity if eligible and credential is not None else ANONYMOUS
        service = challenge.params.get("service", "")
        scope = f"repository:{endpoint.repository}:pull"
        key: TokenKey = (str(realm), service, scope, identity)
        cached = self._tokens.get(key)
        if cached is not None and "Bearer " + cached != refused:
            return "Bearer " + cached, False
        if cached is not None:
            self._tokens.discard(key, cached)
        token = yield from _fetch_token(endpoint, realm, service, scope, credential if eligible else None)
        self._tokens.put(key, token)
        return "Bearer " + token.value, True


def _fetch_token(
    endpoint: Endpoint, realm: httpx.URL, service: str, scope: str, credential: Credential | None
) -> Generator[Send, Reply, Token]:
    """A token from the realm; _CredentialRefused when the realm refuses this credential."""
    form = {"service": service, "scope": scope} if service else {"scope": scope}
    reply = None
    if credential is not None and credential.identity_token:
        # A docker config `identitytoken` is an OAuth2 refresh token (containerd's POST flow).
        oauth = form | {"grant_type": "refresh_token", "refresh_token": credential.identity_token}
        oauth["client_id"] = "pullcheck"
        reply = yield Send(realm, token=True, form=urlencode(oauth).encode())
        if reply.status in _NO_OAUTH:
            reply = None
    if reply is None:
        authorization = None
        if credential is not None and credential.identity_token:
            authorization = _basic_pair(credential.username, credential.identity_token)
        elif credential is not None:
            authorization = _basic(credential)
        reply = yield Send(realm.copy_merge_params(form), authorization, token=True)
    where = token_service(endpoint, reply.url)
    status = reply.status
    if status in (401, 403):
        raise _CredentialRefused
    if status == 429:
        raise RateLimited(
            f"{where} rate limited the request", retry_after(reply.headers), rate_limit_headers(reply.headers)
        )
    if status >= 500:
        raise RegistryUnreachable(f"{where} answered {status}")
    if not 200 <= status < 300:
        raise Unauthorized(f"{where} answered {status}")
    token = parse_token_response(reply.body)
    if token is None:
        raise Unauthorized(f"{where} answered without a token")
    return token


def token_service(endpoint: Endpoint, url: httpx.URL) -> str:
    """How messages name the token service at `url` serving `endpoint`."""
    return f"{_where(endpoint)}: token service {netloc(url)}"


def _where(endpoint: Endpoint) -> str:
    return f"{endpoint.name}/{endpoint.repository}"


def _may_receive_credentials(realm: httpx.URL, endpoint: Endpoint) -> bool:
    # A registry the policy lets speak plain http may have its realm on its very host and port.
    plain_http_registry = endpoint.host.lower() if endpoint.options.insecure else None
    return realm_may_receive_credentials(
        realm.scheme,
        realm.host,
        realm.port,
        hostname(endpoint.host),
        endpoint.options.token_realm_hosts,
        plain_http_registry,
    )


def _same_authority(one: Challenge, other: Challenge) -> bool:
    """Whether two challenges ask for the same thing (an `error` parameter aside)."""
    keys = ("realm", "service")
    return one.scheme == other.scheme and all(one.params.get(k) == other.params.get(k) for k in keys)


def _basic(credential: Credential) -> str:
    return _basic_pair(credential.username, credential.password)


def _basic_pair(username: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode("ascii")


# Every request to a registry behind a token service reads its challenge's realm: parsed once, for a
# realm of ordinary length (the registry chooses it).
@kept_when_short(max_length=512, max_entries=256)
def _realm_url(realm: str) -> httpx.URL | None:
    """The token realm as a URL, None when it is not an absolute http(s) URL."""
    try:
        url = httpx.URL(realm)
    except httpx.InvalidURL:
        return None
    return url if url.scheme in ("http", "https") and url.host else None
