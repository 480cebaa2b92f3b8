"""Registry authentication without I/O: challenges, where credentials may go, and the token cache.

The client (client.py) does the requests; this module decides what they carry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from webhook.cache import Cache
from webhook.netguard import parse_address

DEFAULT_TOKEN_LIFETIME = 60.0  # seconds, when the token answer has no (usable) expires_in
# A token is kept at most this long whatever expires_in says, and is refused when longer than MAX_TOKEN
# (it goes into a header line, which registries and proxies cap at 8-16 KiB).
MAX_TOKEN_LIFETIME = 600.0
MAX_TOKEN = 16 * 1024
ANONYMOUS = "anonymous"  # the token cache's identity for requests sent without a credential

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68 = _TCHAR | frozenset("/=")


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
    """Every challenge in the WWW-Authenticate headers (RFC 7235), in order; junk is skipped.

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
