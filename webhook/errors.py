"""The one exception tree of pullcheck.

    PullcheckError
    ├── ConfigError            bad policy file, bad flag, bad docker config: one line naming the field
    ├── InvalidReference       (also a ValueError) the image string is not a valid reference
    ├── InvalidReview          the webhook's request body is not an AdmissionReview pullcheck answers
    ├── ClusterError           the Kubernetes API refused or failed a request pullcheck needed
    └── RegistryError          the registry did not give us what the image needs; carries a finding code
        ├── NotFound               NOT_FOUND: the tag or manifest digest does not exist
        ├── NotAnImage             NOT_AN_IMAGE: the digest names a blob (an image ID), not a manifest
        ├── Unauthorized           UNAUTHORIZED: every available credential was refused
        ├── RateLimited            RATE_LIMITED: 429, with Retry-After and the rate-limit headers
        ├── RegistryUnreachable    REGISTRY_UNREACHABLE: connection, TLS, timeout, 5xx
        │   └── DeadlineExceeded       the resolution's deadline passed, or its registry requests were spent
        ├── BlockedRegistry        BLOCKED_REGISTRY: refused by the network guard or the registry policy
        ├── DigestMismatch         DIGEST_MISMATCH: bytes do not hash to the expected digest
        ├── ManifestTooLarge       MANIFEST_TOO_LARGE: a manifest or config over the read cap
        └── InvalidDocument        INVALID_DOCUMENT: a field of a manifest, index or config has the wrong type

Every message is one line meant for a person; none ever contains a credential.
"""

from __future__ import annotations

import socket
import ssl

from webhook.codes import Code


class PullcheckError(Exception):
    """Base of every error pullcheck raises on purpose."""


class ConfigError(PullcheckError):
    """Configuration or usage is wrong; the message names the field or flag."""


class InvalidReference(PullcheckError, ValueError):
    """The text is not a valid image reference."""


class InvalidReview(PullcheckError):
    """The body is not an AdmissionReview pullcheck can answer; the message says why, in one line."""


class ClusterError(PullcheckError):
    """The Kubernetes API refused or failed a request; the message names what was asked."""


class RegistryError(PullcheckError):
    """A registry interaction failed in a way that becomes a finding."""

    code: Code = Code.REGISTRY_UNREACHABLE


class NotFound(RegistryError):
    code = Code.NOT_FOUND


class Unauthorized(RegistryError):
    code = Code.UNAUTHORIZED


class RateLimited(RegistryError):
    code = Code.RATE_LIMITED

    def __init__(
        self, message: str, retry_after: float | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = dict(headers or {})


class RegistryUnreachable(RegistryError):
    code = Code.REGISTRY_UNREACHABLE


class DeadlineExceeded(RegistryUnreachable):
    """The resolution's deadline passed before the registry answered, or it spent the registry requests
    it was allowed."""


class BlockedRegistry(RegistryError):
    code = Code.BLOCKED_REGISTRY


class NotAnImage(RegistryError):
    code = Code.NOT_AN_IMAGE


class DigestMismatch(RegistryError):
    code = Code.DIGEST_MISMATCH


class ManifestTooLarge(RegistryError):
    code = Code.MANIFEST_TOO_LARGE

    def __init__(self, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.size = size


class InvalidDocument(RegistryError):
    code = Code.INVALID_DOCUMENT


def network_cause(error: BaseException) -> str | None:
    """What went wrong on the network under a client library's error, in a few lower-case words
    ("connection refused", "timed out", "TLS certificate not trusted (…)"); None when no socket or TLS
    error lies beneath it. Library wrappers (MaxRetryError, httpx.ConnectError) are looked through."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({current.verify_message or current.reason})"
        if isinstance(current, ssl.SSLError):
            if current.reason == "WRONG_VERSION_NUMBER":
                return "TLS failed: the server does not speak TLS"
            return f"TLS failed ({(current.reason or 'handshake').lower().replace('_', ' ')})"
        if isinstance(current, socket.gaierror):
            return f"name lookup failed ({_lowered(current.strerror or str(current))})"
        if isinstance(current, TimeoutError):
            return "timed out"
        if isinstance(current, OSError) and current.strerror:
            return _lowered(current.strerror)
        reason = getattr(current, "reason", None)  # urllib3's MaxRetryError keeps its cause there
        current = reason if isinstance(reason, BaseException) else current.__cause__ or current.__context__
    return None


def _lowered(text: str) -> str:
    """'Connection refused' -> 'connection refused' (an all-capital word such as 'TLS' is kept)."""
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
