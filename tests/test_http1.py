"""The registry client's HTTP/1.1 (webhook/registry/http1.py): heads parsed strictly, bodies framed as
announced, and requests that cannot carry a smuggled header.  Answers come from byte strings handed
out piece by piece, as a socket would, so every split point is exercised without a network."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import httpx
import pytest

from webhook.registry import http1


def _peer(data: bytes, piece: int = 7) -> Callable[[], bytes]:
    """A connection's receive(): `data` in pieces of `piece` bytes, then b"" (closed)."""
    pieces = [data[i : i + piece] for i in range(0, len(data), piece)]

    def receive() -> bytes:
        return pieces.pop(0) if pieces else b""

    return receive


def _answer(data: bytes, method: str = "GET", piece: int = 7) -> tuple[http1.Head, bytes, bytearray]:
    """(head, body, what is left after the body) for `data` answering a `method` request."""
    buffer = bytearray()
    receive = _peer(data, piece)
    head = http1.read_head(buffer, receive, method)
    body = b"".join(http1.body_chunks(head, buffer, receive))
    rest = buffer + b"".join(iter(receive, b""))
    return head, body, rest


@pytest.mark.parametrize("piece", [1, 3, 64, 100_000])
def test_a_content_length_answer_is_read_exactly_and_what_follows_is_left(piece: int) -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nContent-Length: 5\r\n\r\nhelloEXTRA"
    head, body, rest = _answer(data, piece=piece)
    assert (head.status, head.reason, body, bytes(rest)) == (200, b"OK", b"hello", b"EXTRA")
    assert head.keep_alive and head.headers[0] == (b"Content-Type", b"a/b")


@pytest.mark.parametrize("piece", [1, 5, 100_000])
def test_chunks_with_extensions_and_trailers_are_decoded(piece: int) -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nT: v\r\n\r\n"
    )
    head, body, rest = _answer(data, piece=piece)
    assert (body, bytes(rest), head.keep_alive) == (b"hello!", b"", True)


def _chunked(sizes: Iterable[int]) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (size, b"x" * size) for size in sizes) + b"0\r\n\r\n"


@pytest.mark.parametrize(
    "sizes",
    [
        [1] * http1.SMALL_CHUNKS,  # any body may come in this many chunks
        [1448] * 3000,  # a body relayed one TCP segment a chunk
        [1] * 200 + [4096] * 50 + [1] * 800,  # small chunks paid for by large ones
    ],
)
def test_chunks_of_a_reasonable_mean_size_are_read(sizes: list[int]) -> None:
    _, body, _ = _answer(_chunked(sizes), piece=65536)
    assert len(body) == sum(sizes)


def test_a_body_in_too_many_small_chunks_ends_before_it_is_all_read() -> None:
    """One byte a chunk, a million of them, would take seconds of CPU to frame."""
    sizes = [1] * 1_000_000
    read = 0
    data = _chunked(sizes)
    pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)]

    def receive() -> bytes:
        nonlocal read
        piece = pieces.pop(0) if pieces else b""
        read += len(piece)
        return piece

    buffer = bytearray()
    head = http1.read_head(buffer, receive, "GET")
    with pytest.raises(httpx.RemoteProtocolError, match="chunks of under 256 bytes on average"):
        b"".join(http1.body_chunks(head, buffer, receive))
    assert read <= 65536 * 2  # the refusal came within the first pieces, not at the end


def test_tiny_chunks_just_past_the_allowance_are_refused() -> None:
    # 258 one-byte chunks: 256 free, one more for the first 256 bytes of data, the last one too many.
    with pytest.raises(httpx.RemoteProtocolError, match="on average"):
        _answer(_chunked([1] * (http1.SMALL_CHUNKS + 2)), piece=65536)


def test_a_chunk_longer_than_announced_is_a_protocol_error() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n"
    with pytest.raises(httpx.RemoteProtocolError, match="longer than announced"):
        _answer(data)


def test_without_length_or_chunks_the_body_runs_to_the_close_and_the_connection_ends() -> None:
    head, body, _ = _answer(b"HTTP/1.1 200 OK\r\n\r\nall of it")
    assert (body, head.framing, head.keep_alive) == (b"all of it", http1.Framing.CLOSE, False)


@pytest.mark.parametrize(("status", "method"), [(200, "HEAD"), (204, "GET"), (304, "GET")])
def test_answers_without_a_body_read_none_even_when_a_length_is_announced(status: int, method: str) -> None:
    data = b"HTTP/1.1 %d X\r\nContent-Length: 42\r\n\r\n" % status
    head, body, rest = _answer(data, method)
    assert (head.status, body, bytes(rest), head.keep_alive) == (status, b"", b"", True)


def test_a_head_dripped_a_byte_a_read_is_scanned_about_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Searching the whole buffer again after every read made a 60 KiB head sent a byte at a time cost
    some 19 s of CPU; each search now starts where the last one stopped."""
    head_end = http1._HEAD_END
    scanned = 0

    class Counting:
        def search(self, buffer: bytearray, position: int = 0) -> object:
            nonlocal scanned
            scanned += len(buffer) - position
            return head_end.search(buffer, position)

    monkeypatch.setattr(http1, "_HEAD_END", Counting())
    data = b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 20_000 + b"\r\nContent-Length: 2\r\n\r\nok"
    head, body, _ = _answer(data, piece=1)
    assert (head.status, body) == (200, b"ok")
    assert scanned < 5 * len(data)


def test_informational_answers_are_skipped_up_to_the_bound() -> None:
    informational = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    few = b"HTTP/1.1 102 Processing\r\n\r\n" * (http1.INFORMATIONAL_LIMIT - 2)
    head, body, _ = _answer(informational + few + final)
    assert (head.status, body) == (200, b"ok")


def test_one_informational_answer_past_the_bound_ends_the_answer() -> None:
    """Endless 1xx heads would otherwise be parsed as fast as they come until the deadline."""
    endless = b"HTTP/1.1 100 Continue\r\n\r\n" * (http1.INFORMATIONAL_LIMIT + 1)
    with pytest.raises(httpx.RemoteProtocolError, match="more than 5 informational answers"):
        _answer(endless + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize(
    ("data", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", True),  # bare line feeds, as h11 reads them
    ],
)
def test_whether_the_connection_may_carry_another_request(data: bytes, keep_alive: bool) -> None:
    assert _answer(data)[0].keep_alive is keep_alive


def test_a_folded_header_line_is_unfolded() -> None:
    head, _, _ = _answer(b"HTTP/1.1 200 OK\r\nX-A: one\r\n  two\r\nContent-Length: 0\r\n\r\n")
    assert head.headers[0] == (b"X-A", b"one two")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "without sending a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Len", "within an answer's head"),
        (b"HTTP/2 200\r\n\r\n", "status line"),
        (b"ICY 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "invalid header line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "invalid header line"),
        (b"HTTP/1.1 200 OK\r\n folded first\r\n\r\n", "continuation line"),
        (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", "control character"),
        (b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", "control character"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "complete message body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "complete message body"),
    ],
)
def test_a_broken_answer_is_a_protocol_error(data: bytes, message: str) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match=message):
        _answer(data)


def test_identical_repeated_content_lengths_are_one() -> None:
    _, body, _ = _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok")
    assert body == b"ok"


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * (http1.HEAD_LIMIT + 10), "head is over"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"x" * (http1.CHUNK_LINE_LIMIT * 2),
            "chunk size line is too long",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
            + b"T: v\r\n" * (http1.TRAILERS_LIMIT // 3),
            "trailers are over",
        ),
    ],
)
def test_heads_chunk_lines_and_trailers_are_bounded_before_they_are_whole(data: bytes, what: str) -> None:
    # The peer never ends them: the reader must stop at its bound, not wait for more.
    received: list[int] = []
    receive = _peer(data + b"a" * 10 * http1.HEAD_LIMIT, piece=4096)

    def counted() -> bytes:
        chunk = receive()
        received.append(len(chunk))
        return chunk

    buffer = bytearray()
    with pytest.raises(httpx.RemoteProtocolError, match=what):
        head = http1.read_head(buffer, counted, "GET")
        list(http1.body_chunks(head, buffer, counted))
    assert sum(received) < len(data) + 2 * http1.HEAD_LIMIT


def test_a_body_arrives_piece_by_piece_not_once_whole() -> None:
    # A slow drip must reach the caller drop by drop, so its deadline checks run between them.
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"
    buffer = bytearray()
    receive = _peer(data + b"abcdef", piece=len(data) + 2)
    head = http1.read_head(buffer, receive, "GET")
    assert list(http1.body_chunks(head, buffer, receive)) == [b"ab", b"cdef"]


def _request(headers: Iterable[tuple[str, str]], content: bytes | None = None) -> httpx.Request:
    return httpx.Request(
        "POST" if content else "GET",
        "http://registry.test:5000/v2/a/b?ns=x",
        headers=list(headers),
        content=content,
    )


def test_a_request_is_written_in_one_piece_with_its_body() -> None:
    sent = http1.request_bytes(_request([("Accept", "a/b, c/d")], b"grant_type=x"))
    head, _, body = sent.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v2/a/b?ns=x HTTP/1.1"
    assert b"Host: registry.test:5000" in lines and b"Accept: a/b, c/d" in lines
    assert b"Content-Length: 12" in lines and body == b"grant_type=x"


@pytest.mark.parametrize("value", ["token\r\nX-Injected: yes", "token\nX: y", "a\x00b"])
def test_a_header_that_would_split_the_request_is_refused(value: str) -> None:
    request = _request([("Accept", "a/b")])
    request.headers["Authorization"] = value  # a token a hostile token service handed out
    with pytest.raises(httpx.LocalProtocolError, match="Authorization"):
        http1.request_bytes(request)
