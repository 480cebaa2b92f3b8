"""One request exchange with a registry: redirects followed by hand, the network guard, httpx's errors
mapped to ours, and the metrics hook (go-containerregistry's transport layer without the auth).

Everything above this module asks with an `Ask` and gets back an `httpx.Response` or one of the
`webhook.errors` classes, its message one line naming the registry and repository.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from webhook.deadline import Deadline
from webhook.errors import (
    BlockedRegistry,
    DeadlineExceeded,
    NotFound,
    RateLimited,
    RegistryError,
    RegistryUnreachable,
    network_cause,
)
from webhook.netguard import literal_blocked_reason
from webhook.policy import RegistryOptions
from webhook.registry.endpoints import ConnectionFailed, endpoint_ssl_context
from webhook.registry.transport import (
    DEFAULT_CONNECTIONS_PER_ORIGIN,
    RegistryTransport,
    deadline_scope,
)
from webhook.routes import Endpoint

log = logging.getLogger(__name__)

_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also takes '²', which float() and int() refuse
_USER_AGENT = "pullcheck (containerd-compatible registry client)"
_RATE_LIMIT_PREFIXES = ("ratelimit-", "x-ratelimit-", "docker-ratelimit-")


class HeadNotAllowed(RegistryUnreachable):
    """405 to a HEAD: the registry only answers GET (never leaves the client)."""


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
class Ask:
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


def one_line(text: str) -> str:
    return " ".join(text.split())


def hostname(host: str) -> str:
    """'registry:5000' -> 'registry', '[::1]:5000' -> '::1'."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def netloc(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return host if url.port is None else f"{host}:{url.port}"


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def retry_after(headers: httpx.Headers) -> float | None:
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


def rate_limit_headers(headers: httpx.Headers) -> dict[str, str]:
    return {
        name: value
        for name, value in headers.items()
        if name == "retry-after" or name.startswith(_RATE_LIMIT_PREFIXES)
    }


def content_length(headers: httpx.Headers) -> int | None:
    value = headers.get("content-length", "").strip()
    return int(value) if _DIGITS.fullmatch(value) else None


def ask_url(ask: Ask) -> httpx.URL:
    """The URL of `ask` on its endpoint (a mirror's namespace as containerd's `ns` parameter)."""
    endpoint = ask.endpoint
    url = httpx.URL(f"{endpoint.scheme}://{endpoint.host}{endpoint.path}/{quote(ask.repository)}/{ask.path}")
    if endpoint.namespace is not None:
        url = url.copy_merge_params({"ns": endpoint.namespace})
    return url


def status_error(ask: Ask, response: httpx.Response) -> RegistryError:
    """The error for a final answer that is not 2xx."""
    status = response.status_code
    what = f"{ask.where}: {ask.kind} {ask.path.split('/', 1)[1]}"
    if status == 404:
        return NotFound(f"{what} not found")
    if status == 405 and ask.method == "HEAD":
        return HeadNotAllowed(f"{what}: {ask.endpoint.host} does not answer HEAD")
    if status == 429:
        wait = retry_after(response.headers)
        hint = f" (retry after {wait:g}s)" if wait is not None else ""
        return RateLimited(
            f"{what}: rate limited by {ask.endpoint.host}{hint}",
            wait,
            rate_limit_headers(response.headers),
        )
    if status >= 500:
        return RegistryUnreachable(f"{what}: {ask.endpoint.host} answered {status}")
    return RegistryUnreachable(f"{what}: unexpected answer {status} from {ask.endpoint.host}")


@contextlib.contextmanager
def closed_on_error(response: httpx.Response) -> Iterator[None]:
    """Close `response` when the block raises: whoever holds an open response closes it on every path
    (an unclosed one keeps its registry's connection slot)."""
    try:
        yield
    except BaseException:
        response.close()
        raise


class mapped_errors:  # noqa: N801 - used as a function: `with mapped_errors(...)`
    """httpx's errors as ours, one line each, naming the registry and repository (a class, not a
    generator: every request enters it, and a generator-based context manager costs several times more)."""

    __slots__ = ("_where", "_host", "_deadline")

    def __init__(self, where: str, host: str, deadline: Deadline) -> None:
        self._where = where
        self._host = host
        self._deadline = deadline

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        if error is None or not isinstance(error, httpx.HTTPError | httpx.InvalidURL):
            return
        where, host, deadline = self._where, self._host, self._deadline
        if isinstance(error, httpx.PoolTimeout):
            raise DeadlineExceeded(
                f"{where}: every connection to {host} stayed busy until the {deadline.seconds:g}s deadline"
            ) from None
        if isinstance(error, httpx.TimeoutException):
            if deadline.expired():
                raise DeadlineExceeded(
                    f"{where}: {host} did not answer within the {deadline.seconds:g}s deadline"
                ) from None
            raise RegistryUnreachable(f"{where}: {host} timed out") from None
        if isinstance(error, httpx.ConnectError):
            cause = network_cause(error) or one_line(str(error))  # as the Kubernetes client's are read
            raise ConnectionFailed(f"{where}: cannot connect to {host}: {cause}") from None
        if isinstance(error, httpx.RemoteProtocolError):
            # The offending bytes are the registry's choice, so they stay out of the message.
            raise RegistryUnreachable(f"{where}: {host} did not answer with valid HTTP") from None
        detail = one_line(str(error)) or type(error).__name__
        raise RegistryUnreachable(f"{where}: {host}: {detail}") from None


class Exchanger:
    """Sends requests for a client: one transport per TLS setting, shared by every thread."""

    def __init__(
        self,
        registries: Sequence[RegistryOptions] = (),
        *,
        network_guard: bool = False,
        transport: httpx.BaseTransport | None = None,
        on_request: Callable[[RequestEvent], None] | None = None,
        connections_per_origin: int = DEFAULT_CONNECTIONS_PER_ORIGIN,
    ) -> None:
        self._options: dict[str, RegistryOptions] = {}
        for options in registries:
            self._options.setdefault(options.host.lower(), options)
        self._named = set(self._options) | {m.host.lower() for o in registries for m in o.mirrors}
        self._connections_per_origin = connections_per_origin
        self._guard = network_guard
        self._given_transport = transport
        self._on_request = on_request
        self._transports: dict[tuple[str | None, tuple[str, ...], bool, bool], httpx.BaseTransport] = {}
        self._lock = threading.Lock()
        if transport is None:
            for options in registries:  # a bad CA file is a configuration error: say so now
                self._transport(options)

    def options_for(self, host: str) -> RegistryOptions:
        """The policy's options for a registry host, defaults for one it does not list."""
        return self._options.get(host.lower()) or RegistryOptions(host=host)

    def close(self) -> None:
        with self._lock:
            transports = list(self._transports.values())
            self._transports.clear()
        for transport in transports:
            transport.close()
        if self._given_transport is not None:
            self._given_transport.close()

    def check_guard(self, ask: Ask, host: str, options: RegistryOptions) -> None:
        """Refuse literal blocked addresses and metadata names before any request (the transport
        checks resolved names when it connects)."""
        if not self._guard or options.allow_private_network:
            return
        reason = literal_blocked_reason(hostname(host))
        if reason is not None:
            raise BlockedRegistry(f"{ask.where}: {host} is a {reason} address: refused by the network guard")

    def send(
        self,
        ask: Ask,
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
            with closed_on_error(response):
                location = response.headers.get("location")
            response.close()
            if not location:
                raise RegistryUnreachable(f"{ask.where}: redirect without a Location from {netloc(url)}")
            try:
                target = url.join(location)
            except httpx.InvalidURL:
                raise RegistryUnreachable(
                    f"{ask.where}: redirect to an invalid URL from {netloc(url)}"
                ) from None
            if target.scheme not in ("http", "https") or not target.host:
                raise RegistryUnreachable(f"{ask.where}: redirect to a non-HTTP URL from {netloc(url)}")
            if target.scheme == "http" and (
                url.scheme == "https" or not self._connection_options(target, ask.endpoint).insecure
            ):
                raise RegistryUnreachable(
                    f"{ask.where}: refused a redirect from {netloc(url)} to plain http://{netloc(target)}"
                )
            if origin(target) != origin(url):
                if content is not None and response.status_code in (307, 308):
                    # The body goes along on 307/308, and a body here holds a refresh token.
                    raise RegistryUnreachable(
                        f"{ask.where}: refused a redirect of a request with a body from {netloc(url)}"
                        f" to {netloc(target)}"
                    )
                authorization = None
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                method, content, headers = "GET", None, {}
            url = target
        raise RegistryUnreachable(f"{ask.where}: more than {_MAX_REDIRECTS} redirects")

    def _send_once(
        self,
        ask: Ask,
        method: str,
        url: httpx.URL,
        headers: Mapping[str, str],
        authorization: str | None,
        deadline: Deadline,
        content: bytes | None,
    ) -> httpx.Response:
        options = self._connection_options(url, ask.endpoint)
        self.check_guard(ask, netloc(url), options)
        left = deadline.spend(f"{ask.where}: {ask.kind} request")
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
            with mapped_errors(ask.where, netloc(url), deadline), deadline_scope(deadline):
                response = _handle_on_a_sound_connection(self._transport(options), request)
            response.request = request
            status, remaining = response.status_code, response.headers.get("ratelimit-remaining")
            return response
        finally:
            self._report(RequestEvent(self._metric_name(ask.endpoint), method, status, ask.kind, remaining))

    def _connection_options(self, url: httpx.URL, endpoint: Endpoint) -> RegistryOptions:
        """The options for a host reached while serving `endpoint` (itself, a realm, a redirect target).

        Another port of the registry's own host (a token service beside it) shares its options.
        """
        host = netloc(url)
        if host.lower() == endpoint.host.lower():
            return endpoint.options
        listed = self._options.get(host.lower())
        if listed is not None:
            return listed
        if url.host.lower() == hostname(endpoint.host).lower():
            return endpoint.options
        return RegistryOptions(host=host)

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

    def _metric_name(self, endpoint: Endpoint) -> str:
        return endpoint.name if endpoint.name.lower() in self._named else "other"

    def _report(self, event: RequestEvent) -> None:
        if self._on_request is None:
            return
        try:
            self._on_request(event)
        except Exception as error:  # noqa: BLE001 - a metrics hook must not break a resolution
            log.warning("request hook failed: %s", one_line(str(error)))


def _handle_on_a_sound_connection(transport: httpx.BaseTransport, request: httpx.Request) -> httpx.Response:
    """Send `request`; a GET or HEAD that met a broken keep-alive connection is sent once more.

    A registry that sent more bytes than it announced, or closed an idle connection, leaves a pooled
    connection whose next answer is garbage or nothing; the transport drops that connection on the
    protocol error, so the second try goes out on a new one."""
    try:
        return transport.handle_request(request)
    except httpx.RemoteProtocolError:
        if request.method not in ("GET", "HEAD"):
            raise
        return transport.handle_request(request)
