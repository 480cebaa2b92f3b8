"""Content digests as the runtimes check them (opencontainers/go-digest), and schema 1 payloads.

Runtimes accept sha256, sha384 and sha512 with lower-case hex of exactly the algorithm's length.
A signed schema 1 manifest is identified by the digest of its payload (the body with the JWS
signatures cut out the way docker/libtrust does), not of the bytes served.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any, Final, Protocol

from webhook import mediatypes as mt
from webhook.text import printable

ALGORITHMS: Final = {"sha256": 64, "sha384": 96, "sha512": 128}  # algorithm -> hex length

_HEX = re.compile(r"[0-9a-f]+", re.ASCII)
# go-digest's DigestRegexp: decides "unsupported algorithm" versus "malformed" for unknown algorithms.
_WELL_FORMED = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", re.ASCII)
_SHOWN_MAX = 80


class Hasher(Protocol):
    """The part of a hashlib object that streaming verification needs."""

    @property
    def name(self) -> str: ...

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def quoted(text: str) -> str:
    """`text` quoted for a one-line message: shortened, control characters escaped."""
    if len(text) > _SHOWN_MAX:
        text = text[:_SHOWN_MAX] + "..."
    return '"' + printable(text).replace('"', '\\"') + '"'


def parse_digest(text: str) -> tuple[str, str]:
    """`sha256:<hex>` -> ('sha256', '<hex>'); ValueError (one line) when the runtimes would refuse it."""
    algorithm, colon, encoded = text.partition(":")
    if not colon or not algorithm or not encoded:
        raise ValueError(f"invalid digest {quoted(text)}: expected <algorithm>:<hex>")
    length = ALGORITHMS.get(algorithm)
    if length is None:
        if _WELL_FORMED.fullmatch(text) is None:
            raise ValueError(f"invalid digest {quoted(text)}: malformed algorithm or encoding")
        supported = ", ".join(ALGORITHMS)
        raise ValueError(f"unsupported digest algorithm {quoted(algorithm)} (supported: {supported})")
    if len(encoded) != length:
        raise ValueError(
            f"invalid digest {quoted(text)}: {algorithm} needs {length} hex characters, got {len(encoded)}"
        )
    if _HEX.fullmatch(encoded) is None:
        raise ValueError(f"invalid digest {quoted(text)}: the hex part must be lower-case 0-9a-f")
    return algorithm, encoded


def is_digest(text: str) -> bool:
    try:
        parse_digest(text)
    except ValueError:
        return False
    return True


def new_hasher(digest_or_algorithm: str) -> Hasher:
    """A fresh hasher for `sha256` or for the algorithm of `sha256:<hex>`."""
    if ":" in digest_or_algorithm:
        algorithm, _ = parse_digest(digest_or_algorithm)
    elif digest_or_algorithm in ALGORITHMS:
        algorithm = digest_or_algorithm
    else:
        raise ValueError(f"unsupported digest algorithm {quoted(digest_or_algorithm)}")
    return hashlib.new(algorithm)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return f"{algorithm}:{hasher.hexdigest()}"


def _jose_decode(text: str) -> bytes:
    """libtrust's joseBase64UrlDecode: unpadded base64url, newlines and spaces ignored."""
    text = text.replace("\n", "").replace(" ", "")
    if len(text) % 4 == 1:
        raise ValueError("illegal base64url length")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as error:
        raise ValueError(f"illegal base64url data: {error}") from None


def _signature_format(block: Any) -> tuple[int, bytes]:
    """(formatLength, formatTail) from one JWS signature's protected header."""
    if not isinstance(block, dict) or not isinstance(block.get("protected"), str):
        raise ValueError("a signature has no protected header")
    try:
        header = json.loads(_jose_decode(block["protected"]))
    except ValueError as error:
        raise ValueError(f"unreadable protected header: {error}") from None
    if not isinstance(header, dict):
        raise ValueError("the protected header is not a JSON object")
    length, tail = header.get("formatLength"), header.get("formatTail")
    # Go reads the JSON number as float64 and truncates it to int.
    if isinstance(length, bool) or not isinstance(length, int | float):
        raise ValueError("the protected header has no formatLength")
    if not isinstance(tail, str):
        raise ValueError("the protected header has no formatTail")
    return int(length), _jose_decode(tail)


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def schema1_payload(data: bytes) -> bytes:
    """A signed schema 1 manifest without its JWS signatures, as libtrust's ParsePrettySignature cuts it.

    The payload is the first `formatLength` bytes followed by `formatTail`, both taken from the
    signatures' protected headers (which must agree).  Input that carries no signatures (not JSON,
    no or null `signatures`) is returned unchanged; ValueError (one line) when they cannot be read.
    """
    document = _json_object(data)
    blocks = None if document is None else document.get("signatures")
    if blocks is None:
        return data
    if not isinstance(blocks, list):
        raise ValueError("schema 1 manifest: signatures is not a list")
    format_length, format_tail = 0, b""
    for block in blocks:
        length, tail = _signature_format(block)
        # libtrust's own checks: the first non-zero length and non-empty tail win, others must agree.
        if format_length == 0:
            format_length = length
        elif format_length != length:
            raise ValueError("schema 1 manifest: signatures disagree on formatLength")
        if not format_tail:
            format_tail = tail
        elif format_tail != tail:
            raise ValueError("schema 1 manifest: signatures disagree on formatTail")
    if not 0 <= format_length <= len(data):
        raise ValueError(f"schema 1 manifest: formatLength {format_length} is outside the document")
    return data[:format_length] + format_tail


def manifest_digest(data: bytes, media_type: str, algorithm: str = "sha256") -> str:
    """The digest a registry and the runtimes give these manifest bytes.

    Image manifests and indexes are hashed as served; a schema 1 manifest without its signatures.
    Under a type no runtime knows, the body decides (containers/image's GuessMIMEType): a body with
    `schemaVersion` 1 is schema 1.  ValueError when a schema 1 manifest's signatures are unreadable.
    """
    media_type = mt.strip_parameters(media_type)
    if media_type in mt.SCHEMA1_TYPES:
        return digest_of(schema1_payload(data), algorithm)
    if media_type not in mt.MANIFEST_TYPES:
        document = _json_object(data)
        if (
            document is not None
            and type(document.get("schemaVersion")) is int
            and document["schemaVersion"] == 1
        ):
            return digest_of(schema1_payload(data), algorithm)
    return digest_of(data, algorithm)
