"""Response bodies read with a byte cap, hashed as they arrive and verified against the digest asked for
(go-containerregistry's `verify`): a body over its cap or with the wrong bytes never leaves here.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from webhook import digests
from webhook.deadline import Deadline
from webhook.errors import DigestMismatch, ManifestTooLarge, RegistryError, RegistryUnreachable
from webhook.registry.exchange import content_length, mapped_errors, netloc
from webhook.registry.transport import deadline_scope


def valid_digest(text: str | None) -> str | None:
    """`text` when it is a digest (a Docker-Content-Digest as served), else None."""
    return text if text is not None and digests.is_digest(text) else None


def checked_digest(digest: str, what: str) -> str:
    """`digest` when well formed; a malformed one never reaches a URL, a cache key or a log unquoted."""
    try:
        digests.parse_digest(digest)
    except ValueError as error:
        raise DigestMismatch(f"{what}: {error}") from None
    return digest


def read_capped(
    response: httpx.Response,
    cap: int,
    digest: str | None,
    what: str,
    deadline: Deadline,
    too_large: Callable[[str, int | None], RegistryError] = ManifestTooLarge,
) -> tuple[bytes, str]:
    """The body (at most `cap` bytes, else `too_large`) and its digest in `digest`'s algorithm
    (sha256 without one)."""
    announced = content_length(response.headers)
    if announced is not None and announced > cap:
        raise too_large(f"{what} is {announced} bytes, over the {cap}-byte limit", announced)
    algorithm = digests.parse_digest(digest)[0] if digest is not None else "sha256"
    hasher = digests.new_hasher(algorithm)
    chunks: list[bytes] = []
    total = 0
    with mapped_errors(what, netloc(response.request.url), deadline), deadline_scope(deadline):
        # Chunks as they arrive (re-chunking would buffer a slow drip past the deadline checks); a
        # body already in memory (a test transport's) cannot be streamed again.
        arriving = [response.content] if response.is_stream_consumed else response.iter_raw()
        for chunk in arriving:
            total += len(chunk)
            if total > cap:
                raise too_large(f"{what} is over the {cap}-byte limit", announced)
            hasher.update(chunk)
            chunks.append(chunk)
            deadline.check(what)
    if announced is not None and total != announced:
        raise RegistryUnreachable(f"{what}: the body has {total} bytes, Content-Length said {announced}")
    return b"".join(chunks), f"{algorithm}:{hasher.hexdigest()}"


def read_prefix(response: httpx.Response, length: int, what: str, deadline: Deadline) -> bytes:
    """The body's first `length` bytes; the rest is never read (a registry that ignores Range is cut off)."""
    head = b""
    with mapped_errors(what, netloc(response.request.url), deadline), deadline_scope(deadline):
        arriving = [response.content] if response.is_stream_consumed else response.iter_raw()
        for chunk in arriving:
            head += chunk[: length - len(head)]
            deadline.check(what)
            if len(head) >= length:
                break
    return head


def verified_blob(streamed: str, digest: str, what: str) -> None:
    """Raise unless the bytes read (`streamed`) hash to the blob's `digest`."""
    if streamed != digest:
        raise DigestMismatch(f"{what}: the registry served bytes that hash to {streamed}")


def verified_manifest(data: bytes, content_type: str, streamed: str, wanted: str | None, what: str) -> str:
    """The manifest's digest, checked against `wanted` (pinned, expected or announced) when there is one.

    A signed schema 1 manifest is identified by its payload without signatures, so when the raw
    bytes miss, the digest is taken the way the runtimes take it.
    """
    algorithm = streamed.split(":", 1)[0]
    if wanted is not None and streamed == wanted:
        return wanted
    try:
        digest = digests.manifest_digest(data, content_type, algorithm)
    except ValueError:
        digest = streamed
    if wanted is not None and digest != wanted:
        raise DigestMismatch(f"{what}: expected {wanted}, the bytes served hash to {digest}")
    return digest
