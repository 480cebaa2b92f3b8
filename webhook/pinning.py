"""Pinning: rewrite each judged image to the digest that was judged.

A verdict on a tag holds for the moment it was given; the node pulls the tag later, maybe after it was
pushed again. Pinning writes the judged digest beside the tag (`app:1.2` -> `app:1.2@sha256:…`, the
index's own digest for an index, so each node still picks its platform), and runtimes pull by the digest.

Pure: the webhook hands in its results and gets a JSONPatch (RFC 6902) for the AdmissionReview response;
the command line gets the same rewrite applied to a copy of each manifest object.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from webhook.errors import InvalidReference
from webhook.findings import DENY, ImageResult
from webhook.podspec import CONTAINER_FIELDS, POD_SPEC_PATHS, pod_spec_of
from webhook.reference import parse
from webhook.wire import AdmissionResponse, AdmissionReviewAnswer

PATCH_TYPE = "JSONPatch"


def pointer(*parts: str | int) -> str:
    """A JSON Pointer (RFC 6901) to these object keys and array indexes: '~' is '~0', '/' is '~1'."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def pinnable(image: str) -> bool:
    """Whether the image as written names no digest yet (and is a reference at all)."""
    try:
        return parse(image).digest is None
    except InvalidReference:
        return False


def pins(results: Iterable[ImageResult]) -> dict[str, str]:
    """Image as written -> the same text pinned to the digest judged, for each image that was resolved,
    not denied (the validating webhook refuses those with its own message) and not pinned already."""
    return {
        result.image: f"{result.image}@{result.digest}"
        for result in results
        if result.digest is not None and result.verdict != DENY and pinnable(result.image)
    }


def _pinned_containers(
    pod_spec: Mapping[str, Any], pinned: Mapping[str, str]
) -> Iterator[tuple[str, int, str]]:
    """(container field, index, pinned image) of every container whose image is to be pinned."""
    for field_name in CONTAINER_FIELDS:
        entries = pod_spec.get(field_name)
        if not isinstance(entries, list):
            continue
        for index, container in enumerate(entries):
            image = container.get("image") if isinstance(container, Mapping) else None
            if isinstance(image, str) and image in pinned:
                yield field_name, index, pinned[image]


def patch(kind: str, pod_spec: Mapping[str, Any], pinned: Mapping[str, str]) -> list[dict[str, Any]]:
    """JSONPatch operations replacing each image of the kind's pod spec that `pinned` rewrites."""
    base = POD_SPEC_PATHS[kind]
    return [
        {"op": "replace", "path": pointer(*base, field_name, index, "image"), "value": image}
        for field_name, index, image in _pinned_containers(pod_spec, pinned)
    ]


def mutation_response(api_version: str, uid: str, operations: list[dict[str, Any]]) -> AdmissionReviewAnswer:
    """The AdmissionReview to send back from /mutate: always allowed, with the patch when there is one."""
    answer: AdmissionResponse = {"uid": uid, "allowed": True}
    if operations:
        answer["patchType"] = PATCH_TYPE
        answer["patch"] = base64.b64encode(json.dumps(operations, separators=(",", ":")).encode()).decode()
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": answer}


def pin_object(
    obj: Mapping[str, Any], pinned: Mapping[str, str], kind: str | None = None
) -> Mapping[str, Any]:
    """A copy of a manifest object (or a List of them) with its images pinned; the object itself when
    nothing changes. `kind` for the items of a typed list (a PodList's carry no kind of their own)."""
    kind = obj.get("kind") or kind
    items = obj.get("items")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
        pinned_items = [
            pin_object(item, pinned, kind.removesuffix("List") or None) if isinstance(item, Mapping) else item
            for item in items
        ]
        changed = any(new is not old for new, old in zip(pinned_items, items, strict=True))
        return {**obj, "items": pinned_items} if changed else obj
    if not isinstance(kind, str) or kind not in POD_SPEC_PATHS:
        return obj
    changes = list(_pinned_containers(pod_spec_of(kind, obj), pinned))
    if not changes:
        return obj
    copied: Any = copy.deepcopy(obj)
    spec = pod_spec_of(kind, copied)
    for field_name, index, image in changes:
        spec[field_name][index]["image"] = image
    return dict(copied)
