"""The registry client: asks for manifests and blobs the way containerd does, and verifies what it reads.

Requests go HEAD first with the full manifest Accept list (no `/v2/` ping); a 401 challenge starts
the Basic or Bearer flow; each credential the keyring offers is tried in order (the kubelet's
rule).  Bodies are streamed with a byte cap, hashed as they arrive and bounded by the one deadline.
Every failure leaves as one of the `webhook.errors` classes, its message one line naming the
registry and repository and never a credential.

The parts, along go-containerregistry's seams: endpoints.py asks a route's endpoints in order (mirror
fallback), exchange.py sends one request (redirects, network guard, error mapping, metrics hook),
auth.py decides what a request carries (an I/O-free flow this module drives), bodies.py reads capped
and verified bodies, transport.py holds the connections.  This module is the small client on top.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import httpx

from webhook import digests
from webhook import mediatypes as mt
from webhook.credentials import Credential, Keyring
from webhook.deadline import Deadline
from webhook.documents import Document
from webhook.errors import (
    InvalidReference,
    NotFound,
    RegistryError,
    RegistryUnreachable,
)
from webhook.policy import DEFAULT_CACHES, RegistryOptions
from webhook.profiles import CONFIG_READ_CAP, CONTAINERD_MANIFEST_CAP
from webhook.reference import ImageReference
from webhook.registry.auth import TOKEN_BODY_CAP, Authorizer, Reply, Send, token_service
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
    mapped_errors,
    retry_after,
    status_error,
)
from webhook.registry.transport import DEFAULT_CONNECTIONS_PER_ORIGIN
from webhook.routes import Endpoint, Route, policy_route

_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_T = TypeVar("_T")


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


def _blob_path(ref: ImageReference, digest: str) -> str:
    """The blobs/ path of `digest`, refused before any request when it is no valid digest."""
    return "blobs/" + checked_digest(digest, f"{ref.registry}/{ref.repository}")


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
        self._auth = Authorizer(token_cache_bytes)

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
        path = _blob_path(ref, digest)

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
        path = _blob_path(ref, digest)

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
        path = _blob_path(ref, digest)

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
        """The registry's answer once the authorization flow is done with it, open for the caller.

        Drives `Authorizer.flow`: sends what it asks for and tells it the answers. Only the latest
        answer stays open, so the flow's end leaves the registry's last answer to return."""
        flow = self._auth.flow(ask.endpoint, url, credentials)
        step = next(flow)
        response: httpx.Response | None = None
        try:
            while True:
                if response is not None:
                    response.close()
                response = self._send_step(ask, headers, step, deadline)
                if step.token:
                    reply = self._token_reply(ask, response, deadline)
                else:
                    reply = Reply(response.status_code, response.request.url, response.headers)
                try:
                    step = flow.send(reply)
                except StopIteration:
                    return response
        except BaseException:
            if response is not None:
                response.close()
            raise

    def _send_step(
        self, ask: Ask, headers: Mapping[str, str], step: Send, deadline: Deadline
    ) -> httpx.Response:
        if not step.token:
            return self._exchanger.send(ask, ask.method, step.url, headers, step.authorization, deadline)
        method = "GET" if step.form is None else "POST"
        token_ask = replace(ask, method=method, path="", kind="token", accept=None)
        form_headers = {} if step.form is None else {"Content-Type": "application/x-www-form-urlencoded"}
        return self._exchanger.send(
            token_ask, method, step.url, form_headers, step.authorization, deadline, step.form
        )

    @staticmethod
    def _token_reply(ask: Ask, response: httpx.Response, deadline: Deadline) -> Reply:
        """A token service's answer, its body read when it is a 2xx one."""
        body = b""
        if 200 <= response.status_code < 300:
            answer = f"{token_service(ask.endpoint, response.request.url)}: the token answer"
            body, _ = read_capped(
                response, TOKEN_BODY_CAP, None, answer, deadline, too_large=_oversized_token
            )
        return Reply(response.status_code, response.request.url, response.headers, body)


def _oversized_token(message: str, _size: int | None) -> RegistryError:
    """A token answer over the cap: registry trouble (onResolutionError), not an image problem."""
    return RegistryUnreachable(message)
