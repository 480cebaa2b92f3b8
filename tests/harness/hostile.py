"""A hostile registry of the tests' own: a threaded HTTP(S) server on 127.0.0.1 that misbehaves per path.

Routes map a path prefix (the longest one wins) to a behaviour, a function that answers one request
through the handler: answer slowly (headers late, one byte at a time, a body that never ends), send
a giant body or a gzip bomb, lie in its headers, redirect anywhere, challenge with any token realm,
answer 429 or 500. Every request is recorded (method, path, headers: the tests look for leaked
credentials there), with the bytes sent and the connections still open, so a test can tell what the
client asked for, how much it read and whether it hung up.

`LOUD_NETWORK` is the bootstrap `pullcheck serve` runs under in the end-to-end tests: it makes
every connect() to a non-loopback address fail loudly (one line on stderr) and can answer chosen
names from a fake DNS table, so nothing here ever sends a packet off the machine.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.harness import processes
from tests.harness.pki import KeyPair
from tests.harness.registry import free_port

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CHUNK = 64 * 1024

Behaviour = Callable[["Handler"], None]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def small_manifest(note: str = "hostile") -> bytes:
    """A well-formed OCI manifest (its config and layer exist nowhere)."""
    blob = digest_of(note.encode())
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob, "size": 2},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob, "size": 2}
            ],
        }
    ).encode()


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HostileServer

    # -- what behaviours use ------------------------------------------------------------------

    def start(
        self, status: int, headers: Iterable[tuple[str, str]] = (), *, length: int | None = None
    ) -> None:
        """Status line and headers; `length` None means no Content-Length (the body ends at close)."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if length is None:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def send(self, data: bytes) -> bool:
        """Write body bytes; False once the client has gone."""
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        self.server.count_sent(self.path, len(data))
        return True

    def pause(self, seconds: float) -> bool:
        """Wait, but only while the client is still there and the server is not closing."""
        remaining = seconds
        while remaining > 0:
            step = min(0.05, remaining)
            if self.server.closing.is_set() or self._client_gone(step):
                self.close_connection = True
                return False
            remaining -= step
        return True

    def reply(self, status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()) -> None:
        self.start(status, headers, length=len(body))
        if body and self.command != "HEAD":
            self.send(body)

    def _client_gone(self, wait: float) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], wait)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    # -- http.server -------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.connection_opened()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.connection_closed()

    def _dispatch(self) -> None:
        self.server.record(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        self.server.behaviour_for(self.path)(self)

    do_GET = do_HEAD = do_POST = _dispatch  # noqa: N815 - the http.server interface

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        """Silent."""


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, tls: KeyPair | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.scheme = "https" if tls else "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert_file, tls.key_file)
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.routes: dict[str, Behaviour] = {}
        self.seen: list[Seen] = []
        self.sent: dict[str, int] = {}
        self.open_connections = 0
        self.connections = 0
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="hostile-registry", daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def route(self, prefix: str, behaviour: Behaviour) -> HostileServer:
        self.routes[prefix] = behaviour
        return self

    def behaviour_for(self, path: str) -> Behaviour:
        matching = [prefix for prefix in self.routes if path.startswith(prefix)]
        return self.routes[max(matching, key=len)] if matching else not_found

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def count_sent(self, path: str, size: int) -> None:
        with self._lock:
            self.sent[path] = self.sent.get(path, 0) + size

    def connection_opened(self) -> None:
        with self._lock:
            self.open_connections += 1
            self.connections += 1

    def connection_closed(self) -> None:
        with self._lock:
            self.open_connections -= 1

    def requests(self, prefix: str = "/") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path.startswith(prefix)]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is what these tests expect: no traceback."""

    def close(self) -> None:
        self.closing.set()
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


# ---- behaviours -------------------------------------------------------------------------------------


def not_found(handler: Handler) -> None:
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}'
    handler.reply(404, body, [("Content-Type", "application/json")])


def document(
    body: bytes,
    content_type: str | None = OCI_MANIFEST,
    *,
    digest: str | None = "",
    length: int | None | str = "",
    status: int = 200,
    extra: Iterable[tuple[str, str]] = (),
) -> Behaviour:
    """`body` as the answer, headers as given: `digest` '' = the true digest, None = no header; `length`
    '' = the true length, None = no Content-Length (the body ends at close), a number = that lie."""

    def answer(handler: Handler) -> None:
        headers = list(extra)
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        if digest is not None:
            headers.append(("Docker-Content-Digest", digest or digest_of(body)))
        announced = len(body) if length == "" else length
        assert announced is None or isinstance(announced, int)
        handler.start(status, headers, length=announced)
        if handler.command == "HEAD":
            return
        handler.send(body)  # all of it, whatever Content-Length said: the rest lands in the next answer
        if announced is not None and announced > len(body):
            handler.close_connection = True  # the promised rest never comes

    return answer


def status(code: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> Behaviour:
    """The same status every time: 500 forever, 429 with Retry-After, 401 with a challenge."""
    fixed = list(headers)

    def answer(handler: Handler) -> None:
        handler.reply(code, body, fixed)

    return answer


def headers_late(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Accept, read the request, and say nothing for `seconds` (then answer, if still wanted)."""

    def answer(handler: Handler) -> None:
        if handler.pause(seconds) and then is not None:
            then(handler)
        handler.close_connection = True

    return answer


def drip(body: bytes, interval: float = 1.0) -> Behaviour:
    """Headers at once, then the body one byte per `interval` seconds."""

    def answer(handler: Handler) -> None:
        handler.start(
            200,
            [("Content-Type", OCI_MANIFEST), ("Docker-Content-Digest", digest_of(body))],
            length=len(body),
        )
        if handler.command == "HEAD":
            return
        for index in range(len(body)):
            if not handler.send(body[index : index + 1]) or not handler.pause(interval):
                return

    return answer


def endless(interval: float = 0.05) -> Behaviour:
    """A manifest body that never ends: a space every `interval` seconds, no Content-Length."""

    def answer(handler: Handler) -> None:
        handler.start(200, [("Content-Type", OCI_MANIFEST)])
        if handler.command == "HEAD":
            return
        while handler.send(b" ") and handler.pause(interval):
            pass

    return answer


def giant(size: int = 100 * 1024 * 1024, *, announce_length: bool = False) -> Behaviour:
    """`size` bytes of one JSON string, as fast as the client reads; HEAD answers without a digest
    so that the client has to GET the body."""

    def chunks() -> Iterator[bytes]:
        yield b'{"schemaVersion":2,"padding":"'
        left = size - 32
        while left > 0:
            piece = min(_CHUNK, left)
            yield b"x" * piece
            left -= piece
        yield b'"}'

    def answer(handler: Handler) -> None:
        handler.start(200, [("Content-Type", OCI_MANIFEST)], length=size if announce_length else None)
        if handler.command == "HEAD":
            return
        for chunk in chunks():
            if not handler.send(chunk):
                return

    return answer


def tiny_chunks(body: bytes) -> Behaviour:
    """`body` one byte a chunk (Transfer-Encoding: chunked), all sent at once: each chunk costs the client
    its framing, whatever it carries."""

    def answer(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", OCI_MANIFEST)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        if handler.command != "HEAD":
            handler.send(b"".join(b"1\r\n%c\r\n" % byte for byte in body) + b"0\r\n\r\n")

    return answer


def gzip_bomb(expanded: int = 200 * 1024 * 1024) -> tuple[bytes, Behaviour]:
    """(the compressed body, a behaviour serving it with Content-Encoding: gzip).

    It expands to `expanded` bytes of a JSON manifest padded with spaces; the announced digest is that
    of the expanded bytes, so a client that decompressed and hashed the result would be fooled."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    hasher = hashlib.sha256()
    parts = []
    head = small_manifest("bomb")
    for piece in (head, *([b" " * (1024 * 1024)] * (expanded // (1024 * 1024)))):
        hasher.update(piece)
        parts.append(compressor.compress(piece))
    parts.append(compressor.flush())
    body = b"".join(parts)
    headers = [("Content-Encoding", "gzip"), ("Docker-Content-Digest", "sha256:" + hasher.hexdigest())]
    return body, document(body, OCI_MANIFEST, digest=None, extra=headers)


def deep_json(depth: int = 100_000) -> bytes:
    """JSON arrays nested `depth` deep: valid, and deeper than any recursive parser goes."""
    return b"[" * depth + b"]" * depth


def redirect(location: str, code: int = 307) -> Behaviour:
    def answer(handler: Handler) -> None:
        handler.reply(code, b"", [("Location", location)])

    return answer


def bearer_challenge(realm: str, service: str = "hostile") -> Behaviour:
    """401 asking for a token from `realm` unless the request carries a Bearer token."""

    def answer(handler: Handler) -> None:
        if handler.headers.get("Authorization", "").startswith("Bearer "):
            document(small_manifest())(handler)
            return
        challenge = f'Bearer realm="{realm}",service="{service}",scope="repository:app:pull"'
        handler.reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', [("WWW-Authenticate", challenge)])

    return answer


def token(handler: Handler) -> None:
    """A token service that hands anyone a token (and records who asked, in `seen`)."""
    handler.reply(200, b'{"token":"hostile-token","expires_in":300}', [("Content-Type", "application/json")])


def wide_manifest(layers: int, note: str = "wide") -> bytes:
    """A valid OCI manifest with a config and `layers` layers (none of them exists anywhere)."""

    def descriptor(media_type: str, n: int) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": digest_of(b"%s %d" % (note.encode(), n)), "size": 1}

    layer_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", -1),
        "layers": [descriptor(layer_type, n) for n in range(layers)],
    }
    return json.dumps(manifest).encode()


def realm_rotating(server: HostileServer, prefix: str = "/v2/rotating/") -> None:
    """Route `prefix` to a registry that names a new token realm (on `server`) in every challenge and
    refuses every token, beside a token service that fails every other request."""
    challenges = itertools.count()
    tokens = itertools.count()

    def registry(handler: Handler) -> None:
        realm = f"{server.url}/token/{next(challenges)}"
        challenge = f'Bearer realm="{realm}",service="rotating"'
        handler.reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', [("WWW-Authenticate", challenge)])

    def token_service(handler: Handler) -> None:
        if next(tokens) % 2:
            handler.reply(500, b"token service down")
        else:
            token(handler)

    server.route(prefix, registry)
    server.route("/token/", token_service)


# ---- the bootstrap for `pullcheck serve` in end-to-end tests ----------------------------------------

# Run as `python -c LOUD_NETWORK serve ...`. PULLCHECK_TEST_DNS holds {"name": "address"}: those
# names resolve to that address (as a hostile DNS would answer); every other lookup goes to the
# real resolver. A connect() to anything but loopback fails and prints one line to stderr.
LOUD_NETWORK = """
import ipaddress, json, os, socket, sys
_fake = json.loads(os.environ.get("PULLCHECK_TEST_DNS", "{}"))
_real_getaddrinfo = socket.getaddrinfo
_real_connect, _real_connect_ex = socket.socket.connect, socket.socket.connect_ex

def _getaddrinfo(host, port, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if name in _fake:
        address = _fake[name]
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
    return _real_getaddrinfo(host, port, *args, **kwargs)

def _check(address):
    if isinstance(address, tuple):
        try:
            if ipaddress.ip_address(address[0]).is_loopback:
                return
        except ValueError:
            pass
        print(f"LOUD-NETWORK: refused connect to {address[0]}", file=sys.stderr, flush=True)
        raise OSError("connect() off the loopback is disabled in this test")

def _connect(self, address):
    _check(address)
    return _real_connect(self, address)

def _connect_ex(self, address):
    _check(address)
    return _real_connect_ex(self, address)

socket.getaddrinfo = _getaddrinfo
socket.socket.connect = _connect
socket.socket.connect_ex = _connect_ex
from webhook.cli import main
sys.exit(main(sys.argv[1:]))
"""


def review(
    *images: str, namespace: str = "default", uid: str = "0d3f7c9e-0000-4000-8000-000000000006"
) -> dict[str, Any]:
    """An AdmissionReview of a Pod with one container per image."""
    spec = {"containers": [{"name": f"c{n}", "image": image} for n, image in enumerate(images)]}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": namespace,
            "object": {"metadata": {"name": "p", "namespace": namespace}, "spec": spec},
        },
    }


class LoudServe:
    """`pullcheck serve` (gunicorn, TLS, 127.0.0.1) under LOUD_NETWORK, its output in a file.

    The worker's threads, open file descriptors and peak memory are read from /proc."""

    def __init__(
        self,
        workdir: Path,
        policy: Path,
        *args: str,
        dns: dict[str, str] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.trusted = ca_file  # the CA of a --cert given in `args`; else the generated one
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.pki = workdir / f"pki-{self.port}"
        self.log = workdir / f"serve-{self.port}.log"
        command = [sys.executable, "-c", LOUD_NETWORK, "serve", "--port", str(self.port)]
        command += ["--config", str(policy), "--cert-dir", str(self.pki), *args]
        env = {**os.environ, "PULLCHECK_TEST_DNS": json.dumps(dns or {})}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    @property
    def ca_file(self) -> Path:
        return self.trusted or self.pki / "ca.crt"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, timeout: float) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, verify=ssl.create_default_context(cafile=str(self.ca_file)), timeout=timeout
        )

    def wait_ready(self, seconds: float = 30.0) -> LoudServe:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"pullcheck serve exited {self.process.returncode}:\n{self.output()}")
            try:
                with self.client(2) as client:
                    if client.get("/readyz").status_code == 200 and self.worker() is not None:
                        return self
            except (httpx.TransportError, OSError):  # the CA file may not be written yet
                pass
            time.sleep(0.2)
        raise AssertionError(f"pullcheck serve did not become ready:\n{self.output()}")

    def worker(self) -> int | None:
        """The gunicorn worker's pid (one worker)."""
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.worker()}/task"))

    def sockets(self) -> int:
        """Open sockets of the worker (listening and accepted ones included)."""
        fd_dir = Path(f"/proc/{self.worker()}/fd")
        count = 0
        for fd in fd_dir.iterdir():
            try:
                count += os.readlink(fd).startswith("socket:")
            except OSError:
                continue
        return count

    def memory_kib(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.worker()}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for the worker")

    def refused_connects(self) -> list[str]:
        return [line for line in self.output().splitlines() if line.startswith("LOUD-NETWORK:")]

    def stop(self) -> None:
        processes.stop(self.process)
