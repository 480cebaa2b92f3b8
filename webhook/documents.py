"""What the registry adapter hands to the rules: fetched documents, verified, as plain data.

The adapter fetches what a runtime would fetch (top-level manifest, the child an index selects for
each target, the image config, the existence of each layer) and records here what it got and what
it could not get.  The rules in `webhook.rules` judge this data without any network.

Documents are validated here, at the edge: every field the runtimes decode (the OCI and Docker
structs containerd and containers/image unmarshal into) must have the type those structs give it,
else the document is refused with `InvalidDocument` (finding `INVALID_DOCUMENT`), as the runtimes'
JSON decoders refuse it.  A null counts as absent, as it does for Go's decoder, and is dropped; other
fields are kept as served.  So the rules can trust that a known field, when present, has its type.
"""

from __future__ import annotations

import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, Literal

from webhook import mediatypes as mt
from webhook.cache import json_size, weighs_itself
from webhook.codes import Code
from webhook.digests import quoted
from webhook.errors import InvalidDocument

# What a manifest body is, told apart by its fields; a config is known by where it was fetched from.
Structure = Literal["index", "manifest", "schema1", "unknown"]
DocumentKind = Literal[Structure, "config"]
INDEX: Final = "index"
MANIFEST: Final = "manifest"
SCHEMA1: Final = "schema1"
UNKNOWN: Final = "unknown"
CONFIG: Final = "config"  # an image config blob


@dataclass(frozen=True)
class Problem:
    """Why something could not be fetched: a finding code and a one-line message."""

    code: Code
    message: str


@weighs_itself
@dataclass(frozen=True)
class Document:
    """A manifest, index or config as served, its bytes verified against `digest`."""

    digest: str
    content_type: str  # Content-Type as served, parameters stripped, lower-case; '' when absent
    size: int
    body: Any  # parsed JSON; None when the bytes are not JSON

    @cached_property
    def weight(self) -> int:
        """The bytes this document holds in memory, its parsed body included (a 4 MB manifest of small
        descriptors holds several times its size): worked out once, when a cache first weighs it."""
        getsizeof = sys.getsizeof
        shell = getsizeof(self) + getsizeof(self.__dict__)
        strings = getsizeof(self.digest) + getsizeof(self.content_type)
        return shell + strings + getsizeof(self.size) + json_size(self.body)

    @staticmethod
    def from_bytes(digest: str, content_type: str, data: bytes, *, config: bool = False) -> Document:
        """The document as served, its body validated as an image config (`config`) or as the
        manifest its fields say it is; raises InvalidDocument when a field has the wrong type."""
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            body = None
        kind: DocumentKind = CONFIG if config else structure_of(body)
        what = f"{'image config' if config else 'manifest'} {digest}"
        return Document(digest, mt.strip_parameters(content_type), len(data), validated(body, kind, what))

    @property
    def structure(self) -> Structure:
        """What the body is, by its fields (not by Content-Type)."""
        return structure_of(self.body)


def structure_of(body: Any) -> Structure:
    if not isinstance(body, Mapping):
        return UNKNOWN
    if "fsLayers" in body or body.get("schemaVersion") == 1:
        return SCHEMA1
    if isinstance(body.get("manifests"), list):
        return INDEX
    if isinstance(body.get("config"), Mapping) or isinstance(body.get("layers"), list):
        return MANIFEST
    return UNKNOWN


# -- validation ---------------------------------------------------------------------------------


def _wrong(path: str, found: str, wanted: str) -> InvalidDocument:
    return InvalidDocument(f"{path or 'the body'} is {found}, not {wanted}")


def _described(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _plural(noun: str) -> str:
    return {"a string": "strings", "an integer": "integers", "a boolean": "booleans"}.get(noun, "objects")


class _Shape(ABC):
    """What a JSON value must be; `check` returns it cleaned (nulls dropped) or raises."""

    noun = ""

    @abstractmethod
    def check(self, value: Any, path: str) -> Any: ...


class _Scalar(_Shape):
    """A string or a boolean."""

    def __init__(self, kind: type, noun: str) -> None:
        self.kind, self.noun = kind, noun

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, self.kind):
            return value
        raise _wrong(path, _described(value), self.noun)


class _Integer(_Shape):
    """Go's int64: a float is no integer to Go even when whole."""

    noun = "an integer"

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong(path, _described(value), self.noun)
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _wrong(path, "a number out of the int64 range", self.noun)
        return value


class _List(_Shape):
    def __init__(self, item: _Shape) -> None:
        self.item = item
        self.noun = f"a list of {_plural(item.noun)}"

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise _wrong(path, _described(value), self.noun)
        return [self.item.check(v, f"{path}[{n}]") for n, v in enumerate(value)]


class _Map(_Shape):
    """An object with any keys and values of one shape (annotations, labels, volumes)."""

    def __init__(self, value: _Shape) -> None:
        self.value = value
        self.noun = f"an object of {_plural(value.noun)}"

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, Mapping):
            raise _wrong(path, _described(value), self.noun)
        return {k: self.value.check(v, f"{path}[{quoted(k)}]") for k, v in value.items() if v is not None}


class _Object(_Shape):
    """An object with known fields, each of its shape; other fields are kept unchecked."""

    noun = "an object"

    def __init__(self, fields: Mapping[str, _Shape], required: tuple[str, ...] = ()) -> None:
        self.fields, self.required = fields, required

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, Mapping):
            raise _wrong(path, _described(value), self.noun)
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            shape = self.fields.get(key)
            if item is None and shape is not None:
                continue  # Go's decoder leaves the field unset
            cleaned[key] = item if shape is None else shape.check(item, f"{path}.{key}" if path else key)
        for key in self.required:
            if key not in cleaned:
                raise InvalidDocument(f"{path}.{key} is missing" if path else f"{key} is missing")
        return cleaned


class _Any(_Shape):
    noun = "anything"

    def check(self, value: Any, path: str) -> Any:
        return value


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_STRING = _Scalar(str, "a string")
_INTEGER = _Integer()
_BOOLEAN = _Scalar(bool, "a boolean")
_STRINGS = _List(_STRING)
_LABELS = _Map(_STRING)
_SETS = _Map(_Object({}))  # Go's map[string]struct{}: exposed ports, volumes

# image-spec specs-go/v1 Platform (with Docker's `features`).
_PLATFORM = _Object(
    {
        "architecture": _STRING,
        "os": _STRING,
        "os.version": _STRING,
        "os.features": _STRINGS,
        "variant": _STRING,
        "features": _STRINGS,
    }
)
# image-spec Descriptor; the digest is required: without it nothing can be fetched.
_DESCRIPTOR = _Object(
    {
        "mediaType": _STRING,
        "digest": _STRING,
        "size": _INTEGER,
        "urls": _STRINGS,
        "annotations": _LABELS,
        "data": _STRING,
        "platform": _PLATFORM,
        "artifactType": _STRING,
    },
    required=("digest",),
)
_MANIFEST = _Object(
    {
        "schemaVersion": _INTEGER,
        "mediaType": _STRING,
        "artifactType": _STRING,
        "config": _DESCRIPTOR,
        "layers": _List(_DESCRIPTOR),
        "subject": _DESCRIPTOR,
        "annotations": _LABELS,
    }
)
_INDEX = _Object(
    {
        "schemaVersion": _INTEGER,
        "mediaType": _STRING,
        "artifactType": _STRING,
        "manifests": _List(_DESCRIPTOR),
        "subject": _DESCRIPTOR,
        "annotations": _LABELS,
    }
)
# docker/distribution schema1 Manifest (signatures are read by libtrust, not this struct).
_SCHEMA1 = _Object(
    {
        "schemaVersion": _INTEGER,
        "mediaType": _STRING,
        "name": _STRING,
        "tag": _STRING,
        "architecture": _STRING,
        "fsLayers": _List(_Object({"blobSum": _STRING}, required=("blobSum",))),
        "history": _List(_Object({"v1Compatibility": _STRING})),
        "signatures": _List(_Any()),
    }
)
# image-spec Image, ImageConfig, RootFS and History.
_CONFIG = _Object(
    {
        "created": _STRING,
        "author": _STRING,
        "architecture": _STRING,
        "os": _STRING,
        "os.version": _STRING,
        "os.features": _STRINGS,
        "variant": _STRING,
        "config": _Object(
            {
                "User": _STRING,
                "ExposedPorts": _SETS,
                "Env": _STRINGS,
                "Entrypoint": _STRINGS,
                "Cmd": _STRINGS,
                "Volumes": _SETS,
                "WorkingDir": _STRING,
                "Labels": _LABELS,
                "StopSignal": _STRING,
                "ArgsEscaped": _BOOLEAN,
            }
        ),
        "rootfs": _Object({"type": _STRING, "diff_ids": _STRINGS}),
        "history": _List(
            _Object(
                {
                    "created": _STRING,
                    "created_by": _STRING,
                    "author": _STRING,
                    "comment": _STRING,
                    "empty_layer": _BOOLEAN,
                }
            )
        ),
    }
)
_SHAPES: Mapping[DocumentKind, _Shape] = {
    MANIFEST: _MANIFEST,
    INDEX: _INDEX,
    SCHEMA1: _SCHEMA1,
    CONFIG: _CONFIG,
}


def validated(body: Any, kind: DocumentKind, what: str) -> Any:
    """`body` checked as a document of `kind` (INDEX, MANIFEST, SCHEMA1, CONFIG), nulls of known fields
    dropped; UNKNOWN bodies come back as they are (the rules say what they are not). Raises
    InvalidDocument naming `what` and the first field that has the wrong type."""
    shape = _SHAPES.get(kind)
    if shape is None:
        return body
    if body is None and kind == CONFIG:
        raise InvalidDocument(f"{what}: not JSON")
    try:
        return shape.check(body, "")
    except InvalidDocument as error:
        raise InvalidDocument(f"{what}: {error}") from None


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
    sizes: dict[str, int] = field(default_factory=dict)  # layer digest -> size the registry announced
    heads: dict[str, bytes] = field(default_factory=dict)  # layer digest -> its first bytes (see LAYER_HEAD)
    # foreign layer digest -> whether one of its `urls` answered (runtimes fetch those first)
    foreign: dict[str, bool] = field(default_factory=dict)
    # The manifest answer carried a Docker-Content-Digest that is not a digest (containerd refuses it).
    malformed_digest_header: str | None = None
    missing: set[str] = field(default_factory=set)
    failures: dict[str, Problem] = field(default_factory=dict)
    error: Problem | None = None
