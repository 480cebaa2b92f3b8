"""AdmissionReview in, AdmissionReview out: which images a request brings, and what to answer.

Pure: `parse_review` reads the parsed JSON body into a `Request` (every container of a Pod or of a
workload's pod template; on UPDATE only the images that changed); `decide` turns the checker's results
and the node groups the Pod may land on into a `Decision` for the policy's mode; `response` is the
AdmissionReview answer. Pod-spec reading is in `webhook.podspec`, node groups in `webhook.placement`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook import placement
from webhook.codes import Code, Severity
from webhook.errors import InvalidReview
from webhook.findings import ALLOW, DENY, INFO, REMEDY, WARN, Finding, ImageResult, worst
from webhook.placement import NodeGroup
from webhook.podspec import (
    POD_SPEC_PATHS,
    ContainerImage,
    containers_of,
    pod_spec_of,
    pull_secret_names_of,
    require_mapping,
    service_account_of,
)
from webhook.policy import Mode
from webhook.text import printable
from webhook.wire import AdmissionResponse, AdmissionReviewAnswer

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


# The apiserver's limits on warnings (k8s.io/apiserver/pkg/warning): 120 characters each, 4 KiB in all.
WARNING_LENGTH = 120


WARNINGS_TOTAL = 4096


MESSAGE_LENGTH = 4096


AUDIT_IMAGES = 20


# The largest AdmissionReview body: an UPDATE carries the object and the oldObject, each up to the
# apiserver's 3 MiB request limit, plus the envelope (user info, options).
MAX_REVIEW_BYTES = 2 * 3 * 1024 * 1024 + 1024 * 1024


_IMAGE_SHOWN = 64


_IMAGE_KEPT = 24  # a warning shortens the image to this before it cuts where the finding bites


JUDGED_OPERATIONS = ("CREATE", "UPDATE")


@dataclass(frozen=True)
class Request:
    """What pullcheck needs from one AdmissionReview request."""

    api_version: str  # answered in the same version
    uid: str
    kind: str
    operation: str
    namespace: str
    name: str
    sub_resource: str
    dry_run: bool
    pod_spec: Mapping[str, Any]  # empty when the operation carries no object (DELETE, CONNECT)
    images: tuple[ContainerImage, ...]  # to judge: every image on CREATE, the changed ones on UPDATE

    @property
    def distinct_images(self) -> list[str]:
        return list(dict.fromkeys(c.image for c in self.images))

    @property
    def service_account(self) -> str:
        return service_account_of(self.pod_spec)

    @property
    def pull_secret_names(self) -> tuple[str, ...]:
        return pull_secret_names_of(self.pod_spec)


def _string(value: Any, what: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InvalidReview(f"{what} is not a non-empty string")
    return value


def parse_review(body: Any) -> Request:
    """Read an AdmissionReview; raises InvalidReview for anything that is not one, or a CREATE or UPDATE
    of a kind that has no pod spec."""
    review = require_mapping(body, "the body")
    api_version = review.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise InvalidReview(f"apiVersion must be one of {', '.join(API_VERSIONS)}")
    if review.get("kind") != "AdmissionReview":
        raise InvalidReview("kind must be AdmissionReview")
    request = require_mapping(review.get("request"), "request")
    uid = _string(request.get("uid"), "request.uid")
    kind = _string(require_mapping(request.get("kind"), "request.kind").get("kind"), "request.kind.kind")
    operation = _string(request.get("operation"), "request.operation")
    namespace = _string(request.get("namespace"), "request.namespace", required=False)
    sub_resource = _string(request.get("subResource"), "request.subResource", required=False)
    if kind not in POD_SPEC_PATHS and operation in JUDGED_OPERATIONS and not sub_resource:
        raise InvalidReview(f"kind {kind} is not one pullcheck judges")
    # CONNECT (pods/exec is a PodExecOptions, also attach, portforward, proxy), DELETE, and subresources
    # without a pod spec (pods/binding, pods/eviction, deployments/scale) bring no image: admitted, so
    # a webhook configuration naming `pods/*` never breaks kubectl exec or scheduling.

    pod_spec: Mapping[str, Any] = {}
    images: list[ContainerImage] = []
    name = _string(request.get("name"), "request.name", required=False)
    if operation in JUDGED_OPERATIONS and kind in POD_SPEC_PATHS:
        obj = require_mapping(request.get("object"), "request.object")
        pod_spec = pod_spec_of(kind, obj)
        images = containers_of(pod_spec)
        if operation == "UPDATE" and request.get("oldObject") is not None:
            old = require_mapping(request.get("oldObject"), "request.oldObject")
            before = {c.image for c in containers_of(pod_spec_of(kind, old))}
            images = [c for c in images if c.image not in before]
        metadata = obj.get("metadata")
        if not name and isinstance(metadata, Mapping):
            name = str(metadata.get("name") or metadata.get("generateName") or "")
    return Request(
        api_version=str(api_version),
        uid=uid,
        kind=kind,
        operation=operation,
        namespace=namespace,
        name=name,
        sub_resource=sub_resource,
        dry_run=request.get("dryRun") is True,
        pod_spec=pod_spec,
        images=tuple(images),
    )


# --- the answer ------------------------------------------------------------------------------------


def where(findings: Sequence[Finding], groups: Sequence[NodeGroup]) -> str:
    """Where these findings bite: 'on 3 nodes running containerd 2.1', or 'on cri-o 1.33 (linux/arm64)'."""
    hit = [g for g in groups if any(placement.concerns(f, g.target) for f in findings)]
    if not hit:
        return "on every target"
    platforms = list(dict.fromkeys(str(g.target.platform) for g in hit))
    narrower = set(platforms) < {str(g.target.platform) for g in groups}
    on_platforms = f" ({', '.join(platforms)})" if narrower else ""
    nodes: dict[str, int] = {}
    for group in hit:
        if group.nodes is not None:
            name = group.target.runtime.display_name
            nodes[name] = nodes.get(name, 0) + group.nodes
    if not nodes:
        runtimes = ", ".join(dict.fromkeys(g.target.runtime.display_name for g in hit))
        return f"on {runtimes}{on_platforms}"
    total = sum(nodes.values())
    if len(nodes) == 1:
        return f"on {total} node{'s' if total != 1 else ''} running {next(iter(nodes))}{on_platforms}"
    # Counted per runtime, so that a warning cut at 120 characters never suggests one runtime for all.
    per_runtime = ", ".join(f"{count} {name}" for name, count in nodes.items())
    return f"on {total} nodes: {per_runtime}{on_platforms}"


def _short_image(image: str, limit: int = _IMAGE_SHOWN) -> str:
    if len(image) <= limit:
        return image
    half = (limit - 3) // 2
    return f"{image[:half]}...{image[-half:]}"


def _fit(text: str, limit: int) -> str:
    """The text, cut at a word boundary with '...' when it is longer than the limit."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ;,") + "..."


def _remedy(code: Code) -> str:
    return REMEDY.get(code, "see the pullcheck documentation")


def _with_advice(image: str, what: str, code: Code) -> str:
    """'image: what; remedy' in one warning. When that is too long, the remedy becomes a pointer to
    `pullcheck explain CODE` (which has the commands), then the image is shortened, then `what` is cut:
    the advice is never cut off, and where the finding bites is kept as long as it can be."""
    text = f"{_short_image(image)}: {what}; {_remedy(code)}"
    if len(text) <= WARNING_LENGTH:
        return text
    pointer = f"see pullcheck explain {code}"
    room = WARNING_LENGTH - len(f": {what}; {pointer}")
    if room >= _IMAGE_KEPT:
        return f"{_short_image(image, room)}: {what}; {pointer}"
    cut = _fit(f"{_short_image(image, _IMAGE_KEPT)}: {what}", WARNING_LENGTH - 2 - len(pointer))
    return f"{cut}; {pointer}"


def _by_code(result: ImageResult, severity: Severity) -> dict[Code, list[Finding]]:
    codes: dict[Code, list[Finding]] = {}
    for finding in result.findings:
        if finding.severity == severity:
            codes.setdefault(finding.code, []).append(finding)
    return codes


@dataclass(frozen=True)
class Decision:
    allowed: bool
    message: str  # why it was refused; '' when allowed
    warnings: tuple[str, ...]
    audit_annotations: Mapping[str, str]
    verdicts: Mapping[str, Severity]  # image -> deny | warn | allow, for logs and metrics
    codes: tuple[Code, ...]  # finding codes of deny and warn findings, for metrics


def _denial(results: Sequence[ImageResult], groups: Sequence[NodeGroup]) -> str:
    parts = []
    for result in results:
        for code, findings in _by_code(result, DENY).items():
            detail = f"{findings[0].message}; {_remedy(code)}"
            parts.append(f"{result.image}: {code} fails {where(findings, groups)}: {detail}")
    denied = sum(1 for r in results if r.verdict == DENY)
    head = f"pullcheck denied {denied} image{'s' if denied != 1 else ''}: "
    return _fit(printable(head + " | ".join(parts)), MESSAGE_LENGTH)


def _warnings(
    results: Sequence[ImageResult], groups: Sequence[NodeGroup], severities: Sequence[Severity]
) -> list[str]:
    lines: list[str] = []
    for result in results:
        for severity in severities:
            verb = "fails" if severity == DENY else "warns"
            for code, findings in _by_code(result, severity).items():
                # Escaped: the apiserver drops a warning that holds a control character.
                what = printable(f"{code} {verb} {where(findings, groups)}")
                lines.append(_with_advice(printable(result.image), what, code))
    kept: list[str] = []
    size = 0
    unique = list(dict.fromkeys(lines))
    for position, line in enumerate(unique):
        rest = len(unique) - position
        # Sizes in bytes: a line of 120 characters can take more than 120 bytes. A line that is not
        # the last one leaves room for the summary of those after it.
        after = len(_left_out(rest - 1).encode()) if rest > 1 else 0
        if size + len(line.encode()) + after >= WARNINGS_TOTAL:
            kept.append(_left_out(rest))
            break
        kept.append(line)
        size += len(line.encode())
    return kept


def _left_out(count: int) -> str:
    return f"and {count} more pullcheck warnings, see the audit annotations"


def _audit_annotations(results: Sequence[ImageResult], groups: Sequence[NodeGroup]) -> dict[str, str]:
    judged = [r for r in results if r.findings]
    if not judged:
        return {}
    entries = []
    for result in judged[:AUDIT_IMAGES]:
        summary: dict[str, list[str]] = {}
        for severity in (DENY, WARN, INFO):
            for code, findings in _by_code(result, severity).items():
                summary.setdefault(code, []).append(printable(f"{severity} {where(findings, groups)}"))
        entries.append(
            {
                "image": printable(result.image),
                "digest": result.digest,
                "verdict": result.verdict,
                "findings": {code: "; ".join(parts) for code, parts in summary.items()},
            }
        )
    annotations = {
        "verdict": worst(r.verdict for r in results),
        "images": json.dumps(entries, separators=(",", ":")),
    }
    if len(judged) > AUDIT_IMAGES:
        annotations["omitted-images"] = str(len(judged) - AUDIT_IMAGES)
    return annotations


def decide(results: Sequence[ImageResult], groups: Sequence[NodeGroup], mode: Mode) -> Decision:
    """The answer for the policy's mode: enforce refuses a deny verdict, warn admits with warnings,
    audit admits silently; findings always go to the audit annotations."""
    if not any(r.findings for r in results):  # the common case: nothing to refuse, warn or note
        return Decision(True, "", (), {}, {r.image: ALLOW for r in results}, ())
    denied = [r for r in results if r.verdict == DENY]
    refuse = mode == "enforce" and bool(denied)
    if mode == "audit":
        warnings: list[str] = []
    elif mode == "enforce":
        warnings = _warnings(results, groups, (WARN,))
    else:
        warnings = _warnings(results, groups, (DENY, WARN))
    codes = dict.fromkeys(f.code for r in results for f in r.findings if f.severity in (DENY, WARN))
    return Decision(
        allowed=not refuse,
        message=_denial(denied, groups) if refuse else "",
        warnings=tuple(warnings),
        audit_annotations=_audit_annotations(results, groups),
        verdicts={r.image: r.verdict for r in results},
        codes=tuple(codes),
    )


ALLOW_ALL = Decision(True, "", (), {}, {}, ())


def response(api_version: str, uid: str, decision: Decision) -> AdmissionReviewAnswer:
    """The AdmissionReview to send back."""
    answer: AdmissionResponse = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed:
        answer["status"] = {
            "metadata": {},
            "status": "Failure",
            "reason": "Forbidden",
            "code": 403,
            "message": decision.message,
        }
    if decision.warnings:
        answer["warnings"] = list(decision.warnings)
    if decision.audit_annotations:
        answer["auditAnnotations"] = dict(decision.audit_annotations)
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": answer}
