"""Serving the WSGI app over TLS 1.2+ with keep-alive: gunicorn's arbiter, pullcheck's own worker.

Each worker's main thread owns every connection that is not being answered: it does the TLS handshake
without blocking and reads the whole request (headers and body) into memory, with a deadline and a size
cap, before a request thread sees it. A client that stalls in the handshake, trickles its headers or
sends nothing costs a file descriptor until its deadline, never a request thread (gunicorn's gthread
worker does the handshake and reads in the request thread, without a deadline).

The certificate and key are looked at on every new connection and re-read when either file changed,
so a rotated Secret is served without a restart; connections already open keep their session.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from gunicorn import http as gunicorn_http
from gunicorn.app.base import BaseApplication
from gunicorn.http import wsgi
from gunicorn.sock import ssl_context
from gunicorn.workers.base import Worker

from webhook.admission import MAX_REVIEW_BYTES
from webhook.errors import ConfigError
from webhook.files import file_stamp
from webhook.logs import logging_config, quiet_records

log = logging.getLogger(__name__)

WSGIApp = Callable[..., Any]

MAX_HEAD_BYTES = 64 * 1024  # request line and headers


@dataclass(frozen=True)
class ServerOptions:
    host: str
    port: int
    cert_file: str
    key_file: str
    workers: int = 1  # processes; each has its own caches and node view
    threads: int = 16  # concurrent admissions per process
    keepalive: int = 75  # seconds; the apiserver reuses its connections
    timeout: int = 60  # a worker silent for this long is restarted
    log_level: str = "INFO"
    request_seconds: float = 10.0  # handshake and whole request, from the first byte; then closed
    max_body_bytes: int = MAX_REVIEW_BYTES
    # Bytes of requests not yet whole, per worker: past it the connection holding most is closed.
    buffered_bytes: int = 32 * 1024 * 1024


class CertificateReloader:
    """A server SSLContext for the current certificate and key files.

    A context is never changed once built: a new one replaces it, so a handshake never sees a new
    certificate with the old key. A half-written pair (the key updated before the certificate) fails
    to load; the old context stays until the next connection finds a pair that loads."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self._lock = threading.Lock()
        try:
            self._stamps = (file_stamp(cert_file), file_stamp(key_file))
            self._context = self._build()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot serve TLS with {cert_file} and {key_file}: {exc}") from None

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def context(self) -> ssl.SSLContext:
        try:
            stamps = (file_stamp(self.cert_file), file_stamp(self.key_file))
        except OSError:
            return self._context  # mid-rotation: a file is briefly missing
        if stamps == self._stamps:
            return self._context
        with self._lock:
            if stamps != self._stamps:
                try:
                    self._context = self._build()
                    self._stamps = stamps
                    log.info("serving the new certificate from %s", self.cert_file)
                except (OSError, ssl.SSLError) as exc:
                    log.warning("new certificate not loaded yet (%s); serving the previous one", exc)
            return self._context


_RECV_BYTES = 256 * 1024
_SWEEP_SECONDS = 0.25  # how often deadlines are looked at
_WRITE_SECONDS = 10.0  # a client that does not read its answer holds a request thread this long at most


class _Connection:
    """One client connection and the bytes of its next request(s)."""

    __slots__ = (
        "sock", "client", "server", "handshaken", "buffer", "scanned", "head_end", "body_bytes", "deadline",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, client: Any, server: Any, deadline: float) -> None:
        self.sock = sock
        self.client = client
        self.server = server
        self.handshaken = not isinstance(sock, ssl.SSLSocket)
        self.buffer = bytearray()
        self.scanned = 0  # bytes of the buffer known to hold no end of the head
        self.head_end = -1  # where the body of the buffered request starts, once its headers are in
        self.body_bytes = 0
        self.deadline = deadline

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _Refusal(Exception):
    """A request refused before it reaches the application: the status line and reason to answer."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _body_bytes(head: bytes) -> tuple[int, bool]:
    """The body length a request head announces, and whether the client waits for 100 Continue."""
    length = None
    expects_continue = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            raise _Refusal("411 Length Required", "a body needs a Content-Length")
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit() or (length is not None and int(value) != length):
                raise _Refusal("400 Bad Request", "invalid Content-Length")
            length = int(value)
        elif name == b"expect":
            expects_continue = value.strip().lower() == b"100-continue"
    return length or 0, expects_continue


class BufferingWorker(Worker):  # type: ignore[misc]
    """A gunicorn worker: connections wait in the main thread's poller until a whole request is in.

    Request threads only run the application and write its answer (bounded by a send timeout); the
    handshake, the request's bytes and idle keep-alive connections never occupy one."""

    request_seconds = ServerOptions.request_seconds
    max_body_bytes = ServerOptions.max_body_bytes
    buffered_bytes = ServerOptions.buffered_bytes

    def init_process(self) -> None:
        self.poller = selectors.DefaultSelector()
        self.pool = ThreadPoolExecutor(max_workers=self.cfg.threads, thread_name_prefix="request")
        self.finished: queue.SimpleQueue[tuple[_Connection, bool]] = queue.SimpleQueue()
        self.wake_reader, self.wake_writer = os.pipe()
        os.set_blocking(self.wake_reader, False)
        os.set_blocking(self.wake_writer, False)
        self.waiting: dict[_Connection, None] = {}  # not being answered, oldest first
        self.busy = 0
        self.buffered = 0  # bytes in the buffers of all connections
        super().init_process()

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self.wake_writer, b"\0")
        except OSError:
            pass  # the pipe is full: the main thread is being woken anyway

    def run(self) -> None:
        for listener in self.sockets:
            listener.setblocking(False)
            self.poller.register(listener, selectors.EVENT_READ, self._accept)
        self.poller.register(self.wake_reader, selectors.EVENT_READ, self._take_finished)
        next_sweep = 0.0
        while self.alive:
            self._dispatch_events(_SWEEP_SECONDS)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + _SWEEP_SECONDS
                self.notify()
                self._expire(now)
                if self.ppid != os.getppid():
                    self.log.info("parent changed, shutting down: %s", self)
                    break
        self._stop()

    def _dispatch_events(self, timeout: float) -> None:
        try:
            events = self.poller.select(timeout)
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise
            return
        for key, mask in events:
            key.data(key.fileobj, mask)

    def _stop(self) -> None:
        for listener in self.sockets:
            self.poller.unregister(listener)
            listener.close()
        for conn in list(self.waiting):
            self._drop(conn)
        limit = time.monotonic() + self.cfg.graceful_timeout
        while self.busy and time.monotonic() < limit:
            self.notify()
            self._dispatch_events(_SWEEP_SECONDS)
        self.pool.shutdown(wait=False)

    # -- the main thread: accept, handshake, read, dispatch --

    def _accept(self, listener: socket.socket, _mask: int) -> None:
        while True:
            try:
                sock, client = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # out of file descriptors: the deadlines free some
                self.log.warning("accept failed: %s", exc)
                return
            if len(self.waiting) + self.busy >= self.cfg.worker_connections and self.waiting:
                self._drop(next(iter(self.waiting)))  # the longest waiting goes first
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.cfg.is_ssl:  # the current certificate: looked up per connection
                sock = ssl_context(self.cfg).wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
            conn = _Connection(sock, client, listener.getsockname(), time.monotonic() + self.request_seconds)
            self.waiting[conn] = None
            self.poller.register(sock, selectors.EVENT_READ, lambda _sock, mask, c=conn: self._read(c))
            self._read(conn)  # the ClientHello (or request) is often already there

    def _read(self, conn: _Connection) -> None:
        sock = conn.sock
        idle = not conn.buffer and conn.handshaken
        try:
            if not conn.handshaken and isinstance(sock, ssl.SSLSocket):
                sock.do_handshake()
                conn.handshaken = True
                self.poller.modify(sock, selectors.EVENT_READ, lambda _s, _m, c=conn: self._read(c))
            while not self._request_complete(conn):
                chunk = sock.recv(_RECV_BYTES)
                if not chunk:
                    self._drop(conn)
                    return
                conn.buffer += chunk
                self.buffered += len(chunk)
        except _Refusal as refusal:
            self._refuse(conn, refusal)
            return
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLWantWriteError:
            self.poller.modify(
                sock, selectors.EVENT_READ | selectors.EVENT_WRITE, lambda _s, _m, c=conn: self._read(c)
            )
            return
        except (BlockingIOError, InterruptedError):
            pass
        except (OSError, ValueError):  # ssl.SSLError is an OSError: a failed handshake, a reset
            self._drop(conn)
            return
        if self.buffered > self.buffered_bytes:
            largest = max(self.waiting, key=lambda c: len(c.buffer))
            self.log.warning(
                "%d bytes of unfinished requests: closing a connection holding %d",
                self.buffered,
                len(largest.buffer),
            )
            self._drop(largest)
            if largest is conn:
                return
        if idle and conn.buffer:
            conn.deadline = time.monotonic() + self.request_seconds  # a new request started
        self._advance(conn)

    def _advance(self, conn: _Connection) -> None:
        """Hand a whole request to a request thread, or refuse it, or wait for more bytes."""
        try:
            if self._request_complete(conn):
                self._dispatch(conn)
        except _Refusal as refusal:
            self._refuse(conn, refusal)
        except OSError:  # the 100 Continue could not be sent
            self._drop(conn)

    def _request_complete(self, conn: _Connection) -> bool:
        """Whether the buffer holds a whole request; its head is checked once, when it is in."""
        if conn.head_end < 0:
            end = conn.buffer.find(b"\r\n\r\n", conn.scanned, MAX_HEAD_BYTES + 4)
            if end < 0:
                if len(conn.buffer) > MAX_HEAD_BYTES:
                    raise _Refusal("431 Request Header Fields Too Large", "the request head is too large")
                conn.scanned = max(0, len(conn.buffer) - 3)
                return False
            conn.head_end = end + 4
            conn.body_bytes, expects_continue = _body_bytes(bytes(conn.buffer[:end]))
            if expects_continue and conn.body_bytes <= self.max_body_bytes:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")  # (curl waits a second without it)
        if conn.body_bytes > self.max_body_bytes:
            return True  # the application refuses it from its headers; the body is never read
        return len(conn.buffer) >= conn.head_end + conn.body_bytes

    def _dispatch(self, conn: _Connection) -> None:
        oversized = conn.body_bytes > self.max_body_bytes
        size = conn.head_end if oversized else conn.head_end + conn.body_bytes
        request = bytes(conn.buffer[:size])
        del conn.buffer[:size]
        self.buffered -= size
        conn.scanned, conn.head_end, conn.body_bytes = 0, -1, 0
        self.poller.unregister(conn.sock)
        del self.waiting[conn]
        self.busy += 1
        self.pool.submit(self._answer, conn, request, oversized)

    def _refuse(self, conn: _Connection, refusal: _Refusal) -> None:
        reason = f"{refusal}\n".encode()
        answer = (
            f"HTTP/1.1 {refusal.status}\r\nContent-Type: text/plain\r\nContent-Length: {len(reason)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode() + reason
        try:
            conn.sock.send(answer)  # small enough for an empty socket buffer; best effort
        except (OSError, ValueError):
            pass
        self._drop(conn)

    def _take_finished(self, _pipe: int, _mask: int) -> None:
        try:
            os.read(self.wake_reader, 4096)
        except OSError:
            pass
        while True:
            try:
                conn, keep = self.finished.get_nowait()
            except queue.Empty:
                return
            self.busy -= 1
            if not keep or not self.alive:
                self.buffered -= len(conn.buffer)
                conn.close()
                continue
            conn.sock.setblocking(False)
            self.waiting[conn] = None
            self.poller.register(conn.sock, selectors.EVENT_READ, lambda _s, _m, c=conn: self._read(c))
            seconds = self.request_seconds if conn.buffer else self.cfg.keepalive
            conn.deadline = time.monotonic() + seconds
            self._advance(conn)  # a pipelined request may be in already

    def _expire(self, now: float) -> None:
        for conn in [c for c in self.waiting if c.deadline <= now]:
            self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        self.buffered -= len(conn.buffer)
        del self.waiting[conn]
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.close()

    # -- request threads: run the application on a whole request and write its answer --

    def _answer(self, conn: _Connection, request: bytes, oversized: bool) -> None:
        keep = False
        try:
            conn.sock.settimeout(_WRITE_SECONDS)
            keep = self._run_application(conn, request, oversized)
        except Exception as exc:  # noqa: BLE001 - answered as gunicorn would; the connection closes
            self.log.debug("request failed: %s", exc)
        finally:
            self.finished.put((conn, keep))
            self._wake()

    def _run_application(self, conn: _Connection, request: bytes, oversized: bool) -> bool:
        req = None
        try:
            req = next(gunicorn_http.RequestParser(self.cfg, [request], conn.client))
            response, environ = wsgi.create(req, conn.sock, conn.client, conn.server, self.cfg)
            environ["wsgi.multithread"] = True
            if oversized or not self.alive or not self.cfg.keepalive:
                response.force_close()
            body = self.wsgi(environ, response.start_response)
            try:
                for item in body:
                    response.write(item)
                response.close()
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            return not response.should_close()
        except (OSError, StopIteration):
            return False
        except Exception as exc:  # noqa: BLE001 - a malformed request: gunicorn's 400 (or 500) answer
            self.handle_error(req, conn.sock, conn.client, exc)
            return False


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: ServerOptions, app_factory: Callable[[], WSGIApp]) -> None:
        self.options = options
        self.app_factory = app_factory
        self.reloader = CertificateReloader(options.cert_file, options.key_file)
        super().__init__()

    def load_config(self) -> None:
        reloader = self.reloader
        settings: dict[str, Any] = {
            "bind": [
                f"[{self.options.host}]:{self.options.port}"
                if ":" in self.options.host
                else f"{self.options.host}:{self.options.port}"
            ],
            "worker_class": type(
                "Worker",
                (BufferingWorker,),
                {
                    "request_seconds": self.options.request_seconds,
                    "max_body_bytes": self.options.max_body_bytes,
                },
            ),
            "workers": self.options.workers,
            "threads": self.options.threads,
            "keepalive": self.options.keepalive,
            "timeout": self.options.timeout,
            "graceful_timeout": 10,
            # Each worker listens on a socket of its own: the kernel spreads connections over them
            # (with one shared socket the first worker awake takes most of them).
            "reuse_port": True,
            "certfile": self.options.cert_file,
            "keyfile": self.options.key_file,
            "ssl_context": lambda _config, _default: reloader.context(),
            "logconfig_dict": logging_config(self.options.log_level),
            "accesslog": None,
            "preload_app": False,  # each worker builds its own app: threads do not survive a fork
            "proc_name": "pullcheck",
        }
        if "control_socket_disable" in self.cfg.settings:
            # newer gunicorn's admin socket: one path per user, which concurrent servers would share.
            settings["control_socket_disable"] = True
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> WSGIApp:
        quiet_records()
        return self.app_factory()


def _check_address(host: str, port: int) -> None:
    """One line when the address is taken. Each worker binds a socket of its own (SO_REUSEPORT): one
    that cannot would be restarted for ever, and another server listening with SO_REUSEPORT would share
    the port without a word. A probe without SO_REUSEPORT fails on either."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(options: ServerOptions, app_factory: Callable[[], WSGIApp]) -> int:
    """Serve until SIGTERM or SIGINT; the exit status of the server."""
    _check_address(options.host, options.port)
    application = _Gunicorn(options, app_factory)
    try:
        application.run()
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0
