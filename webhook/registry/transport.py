"""Connections to registries: TLS per host configuration, the network guard at connect time, reads
bounded by the resolution's deadline, a limit of connections per registry origin, and connections kept
alive per origin.  The HTTP/1.1 spoken on them is http1.py's; httpx's Request and Response stay the
interface, so the rest of the client (and a test's MockTransport) sees the same objects.

The guard sits where every TCP connection is made (redirect targets and token realms included): it
resolves the name once, refuses when any address is blocked, then connects to an address it checked,
so a second DNS answer (rebinding) is never used.  TLS still verifies the certificate against the name.

Connections are counted per origin (scheme, host, port): a request takes one of its origin's slots
before it is sent and gives it back when its response is closed, so a registry that stalls fills its
own slots, never another's; a request that finds them all busy waits until its deadline at most.
A connection goes back to the pool only when its answer was read whole and nothing came after it.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
import typing
from collections.abc import Iterator
from contextvars import ContextVar

import httpx

from webhook.deadline import Deadline
from webhook.errors import BlockedRegistry, ConfigError
from webhook.netguard import blocked_reason, is_metadata_name, parse_address
from webhook.registry import http1

log = logging.getLogger(__name__)

DEFAULT_CONNECTIONS_PER_ORIGIN = 32
# No read may run longer than the longest resolution deadline (60 s): a slot held longer than this
# belongs to a response that was never closed, and is taken back.
STALE_SLOT_SECONDS = 120.0
KEEPALIVE_SECONDS = 30.0  # an idle connection older than this is closed, not reused
MAX_IDLE_CONNECTIONS = 64
SWEEP_SECONDS = 1.0  # idle connections are looked over at most this often

Origin = tuple[str, str, int | None]

_active_deadline: ContextVar[Deadline | None] = ContextVar("pullcheck_registry_deadline", default=None)
_MIN_TIMEOUT = 0.001  # a zero socket timeout would mean non-blocking, not "already late"


class deadline_scope:  # noqa: N801 - used as a function: `with deadline_scope(deadline):`
    """Bound every socket operation of this thread by `deadline` while the block runs (a class: every
    request and body read enters it)."""

    __slots__ = ("_deadline", "_token")

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline

    def __enter__(self) -> None:
        self._token = _active_deadline.set(self._deadline)

    def __exit__(self, *_: object) -> None:
        _active_deadline.reset(self._token)


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
        raise httpx.ConnectTimeout(f"cannot resolve {host}: no answer within the deadline")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    answers: list[typing.Any] = outcome[0]
    return answers


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, without repeats."""
    try:
        answers = _lookup(host, port)
    except (socket.gaierror, UnicodeError) as error:
        raise httpx.ConnectError(f"cannot resolve {host}: {error}") from None
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


class _Connection:
    """One connection to an origin, and the bytes read past the last answer."""

    __slots__ = ("sock", "origin", "buffer", "idle_since", "answered")

    def __init__(self, sock: socket.socket, origin: Origin) -> None:
        self.sock = sock
        self.origin = origin
        self.buffer = bytearray()
        self.idle_since = 0.0
        self.answered = False  # it carried an answer before: a peer may have closed it meanwhile

    def receive(self, timeout: float | None) -> bytes:
        """The next bytes the peer sends (b"" once it closed), waiting at most until the deadline."""
        deadline = _active_deadline.get()
        if deadline is not None and deadline.expired():
            # Not even a short wait: a peer dripping a head byte by byte would get one after another.
            raise httpx.ReadTimeout("the registry did not answer in time")
        try:
            self.sock.settimeout(_bounded(timeout))
            return self.sock.recv(http1.READ_SIZE)
        except TimeoutError as error:
            raise httpx.ReadTimeout("the registry did not answer in time") from error
        except OSError as error:
            raise httpx.ReadError(str(error) or type(error).__name__) from error

    def send(self, data: bytes, timeout: float | None) -> None:
        try:
            self.sock.settimeout(_bounded(timeout))
            self.sock.sendall(data)
        except TimeoutError as error:
            raise httpx.WriteTimeout("the registry did not take the request in time") from error
        except OSError as error:
            raise httpx.WriteError(str(error) or type(error).__name__) from error

    def expired(self, now: float) -> bool:
        return now - self.idle_since > KEEPALIVE_SECONDS

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _readable(connections: list[_Connection]) -> list[_Connection]:
    """The connections with something to read (the peer closed, or sent bytes nobody asked for), or
    closed already: an idle keep-alive connection has neither, so these are unusable.  poll(), not
    select(): a worker holding a thousand client connections has descriptors past select()'s limit."""
    if not connections:
        return []
    poller = select.poll()
    unusable: list[_Connection] = []
    by_descriptor: dict[int, _Connection] = {}
    for connection in connections:
        descriptor = connection.sock.fileno()
        if descriptor < 0:
            unusable.append(connection)
        else:
            by_descriptor[descriptor] = connection
            poller.register(descriptor, select.POLLIN)
    return unusable + [by_descriptor[descriptor] for descriptor, _ in poller.poll(0)]


class _Body(httpx.SyncByteStream):
    """An answer's body read from its connection; closing it gives the connection back to the pool when
    the body was read whole and the connection may carry another request, and gives the slot back."""

    def __init__(
        self,
        transport: RegistryTransport,
        connection: _Connection,
        head: http1.Head,
        slot: _Slot,
        timeout: float | None,
    ) -> None:
        self._transport = transport
        self._connection = connection
        self._head = head
        self._slot = slot
        self._timeout = timeout
        self._whole = head.framing == http1.Framing.NONE
        self._closed = False
        slot.stream = self

    def __iter__(self) -> Iterator[bytes]:
        connection = self._connection
        yield from http1.body_chunks(self._head, connection.buffer, lambda: connection.receive(self._timeout))
        self._whole = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._whole and self._head.keep_alive:
                self._transport.keep(self._connection)
            else:
                self._connection.close()
        finally:
            self._slot.release()


class RegistryTransport(httpx.BaseTransport):
    """HTTP/1.1 to registries over guarded, deadline-bound connections kept alive per origin, with at
    most `connections_per_origin` requests in flight to any one origin."""

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        guard: bool,
        connections_per_origin: int = DEFAULT_CONNECTIONS_PER_ORIGIN,
        stale_after: float = STALE_SLOT_SECONDS,
    ) -> None:
        self.slots = OriginSlots(connections_per_origin, stale_after)
        self._context = context
        self._guard = guard
        self._idle: dict[Origin, list[_Connection]] = {}
        self._idle_count = 0
        self._swept = 0.0
        self._lock = threading.Lock()
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        origin = (url.scheme, url.host, url.port)
        slot = self.slots.acquire(origin, _bounded(timeouts.get("pool")))
        try:
            connection = self._idle_connection(origin) or self._connect(origin, timeouts.get("connect"))
            try:
                head = self._exchange(connection, request, timeouts)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            slot.release()
            raise
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=_Body(self, connection, head, slot, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
            request=request,
        )

    def _exchange(
        self, connection: _Connection, request: httpx.Request, timeouts: dict[str, float]
    ) -> http1.Head:
        """Send `request` on `connection` and read its answer's head."""
        connection.send(http1.request_bytes(request), timeouts.get("write"))
        read = timeouts.get("read")
        answered = connection.answered
        connection.answered = True
        try:
            return http1.read_head(connection.buffer, lambda: connection.receive(read), request.method)
        except httpx.ReadError as error:
            if answered and not connection.buffer:
                # A kept-alive connection the peer dropped meanwhile: the caller may send it again.
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.") from error
            raise

    def keep(self, connection: _Connection) -> None:
        """Keep `connection` for the origin's next request, unless the pool is full or closed."""
        if connection.buffer:
            connection.close()  # the registry sent more than it announced: the next answer is garbage
            return
        now = time.monotonic()
        connection.idle_since = now
        with self._lock:
            unusable = self._take_unusable(now) if now - self._swept > SWEEP_SECONDS else []
            if not self._closed and self._idle_count < MAX_IDLE_CONNECTIONS:
                self._idle.setdefault(connection.origin, []).append(connection)
                self._idle_count += 1
            else:
                unusable.append(connection)
        for each in unusable:
            each.close()

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        """The origin's most recently used kept-alive connection still fit for a request."""
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                if not idle:
                    return None
                connection = idle.pop()
                self._idle_count -= 1
                if not idle:
                    del self._idle[origin]
            if not connection.expired(now) and not _readable([connection]):
                return connection
            connection.close()

    def _take_unusable(self, now: float) -> list[_Connection]:
        """Idle connections past their keep-alive, or that the peer closed or wrote to while idle (a
        registry's close leaves our end open until we look); taken out of the pool for closing."""
        self._swept = now
        idle = [connection for connections in self._idle.values() for connection in connections]
        unusable = {c for c in idle if c.expired(now)} | set(_readable(idle))
        if not unusable:
            return []
        for origin in list(self._idle):
            kept = [c for c in self._idle[origin] if c not in unusable]
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]
        self._idle_count -= len(unusable)
        return list(unusable)

    def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        port = port or (443 if scheme == "https" else 80)
        if not self._guard:
            # The lookup bounded here as well (socket.create_connection's own one is not).
            addresses = [host] if parse_address(host) is not None else resolve(host, port)
        else:
            addresses = guarded_addresses(host, port)
        failure: httpx.TransportError | None = None
        for address in addresses:
            try:
                sock = socket.create_connection((address, port), _bounded(timeout))
            except TimeoutError as error:
                failure = httpx.ConnectTimeout(f"cannot connect to {address} in time")
                failure.__cause__ = error
                continue
            except OSError as error:
                failure = httpx.ConnectError(str(error) or type(error).__name__)
                failure.__cause__ = error
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._start_tls(sock, host, timeout)
            return _Connection(sock, origin)
        assert failure is not None  # neither lookup returns an empty list
        raise failure

    def _start_tls(self, sock: socket.socket, host: str, timeout: float | None) -> socket.socket:
        """TLS over `sock`, the certificate verified against the name (never the address connected to)."""
        try:
            secure = self._context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
            secure.settimeout(_bounded(timeout))
            secure.do_handshake()
        except TimeoutError as error:
            sock.close()
            raise httpx.ConnectTimeout(f"TLS handshake with {host} did not finish in time") from error
        except (OSError, ssl.SSLError) as error:
            sock.close()
            raise httpx.ConnectError(str(error) or type(error).__name__) from error
        return secure

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [connection for connections in self._idle.values() for connection in connections]
            self._idle.clear()
            self._idle_count = 0
        for connection in idle:
            connection.close()
