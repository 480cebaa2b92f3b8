"""Media types the runtimes know, and how each runtime reads a Content-Type."""

from __future__ import annotations

DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER_PREFIX = "application/vnd.oci.image.layer."
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDISTRIBUTABLE_PREFIX = "application/vnd.oci.image.layer.nondistributable."

# Sent on every manifest request, schema 1 included: a Distribution registry down-converts to
# schema 1 when the docker v2 type is missing, and answers 404 for OCI content without the OCI types.
MANIFEST_ACCEPT = (
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
)

SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = SCHEMA1_TYPES | INDEX_TYPES | IMAGE_MANIFEST_TYPES
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

DOCKER_LAYER_TYPES = frozenset(
    {DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_LAYER_ZSTD, DOCKER_FOREIGN_LAYER, DOCKER_FOREIGN_LAYER_GZIP}
)
# What CRI-O (containers/image) accepts in a Docker v2s2 manifest's layers.
CRIO_DOCKER_LAYER_TYPES = frozenset(
    {DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_FOREIGN_LAYER, DOCKER_FOREIGN_LAYER_GZIP}
)
FOREIGN_LAYER_TYPES = frozenset({DOCKER_FOREIGN_LAYER, DOCKER_FOREIGN_LAYER_GZIP})

ENCRYPTED_SUFFIX = "+encrypted"


def strip_parameters(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json`, lower-cased; '' when absent."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def without_encryption(media_type: str) -> str:
    return media_type[: -len(ENCRYPTED_SUFFIX)] if media_type.endswith(ENCRYPTED_SUFFIX) else media_type


def is_oci_layer(media_type: str) -> bool:
    """Any `application/vnd.oci.image.layer.*` type (containerd accepts the whole family)."""
    return without_encryption(media_type).startswith(OCI_LAYER_PREFIX)


def is_nondistributable(media_type: str) -> bool:
    base = without_encryption(media_type)
    return base in FOREIGN_LAYER_TYPES or base.startswith(OCI_NONDISTRIBUTABLE_PREFIX)


# How many first bytes of a layer show what it is: the tar header's `ustar` magic ends at byte 262.
LAYER_HEAD = 512
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def needs_sniffing(media_type: str) -> bool:
    """Whether a layer's first bytes matter to a runtime: the OCI uncompressed type (containerd does not
    look for compression there) and types of no layer family (CRI-O applies what it finds)."""
    if media_type.endswith(ENCRYPTED_SUFFIX) or is_nondistributable(media_type):
        return False
    return media_type == OCI_LAYER or not (is_oci_layer(media_type) or media_type in DOCKER_LAYER_TYPES)


def is_compressed(media_type: str) -> bool:
    """A layer type that announces gzip or zstd compression (Docker's or OCI's spelling)."""
    return without_encryption(media_type).endswith(("gzip", "zstd"))


def content_of(head: bytes) -> str | None:
    """What a layer's first bytes are: 'gzip', 'zstd', 'tar', or None (none of those)."""
    if not head:
        return "tar"  # an empty blob reads as an empty archive
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if head[257:262] == b"ustar" or (len(head) >= LAYER_HEAD and not head.strip(b"\0")):
        return "tar"  # a POSIX/GNU header, or the zero blocks that end (or make) an empty archive
    return None
