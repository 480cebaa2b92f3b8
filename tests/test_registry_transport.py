"""Kept-alive connections of the registry transport against a loopback server that answers as scripted:
a connection is reused only when its last answer ended cleanly and the peer still has it open."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.harness.loopback import LoopbackServer, request_heads
from webhook.deadline import Deadline
from webhook.registry.transport import RegistryTransport, _Connection, deadline_scope, ssl_context

pytestmark = pytest.mark.served

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
Script = Callable[[socket.socket, int], None]  # answers one connection; the int counts connections


class ScriptedServer(LoopbackServer):
    """Hands each connection to `script`, with its number."""

    def __init__(self, script: Script) -> None:
        self._script = script
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def accepted(self) -> int:
        return len(self.connections)

    def serve(self, connection: socket.socket) -> None:
        self._script(connection, self.connections.index(connection) + 1)


def answering(answer: bytes) -> Script:
    """A script that answers every request of its connection with `answer`."""

    def script(connection: socket.socket, _: int) -> None:
        for _head in request_heads(connection):
            connection.sendall(answer)

    return script


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], ScriptedServer]]:
    """Starts scripted servers for a test and closes them, and every connection they took, after it."""
    servers: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def transport() -> Iterator[RegistryTransport]:
    transport = RegistryTransport(ssl_context(None), guard=False)
    yield transport
    transport.close()


def _get(transport: RegistryTransport, url: str) -> bytes:
    response = transport.handle_request(httpx.Request("GET", url, extensions={"timeout": {"read": 5}}))
    try:
        return response.read()
    finally:
        response.close()


def test_one_connection_carries_every_request_while_answers_end_cleanly(
    transport: RegistryTransport, scripted: Callable[[Script], ScriptedServer]
) -> None:
    server = scripted(answering(OK))
    assert [_get(transport, f"{server.url}/v2/{n}") for n in range(5)] == [b"ok"] * 5
    assert server.accepted == 1


def test_a_connection_the_registry_closed_while_idle_is_not_reused(
    transport: RegistryTransport, scripted: Callable[[Script], ScriptedServer]
) -> None:
    answered = threading.Event()

    def answer_once_then_close(connection: socket.socket, _: int) -> None:
        for _head in request_heads(connection):
            connection.sendall(OK)
            connection.close()
            answered.set()
            return

    server = scripted(answer_once_then_close)
    assert _get(transport, f"{server.url}/v2/a") == b"ok"
    answered.wait(5)
    # Without looking first, the second request would go out on the closed connection and fail.
    assert _get(transport, f"{server.url}/v2/b") == b"ok"
    assert server.accepted == 2


def test_bytes_past_an_announced_length_end_the_connection(
    transport: RegistryTransport, scripted: Callable[[Script], ScriptedServer]
) -> None:
    # A registry that sends more than its Content-Length: the surplus would be read as the next answer.
    def overflowing_first(connection: socket.socket, number: int) -> None:
        for _head in request_heads(connection):
            connection.sendall(
                OK + (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfake" if number == 1 else b"")
            )

    server = scripted(overflowing_first)
    assert _get(transport, f"{server.url}/v2/a") == b"ok"
    assert _get(transport, f"{server.url}/v2/b") == b"ok"
    assert server.accepted == 2


def test_an_answer_left_unread_is_never_reused(
    transport: RegistryTransport, scripted: Callable[[Script], ScriptedServer]
) -> None:
    server = scripted(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
    response = transport.handle_request(httpx.Request("GET", f"{server.url}/v2/a"))
    response.close()  # closed before its body was read: its bytes are still on the way
    assert _get(transport, f"{server.url}/v2/b") == b"hello"
    assert server.accepted == 2
    assert transport.slots.in_use() == 0


def test_no_read_after_the_deadline_even_with_bytes_waiting() -> None:
    # A peer dripping a head a byte at a time always has a byte ready for the next short read: past the
    # deadline, the connection must stop reading rather than wait a little for each one.
    ours, theirs = socket.socketpair()
    connection = _Connection(ours, ("http", "registry.test", 5000))
    theirs.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: aaaa")
    try:
        with deadline_scope(Deadline(5)):
            assert connection.receive(None).startswith(b"HTTP/1.1")
        theirs.sendall(b"a")
        with deadline_scope(Deadline(0)), pytest.raises(httpx.ReadTimeout):
            connection.receive(None)
    finally:
        connection.close()
        theirs.close()
