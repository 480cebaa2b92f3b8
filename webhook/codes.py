"""The words of a finding: its code and its severity. Both serialise as their values (JSON, YAML, text)."""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    DENY = "deny"
    WARN = "warn"
    INFO = "info"
    ALLOW = "allow"  # as a severity override it drops the finding


class Code(StrEnum):
    """The finding codes (docs/findings.md), and INTERNAL_ERROR: not a finding, the code a request that
    pullcheck could not judge at all is counted under in the decisions metric."""

    SCHEMA1 = "SCHEMA1"
    NO_MATCHING_PLATFORM = "NO_MATCHING_PLATFORM"
    PLATFORM_MISMATCH = "PLATFORM_MISMATCH"
    NOT_AN_IMAGE = "NOT_AN_IMAGE"
    MIXED_MEDIA_TYPES = "MIXED_MEDIA_TYPES"
    UNSUPPORTED_LAYER = "UNSUPPORTED_LAYER"
    ENCRYPTED_LAYER = "ENCRYPTED_LAYER"
    NONDISTRIBUTABLE_LAYER = "NONDISTRIBUTABLE_LAYER"
    ROOTFS_MISMATCH = "ROOTFS_MISMATCH"
    MEDIA_TYPE_MISMATCH = "MEDIA_TYPE_MISMATCH"
    INVALID_DOCUMENT = "INVALID_DOCUMENT"
    MANIFEST_TOO_LARGE = "MANIFEST_TOO_LARGE"
    DIGEST_MISMATCH = "DIGEST_MISMATCH"
    SIZE_MISMATCH = "SIZE_MISMATCH"
    NOT_FOUND = "NOT_FOUND"
    MISSING_BLOB = "MISSING_BLOB"
    INVALID_REFERENCE = "INVALID_REFERENCE"
    SHORT_NAME = "SHORT_NAME"
    UNAUTHORIZED = "UNAUTHORIZED"
    REGISTRY_UNREACHABLE = "REGISTRY_UNREACHABLE"
    RATE_LIMITED = "RATE_LIMITED"
    BLOCKED_REGISTRY = "BLOCKED_REGISTRY"
    DIGEST_DRIFT = "DIGEST_DRIFT"
    INTERNAL_ERROR = "INTERNAL_ERROR"
