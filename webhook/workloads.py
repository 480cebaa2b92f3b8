"""Workloads in Kubernetes objects: which objects make Pods, from which pod spec, with which images.

Pure: the objects come parsed (from the API or from manifest files); the pod spec and its images are
found by `webhook.podspec`, so the audit and the webhook read an object the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from webhook.errors import ConfigError, InvalidReview
from webhook.placement import PLACEMENT_FIELDS
from webhook.podspec import CONTAINER_FIELDS, POD_SPEC_PATHS, containers_of, pod_spec_of

WORKLOAD_KINDS = tuple(POD_SPEC_PATHS)
# Objects whose controller already stands for them in the audit: the controller's template makes
# them, so judging both would name one problem twice (a Deployment's ReplicaSets and their Pods).
COVERING_OWNERS: Mapping[str, frozenset[str]] = {
    "ReplicaSet": frozenset({"Deployment"}),
    "Job": frozenset({"CronJob"}),
    "Pod": frozenset({"ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"}),
}
# The status list of each container field: where the kubelet reports the image a container runs.
STATUS_FIELDS = dict(
    zip(
        CONTAINER_FIELDS,
        ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"),
        strict=True,
    )
)
# Controllers above a Pod: ReplicaSet -> Deployment, Job -> CronJob.
_OWNER_DEPTH = 3
# What the audit needs of a pod spec once its images are read: placement (all of what narrows the node
# groups, a bound Pod's nodeName too) and credentials.
KEPT_SPEC_FIELDS = (*PLACEMENT_FIELDS, "imagePullSecrets", "serviceAccountName", "serviceAccount")


@dataclass(frozen=True)
class Workload:
    """One object that makes Pods, named as `namespace/kind/name`."""

    namespace: str  # '' when a manifest does not say (it goes to the namespace it is applied in)
    kind: str
    name: str
    images: tuple[str, ...]  # distinct, in container order (init containers first)
    pod_spec: Mapping[str, Any]  # the KEPT_SPEC_FIELDS only
    api_version: str = ""
    uid: str = ""
    # Image as written -> the digests its Pods' containers run now (from their status), when listed.
    running: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return label_of(self.namespace, self.kind, self.name)


def label_of(namespace: str, kind: str, name: str) -> str:
    """`namespace/kind/name`, leaving out what is not known."""
    return "/".join(part for part in (namespace, kind, name) if part)


def objects_in(documents: Iterable[Any]) -> Iterator[Mapping[str, Any]]:
    """Every object of some parsed documents, the items of `List` kinds (`v1/List`, `PodList`) included."""
    for document in documents:
        if not isinstance(document, Mapping):
            continue
        kind = document.get("kind")
        items = document.get("items")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
            default_kind = kind.removesuffix("List")
            for item in objects_in(items):
                # A typed list's items (a PodList's, as the API returns them) carry no kind of their own.
                yield item if "kind" in item or default_kind == "" else {**item, "kind": default_kind}
        else:
            yield document


def covered_by_owner(kind: str, metadata: Mapping[str, Any]) -> bool:
    """Whether the object's controller is a workload the audit judges in its stead."""
    covering = COVERING_OWNERS.get(kind, frozenset())
    owners = metadata.get("ownerReferences")
    if not covering or not isinstance(owners, list):
        return False
    return any(
        isinstance(o, Mapping) and o.get("controller") is True and o.get("kind") in covering for o in owners
    )


def workload_of(obj: Mapping[str, Any], kind: str | None = None) -> Workload | None:
    """The workload an object is, or None for an object of another kind or one its controller covers.

    `kind` for objects of a list the API returned (their items carry no kind). A pod spec of the wrong
    shape raises ConfigError naming the object."""
    kind = kind or obj.get("kind")
    if not isinstance(kind, str) or kind not in POD_SPEC_PATHS:
        return None
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    if covered_by_owner(kind, metadata):
        return None
    name = str(metadata.get("name") or metadata.get("generateName") or "")
    namespace = str(metadata.get("namespace") or "")
    try:
        pod_spec = pod_spec_of(kind, obj)
        images = tuple(dict.fromkeys(c.image for c in containers_of(pod_spec)))
    except InvalidReview as exc:
        raise ConfigError(f"{label_of(namespace, kind, name)}: {exc}") from None
    return Workload(
        namespace=namespace,
        kind=kind,
        name=name,
        images=images,
        pod_spec={k: pod_spec[k] for k in KEPT_SPEC_FIELDS if k in pod_spec},
        api_version=str(obj.get("apiVersion") or ""),
        uid=str(metadata.get("uid") or ""),
    )


def workloads_in(documents: Iterable[Any]) -> list[Workload]:
    """The workloads among parsed documents (objects and lists); other kinds are passed over."""
    found = (workload_of(obj) for obj in objects_in(documents))
    return [w for w in found if w is not None]


def controller_uid(metadata: Mapping[str, Any]) -> str:
    """The uid of the object's controller (its ownerReference with controller: true), or ''."""
    owners = metadata.get("ownerReferences")
    for owner in owners if isinstance(owners, list) else []:
        if (
            isinstance(owner, Mapping)
            and owner.get("controller") is True
            and isinstance(owner.get("uid"), str)
        ):
            return str(owner["uid"])
    return ""


def running_digests(pod: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """Image as written (without a digest /mutate pinned to it) -> the digests the Pod's containers
    report in `imageID` (`registry/repo@sha256:…`); an ID without a repository digest says nothing."""
    spec, status = pod.get("spec"), pod.get("status")
    if not isinstance(spec, Mapping) or not isinstance(status, Mapping):
        return {}
    found: dict[str, set[str]] = {}
    for field_name, status_name in STATUS_FIELDS.items():
        containers, statuses = spec.get(field_name), status.get(status_name)
        if not isinstance(containers, list) or not isinstance(statuses, list):
            continue
        images = {
            c.get("name"): c.get("image")
            for c in containers
            if isinstance(c, Mapping) and isinstance(c.get("image"), str)
        }
        for entry in statuses:
            image = images.get(entry.get("name")) if isinstance(entry, Mapping) else None
            image_id = entry.get("imageID") if isinstance(entry, Mapping) else None
            if isinstance(image, str) and isinstance(image_id, str) and "@" in image_id:
                found.setdefault(image.partition("@")[0], set()).add(image_id.rpartition("@")[2])
    return {image: frozenset(digests) for image, digests in found.items()}


def with_running(
    workloads: Iterable[Workload],
    pods: Iterable[tuple[str, Mapping[str, frozenset[str]]]],
    owners: Mapping[str, str],
) -> list[Workload]:
    """The workloads with what their Pods run: each Pod's (uid, running_digests) counts for the Pod and
    for its controllers up the `owners` (uid -> controller uid) chain."""
    by_uid: dict[str, dict[str, set[str]]] = {}
    for uid, running in pods:
        for _ in range(_OWNER_DEPTH + 1):
            if not uid:
                break
            for image, digests in running.items():
                by_uid.setdefault(uid, {}).setdefault(image, set()).update(digests)
            uid = owners.get(uid, "")
    return [
        replace(w, running={i: frozenset(d) for i, d in by_uid[w.uid].items()}) if w.uid in by_uid else w
        for w in workloads
    ]
