"""Connections to registries: TLS per host configuration, the network guard at connect time, reads
bounded by the resolution's deadline, and a limit of connections per registry origin.

The guard lives in an httpcore network backend, the one place that sees every TCP connection
(redirect targets and token realms included): it resolves the name once, refuses when any address
is blocked, then connects to an address it checked, so a second DNS answer (rebinding) is never
used.  TLS still verifies the certificate against the name.

Connections are counted per origin (scheme, host, port): a request takes one of its origin's slots
before httpcore sees it and gives it back when its response is closed.  httpcore's own pool is then
never full, so it never queues a request (a queued request that timed out left a connection that never
connected in its pool for good), and a registry that stalls fills its own slots, never another's.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
import typing
from collections.abc import Iterator
from contextvars import ContextVar

import httpcore
import httpx

from webhook.deadline import Deadline
from webhook.errors import BlockedRegistry, ConfigError
from webhook.netguard import blocked_reason, is_metadata_name, parse_address

log = logging.getLogger(__name__)

DEFAULT_CONNECTIONS_PER_ORIGIN = 32
# No read may run longer than the longest resolution deadline (60 s): a slot held longer than this
# belongs to a response that was never closed, and is taken back.
STALE_SLOT_SECONDS = 120.0

Origin = tuple[str, str, int | None]

_active_deadline: ContextVar[Deadline | None] = ContextVar("pullcheck_registry_deadline", default=None)
_MIN_TIMEOUT = 0.001  # a zero socket timeout would mean non-blocking, not "already late"


@contextlib.contextmanager
def deadline_scope(deadline: Deadline) -> Iterator[None]:
    """Bound every socket operation of this thread by `deadline` while the block runs."""
    token = _active_deadline.set(deadline)
    try:
        yield
    finally:
        _active_deadline.reset(token)


def _bounded(timeout: float | None) -> float | None:
    deadline = _active_deadline.get()
    if deadline is None:
        return timeout
    left = max(deadline.remaining(), _MIN_TIMEOUT)
    return left if timeout is None else min(timeout, left)


def _lookup(host: str, port: int) -> list[typing.Any]:
    """getaddrinfo(), bounded by the active deadline: a DNS server that never answers holds the
    resolver's own retries (seconds each), so the lookup runs on a thread of its own that is left to
    finish by itself when the deadline comes first."""
    deadline = _active_deadline.get()
    if deadline is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    outcome: list[typing.Any] = []
    done = threading.Event()

    def look_up() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as error:  # noqa: BLE001 - handed to the waiting thread below
            outcome.append(error)
        finally:
            done.set()

    threading.Thread(target=look_up, name="pullcheck-dns", daemon=True).start()
    if not done.wait(max(deadline.remaining(), _MIN_TIMEOUT)):
        raise httpcore.ConnectTimeout(f"cannot resolve {host}: no answer within the deadline")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    answers: list[typing.Any] = outcome[0]
    return answers


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, without repeats."""
    try:
        answers = _lookup(host, port)
    except (socket.gaierror, UnicodeError) as error:
        raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from None
    addresses: list[str] = []
    for *_, sockaddr in answers:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def guarded_addresses(host: str, port: int) -> list[str]:
    """The addresses to connect to for `host`, every one of them allowed; else BlockedRegistry."""
    literal = parse_address(host)
    if literal is not None:
        addresses = [str(literal)]
    elif is_metadata_name(host):
        raise BlockedRegistry(f"{host} is a cloud metadata service: refused by the network guard")
    else:
        addresses = resolve(host, port)
    for address in addresses:
        reason = blocked_reason(address)
        if reason is not None:
            shown = host if literal is not None else f"{host} resolves to {address}, which"
            raise BlockedRegistry(f"{shown} is a {reason} address: refused by the network guard")
    return addresses


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the active deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, _bounded(timeout)))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, guard: bool) -> None:
        self._guard = guard
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if not self._guard:
            # The lookup bounded here as well (socket.create_connection's own one is not).
            addresses = [host] if parse_address(host) is not None else resolve(host, port)
        else:
            addresses = guarded_addresses(host, port)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                stream = self._sockets.connect_tcp(
                    address, port, _bounded(timeout), local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
                continue
            return _DeadlineStream(stream)
        assert failure is not None  # neither lookup returns an empty list
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("registries are reached over TCP only")


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The system CAs plus `ca_file`; TLS 1.2 at least."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise ConfigError(f"cannot load CA file {ca_file}: {reason}") from None
    return context


class _Slot:
    """One request's claim on its origin's connections, given back once (by close or by reclaim)."""

    def __init__(self, slots: OriginSlots, origin: Origin) -> None:
        self.origin = origin
        self.since = time.monotonic()
        self.stream: httpx.SyncByteStream | None = None  # closed when the slot is reclaimed
        self._slots = slots

    def release(self) -> None:
        self._slots.release(self)


class OriginSlots:
    """At most `limit` requests in flight per origin; the table keeps only origins in use."""

    def __init__(self, limit: int, stale_after: float = STALE_SLOT_SECONDS) -> None:
        self.limit = limit
        self.stale_after = stale_after
        self._changed = threading.Condition()
        self._held: dict[Origin, set[_Slot]] = {}

    def acquire(self, origin: Origin, timeout: float | None) -> _Slot:
        """A slot of `origin`, waiting at most `timeout` seconds (None: no limit); else httpx.PoolTimeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while len(self._held.get(origin, ())) >= self.limit:
                self._reclaim_stale(origin)
                if len(self._held.get(origin, ())) < self.limit:
                    break
                left = self.stale_after if end is None else end - time.monotonic()
                if left <= 0:
                    raise httpx.PoolTimeout(f"all {self.limit} connections to this registry are busy")
                self._changed.wait(min(left, self.stale_after))
            slot = _Slot(self, origin)
            self._held.setdefault(origin, set()).add(slot)
            return slot

    def release(self, slot: _Slot) -> None:
        with self._changed:
            held = self._held.get(slot.origin)
            if held is None or slot not in held:
                return  # already given back
            held.discard(slot)
            if not held:
                del self._held[slot.origin]
            self._changed.notify_all()

    def in_use(self) -> int:
        with self._changed:
            return sum(len(held) for held in self._held.values())

    def _reclaim_stale(self, origin: Origin) -> None:
        """Take back slots held past any deadline (a response never closed), closing their streams."""
        now = time.monotonic()
        stale = [s for s in self._held.get(origin, ()) if now - s.since > self.stale_after]
        for slot in stale:
            log.error(
                "took back a connection to %s://%s held for %.0fs: a response was never closed",
                origin[0],
                origin[1],
                now - slot.since,
            )
            self._held[origin].discard(slot)
            if slot.stream is not None:
                with contextlib.suppress(Exception):
                    slot.stream.close()
        if origin in self._held and not self._held[origin]:
            del self._held[origin]


class _SlotReleasingStream(httpx.SyncByteStream):
    """The response body; closing it gives the origin's slot back."""

    def __init__(self, stream: httpx.SyncByteStream, slot: _Slot) -> None:
        self._stream = stream
        self._slot = slot
        slot.stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._slot.release()


class RegistryTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool that uses the guarded, deadline-bound backend, with at
    most `connections_per_origin` requests in flight to any one origin."""

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        guard: bool,
        connections_per_origin: int = DEFAULT_CONNECTIONS_PER_ORIGIN,
        stale_after: float = STALE_SLOT_SECONDS,
    ) -> None:
        super().__init__(verify=context, trust_env=False)
        self.slots = OriginSlots(connections_per_origin, stale_after)
        # httpx offers no public way to choose the network backend; its transport keeps the pool in
        # `_pool` (stable across the httpx versions pyproject allows) and maps httpcore's errors.
        # No limit of its own: the slots above are the limit, so the pool never queues a request.
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=None,
            max_keepalive_connections=64,
            keepalive_expiry=30.0,
            retries=0,
            network_backend=_Backend(guard),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        waited = request.extensions.get("timeout", {}).get("pool")
        slot = self.slots.acquire((request.url.scheme, request.url.host, request.url.port), _bounded(waited))
        try:
            response = super().handle_request(request)
        except BaseException:
            slot.release()
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _SlotReleasingStream(response.stream, slot)
        return response
