"""Finding codes, severities, findings and per-image verdicts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

DENY, WARN, INFO, ALLOW = "deny", "warn", "info", "allow"
SEVERITIES = (DENY, WARN, INFO, ALLOW)  # ALLOW as a severity override drops the finding
VERDICTS = (DENY, WARN, ALLOW)
_RANK = {ALLOW: 0, INFO: 0, WARN: 1, DENY: 2}

# Codes of registry trouble; their severity is the policy's `onResolutionError`.
RESOLUTION_CODES = frozenset({"UNAUTHORIZED", "REGISTRY_UNREACHABLE", "RATE_LIMITED", "BLOCKED_REGISTRY"})

# Default severities; a runtime's profile changes some of them (webhook.profiles).
DEFAULT_SEVERITY = {
    "SCHEMA1": DENY,
    "NO_MATCHING_PLATFORM": DENY,
    "PLATFORM_MISMATCH": DENY,
    "NOT_AN_IMAGE": DENY,
    "MIXED_MEDIA_TYPES": DENY,
    "UNSUPPORTED_LAYER": DENY,
    "ENCRYPTED_LAYER": WARN,
    "NONDISTRIBUTABLE_LAYER": WARN,
    "ROOTFS_MISMATCH": DENY,
    "MEDIA_TYPE_MISMATCH": DENY,
    "INVALID_DOCUMENT": DENY,
    "MANIFEST_TOO_LARGE": DENY,
    "DIGEST_MISMATCH": DENY,
    "SIZE_MISMATCH": DENY,
    "NOT_FOUND": DENY,
    "MISSING_BLOB": DENY,
    "INVALID_REFERENCE": DENY,
    "SHORT_NAME": WARN,
    "UNAUTHORIZED": WARN,
    "REGISTRY_UNREACHABLE": WARN,
    "RATE_LIMITED": WARN,
    "BLOCKED_REGISTRY": WARN,
    "DIGEST_DRIFT": INFO,
}
CODES = frozenset(DEFAULT_SEVERITY)

# What a person should do about each code, appended to denials and warnings.
REMEDY = {
    "SCHEMA1": "rebuild with a current Docker or buildah, or push as OCI",
    "NO_MATCHING_PLATFORM": "publish the image for this platform or pin the Pod to nodes it has",
    "PLATFORM_MISMATCH": "use an image built for this platform or pin the Pod to matching nodes",
    "NOT_AN_IMAGE": "this is an artifact (chart, signature, SBOM, wasm), not a container image",
    "MIXED_MEDIA_TYPES": "re-push with consistent OCI or Docker media types",
    "UNSUPPORTED_LAYER": "re-push with gzip (or OCI zstd) layers",
    "ENCRYPTED_LAYER": "nodes need the decryption keys configured",
    "NONDISTRIBUTABLE_LAYER": "nodes fetch these layers from their external URLs",
    "ROOTFS_MISMATCH": "rebuild: the config's rootfs.diff_ids do not match the layers",
    "MEDIA_TYPE_MISMATCH": "the registry serves this manifest with the wrong Content-Type",
    "INVALID_DOCUMENT": "re-push the image: a runtime cannot decode its manifest or config",
    "MANIFEST_TOO_LARGE": "shrink the manifest or config",
    "DIGEST_MISMATCH": "the registry served content that does not match its digest",
    "SIZE_MISMATCH": "re-push the image: a descriptor's size does not match the content",
    "NOT_FOUND": "check the image name and tag",
    "MISSING_BLOB": "re-push the image: the registry lost part of it",
    "INVALID_REFERENCE": "fix the image reference",
    "SHORT_NAME": "use a fully qualified name such as docker.io/library/NAME",
    "UNAUTHORIZED": "add an imagePullSecret that can read this repository",
    "REGISTRY_UNREACHABLE": "the registry could not be reached",
    "RATE_LIMITED": "the registry is rate limiting; retry later or authenticate",
    "BLOCKED_REGISTRY": "this registry is not allowed by the pullcheck policy",
    "DIGEST_DRIFT": "roll the workload out to run what the tag names now, or pin images (pinDigests)",
}


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    runtime: str  # the target's runtime as Kubernetes names it, '' when it concerns every target
    platform: str  # os/arch[/variant], '' when it concerns every target
    message: str
    from_node_config: bool = False  # a refusal the node's own files decide: onResolutionError does not apply

    def to_json(self) -> dict[str, str]:
        return {
            "code": self.code,
            "severity": self.severity,
            "runtime": self.runtime,
            "platform": self.platform,
            "message": self.message,
        }


def worst(severities: Iterable[str]) -> str:
    """The verdict over some severities: deny > warn > allow (info counts as allow)."""
    rank = max((_RANK[s] for s in severities), default=0)
    return {0: ALLOW, 1: WARN, 2: DENY}[rank]


@dataclass(frozen=True)
class Answer:
    """The endpoint that served an image's manifest to some targets' runtimes."""

    endpoint: str  # host[:port]
    role: str  # mirror | registry
    runtimes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "role": self.role, "runtimes": list(self.runtimes)}


@dataclass(frozen=True)
class ImageResult:
    """Everything pullcheck says about one image string."""

    image: str  # as written in the Pod spec or on the command line, a `user:password@` masked
    reference: str | None  # normalised full form, None when it does not parse
    digest: str | None = None
    media_type: str | None = None
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    # An index's manifests: a runtime may report one of them, not the index, as the image a Pod runs.
    child_digests: tuple[str, ...] = ()
    endpoints: tuple[Answer, ...] = ()  # who served the manifest, per group of runtimes

    @property
    def verdict(self) -> str:
        return worst(f.severity for f in self.findings)

    def failing_targets(self, severity: str = DENY) -> list[str]:
        """`runtime on platform` of each target with a finding of this severity, in order of first finding."""
        seen: dict[str, None] = {}
        for f in self.findings:
            if f.severity == severity:
                seen.setdefault(f"{f.runtime} on {f.platform}" if f.runtime else "every target", None)
        return list(seen)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "reference": self.reference,
            "digest": self.digest,
            "mediaType": self.media_type,
            "verdict": self.verdict,
            "findings": [f.to_json() for f in self.findings],
            "endpoints": [a.to_json() for a in self.endpoints],
        }
