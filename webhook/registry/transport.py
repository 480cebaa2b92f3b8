"""Connections to registries: TLS per host configuration, the network guard at connect time, and reads
bounded by the resolution's deadline.

The guard lives in an httpcore network backend, the one place that sees every TCP connection
(redirect targets and token realms included): it resolves the name once, refuses when any address
is blocked, then connects to an address it checked, so a second DNS answer (rebinding) is never
used.  TLS still verifies the certificate against the name.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import typing
from collections.abc import Iterator
from contextvars import ContextVar

import httpcore
import httpx

from webhook.deadline import Deadline
from webhook.errors import BlockedRegistry, ConfigError
from webhook.netguard import blocked_reason, is_metadata_name, parse_address

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


class RegistryTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool that uses the guarded, deadline-bound backend."""

    def __init__(self, context: ssl.SSLContext, *, guard: bool) -> None:
        super().__init__(verify=context, trust_env=False)
        # httpx offers no public way to choose the network backend; its transport keeps the pool in
        # `_pool` (stable across the httpx versions pyproject allows) and maps httpcore's errors.
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=30.0,
            retries=0,
            network_backend=_Backend(guard),
        )
