"""Listening sockets on loopback that nobody should connect to, and a count of who did."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def loopback_sink(address: str) -> Iterator[socket.socket]:
    """A non-blocking listener on `address` (127.0.0.1, 127.0.0.2, ...), port chosen by the system."""
    listener = socket.create_server((address, 0))
    listener.setblocking(False)
    try:
        yield listener
    finally:
        listener.close()


def accepted(listener: socket.socket) -> int:
    """How many connections reached the sink since the last look (each is closed at once)."""
    count = 0
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1
