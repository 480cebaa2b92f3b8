"""Where each kind keeps its pod spec, and the containers, pull secrets and service account in it.

Pure reading of hostile objects: every step checks the type it finds and raises InvalidReview with the
path that is wrong. The webhook (`webhook.admission`), the audit (`webhook.workloads`), the manifests
of `pullcheck check` and digest pinning read an object through these, so they agree on its images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.errors import InvalidReview

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


@dataclass(frozen=True)
class ContainerImage:
    field: str  # initContainers | containers | ephemeralContainers
    name: str
    image: str


def service_account_of(pod_spec: Mapping[str, Any]) -> str:
    name = pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount")
    return name if isinstance(name, str) and name else "default"


def pull_secret_names_of(pod_spec: Mapping[str, Any]) -> tuple[str, ...]:
    entries = pod_spec.get("imagePullSecrets")
    if not isinstance(entries, list):
        return ()
    names = (e.get("name") for e in entries if isinstance(e, Mapping))
    return tuple(dict.fromkeys(n for n in names if isinstance(n, str) and n))


def require_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidReview(f"{what} is not an object")
    return value


def pod_spec_of(kind: str, obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod spec inside an object of a supported kind; empty when the object has none yet."""
    spec: Any = obj
    for step in POD_SPEC_PATHS[kind]:
        spec = spec.get(step) if isinstance(spec, Mapping) else None
    if spec is None:
        return {}
    return require_mapping(spec, f"{kind} {'.'.join(POD_SPEC_PATHS[kind])}")


def containers_of(pod_spec: Mapping[str, Any]) -> list[ContainerImage]:
    """Every container with an image, init containers first (a template's container may omit it)."""
    found = []
    for field_name in CONTAINER_FIELDS:
        entries = pod_spec.get(field_name) or []
        if not isinstance(entries, list):
            raise InvalidReview(f"{field_name} is not a list")
        for entry in entries:
            container = require_mapping(entry, f"an entry of {field_name}")
            image = container.get("image")
            if isinstance(image, str) and image:
                found.append(ContainerImage(field_name, str(container.get("name") or ""), image))
    return found
