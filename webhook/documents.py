"""What the registry adapter hands to the rules: fetched documents, verified, as plain data.

The adapter fetches what a runtime would fetch (top-level manifest, the child an index selects for
each target, the image config, the existence of each layer) and records here what it got and what
it could not get.  The rules in `webhook.rules` judge this data without any network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook import mediatypes as mt

INDEX, MANIFEST, SCHEMA1, UNKNOWN = "index", "manifest", "schema1", "unknown"


@dataclass(frozen=True)
class Problem:
    """Why something could not be fetched: a finding code and a one-line message."""

    code: str
    message: str


@dataclass(frozen=True)
class Document:
    """A manifest, index or config as served, its bytes verified against `digest`."""

    digest: str
    content_type: str  # Content-Type as served, parameters stripped, lower-case; '' when absent
    size: int
    body: Any  # parsed JSON; None when the bytes are not JSON

    @staticmethod
    def from_bytes(digest: str, content_type: str, data: bytes) -> Document:
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            body = None
        return Document(digest, mt.strip_parameters(content_type), len(data), body)

    @property
    def structure(self) -> str:
        """What the body is, by its fields (not by Content-Type)."""
        return structure_of(self.body)


def structure_of(body: Any) -> str:
    if not isinstance(body, Mapping):
        return UNKNOWN
    if "fsLayers" in body or body.get("schemaVersion") == 1:
        return SCHEMA1
    if isinstance(body.get("manifests"), list):
        return INDEX
    if isinstance(body.get("config"), Mapping) or isinstance(body.get("layers"), list):
        return MANIFEST
    return UNKNOWN


def descriptors(body: Any, key: str) -> list[Mapping[str, Any]]:
    """The well-formed descriptors under `key` (`manifests`, `layers`), skipping junk entries."""
    if not isinstance(body, Mapping):
        return []
    items = body.get(key)
    if not isinstance(items, list):
        return []
    return [d for d in items if isinstance(d, Mapping) and isinstance(d.get("digest"), str)]


def config_descriptor(body: Any) -> Mapping[str, Any] | None:
    if not isinstance(body, Mapping):
        return None
    config = body.get("config")
    if isinstance(config, Mapping) and isinstance(config.get("digest"), str):
        return config
    return None


def schema1_blobs(body: Any) -> list[str]:
    """The `blobSum` digests of a schema 1 manifest's fsLayers."""
    if not isinstance(body, Mapping) or not isinstance(body.get("fsLayers"), list):
        return []
    return [
        layer["blobSum"]
        for layer in body["fsLayers"]
        if isinstance(layer, Mapping) and isinstance(layer.get("blobSum"), str)
    ]


@dataclass
class Resolution:
    """Everything fetched for one image reference.

    `error` is set when the image could not be resolved at all (the top-level manifest); the other
    maps are keyed by digest.  A digest in `missing` was answered 404; one in `failures` could not be
    read for another reason (too large, digest mismatch, registry trouble).
    """

    image: str
    top: Document | None = None
    manifests: dict[str, Document] = field(default_factory=dict)  # child manifests of an index
    configs: dict[str, Document] = field(default_factory=dict)
    present: set[str] = field(default_factory=set)  # layer/blob digests the registry confirmed
    missing: set[str] = field(default_factory=set)
    failures: dict[str, Problem] = field(default_factory=dict)
    error: Problem | None = None
