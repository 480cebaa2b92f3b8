"""Finding codes, severities, findings and per-image verdicts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypedDict

from webhook.codes import Code, Severity

DENY, WARN, INFO, ALLOW = Severity.DENY, Severity.WARN, Severity.INFO, Severity.ALLOW
SEVERITIES = tuple(Severity)  # ALLOW as a severity override drops the finding
VERDICTS = (DENY, WARN, ALLOW)
_RANK = {ALLOW: 0, INFO: 0, WARN: 1, DENY: 2}

# Codes of registry trouble; their severity is the policy's `onResolutionError`.
RESOLUTION_CODES = frozenset(
    {Code.UNAUTHORIZED, Code.REGISTRY_UNREACHABLE, Code.RATE_LIMITED, Code.BLOCKED_REGISTRY}
)

# Default severities; a runtime's profile changes some of them (webhook.profiles).
DEFAULT_SEVERITY: dict[Code, Severity] = {
    Code.SCHEMA1: DENY,
    Code.NO_MATCHING_PLATFORM: DENY,
    Code.PLATFORM_MISMATCH: DENY,
    Code.NOT_AN_IMAGE: DENY,
    Code.MIXED_MEDIA_TYPES: DENY,
    Code.UNSUPPORTED_LAYER: DENY,
    Code.ENCRYPTED_LAYER: WARN,
    Code.NONDISTRIBUTABLE_LAYER: WARN,
    Code.ROOTFS_MISMATCH: DENY,
    Code.MEDIA_TYPE_MISMATCH: DENY,
    Code.INVALID_DOCUMENT: DENY,
    Code.MANIFEST_TOO_LARGE: DENY,
    Code.DIGEST_MISMATCH: DENY,
    Code.SIZE_MISMATCH: DENY,
    Code.NOT_FOUND: DENY,
    Code.MISSING_BLOB: DENY,
    Code.INVALID_REFERENCE: DENY,
    Code.SHORT_NAME: WARN,
    Code.UNAUTHORIZED: WARN,
    Code.REGISTRY_UNREACHABLE: WARN,
    Code.RATE_LIMITED: WARN,
    Code.BLOCKED_REGISTRY: WARN,
    Code.DIGEST_DRIFT: INFO,
}
CODES = frozenset(DEFAULT_SEVERITY)  # every code a finding can carry

# What a person should do about each code, appended to denials and warnings.
REMEDY: dict[Code, str] = {
    Code.SCHEMA1: "rebuild with a current Docker or buildah, or push as OCI",
    Code.NO_MATCHING_PLATFORM: "publish the image for this platform or pin the Pod to nodes it has",
    Code.PLATFORM_MISMATCH: "use an image built for this platform or pin the Pod to matching nodes",
    Code.NOT_AN_IMAGE: "this is an artifact (chart, signature, SBOM, wasm), not a container image",
    Code.MIXED_MEDIA_TYPES: "re-push with consistent OCI or Docker media types",
    Code.UNSUPPORTED_LAYER: "re-push with gzip (or OCI zstd) layers",
    Code.ENCRYPTED_LAYER: "nodes need the decryption keys configured",
    Code.NONDISTRIBUTABLE_LAYER: "nodes fetch these layers from their external URLs",
    Code.ROOTFS_MISMATCH: "rebuild: the config's rootfs.diff_ids do not match the layers",
    Code.MEDIA_TYPE_MISMATCH: "the registry serves this manifest with the wrong Content-Type",
    Code.INVALID_DOCUMENT: "re-push the image: a runtime cannot decode its manifest or config",
    Code.MANIFEST_TOO_LARGE: "shrink the manifest or config",
    Code.DIGEST_MISMATCH: "the registry served content that does not match its digest",
    Code.SIZE_MISMATCH: "re-push the image: a descriptor's size does not match the content",
    Code.NOT_FOUND: "check the image name and tag",
    Code.MISSING_BLOB: "re-push the image: the registry lost part of it",
    Code.INVALID_REFERENCE: "fix the image reference",
    Code.SHORT_NAME: "use a fully qualified name such as docker.io/library/NAME",
    Code.UNAUTHORIZED: "add an imagePullSecret that can read this repository",
    Code.REGISTRY_UNREACHABLE: "the registry could not be reached",
    Code.RATE_LIMITED: "the registry is rate limiting; retry later or authenticate",
    Code.BLOCKED_REGISTRY: "this registry is not allowed by the pullcheck policy",
    Code.DIGEST_DRIFT: "roll the workload out to run what the tag names now, or pin images (pinDigests)",
}


# The `pullcheck/v1` JSON of `pullcheck check --output json` (webhook.render wraps the results).
class FindingJson(TypedDict):
    code: Code
    severity: Severity
    runtime: str
    platform: str
    message: str


class EndpointJson(TypedDict):
    endpoint: str
    role: str
    runtimes: list[str]


class ResultJson(TypedDict):
    image: str
    reference: str | None
    digest: str | None
    mediaType: str | None
    verdict: Severity
    findings: list[FindingJson]
    endpoints: list[EndpointJson]


@dataclass(frozen=True)
class Finding:
    code: Code
    severity: Severity
    runtime: str  # the target's runtime as Kubernetes names it, '' when it concerns every target
    platform: str  # os/arch[/variant], '' when it concerns every target
    message: str
    from_node_config: bool = False  # a refusal the node's own files decide: onResolutionError does not apply

    def to_json(self) -> FindingJson:
        return {
            "code": self.code,
            "severity": self.severity,
            "runtime": self.runtime,
            "platform": self.platform,
            "message": self.message,
        }


def worst(severities: Iterable[Severity]) -> Severity:
    """The verdict over some severities: deny > warn > allow (info counts as allow)."""
    rank = max((_RANK[s] for s in severities), default=0)
    return {0: ALLOW, 1: WARN, 2: DENY}[rank]


@dataclass(frozen=True)
class Answer:
    """The endpoint that served an image's manifest to some targets' runtimes."""

    endpoint: str  # host[:port]
    role: str  # mirror | registry
    runtimes: tuple[str, ...]

    def to_json(self) -> EndpointJson:
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
    def verdict(self) -> Severity:
        return worst(f.severity for f in self.findings)

    def failing_targets(self, severity: Severity = DENY) -> list[str]:
        """`runtime on platform` of each target with a finding of this severity, in order of first finding."""
        seen: dict[str, None] = {}
        for f in self.findings:
            if f.severity == severity:
                seen.setdefault(f"{f.runtime} on {f.platform}" if f.runtime else "every target", None)
        return list(seen)

    def to_json(self) -> ResultJson:
        return {
            "image": self.image,
            "reference": self.reference,
            "digest": self.digest,
            "mediaType": self.media_type,
            "verdict": self.verdict,
            "findings": [f.to_json() for f in self.findings],
            "endpoints": [a.to_json() for a in self.endpoints],
        }
