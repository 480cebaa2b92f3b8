"""`pullcheck serve` under slow and oversized clients, over real sockets on 127.0.0.1.

Clients that stall in the TLS handshake, send nothing, or trickle their headers must not hold the
request threads: a real admission is answered beside 100 of them, and each of them is closed once its
deadline passes. An UPDATE review of two maximal objects is judged; a larger body is refused from its
headers, before it is sent.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness.images import make_layer
from tests.harness.registry import Registry
from tests.harness.serving import Webhook, local_registries, post, review, trust, write_policy
from webhook.admission import MAX_REVIEW_BYTES

pytestmark = pytest.mark.registry

STALLED = 100  # the number of slow clients; the default worker has 16 request threads
_APISERVER_TIMEOUT = 10.0  # the apiserver's default timeoutSeconds for a webhook call
_SERVER_DEADLINE = 30.0  # generous: the server's own request deadline is 10 s
APISERVER_OBJECT_BYTES = 3 * 1024 * 1024


@pytest.fixture(params=[()])
def webhook(
    request: pytest.FixtureRequest, tmp_path: Path, registry: Registry
) -> Iterator[tuple[Webhook, str, ssl.SSLContext]]:
    """pullcheck serve with default settings; `indirect` parametrization adds command-line flags."""
    registry.push_image("slow/app", "v1", [make_layer("slow-clients")])
    policy = write_policy(tmp_path / "policy.yaml", local_registries([registry.host]))
    served = Webhook(tmp_path, "--config", str(policy), "--cert-dir", str(tmp_path / "pki"), *request.param)
    try:
        served.wait_ready(tmp_path / "pki" / "ca.crt")
        yield served, registry.ref("slow/app", "v1"), trust(tmp_path / "pki" / "ca.crt")
    finally:
        served.stop()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=_SERVER_DEADLINE)


def _stalled_clients(port: int, context: ssl.SSLContext) -> list[socket.socket]:
    """A third send one byte of a ClientHello, a third nothing, a third half a request head."""
    stalled = []
    for n in range(STALLED):
        raw = _connect(port)
        if n % 3 == 0:
            raw.sendall(b"\x16")  # the first byte of a TLS record carrying a handshake
            stalled.append(raw)
        elif n % 3 == 1:
            stalled.append(raw)
        else:
            tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
            tls.sendall(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
            stalled.append(tls)
    return stalled


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return True
    except TimeoutError:
        return False


def test_stalled_clients_neither_hold_the_request_threads_nor_stay_forever(
    webhook: tuple[Webhook, str, ssl.SSLContext],
) -> None:
    served, image, context = webhook
    stalled = _stalled_clients(served.port, context)
    try:
        with httpx.Client(base_url=served.url, verify=context, timeout=_APISERVER_TIMEOUT) as client:
            answer = post(client, review(image))
        assert answer["allowed"] is True
        # Each kind of stalled client is closed by the server at its deadline, not left open for good.
        assert all(_closed_by_server(sock) for sock in stalled[:3])
    finally:
        for sock in stalled:
            sock.close()
    with httpx.Client(base_url=served.url, verify=context, timeout=_APISERVER_TIMEOUT) as client:
        assert post(client, review(image))["allowed"] is True


def _update_review(image: str, padding: int) -> dict[str, object]:
    body = review(image)
    request = body["request"]
    assert isinstance(request, dict)
    request["operation"] = "UPDATE"
    old = json.loads(json.dumps(request["object"]))
    request["object"]["metadata"]["annotations"] = {"filler": "n" * padding}
    old["metadata"]["annotations"] = {"filler": "o" * padding}
    request["oldObject"] = old
    return body


def test_an_update_of_two_maximal_objects_is_judged(webhook: tuple[Webhook, str, ssl.SSLContext]) -> None:
    served, image, context = webhook
    body = _update_review(image, APISERVER_OBJECT_BYTES - 512)
    assert len(json.dumps(body)) > 2 * APISERVER_OBJECT_BYTES - 2048
    with httpx.Client(base_url=served.url, verify=context, timeout=_APISERVER_TIMEOUT) as client:
        assert post(client, body)["allowed"] is True


def _head(length_header: str) -> bytes:
    return (
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{length_header}\r\n\r\n"
    ).encode()


def _status(sock: socket.socket) -> int:
    answer = b""
    while b"\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("closed without an answer")
        answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_a_larger_body_is_refused_from_its_headers(webhook: tuple[Webhook, str, ssl.SSLContext]) -> None:
    served, _, context = webhook
    with context.wrap_socket(_connect(served.port), server_hostname="127.0.0.1") as tls:
        tls.sendall(_head(f"Content-Length: {MAX_REVIEW_BYTES + 1}"))  # and not one byte of the body
        assert _status(tls) == 413
    # A body without a length cannot be bounded before it is read: refused too.
    with context.wrap_socket(_connect(served.port), server_hostname="127.0.0.1") as tls:
        tls.sendall(_head("Transfer-Encoding: chunked") + b"10\r\n")
        assert _status(tls) == 411


# 35 MiB through TLS must outlast no request deadline, even on a loaded machine: only the budget closes.
@pytest.mark.parametrize("webhook", [("--request-timeout", "120")], indirect=True)
def test_unfinished_bodies_past_the_worker_budget_cost_the_connection_holding_most(
    webhook: tuple[Webhook, str, ssl.SSLContext],
) -> None:
    served, image, context = webhook
    body = json.dumps(_update_review(image, (MAX_REVIEW_BYTES - 4096) // 2)).encode()
    assert len(body) <= MAX_REVIEW_BYTES
    head = _head(f"Content-Length: {len(body)}")
    senders = []
    for _ in range(5):  # five bodies of 7 MiB, all but their last KiB: past the 32 MiB per worker
        senders.append(context.wrap_socket(_connect(served.port), server_hostname="127.0.0.1"))
    try:
        started = [_send(tls, head + body[:-1024]) for tls in senders]
        answers = [
            _finish(tls, body[-1024:]) if ok else None for tls, ok in zip(senders, started, strict=True)
        ]
    finally:
        for tls in senders:
            tls.close()
    # One connection is closed to bring the worker under its budget; the others are judged.
    assert sorted(answers, key=str) == [200, 200, 200, 200, None]
    assert "bytes of unfinished requests: closing a connection" in served.output()


def _send(tls: ssl.SSLSocket, data: bytes) -> bool:
    try:
        tls.sendall(data)
        return True
    except (ConnectionError, ssl.SSLEOFError):  # closed by the server while sending
        return False


def _finish(tls: ssl.SSLSocket, rest: bytes) -> int | None:
    """The status answered once the rest of the body is sent; None when the server closed the connection."""
    try:
        tls.sendall(rest)
        return _status(tls)
    except (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError, EOFError):
        return None


@pytest.mark.parametrize("webhook", [("--request-timeout", "1")], indirect=True)
def test_the_request_timeout_is_the_operators_to_set(webhook: tuple[Webhook, str, ssl.SSLContext]) -> None:
    served, _, _ = webhook
    with _connect(served.port) as silent:
        silent.settimeout(8)  # under the default 10 s deadline the server would still hold it
        assert silent.recv(1) == b""  # closed by the server, not by our timeout
