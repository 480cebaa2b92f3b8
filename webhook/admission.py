"""AdmissionReview in, AdmissionReview out: which images a request brings, and what to answer.

Pure: the app hands in the parsed JSON body, the node groups and the checker's results; this module
picks the images to judge (every container of a Pod or of a workload's pod template; on UPDATE only
the images that changed), narrows the node groups to those the Pod may be scheduled on, and builds the
response for the policy's mode.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from webhook.codes import Code, Severity
from webhook.errors import InvalidReview
from webhook.findings import ALLOW, DENY, INFO, REMEDY, WARN, Finding, ImageResult, worst
from webhook.policy import Mode
from webhook.runtimes import Target
from webhook.text import printable

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
Member = tuple[str, str]  # a node of a group: its name and its kubernetes.io/hostname label
OS_LABEL, ARCH_LABEL = "kubernetes.io/os", "kubernetes.io/arch"
# Per-node labels a node group does not keep (one group per node would defeat grouping): a selector
# on them cannot narrow the groups, so it is treated as satisfied.
HOSTNAME_LABEL = "kubernetes.io/hostname"
PER_NODE_LABELS = frozenset({HOSTNAME_LABEL})
NODE_NAME_FIELD = "metadata.name"  # the one field nodeAffinity matchFields may name
PLACEMENT_FIELDS = ("nodeName", "nodeSelector", "affinity")  # what in a pod spec may narrow the groups
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
CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")

# Where each kind keeps the pod spec that will make its Pods.
POD_SPEC_PATHS: Mapping[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
JUDGED_OPERATIONS = ("CREATE", "UPDATE")


@dataclass(frozen=True)
class ContainerImage:
    field: str  # initContainers | containers | ephemeralContainers
    name: str
    image: str


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


def service_account_of(pod_spec: Mapping[str, Any]) -> str:
    name = pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount")
    return name if isinstance(name, str) and name else "default"


def pull_secret_names_of(pod_spec: Mapping[str, Any]) -> tuple[str, ...]:
    entries = pod_spec.get("imagePullSecrets")
    if not isinstance(entries, list):
        return ()
    names = (e.get("name") for e in entries if isinstance(e, Mapping))
    return tuple(dict.fromkeys(n for n in names if isinstance(n, str) and n))


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidReview(f"{what} is not an object")
    return value


def _string(value: Any, what: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InvalidReview(f"{what} is not a non-empty string")
    return value


def pod_spec_of(kind: str, obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod spec inside an object of a supported kind; empty when the object has none yet."""
    spec: Any = obj
    for step in POD_SPEC_PATHS[kind]:
        spec = spec.get(step) if isinstance(spec, Mapping) else None
    if spec is None:
        return {}
    return _mapping(spec, f"{kind} {'.'.join(POD_SPEC_PATHS[kind])}")


def containers_of(pod_spec: Mapping[str, Any]) -> list[ContainerImage]:
    """Every container with an image, init containers first (a template's container may omit it)."""
    found = []
    for field_name in CONTAINER_FIELDS:
        entries = pod_spec.get(field_name) or []
        if not isinstance(entries, list):
            raise InvalidReview(f"{field_name} is not a list")
        for entry in entries:
            container = _mapping(entry, f"an entry of {field_name}")
            image = container.get("image")
            if isinstance(image, str) and image:
                found.append(ContainerImage(field_name, str(container.get("name") or ""), image))
    return found


def parse_review(body: Any) -> Request:
    """Read an AdmissionReview; raises InvalidReview for anything that is not one, or a CREATE or UPDATE
    of a kind that has no pod spec."""
    review = _mapping(body, "the body")
    api_version = review.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise InvalidReview(f"apiVersion must be one of {', '.join(API_VERSIONS)}")
    if review.get("kind") != "AdmissionReview":
        raise InvalidReview("kind must be AdmissionReview")
    request = _mapping(review.get("request"), "request")
    uid = _string(request.get("uid"), "request.uid")
    kind = _string(_mapping(request.get("kind"), "request.kind").get("kind"), "request.kind.kind")
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
        obj = _mapping(request.get("object"), "request.object")
        pod_spec = pod_spec_of(kind, obj)
        images = containers_of(pod_spec)
        if operation == "UPDATE" and request.get("oldObject") is not None:
            old = _mapping(request.get("oldObject"), "request.oldObject")
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


# --- where the Pod may run -------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeGroup:
    """Nodes that share a target and labels (per-node labels left out)."""

    target: Target
    nodes: int | None  # None for the policy's static targets, where no Node is known
    labels: Mapping[str, str] = field(default_factory=dict)
    # (name, kubernetes.io/hostname label) of each node: what a Pod bound to nodes names them by.
    members: frozenset[Member] = frozenset()

    def knows(self, key: str) -> bool:
        """Whether a selector on this label can narrow the group (policy targets know os and arch only)."""
        return key not in PER_NODE_LABELS and (self.nodes is not None or key in (OS_LABEL, ARCH_LABEL))

    def label(self, key: str) -> str | None:
        """A label's value; os and arch fall back to what the node reports in nodeInfo."""
        if key in self.labels:
            return self.labels[key]
        if key == OS_LABEL:
            return self.target.platform.os
        if key == ARCH_LABEL:
            return self.target.platform.architecture
        return None


def static_groups(targets: Iterable[Target]) -> list[NodeGroup]:
    return [NodeGroup(t, None) for t in dict.fromkeys(targets)]


def pulling_locally(groups: Iterable[NodeGroup], local: bool) -> list[NodeGroup]:
    """Node groups as the policy's `localImagePull` describes them: a Node does not say whether its
    containerd 2.1+ uses the transfer service or the local pull path (`use_local_image_pull`)."""
    if not local:
        return list(groups)
    return [replace(g, target=replace(g.target, local_pull=True)) for g in groups]


def _number(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _expression_holds(
    group: NodeGroup, expression: Mapping[str, Any], member: Member | None = None, *, field: bool = False
) -> bool:
    """One nodeSelectorRequirement, as the scheduler reads it; unknown operators hold (cannot narrow).

    With a member, its hostname label and (for matchFields) its name are known too."""
    key, operator = expression.get("key"), expression.get("operator")
    if field:
        if key != NODE_NAME_FIELD or member is None:
            return True
        value: str | None = member[0]
    elif key == HOSTNAME_LABEL and member is not None:
        value = member[1] or None
    elif not isinstance(key, str) or not group.knows(key):
        return True
    else:
        value = group.label(key)
    raw_values = expression.get("values")
    values = [v for v in raw_values if isinstance(v, str)] if isinstance(raw_values, list) else []
    if operator == "In":
        return value in values
    if operator == "NotIn":
        return value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and len(values) == 1:
        have, bound = _number(value), _number(values[0])
        if have is None or bound is None:
            return False
        return have > bound if operator == "Gt" else have < bound
    return True


def _requirements(term: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    found = term.get(key) or []
    return [e for e in found if isinstance(e, Mapping)] if isinstance(found, list) else []


def _term_holds(group: NodeGroup, term: Any, member: Member | None = None) -> bool:
    if not isinstance(term, Mapping):
        return True
    # matchFields select Nodes by name: only a member (one node) can be told apart by them.
    return all(_expression_holds(group, e, member) for e in _requirements(term, "matchExpressions")) and all(
        _expression_holds(group, e, member, field=True) for e in _requirements(term, "matchFields")
    )


def _affinity_terms(pod_spec: Mapping[str, Any]) -> list[Any]:
    affinity = pod_spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    required = (
        node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        if isinstance(node_affinity, Mapping)
        else None
    )
    terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    return terms if isinstance(terms, list) else []


def schedulable(group: NodeGroup, pod_spec: Mapping[str, Any], member: Member | None = None) -> bool:
    """Whether the Pod's nodeName, nodeSelector and required node affinity admit the group's nodes
    (with a member: that one node of the group)."""
    node_name = pod_spec.get("nodeName")
    if member is not None and isinstance(node_name, str) and node_name and node_name != member[0]:
        return False
    selector = pod_spec.get("nodeSelector")
    if isinstance(selector, Mapping):
        for key, wanted in selector.items():
            if key == HOSTNAME_LABEL and member is not None:
                if member[1] != wanted:
                    return False
            elif group.knows(str(key)) and group.label(str(key)) != wanted:
                return False
    terms = _affinity_terms(pod_spec)
    if terms:
        return any(_term_holds(group, term, member) for term in terms)
    return True


def binds_to_nodes(pod_spec: Mapping[str, Any]) -> bool:
    """Whether the Pod names its node(s): spec.nodeName, a nodeSelector on kubernetes.io/hostname, or
    required node affinity on the hostname label or on metadata.name (how DaemonSet Pods are bound)."""
    node_name = pod_spec.get("nodeName")
    selector = pod_spec.get("nodeSelector")
    if (isinstance(node_name, str) and node_name) or (
        isinstance(selector, Mapping) and HOSTNAME_LABEL in selector
    ):
        return True
    return any(
        isinstance(term, Mapping)
        and (
            _requirements(term, "matchFields")
            or any(e.get("key") == HOSTNAME_LABEL for e in _requirements(term, "matchExpressions"))
        )
        for term in _affinity_terms(pod_spec)
    )


def narrow(groups: Sequence[NodeGroup], pod_spec: Mapping[str, Any]) -> list[NodeGroup]:
    """The groups the Pod may be scheduled on; a Pod bound to nodes keeps only those nodes."""
    if not any(pod_spec.get(name) for name in PLACEMENT_FIELDS):
        return list(groups)  # most Pods: nothing narrows, every group may take them
    if not binds_to_nodes(pod_spec):
        return [g for g in groups if schedulable(g, pod_spec)]
    narrowed = []
    for group in groups:
        if not group.members:  # the policy's targets: no node names to match
            if schedulable(group, pod_spec):
                narrowed.append(group)
            continue
        kept = frozenset(m for m in group.members if schedulable(group, pod_spec, m))
        if kept:
            narrowed.append(replace(group, nodes=len(kept), members=kept))
    return narrowed


def placement(
    known: Sequence[NodeGroup], static: Sequence[NodeGroup], pod_spec: Mapping[str, Any]
) -> list[NodeGroup]:
    """The groups a Pod may land on: the known Nodes it selects. A Pod that selects no current node (a
    pool still being created) is judged like one on the static targets, and if it selects none of
    those either, on all of them."""
    return narrow(known, pod_spec) or narrow(static, pod_spec) or list(static)


def targets_of(groups: Iterable[NodeGroup]) -> list[Target]:
    return list(dict.fromkeys(g.target for g in groups))


# --- the answer ------------------------------------------------------------------------------------


def _concerns(finding: Finding, target: Target) -> bool:
    if not finding.runtime:
        return True
    if finding.runtime != target.runtime.text:
        return False
    return not finding.platform or finding.platform == str(target.platform)


def for_targets(result: ImageResult, targets: Sequence[Target]) -> ImageResult:
    """The result with only the findings that concern these targets (of a result judged for more)."""
    kept = tuple(f for f in result.findings if any(_concerns(f, t) for t in targets))
    return replace(result, findings=kept)


def where(findings: Sequence[Finding], groups: Sequence[NodeGroup]) -> str:
    """Where these findings bite: 'on 3 nodes running containerd 2.1', or 'on cri-o 1.33 (linux/arm64)'."""
    hit = [g for g in groups if any(_concerns(f, g.target) for f in findings)]
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


def response(api_version: str, uid: str, decision: Decision) -> dict[str, Any]:
    """The AdmissionReview to send back."""
    answer: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
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
