"""HTTP/1.1 on one connection, as little of it as a registry client needs: one request at a time, its
answer's head parsed strictly, its body framed by Content-Length, chunks or the connection's end.

A cold image costs four small requests; through httpx's transport, httpcore and h11 they cost more CPU
than everything pullcheck does with the answers.  This module writes a request head in one piece and
reads the answer with a few bytes operations, under the same rules h11 enforces on a response: a head
of at most 64 KiB, header names that are tokens, no control characters in values, one Content-Length
or identical repeats, only the `chunked` transfer coding, bounded chunk-size lines and trailers.  A
registry can send cheaply what costs CPU to frame, so CPU is bounded too: at most 5 informational
answers, chunks of a reasonable mean size, and every byte of a head or line scanned once.
Everything wrong with an answer is an `httpx.RemoteProtocolError`; the connection is then not reused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx

HEAD_LIMIT = 64 * 1024  # bytes of a response head, status line to the blank line
CHUNK_LINE_LIMIT = 1024  # a chunk-size line with its extensions
TRAILERS_LIMIT = 64 * 1024
# Each chunk costs some µs to frame, whatever it carries: a body may come in SMALL_CHUNKS chunks however
# small, and in one more per CHUNK_MEAN_BYTES of data beyond that. Without it a registry sending one
# byte a chunk as fast as they parse holds a core until the deadline (4 MiB of manifest: 16 s of CPU).
SMALL_CHUNKS = 256
CHUNK_MEAN_BYTES = 256
# Informational (1xx) answers before the real one, as Go's net/http (containerd's client) allows: without
# a bound a registry could send them as fast as they parse and hold a core until the deadline.
INFORMATIONAL_LIMIT = 5
READ_SIZE = 64 * 1024

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
# Header lines ending in CRLF, each a token, a colon and a value with no control character but tab.
_PLAIN_FIELDS = re.compile(rb"(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*(?:\r\n|\Z))*")
_FIELD_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")  # horizontal tab and obs-text allowed
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_NO_BODY_STATUS = frozenset({204, 304})

Receive = Callable[[], bytes]  # the next bytes the peer sent, b"" once it closed; raises on timeout


class Framing:
    """How the body of an answer ends."""

    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"  # the body is everything until the peer closes


class Head:
    """A parsed response head."""

    __slots__ = ("status", "reason", "headers", "framing", "length", "keep_alive")

    def __init__(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        framing: str,
        length: int,
        keep_alive: bool,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.framing = framing
        self.length = length  # the Content-Length, for LENGTH framing
        self.keep_alive = keep_alive


def request_bytes(request: httpx.Request) -> bytes:
    """`request` as sent: its head, refused when a field could split it, and its body."""
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    for name, value in request.headers.raw:
        if _TOKEN.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
            # A token or header built from a registry's answer never smuggles a second header in.
            raise httpx.LocalProtocolError(f"refused to send an invalid {name[:40]!r} header")
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    lines.append(request.content)
    return b"".join(lines)


def read_head(buffer: bytearray, receive: Receive, method: str) -> Head:
    """Read and parse one response head from `buffer` and then the connection; what follows the head
    stays in `buffer`.  Informational (1xx) answers are skipped, as every client does, up to a bound."""
    for _ in range(INFORMATIONAL_LIMIT + 1):
        status, reason, headers, version = _next_head(buffer, receive)
        if not 100 <= status < 200:
            break
        if status == 101:
            raise httpx.RemoteProtocolError("the registry switched protocols")
    else:
        raise httpx.RemoteProtocolError(
            f"the registry sent more than {INFORMATIONAL_LIMIT} informational answers before its answer"
        )
    keep_alive = version == 1
    framing, length = Framing.CLOSE, 0
    transfer_codings: list[bytes] = []
    lengths: set[bytes] = set()
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            lengths.update(part.strip() for part in value.split(b","))
        elif lowered == b"transfer-encoding":
            transfer_codings += [part.strip().lower() for part in value.split(b",") if part.strip()]
        elif lowered == b"connection":
            options = {part.strip().lower() for part in value.split(b",")}
            keep_alive = b"close" not in options and (version == 1 or b"keep-alive" in options)
    if method == "HEAD" or status in _NO_BODY_STATUS:
        framing = Framing.NONE
    elif transfer_codings:
        if transfer_codings != [b"chunked"]:
            raise httpx.RemoteProtocolError("unsupported Transfer-Encoding in the registry's answer")
        framing = Framing.CHUNKED
    elif lengths:
        if len(lengths) != 1 or _DIGITS.fullmatch(next(iter(lengths))) is None:
            raise httpx.RemoteProtocolError("invalid Content-Length in the registry's answer")
        framing, length = Framing.LENGTH, int(next(iter(lengths)))
    if framing == Framing.CLOSE:
        keep_alive = False
    return Head(status, reason, headers, framing, length, keep_alive)


def _next_head(buffer: bytearray, receive: Receive) -> tuple[int, bytes, list[tuple[bytes, bytes]], int]:
    searched = 0  # each search starts where the last one gave up, less the 3 bytes of a split end
    while (end := _HEAD_END.search(buffer, max(0, searched - 3))) is None:
        searched = len(buffer)
        if len(buffer) > HEAD_LIMIT:
            raise httpx.RemoteProtocolError(f"the registry's answer head is over {HEAD_LIMIT} bytes")
        data = receive()
        if not data:
            if not buffer:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            raise httpx.RemoteProtocolError("the registry closed the connection within an answer's head")
        buffer += data
    if end.start() > HEAD_LIMIT:
        raise httpx.RemoteProtocolError(f"the registry's answer head is over {HEAD_LIMIT} bytes")
    block = bytes(buffer[: end.start()])
    del buffer[: end.end()]
    status_line, _, fields = block.partition(b"\n")
    matched = _STATUS_LINE.fullmatch(status_line.removesuffix(b"\r"))
    if matched is None:
        raise httpx.RemoteProtocolError("the registry's answer has no valid status line")
    if _PLAIN_FIELDS.fullmatch(fields):
        # Every line a token, a colon and a value without control characters: one check for them all.
        headers = []
        for line in fields.split(b"\r\n") if fields else ():
            name, _, value = line.partition(b":")
            headers.append((name, value.strip(b" \t")))
    else:
        headers = _checked_fields(_LINE_END.split(fields))
    return int(matched.group(2)), matched.group(3) or b"", headers, int(matched.group(1))


def _checked_fields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Header lines one by one: folded lines unfolded, anything else invalid refused."""
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not headers:
                raise httpx.RemoteProtocolError("the registry's answer starts with a continuation line")
            name, value = headers[-1]
            headers[-1] = (name, value + b" " + _checked_value(line.strip(b" \t")))  # obs-fold, unfolded
            continue
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise httpx.RemoteProtocolError("the registry's answer has an invalid header line")
        headers.append((name, _checked_value(value.strip(b" \t"))))
    return headers


def _checked_value(value: bytes) -> bytes:
    if _FIELD_VALUE.fullmatch(value) is None:
        raise httpx.RemoteProtocolError("the registry's answer has a control character in a header")
    return value


def body_chunks(head: Head, buffer: bytearray, receive: Receive) -> Iterator[bytes]:
    """The body's bytes as they arrive (a drip is seen drop by drop); returns once the body is whole,
    what follows it left in `buffer`.  A peer that closes early is a protocol error, except for a body
    framed by the connection's end."""
    if head.framing == Framing.NONE:
        return
    if head.framing == Framing.LENGTH:
        yield from _exactly(head.length, buffer, receive)
    elif head.framing == Framing.CHUNKED:
        yield from _chunked(buffer, receive)
    else:
        if buffer:
            yield bytes(buffer)
            buffer.clear()
        while data := receive():
            yield data


def _exactly(length: int, buffer: bytearray, receive: Receive) -> Iterator[bytes]:
    left = length
    while left:
        if not buffer:
            data = receive()
            if not data:
                raise httpx.RemoteProtocolError(
                    f"peer closed connection without sending complete message body "
                    f"(received {length - left} bytes, expected {length})"
                )
            buffer += data
        piece = bytes(buffer[:left])
        del buffer[:left]
        left -= len(piece)
        yield piece


def _chunked(buffer: bytearray, receive: Receive) -> Iterator[bytes]:
    chunks = data = 0
    while True:
        line = _line(buffer, receive, CHUNK_LINE_LIMIT, "chunk size")
        matched = _CHUNK_SIZE.fullmatch(line)
        if matched is None:
            raise httpx.RemoteProtocolError("the registry's answer has an invalid chunk size")
        size = int(matched.group(1), 16)
        if size == 0:
            break
        chunks, data = chunks + 1, data + size
        if chunks > SMALL_CHUNKS + data // CHUNK_MEAN_BYTES:
            raise httpx.RemoteProtocolError(
                f"the registry's answer comes in chunks of under {CHUNK_MEAN_BYTES} bytes on average"
            )
        yield from _exactly(size, buffer, receive)
        if _line(buffer, receive, CHUNK_LINE_LIMIT, "chunk end"):
            raise httpx.RemoteProtocolError("the registry's chunk is longer than announced")
    trailers = 0
    while line := _line(buffer, receive, TRAILERS_LIMIT, "trailer"):
        trailers += len(line)
        if trailers > TRAILERS_LIMIT:
            raise httpx.RemoteProtocolError(f"the registry's trailers are over {TRAILERS_LIMIT} bytes")


def _line(buffer: bytearray, receive: Receive, limit: int, what: str) -> bytes:
    """One line (without its end) taken from `buffer`, reading as needed, at most `limit` bytes."""
    searched = 0
    while (end := buffer.find(b"\n", searched)) < 0:
        searched = len(buffer)
        if len(buffer) > limit + 1:
            raise httpx.RemoteProtocolError(f"the registry's {what} line is too long")
        data = receive()
        if not data:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        buffer += data
    if end > limit + 1:
        raise httpx.RemoteProtocolError(f"the registry's {what} line is too long")
    line = bytes(buffer[:end]).removesuffix(b"\r")
    del buffer[: end + 1]
    return line
