"""The registry client: asks for manifests and blobs the way containerd does, and verifies what it reads.

Requests go HEAD first with the full manifest Accept list (no `/v2/` ping); a 401 challenge starts
the Basic or Bearer flow; each credential the keyring offers is tried in order (the kubelet's
rule).  Bodies are streamed with a byte cap, hashed as they arrive and bounded by the one deadline.
Every failure leaves as one of the `webhook.errors` classes, its message one line naming the
registry and repository and never a credential.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import quote, urlencode

import httpx

from webhook import digests
from webhook import mediatypes as mt
from webhook.cache import Cache
from webhook.credentials import Credential, Keyring
from webhook.deadline import Deadline
from webhook.documents import Document
from webhook.errors import (
    BlockedRegistry,
    DeadlineExceeded,
    DigestMismatch,
    InvalidReference,
    ManifestTooLarge,
    NotFound,
    RateLimited,
    RegistryError,
    RegistryUnreachable,
    Unauthorized,
    network_cause,
)
from webhook.netguard import literal_blocked_reason
from webhook.policy import DEFAULT_CACHES, RegistryOptions
from webhook.profiles import CONFIG_READ_CAP, CONTAINERD_MANIFEST_CAP
from webhook.reference import ImageReference
from webhook.registry.auth import (
    ANONYMOUS,
    Challenge,
    Token,
    TokenCache,
    TokenKey,
    parse_challenges,
    parse_token_response,
    pick_challenge,
    realm_may_receive_credentials,
)
from webhook.registry.endpoints import ConnectionFailed, endpoint_ssl_context, first_answer
from webhook.registry.transport import (
    DEFAULT_CONNECTIONS_PER_ORIGIN,
    RegistryTransport,
    deadline_scope,
)
from webhook.routes import Endpoint, Route, policy_route

log = logging.getLogger(__name__)

# A token answer is a small JSON object; the token goes into a header line, which registries and their
# proxies cap at 8-16 KiB.  Anything bigger is the token service's fault, not the image's.
TOKEN_BODY_CAP = 64 * 1024
# Answers to the OAuth2 POST after which containerd asks the realm with GET (GCR 404, Artifactory 401,
# ACR 400, servers without POST 405): docker/auth in containerd's remotes.
_NO_OAUTH = frozenset({400, 401, 404, 405})
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also takes '²', which float() and int() refuse
_USER_AGENT = "pullcheck (containerd-compatible registry client)"
_RATE_LIMIT_PREFIXES = ("ratelimit-", "x-ratelimit-", "docker-ratelimit-")
_T = TypeVar("_T")


class _CredentialRefused(Exception):
    """The token service refused one credential: the next one is tried (never leaves the client)."""


class _HeadNotAllowed(RegistryUnreachable):
    """405 to a HEAD: the registry only answers GET (never leaves the client)."""


@dataclass(frozen=True)
class ManifestHead:
    digest: str | None  # Docker-Content-Digest, validated (None when absent or malformed)
    content_type: str  # parameters stripped, lower-case, '' when absent
    size: int | None
    malformed_digest: str | None = None  # a Docker-Content-Digest that is not a digest, as served
    endpoint: Endpoint | None = field(default=None, compare=False)  # the endpoint that answered


@dataclass(frozen=True)
class BlobStat:
    """A blob the registry has; `size` is its Content-Length (None when it announced none)."""

    size: int | None


@dataclass(frozen=True)
class RequestEvent:
    """One HTTP exchange, for metrics: `kind` is manifest, blob, token or ping; `status` None on failure.

    `registry` is the policy's name of the registry the request served (its token realm and redirect
    targets included), or `other` for every registry the policy does not list: a Pod spec chooses
    image names, so they never become label values."""

    registry: str
    method: str
    status: int | None
    kind: str
    ratelimit_remaining: str | None


@dataclass(frozen=True)
class _Ask:
    """One logical request: what, where, and for whose message."""

    endpoint: Endpoint
    method: str
    path: str  # after /v2/<repository>/
    kind: str
    accept: str | None = None
    byte_range: str | None = None  # a Range header: only the first bytes of a blob are wanted

    @property
    def repository(self) -> str:
        return self.endpoint.repository

    @property
    def where(self) -> str:
        return f"{self.endpoint.name}/{self.repository}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _hostname(host: str) -> str:
    """'registry:5000' -> 'registry', '[::1]:5000' -> '::1'."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _plain_http_registry(endpoint: Endpoint) -> str | None:
    """The endpoint's host[:port] when the policy lets it speak plain http, else None."""
    return endpoint.host.lower() if endpoint.options.insecure else None


def _netloc(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return host if url.port is None else f"{host}:{url.port}"


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after", "").strip()
    if _DIGITS.fullmatch(value):
        return float(value)
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _rate_limit_headers(headers: httpx.Headers) -> dict[str, str]:
    return {
        name: value
        for name, value in headers.items()
        if name == "retry-after" or name.startswith(_RATE_LIMIT_PREFIXES)
    }


def _content_length(headers: httpx.Headers) -> int | None:
    value = headers.get("content-length", "").strip()
    return int(value) if _DIGITS.fullmatch(value) else None


def _valid_digest(text: str | None) -> str | None:
    return text if text is not None and digests.is_digest(text) else None


def _checked_digest(digest: str, what: str) -> str:
    """`digest` when well formed; a malformed one never reaches a URL, a cache key or a log unquoted."""
    try:
        digests.parse_digest(digest)
    except ValueError as error:
        raise DigestMismatch(f"{what}: {error}") from None
    return digest


def _manifest_path(reference: str, where: str) -> str:
    if ":" in reference:
        return "manifests/" + _checked_digest(reference, where)
    if _TAG.fullmatch(reference) is None:
        raise InvalidReference(f"{where}: invalid tag {digests.quoted(reference)}")
    return "manifests/" + reference


class RegistryClient:
    """A registry client shared by every thread of a resolution (and across resolutions)."""

    def __init__(
        self,
        registries: Sequence[RegistryOptions] = (),
        *,
        network_guard: bool = False,
        manifest_cap: int = CONTAINERD_MANIFEST_CAP,
        blob_cap: int = CONFIG_READ_CAP,
        transport: httpx.BaseTransport | None = None,
        on_request: Callable[[RequestEvent], None] | None = None,
        connections_per_origin: int = DEFAULT_CONNECTIONS_PER_ORIGIN,
        token_cache_bytes: int = DEFAULT_CACHES.tokens,
    ) -> None:
        self._options: dict[str, RegistryOptions] = {}
        for options in registries:
            self._options.setdefault(options.host.lower(), options)
        self._named = set(self._options) | {m.host.lower() for o in registries for m in o.mirrors}
        self._connections_per_origin = connections_per_origin
        self._guard = network_guard
        self._manifest_cap = manifest_cap
        self._blob_cap = blob_cap
        self._given_transport = transport
        self._on_request = on_request
        self._transports: dict[tuple[str | None, tuple[str, ...], bool, bool], httpx.BaseTransport] = {}
        self._lock = threading.Lock()
        self._tokens = TokenCache(token_cache_bytes)
        # The last challenge per origin; a Pod spec names any number of registries, so it is bounded too.
        self._challenges: Cache[tuple[str, str, int | None], Challenge] = Cache(token_cache_bytes // 4)
        if transport is None:
            for options in registries:  # a bad CA file is a configuration error: say so now
                self._transport(options)

    # ---- public API -------------------------------------------------------------------------

    def head_manifest(
        self,
        ref: ImageReference,
        reference: str,
        keyring: Keyring,
        deadline: Deadline,
        route: Route | None = None,
    ) -> ManifestHead:
        """What the registry (or the first endpoint of `route` that answers) says about a tag or digest."""
        path = _manifest_path(reference, f"{ref.registry}/{ref.repository}")

        def head(endpoint: Endpoint) -> ManifestHead:
            ask = _Ask(endpoint, "HEAD", path, "manifest", ", ".join(mt.MANIFEST_ACCEPT))
            try:
                with self._exchange(ask, keyring, deadline) as response:
                    announced = response.headers.get("docker-content-digest")
                    digest = _valid_digest(announced)
                    return ManifestHead(
                        digest,
                        mt.strip_parameters(response.headers.get("content-type")),
                        _content_length(response.headers),
                        digests.quoted(announced) if announced is not None and digest is None else None,
                    )
            except _HeadNotAllowed:
                # As containerd does: no digest from a HEAD, so the caller GETs the manifest instead.
                return ManifestHead(None, "", None)

        chosen = self._route(ref, route)
        endpoints = chosen.for_digest() if ":" in reference else chosen.for_tag()
        head_answer, endpoint = first_answer(endpoints, head, ref.name, primary_last=chosen.sticky)
        return replace(head_answer, endpoint=endpoint)

    def get_manifest(
        self,
        ref: ImageReference,
        reference: str,
        keyring: Keyring,
        deadline: Deadline,
        expected_digest: str | None = None,
        route: Route | None = None,
    ) -> Document:
        """The manifest or index, its bytes verified against the digest we expect (see `_verified`)."""
        where = f"{ref.registry}/{ref.repository}"
        path = _manifest_path(reference, where)
        if expected_digest is None and ":" in reference:
            expected_digest = reference
        if expected_digest is not None:
            _checked_digest(expected_digest, where)

        def get(endpoint: Endpoint) -> Document:
            ask = _Ask(endpoint, "GET", path, "manifest", ", ".join(mt.MANIFEST_ACCEPT))
            with self._exchange(ask, keyring, deadline) as response:
                content_type = mt.strip_parameters(response.headers.get("content-type"))
                announced = _valid_digest(response.headers.get("docker-content-digest"))
                wanted = expected_digest or announced
                what = f"{ask.where}: manifest {digests.quoted(reference)}"
                data, streamed = self._read(response, self._manifest_cap, wanted, what, deadline)
            digest = self._verified(data, content_type, streamed, wanted, what)
            return Document.from_bytes(digest, content_type, data)

        return self._fetch(ref, route, get)

    def get_blob(
        self,
        ref: ImageReference,
        digest: str,
        keyring: Keyring,
        deadline: Deadline,
        route: Route | None = None,
    ) -> Document:
        """The image config, its bytes verified against `digest` and its fields validated."""
        where = f"{ref.registry}/{ref.repository}"
        path = "blobs/" + _checked_digest(digest, where)

        def get(endpoint: Endpoint) -> Document:
            ask = _Ask(endpoint, "GET", path, "blob")
            what = f"{ask.where}: blob {digest}"
            with self._exchange(ask, keyring, deadline) as response:
                content_type = mt.strip_parameters(response.headers.get("content-type"))
                data, streamed = self._read(response, self._blob_cap, digest, what, deadline)
            if streamed != digest:
                raise DigestMismatch(f"{what}: the registry served bytes that hash to {streamed}")
            return Document.from_bytes(digest, content_type, data, config=True)

        return self._fetch(ref, route, get)

    def stat_blob(
        self,
        ref: ImageReference,
        digest: str,
        keyring: Keyring,
        deadline: Deadline,
        route: Route | None = None,
    ) -> BlobStat | None:
        """The blob's announced size when the registry has it (HEAD); None on 404, other trouble raises."""
        where = f"{ref.registry}/{ref.repository}"
        path = "blobs/" + _checked_digest(digest, where)

        def head(endpoint: Endpoint) -> BlobStat:
            ask = _Ask(endpoint, "HEAD", path, "blob")
            with self._exchange(ask, keyring, deadline) as response:
                return BlobStat(_content_length(response.headers))

        try:
            return self._fetch(ref, route, head)
        except NotFound:
            return None

    def foreign_blob_reachable(
        self, ref: ImageReference, urls: Sequence[str], deadline: Deadline, route: Route | None = None
    ) -> bool:
        """Whether one of a foreign layer's `urls` answers a HEAD with 2xx, as the runtimes try them
        before the registry.  No credential goes there; the network guard applies as to a redirect."""

        def probe(endpoint: Endpoint) -> bool:
            for text in urls:
                try:
                    url = httpx.URL(text)
                except httpx.InvalidURL:
                    continue
                if url.scheme not in ("http", "https") or not url.host:
                    continue
                try:
                    response = self._send(_Ask(endpoint, "HEAD", "", "blob"), "HEAD", url, {}, None, deadline)
                except RegistryError:
                    continue
                response.close()
                if 200 <= response.status_code < 300:
                    return True
            return False

        return self._fetch(ref, route, probe)

    def read_blob_head(
        self,
        ref: ImageReference,
        digest: str,
        length: int,
        keyring: Keyring,
        deadline: Deadline,
        route: Route | None = None,
    ) -> bytes:
        """The blob's first `length` bytes (a ranged GET; a registry that ignores Range is cut off)."""
        where = f"{ref.registry}/{ref.repository}"
        path = "blobs/" + _checked_digest(digest, where)

        def get(endpoint: Endpoint) -> bytes:
            ask = _Ask(endpoint, "GET", path, "blob", byte_range=f"bytes=0-{length - 1}")
            what = f"{ask.where}: blob {digest}"
            head = b""
            with (
                self._exchange(ask, keyring, deadline) as response,
                self._mapped_errors(what, _netloc(response.request.url), deadline),
                deadline_scope(deadline),
            ):
                arriving = [response.content] if response.is_stream_consumed else response.iter_raw()
                for chunk in arriving:
                    head += chunk[: length - len(head)]
                    deadline.check(what)
                    if len(head) >= length:
                        break
            return head

        return self._fetch(ref, route, get)

    def close(self) -> None:
        with self._lock:
            transports = list(self._transports.values())
            self._transports.clear()
        for transport in transports:
            transport.close()
        if self._given_transport is not None:
            self._given_transport.close()

    # ---- endpoints --------------------------------------------------------------------------

    def _options_for(self, host: str) -> RegistryOptions:
        return self._options.get(host.lower()) or RegistryOptions(host=host)

    def _route(self, ref: ImageReference, route: Route | None) -> Route:
        """The route given, else the policy entry's mirrors and the registry (containerd's order)."""
        return route or policy_route(self._options_for(ref.registry), ref, sticky=False)

    def _fetch(self, ref: ImageReference, route: Route | None, attempt: Callable[[Endpoint], _T]) -> _T:
        """Content by digest: the route's endpoints in order, as the runtime's fetcher asks them."""
        chosen = self._route(ref, route)
        return first_answer(chosen.for_fetch(), attempt, ref.name, primary_last=chosen.sticky)[0]

    def _connection_options(self, url: httpx.URL, endpoint: Endpoint) -> RegistryOptions:
        """The options for a host reached while serving `endpoint` (itself, a realm, a redirect target).

        Another port of the registry's own host (a token service beside it) shares its options.
        """
        netloc = _netloc(url)
        if netloc.lower() == endpoint.host.lower():
            return endpoint.options
        listed = self._options.get(netloc.lower())
        if listed is not None:
            return listed
        if url.host.lower() == _hostname(endpoint.host).lower():
            return endpoint.options
        return RegistryOptions(host=netloc)

    def _transport(self, options: RegistryOptions) -> httpx.BaseTransport:
        if self._given_transport is not None:
            return self._given_transport
        guard = self._guard and not options.allow_private_network
        key = (options.ca_file, options.ca_files, options.skip_verify, guard)
        with self._lock:
            transport = self._transports.get(key)
            if transport is None:
                transport = RegistryTransport(
                    endpoint_ssl_context(options),
                    guard=guard,
                    connections_per_origin=self._connections_per_origin,
                )
                self._transports[key] = transport
        return transport

    # ---- one exchange -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _exchange(self, ask: _Ask, keyring: Keyring, deadline: Deadline) -> Iterator[httpx.Response]:
        """A 2xx answer to `ask` (auth, one 429 retry and redirects done), closed after the block."""
        credentials = self._credentials(ask, keyring)
        self._check_guard(ask, ask.endpoint.host, ask.endpoint.options)
        with self._mapped_errors(ask.where, ask.endpoint.host, deadline):
            endpoint = ask.endpoint
            url = httpx.URL(
                f"{endpoint.scheme}://{endpoint.host}{endpoint.path}/{quote(ask.repository)}/{ask.path}"
            )
            if endpoint.namespace is not None:
                url = url.copy_merge_params({"ns": endpoint.namespace})
        headers = {"Accept": ask.accept} if ask.accept else {}
        if ask.byte_range:
            headers["Range"] = ask.byte_range
        retried = False
        while True:
            response = self._authorized(ask, url, headers, credentials, deadline)
            with _closed_on_error(response):
                wait = _retry_after(response.headers) if response.status_code == 429 else None
            if wait is not None and not retried and wait < deadline.remaining():
                response.close()
                time.sleep(wait)
                retried = True
                continue
            break
        try:
            if not 200 <= response.status_code < 300:
                raise self._status_error(ask, response)
            yield response
        finally:
            response.close()

    def _credentials(self, ask: _Ask, keyring: Keyring) -> list[Credential | None]:
        """The keyring's credentials for the host contacted, each identity once; anonymous when none."""
        found: list[Credential | None] = []
        seen: set[str] = set()
        for credential in keyring.lookup(ask.endpoint.name, ask.repository):
            if credential.identity not in seen:
                seen.add(credential.identity)
                found.append(credential)
        return found or [None]

    def _status_error(self, ask: _Ask, response: httpx.Response) -> RegistryError:
        status = response.status_code
        what = f"{ask.where}: {ask.kind} {ask.path.split('/', 1)[1]}"
        if status == 404:
            return NotFound(f"{what} not found")
        if status == 405 and ask.method == "HEAD":
            return _HeadNotAllowed(f"{what}: {ask.endpoint.host} does not answer HEAD")
        if status == 429:
            wait = _retry_after(response.headers)
            hint = f" (retry after {wait:g}s)" if wait is not None else ""
            return RateLimited(
                f"{what}: rate limited by {ask.endpoint.host}{hint}",
                wait,
                _rate_limit_headers(response.headers),
            )
        if status >= 500:
            return RegistryUnreachable(f"{what}: {ask.endpoint.host} answered {status}")
        return RegistryUnreachable(f"{what}: unexpected answer {status} from {ask.endpoint.host}")

    def _authorized(
        self,
        ask: _Ask,
        url: httpx.URL,
        headers: Mapping[str, str],
        credentials: list[Credential | None],
        deadline: Deadline,
    ) -> httpx.Response:
        """The first answer that is not a refusal, trying each credential in turn."""
        for credential in credentials:
            try:
                response = self._with_credential(ask, url, headers, credential, deadline)
            except _CredentialRefused:
                continue
            if response.status_code not in (401, 403):
                return response
            response.close()
        sources = sorted({c.source or "unnamed credential" for c in credentials if c is not None})
        tried = (
            f"every credential was refused ({', '.join(sources)})" if sources else "anonymous access refused"
        )
        withheld = self._withheld_realm(ask, url) if sources else None
        if withheld is not None:
            tried = (
                f"access refused: pullcheck withheld the credentials ({', '.join(sources)}) from the token "
                f"realm {withheld}, which is not {ask.endpoint.name}'s host or domain (or not https); if it "
                f"belongs to the registry, list it in registries[].tokenRealmHosts"
            )
        raise Unauthorized(f"{ask.where}: {tried}")

    def _withheld_realm(self, ask: _Ask, url: httpx.URL) -> str | None:
        """The token realm of the registry's last challenge when credentials may not go there."""
        with self._lock:
            challenge = self._challenges.get(_origin(url))
        if challenge is None or challenge.scheme == "basic":
            return None
        realm = _realm_url(challenge.params.get("realm", ""))
        if realm is None or realm_may_receive_credentials(
            realm.scheme,
            realm.host,
            realm.port,
            _hostname(ask.endpoint.host),
            ask.endpoint.options.token_realm_hosts,
            _plain_http_registry(ask.endpoint),
        ):
            return None
        return f"{realm.scheme}://{_netloc(realm)}"

    def _with_credential(
        self,
        ask: _Ask,
        url: httpx.URL,
        headers: Mapping[str, str],
        credential: Credential | None,
        deadline: Deadline,
    ) -> httpx.Response:
        origin = _origin(url)
        known = self._challenges.get(origin)
        authorization, fresh = (None, False)
        if known is not None:
            authorization, fresh = self._authorization(ask, known, credential, deadline)
        response = self._send(ask, ask.method, url, headers, authorization, deadline)
        with _closed_on_error(response):
            if response.status_code != 401 or _origin(response.request.url) != origin:
                return response  # a challenge from a redirect target is not the registry's to make
            challenge = pick_challenge(parse_challenges(response.headers.get_list("www-authenticate")))
            if challenge is None:
                return response
            self._challenges.put(origin, challenge)
            if fresh and known is not None and _same_authority(challenge, known):
                return response  # refused what we just obtained for this credential: it lacks access
            # A token service that fails here raises: the challenge is closed on the way out.
            renewed, _ = self._authorization(ask, challenge, credential, deadline, refused=authorization)
            if renewed is None:
                return response
        response.close()
        return self._send(ask, ask.method, url, headers, renewed, deadline)

    # ---- authorization ----------------------------------------------------------------------

    def _authorization(
        self,
        ask: _Ask,
        challenge: Challenge,
        credential: Credential | None,
        deadline: Deadline,
        refused: str | None = None,
    ) -> tuple[str | None, bool]:
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
        eligible = credential is not None and realm_may_receive_credentials(
            realm.scheme,
            realm.host,
            realm.port,
            _hostname(ask.endpoint.host),
            ask.endpoint.options.token_realm_hosts,
            _plain_http_registry(ask.endpoint),
        )
        identity = credential.identity if eligible and credential is not None else ANONYMOUS
        service = challenge.params.get("service", "")
        scope = f"repository:{ask.repository}:pull"
        key: TokenKey = (str(realm), service, scope, identity)
        cached = self._tokens.get(key)
        if cached is not None and "Bearer " + cached != refused:
            return "Bearer " + cached, False
        if cached is not None:
            self._tokens.discard(key, cached)
        token = self._fetch_token(ask, realm, service, scope, credential if eligible else None, deadline)
        self._tokens.put(key, token)
        return "Bearer " + token.value, True

    def _fetch_token(
        self,
        ask: _Ask,
        realm: httpx.URL,
        service: str,
        scope: str,
        credential: Credential | None,
        deadline: Deadline,
    ) -> Token:
        """A token from the realm; _CredentialRefused when the realm refuses this credential."""
        token_ask = replace(ask, method="GET", path="", kind="token", accept=None)
        form = {"service": service, "scope": scope} if service else {"scope": scope}
        response = None
        if credential is not None and credential.identity_token:
            # A docker config `identitytoken` is an OAuth2 refresh token (containerd's POST flow).
            oauth = form | {"grant_type": "refresh_token", "refresh_token": credential.identity_token}
            oauth["client_id"] = "pullcheck"
            response = self._send(
                replace(token_ask, method="POST"),
                "POST",
                realm,
                {"Content-Type": "application/x-www-form-urlencoded"},
                None,
                deadline,
                urlencode(oauth).encode(),
            )
            if response.status_code in _NO_OAUTH:
                response.close()
                response = None
        if response is None:
            authorization = None
            if credential is not None and credential.identity_token:
                authorization = _basic_pair(credential.username, credential.identity_token)
            elif credential is not None:
                authorization = _basic(credential)
            url = realm.copy_merge_params(form)
            response = self._send(token_ask, "GET", url, {}, authorization, deadline)
        try:
            where = f"{ask.where}: token service {_netloc(response.request.url)}"
            status = response.status_code
            if status in (401, 403):
                raise _CredentialRefused
            if status == 429:
                raise RateLimited(
                    f"{where} rate limited the request",
                    _retry_after(response.headers),
                    _rate_limit_headers(response.headers),
                )
            if status >= 500:
                raise RegistryUnreachable(f"{where} answered {status}")
            if not 200 <= status < 300:
                raise Unauthorized(f"{where} answered {status}")
            answer = f"{where}: the token answer"
            data, _ = self._read(response, TOKEN_BODY_CAP, None, answer, deadline, too_large=_oversized_token)
        finally:
            response.close()
        token = parse_token_response(data)
        if token is None:
            raise Unauthorized(f"{where} answered without a token")
        return token

    # ---- HTTP -------------------------------------------------------------------------------

    def _send(
        self,
        ask: _Ask,
        method: str,
        url: httpx.URL,
        headers: Mapping[str, str],
        authorization: str | None,
        deadline: Deadline,
        content: bytes | None = None,
    ) -> httpx.Response:
        """One request, redirects followed by hand: never https -> http, no credentials to another origin."""
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._send_once(ask, method, url, headers, authorization, deadline, content)
            if response.status_code not in _REDIRECTS:
                return response
            with _closed_on_error(response):
                location = response.headers.get("location")
            response.close()
            if not location:
                raise RegistryUnreachable(f"{ask.where}: redirect without a Location from {_netloc(url)}")
            try:
                target = url.join(location)
            except httpx.InvalidURL:
                raise RegistryUnreachable(
                    f"{ask.where}: redirect to an invalid URL from {_netloc(url)}"
                ) from None
            if target.scheme not in ("http", "https") or not target.host:
                raise RegistryUnreachable(f"{ask.where}: redirect to a non-HTTP URL from {_netloc(url)}")
            if target.scheme == "http" and (
                url.scheme == "https" or not self._connection_options(target, ask.endpoint).insecure
            ):
                raise RegistryUnreachable(
                    f"{ask.where}: refused a redirect from {_netloc(url)} to plain http://{_netloc(target)}"
                )
            if _origin(target) != _origin(url):
                if content is not None and response.status_code in (307, 308):
                    # The body goes along on 307/308, and a body here holds a refresh token.
                    raise RegistryUnreachable(
                        f"{ask.where}: refused a redirect of a request with a body from {_netloc(url)}"
                        f" to {_netloc(target)}"
                    )
                authorization = None
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                method, content, headers = "GET", None, {}
            url = target
        raise RegistryUnreachable(f"{ask.where}: more than {_MAX_REDIRECTS} redirects")

    def _send_once(
        self,
        ask: _Ask,
        method: str,
        url: httpx.URL,
        headers: Mapping[str, str],
        authorization: str | None,
        deadline: Deadline,
        content: bytes | None,
    ) -> httpx.Response:
        options = self._connection_options(url, ask.endpoint)
        self._check_guard(ask, _netloc(url), options)
        left = deadline.check(f"{ask.where}: {ask.kind} request")
        request_headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity", **headers}
        if authorization is not None:
            request_headers["Authorization"] = authorization
        request = httpx.Request(
            method,
            url,
            headers=request_headers,
            content=content,
            extensions={"timeout": {"connect": left, "read": left, "write": left, "pool": left}},
        )
        status: int | None = None
        remaining: str | None = None
        try:
            with self._mapped_errors(ask.where, _netloc(url), deadline), deadline_scope(deadline):
                response = _handle_on_a_sound_connection(self._transport(options), request)
                if method == "HEAD":
                    # No body comes, but httpcore keeps the connection for the next request only once
                    # it has read the answer's end: unread, every HEAD cost a new connection.
                    response.read()
            response.request = request
            status, remaining = response.status_code, response.headers.get("ratelimit-remaining")
            return response
        finally:
            self._report(RequestEvent(self._metric_name(ask.endpoint), method, status, ask.kind, remaining))

    def _metric_name(self, endpoint: Endpoint) -> str:
        return endpoint.name if endpoint.name.lower() in self._named else "other"

    def _report(self, event: RequestEvent) -> None:
        if self._on_request is None:
            return
        try:
            self._on_request(event)
        except Exception as error:  # noqa: BLE001 - a metrics hook must not break a resolution
            log.warning("request hook failed: %s", _one_line(str(error)))

    def _check_guard(self, ask: _Ask, host: str, options: RegistryOptions) -> None:
        """Refuse literal blocked addresses and metadata names before any request (the transport
        checks resolved names when it connects)."""
        if not self._guard or options.allow_private_network:
            return
        reason = literal_blocked_reason(_hostname(host))
        if reason is not None:
            raise BlockedRegistry(f"{ask.where}: {host} is a {reason} address: refused by the network guard")

    @staticmethod
    @contextlib.contextmanager
    def _mapped_errors(where: str, host: str, deadline: Deadline) -> Iterator[None]:
        """httpx's errors as ours, one line each, naming the registry and repository."""
        try:
            yield
        except httpx.PoolTimeout:
            raise DeadlineExceeded(
                f"{where}: every connection to {host} stayed busy until the {deadline.seconds:g}s deadline"
            ) from None
        except httpx.TimeoutException:
            if deadline.expired():
                raise DeadlineExceeded(
                    f"{where}: {host} did not answer within the {deadline.seconds:g}s deadline"
                ) from None
            raise RegistryUnreachable(f"{where}: {host} timed out") from None
        except httpx.ConnectError as error:
            cause = network_cause(error) or _one_line(str(error))  # as the Kubernetes client's are read
            raise ConnectionFailed(f"{where}: cannot connect to {host}: {cause}") from None
        except httpx.RemoteProtocolError:
            # httpcore quotes the offending bytes; they are the registry's choice, so they stay out.
            raise RegistryUnreachable(f"{where}: {host} did not answer with valid HTTP") from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            detail = _one_line(str(error)) or type(error).__name__
            raise RegistryUnreachable(f"{where}: {host}: {detail}") from None

    # ---- bodies -----------------------------------------------------------------------------

    def _read(
        self,
        response: httpx.Response,
        cap: int,
        digest: str | None,
        what: str,
        deadline: Deadline,
        too_large: Callable[[str, int | None], RegistryError] = ManifestTooLarge,
    ) -> tuple[bytes, str]:
        """The body (at most `cap` bytes, else `too_large`) and its digest in `digest`'s algorithm
        (sha256 without one)."""
        announced = _content_length(response.headers)
        if announced is not None and announced > cap:
            raise too_large(f"{what} is {announced} bytes, over the {cap}-byte limit", announced)
        algorithm = digests.parse_digest(digest)[0] if digest is not None else "sha256"
        hasher = digests.new_hasher(algorithm)
        chunks: list[bytes] = []
        total = 0
        with self._mapped_errors(what, _netloc(response.request.url), deadline), deadline_scope(deadline):
            # Chunks as they arrive (re-chunking would buffer a slow drip past the deadline checks); a
            # body already in memory (a test transport's) cannot be streamed again.
            arriving = [response.content] if response.is_stream_consumed else response.iter_raw()
            for chunk in arriving:
                total += len(chunk)
                if total > cap:
                    raise too_large(f"{what} is over the {cap}-byte limit", announced)
                hasher.update(chunk)
                chunks.append(chunk)
                deadline.check(what)
        if announced is not None and total != announced:
            raise RegistryUnreachable(f"{what}: the body has {total} bytes, Content-Length said {announced}")
        return b"".join(chunks), f"{algorithm}:{hasher.hexdigest()}"

    def _verified(self, data: bytes, content_type: str, streamed: str, wanted: str | None, what: str) -> str:
        """The manifest's digest, checked against `wanted` (pinned, expected or announced) when there is one.

        A signed schema 1 manifest is identified by its payload without signatures, so when the raw
        bytes miss, the digest is taken the way the runtimes take it.
        """
        algorithm = streamed.split(":", 1)[0]
        if wanted is not None and streamed == wanted:
            return wanted
        try:
            digest = digests.manifest_digest(data, content_type, algorithm)
        except ValueError:
            digest = streamed
        if wanted is not None and digest != wanted:
            raise DigestMismatch(f"{what}: expected {wanted}, the bytes served hash to {digest}")
        return digest


def _handle_on_a_sound_connection(transport: httpx.BaseTransport, request: httpx.Request) -> httpx.Response:
    """Send `request`; a GET or HEAD that met a broken keep-alive connection is sent once more.

    A registry that sent more bytes than it announced, or closed an idle connection, leaves a pooled
    connection whose next answer is garbage or nothing; httpcore drops that connection on the protocol
    error, so the second try goes out on a new one."""
    try:
        return transport.handle_request(request)
    except httpx.RemoteProtocolError:
        if request.method not in ("GET", "HEAD"):
            raise
        return transport.handle_request(request)


def _oversized_token(message: str, _size: int | None) -> RegistryError:
    """A token answer over the cap: registry trouble (onResolutionError), not an image problem."""
    return RegistryUnreachable(message)


@contextlib.contextmanager
def _closed_on_error(response: httpx.Response) -> Iterator[None]:
    """Close `response` when the block raises: whoever holds an open response closes it on every path
    (an unclosed one keeps its registry's connection slot)."""
    try:
        yield
    except BaseException:
        response.close()
        raise


def _same_authority(one: Challenge, other: Challenge) -> bool:
    """Whether two challenges ask for the same thing (an `error` parameter aside)."""
    keys = ("realm", "service")
    return one.scheme == other.scheme and all(one.params.get(k) == other.params.get(k) for k in keys)


def _basic(credential: Credential) -> str:
    return _basic_pair(credential.username, credential.password)


def _basic_pair(username: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode("ascii")


def _realm_url(realm: str) -> httpx.URL | None:
    """The token realm as a URL, None when it is not an absolute http(s) URL."""
    try:
        url = httpx.URL(realm)
    except httpx.InvalidURL:
        return None
    return url if url.scheme in ("http", "https") and url.host else None
