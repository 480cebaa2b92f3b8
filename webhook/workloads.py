"""Workloads in Kubernetes objects: which objects make Pods, from which pod spec, with which images.

Pure: the objects come parsed (from the API or from manifest files); the pod spec and its images are
found by admission's extraction, so the audit and the webhook read an object the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.admission import POD_SPEC_PATHS, containers_of, pod_spec_of
from webhook.errors import ConfigError, InvalidReview

WORKLOAD_KINDS = tuple(POD_SPEC_PATHS)
# Objects whose controller already stands for them in the audit: the controller's template makes
# them, so judging both would name one problem twice (a Deployment's ReplicaSets and their Pods).
COVERING_OWNERS: Mapping[str, frozenset[str]] = {
    "ReplicaSet": frozenset({"Deployment"}),
    "Job": frozenset({"CronJob"}),
    "Pod": frozenset({"ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"}),
}
# What the audit needs of a pod spec once its images are read: placement and credentials.
KEPT_SPEC_FIELDS = ("nodeSelector", "affinity", "imagePullSecrets", "serviceAccountName", "serviceAccount")


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
