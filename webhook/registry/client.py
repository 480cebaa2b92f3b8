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
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar
from urllib.parse import urlencode

import httpx

from webhook import digests
from webhook import mediatypes as mt
from webhook.cache import Cache
from webhook.credentials import Credential, Keyring
from webhook.deadline import Deadline
from webhook.documents import Document
from webhook.errors import (
    InvalidReference,
    NotFound,
    RateLimited,
    RegistryError,
    RegistryUnreachable,
    Unauthorized,
)
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
from webhook.registry.bodies import (
    checked_digest,
    read_capped,
    read_prefix,
    valid_digest,
    verified_blob,
    verified_manifest,
)
from webhook.registry.endpoints import fetch_from, resolve_from
from webhook.registry.exchange import (
    Ask,
    Exchanger,
    HeadNotAllowed,
    RequestEvent,
    ask_url,
    closed_on_error,
    content_length,
    hostname,
    mapped_errors,
    netloc,
    origin,
    rate_limit_headers,
    retry_after,
    status_error,
)
from webhook.registry.transport import DEFAULT_CONNECTIONS_PER_ORIGIN
from webhook.routes import Endpoint, Route, policy_route

log = logging.getLogger(__name__)

# A token answer is a small JSON object; the token goes into a header line, which registries and their
# proxies cap at 8-16 KiB.  Anything bigger is the token service's fault, not the image's.
TOKEN_BODY_CAP = 64 * 1024
# Answers to the OAuth2 POST after which containerd asks the realm with GET (GCR 404, Artifactory 401,
# ACR 400, servers without POST 405): docker/auth in containerd's remotes.
_NO_OAUTH = frozenset({400, 401, 404, 405})
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_T = TypeVar("_T")


class _CredentialRefused(Exception):
    """The token service refused one credential: the next one is tried (never leaves the client)."""


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


def _plain_http_registry(endpoint: Endpoint) -> str | None:
    """The endpoint's host[:port] when the policy lets it speak plain http, else None."""
    return endpoint.host.lower() if endpoint.options.insecure else None


def _manifest_path(reference: str, where: str) -> str:
    if ":" in reference:
        return "manifests/" + checked_digest(reference, where)
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
        self._exchanger = Exchanger(
            registries,
            network_guard=network_guard,
            transport=transport,
            on_request=on_request,
            connections_per_origin=connections_per_origin,
        )
        self._manifest_cap = manifest_cap
        self._blob_cap = blob_cap
        self._lock = threading.Lock()
        self._tokens = TokenCache(token_cache_bytes)
        # The last challenge per origin; a Pod spec names any number of registries, so it is bounded too.
        self._challenges: Cache[tuple[str, str, int | None], Challenge] = Cache(token_cache_bytes // 4)

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
            ask = Ask(endpoint, "HEAD", path, "manifest", ", ".join(mt.MANIFEST_ACCEPT))
            try:
                with self._exchange(ask, keyring, deadline) as response:
                    announced = response.headers.get("docker-content-digest")
                    digest = valid_digest(announced)
                    return ManifestHead(
                        digest,
                        mt.strip_parameters(response.headers.get("content-type")),
                        content_length(response.headers),
                        digests.quoted(announced) if announced is not None and digest is None else None,
                    )
            except HeadNotAllowed:
                # As containerd does: no digest from a HEAD, so the caller GETs the manifest instead.
                return ManifestHead(None, "", None)

        head_answer, endpoint = resolve_from(self._route(ref, route), reference, head, ref.name)
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
            checked_digest(expected_digest, where)

        def get(endpoint: Endpoint) -> Document:
            ask = Ask(endpoint, "GET", path, "manifest", ", ".join(mt.MANIFEST_ACCEPT))
            with self._exchange(ask, keyring, deadline) as response:
                content_type = mt.strip_parameters(response.headers.get("content-type"))
                announced = valid_digest(response.headers.get("docker-content-digest"))
                wanted = expected_digest or announced
                what = f"{ask.where}: manifest {digests.quoted(reference)}"
                data, streamed = read_capped(response, self._manifest_cap, wanted, what, deadline)
            digest = verified_manifest(data, content_type, streamed, wanted, what)
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
        path = "blobs/" + checked_digest(digest, where)

        def get(endpoint: Endpoint) -> Document:
            ask = Ask(endpoint, "GET", path, "blob")
            what = f"{ask.where}: blob {digest}"
            with self._exchange(ask, keyring, deadline) as response:
                content_type = mt.strip_parameters(response.headers.get("content-type"))
                data, streamed = read_capped(response, self._blob_cap, digest, what, deadline)
            verified_blob(streamed, digest, what)
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
        path = "blobs/" + checked_digest(digest, where)

        def head(endpoint: Endpoint) -> BlobStat:
            ask = Ask(endpoint, "HEAD", path, "blob")
            with self._exchange(ask, keyring, deadline) as response:
                return BlobStat(content_length(response.headers))

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
                    response = self._exchanger.send(
                        Ask(endpoint, "HEAD", "", "blob"), "HEAD", url, {}, None, deadline
                    )
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
        path = "blobs/" + checked_digest(digest, where)

        def get(endpoint: Endpoint) -> bytes:
            ask = Ask(endpoint, "GET", path, "blob", byte_range=f"bytes=0-{length - 1}")
            what = f"{ask.where}: blob {digest}"
            with self._exchange(ask, keyring, deadline) as response:
                return read_prefix(response, length, what, deadline)

        return self._fetch(ref, route, get)

    def close(self) -> None:
        self._exchanger.close()

    # ---- endpoints --------------------------------------------------------------------------

    def _route(self, ref: ImageReference, route: Route | None) -> Route:
        """The route given, else the policy entry's mirrors and the registry (containerd's order)."""
        return route or policy_route(self._exchanger.options_for(ref.registry), ref, sticky=False)

    def _fetch(self, ref: ImageReference, route: Route | None, attempt: Callable[[Endpoint], _T]) -> _T:
        """Content by digest: the route's endpoints in order, as the runtime's fetcher asks them."""
        return fetch_from(self._route(ref, route), attempt, ref.name)

    # ---- one exchange -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _exchange(self, ask: Ask, keyring: Keyring, deadline: Deadline) -> Iterator[httpx.Response]:
        """A 2xx answer to `ask` (auth, one 429 retry and redirects done), closed after the block."""
        credentials = self._credentials(ask, keyring)
        self._exchanger.check_guard(ask, ask.endpoint.host, ask.endpoint.options)
        with mapped_errors(ask.where, ask.endpoint.host, deadline):
            url = ask_url(ask)
        headers = {"Accept": ask.accept} if ask.accept else {}
        if ask.byte_range:
            headers["Range"] = ask.byte_range
        retried = False
        while True:
            response = self._authorized(ask, url, headers, credentials, deadline)
            with closed_on_error(response):
                wait = retry_after(response.headers) if response.status_code == 429 else None
            if wait is not None and not retried and wait < deadline.remaining():
                response.close()
                time.sleep(wait)
                retried = True
                continue
            break
        try:
            if not 200 <= response.status_code < 300:
                raise status_error(ask, response)
            yield response
        finally:
            response.close()

    def _credentials(self, ask: Ask, keyring: Keyring) -> list[Credential | None]:
        """The keyring's credentials for the host contacted, each identity once; anonymous when none."""
        found: list[Credential | None] = []
        seen: set[str] = set()
        for credential in keyring.lookup(ask.endpoint.name, ask.repository):
            if credential.identity not in seen:
                seen.add(credential.identity)
                found.append(credential)
        return found or [None]

    def _authorized(
        self,
        ask: Ask,
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

    def _withheld_realm(self, ask: Ask, url: httpx.URL) -> str | None:
        """The token realm of the registry's last challenge when credentials may not go there."""
        with self._lock:
            challenge = self._challenges.get(origin(url))
        if challenge is None or challenge.scheme == "basic":
            return None
        realm = _realm_url(challenge.params.get("realm", ""))
        if realm is None or realm_may_receive_credentials(
            realm.scheme,
            realm.host,
            realm.port,
            hostname(ask.endpoint.host),
            ask.endpoint.options.token_realm_hosts,
            _plain_http_registry(ask.endpoint),
        ):
            return None
        return f"{realm.scheme}://{netloc(realm)}"

    def _with_credential(
        self,
        ask: Ask,
        url: httpx.URL,
        headers: Mapping[str, str],
        credential: Credential | None,
        deadline: Deadline,
    ) -> httpx.Response:
        challenged = origin(url)
        known = self._challenges.get(challenged)
        authorization, fresh = (None, False)
        if known is not None:
            authorization, fresh = self._authorization(ask, known, credential, deadline)
        response = self._exchanger.send(ask, ask.method, url, headers, authorization, deadline)
        with closed_on_error(response):
            if response.status_code != 401 or origin(response.request.url) != challenged:
                return response  # a challenge from a redirect target is not the registry's to make
            challenge = pick_challenge(parse_challenges(response.headers.get_list("www-authenticate")))
            if challenge is None:
                return response
            self._challenges.put(challenged, challenge)
            if fresh and known is not None and _same_authority(challenge, known):
                return response  # refused what we just obtained for this credential: it lacks access
            # A token service that fails here raises: the challenge is closed on the way out.
            renewed, _ = self._authorization(ask, challenge, credential, deadline, refused=authorization)
            if renewed is None:
                return response
        response.close()
        return self._exchanger.send(ask, ask.method, url, headers, renewed, deadline)

    # ---- authorization ----------------------------------------------------------------------

    def _authorization(
        self,
        ask: Ask,
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
            hostname(ask.endpoint.host),
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
        ask: Ask,
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
            response = self._exchanger.send(
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
            response = self._exchanger.send(token_ask, "GET", url, {}, authorization, deadline)
        try:
            where = f"{ask.where}: token service {netloc(response.request.url)}"
            status = response.status_code
            if status in (401, 403):
                raise _CredentialRefused
            if status == 429:
                raise RateLimited(
                    f"{where} rate limited the request",
                    retry_after(response.headers),
                    rate_limit_headers(response.headers),
                )
            if status >= 500:
                raise RegistryUnreachable(f"{where} answered {status}")
            if not 200 <= status < 300:
                raise Unauthorized(f"{where} answered {status}")
            answer = f"{where}: the token answer"
            data, _ = read_capped(
                response, TOKEN_BODY_CAP, None, answer, deadline, too_large=_oversized_token
            )
        finally:
            response.close()
        token = parse_token_response(data)
        if token is None:
            raise Unauthorized(f"{where} answered without a token")
        return token


def _oversized_token(message: str, _size: int | None) -> RegistryError:
    """A token answer over the cap: registry trouble (onResolutionError), not an image problem."""
    return RegistryUnreachable(message)


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
