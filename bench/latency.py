"""A loopback registry made to behave like a remote one: a proxy that delays every answer, a replay of its
recorded answers whose CPU is not on this machine, and a bare client to measure them with."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

from tests.harness.loopback import LoopbackServer, request_heads


class LatencyProxy(LoopbackServer):
    """Forwards 127.0.0.1:<port> to `upstream`, holding each chunk of the answer back by `delay` seconds."""

    def __init__(self, upstream: tuple[str, int], delay: float, port: int = 0) -> None:
        self.upstream = upstream
        self.delay = delay
        super().__init__(port)

    def serve(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)
        threading.Thread(target=self._pump, args=(client, server, 0.0), daemon=True).start()
        self._pump(server, client, self.delay)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while chunk := source.recv(65536):
                if delay:
                    time.sleep(delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class ReplayingProxy(LoopbackServer):
    """A remote registry whose CPU is elsewhere: 127.0.0.1:<port> answers each request (by method and
    path) with the bytes `upstream` gave the first time it was asked, `delay` seconds after the request.

    On one machine the real registry's own CPU for an answer (2-5 ms on these 2 cores, more than
    pullcheck's for a whole image) competes with the client it serves, which a remote registry does not:
    answers recorded once and replayed here cost next to nothing. A request not seen before is forwarded
    and counted in `forwarded`.
    """

    def __init__(self, upstream: tuple[str, int], delay: float, port: int = 0) -> None:
        self.upstream = upstream
        self.delay = delay
        self.forwarded = 0
        self._answers: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        super().__init__(port)

    def serve(self, client: socket.socket) -> None:
        with client:
            for head in request_heads(client):  # registry reads carry no body
                arrived = time.perf_counter()
                answer = self._answer(head)
                time.sleep(max(0.0, arrived + self.delay - time.perf_counter()))
                client.sendall(answer)

    def _answer(self, head: bytes) -> bytes:
        request_line = head.split(b"\r\n", 1)[0]
        method, path, _ = request_line.split(b" ", 2)
        key = method + b" " + path
        with self._lock:
            answer = self._answers.get(key)
        if answer is None:
            answer = self._forward(head)
            with self._lock:
                self.forwarded += 1
                self._answers[key] = answer
        return answer

    def _forward(self, head: bytes) -> bytes:
        """The upstream's answer, byte for byte but for the `Connection: close` asked for to find its end."""
        lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        with socket.create_connection(self.upstream) as upstream:
            upstream.sendall(b"\r\n".join([*lines, b"Connection: close", b"", b""]))
            answer = b""
            while chunk := upstream.recv(65536):
                answer += chunk
        answer_head, body = answer.split(b"\r\n\r\n", 1)
        kept = [line for line in answer_head.split(b"\r\n") if line.lower() != b"connection: close"]
        return b"\r\n".join(kept) + b"\r\n\r\n" + body


class BareClient:
    """The registry requests pullcheck makes for a cold image (manifest HEAD by tag, GET by digest, then
    the config and the layers' HEADs side by side, a thread per image), with next to no CPU of its own:
    raw HTTP/1.1 on kept-alive sockets, no checks. What a Pod of images costs a client that pays nothing
    but the round trips."""

    _ACCEPT = (
        b"Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
        b"application/vnd.docker.distribution.manifest.list.v2+json, "
        b"application/vnd.docker.distribution.manifest.v2+json\r\n"
    )

    def __init__(self, host: str) -> None:
        address, port = host.rsplit(":", 1)
        self.address = (address, int(port))
        self.host = host.encode()
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()

    def pull_metadata(self, names: list[str]) -> None:
        """Every image's requests, all images at once; `names` are `repository:tag` on this host."""
        threads = [threading.Thread(target=self._image, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _image(self, name: str) -> None:
        repository, tag = name.rsplit(":", 1)
        head, _ = self._request(b"HEAD", f"/v2/{repository}/manifests/{tag}")
        digest = re.search(rb"(?i)docker-content-digest: *(\S+)", head)
        assert digest, head
        _, body = self._request(b"GET", f"/v2/{repository}/manifests/{digest.group(1).decode()}")
        manifest = json.loads(body)
        layers = [
            threading.Thread(
                target=self._request, args=(b"HEAD", f"/v2/{repository}/blobs/{layer['digest']}")
            )
            for layer in manifest["layers"]
        ]
        for thread in layers:
            thread.start()
        self._request(b"GET", f"/v2/{repository}/blobs/{manifest['config']['digest']}")
        for thread in layers:
            thread.join()

    def _request(self, method: bytes, path: str) -> tuple[bytes, bytes]:
        with self._lock:
            sock = self._idle.pop() if self._idle else None
        if sock is None:
            sock = socket.create_connection(self.address)
        sock.sendall(
            method
            + b" "
            + path.encode()
            + b" HTTP/1.1\r\nHost: "
            + self.host
            + b"\r\n"
            + self._ACCEPT
            + b"\r\n"
        )
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, body = received.split(b"\r\n\r\n", 1)
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        if method != b"HEAD" and length:
            while len(body) < int(length.group(1)):
                body += sock.recv(65536)
        with self._lock:
            self._idle.append(sock)
        return head, body
