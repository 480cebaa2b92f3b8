"""A listener on 127.0.0.1 that serves each connection on a thread of its own: the base of the tests' and
the bench's small servers (scripted registries, one that never answers, latency proxies)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator


class LoopbackServer:
    """Accepts on 127.0.0.1:`port` (a free port for 0) and hands each connection to `serve`; `close` closes
    the listener and every connection it took, and a `serve` whose connection closes under it then ends
    quietly."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def serve(self, connection: socket.socket) -> None:
        """What to do with one connection; this one keeps it open and answers nothing."""

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for connection in self.connections:
            connection.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._run, args=(connection,), daemon=True).start()

    def _run(self, connection: socket.socket) -> None:
        try:
            self.serve(connection)
        except OSError:
            if not self.closed:  # a server's own failure shows; a connection closed under it does not
                raise


def request_heads(connection: socket.socket) -> Iterator[bytes]:
    """Each request head a client sends on `connection`, as it comes in (for requests without a body)."""
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            data = connection.recv(65536)
            if not data:
                return
            buffer += data
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        yield head
