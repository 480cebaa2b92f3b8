"""Runtime profiles: everything one runtime version range does with an image, as one frozen value.

The rules (`webhook.rules`) and the resolver ask a target's profile; none of them branches on a
runtime's name or version.  A new runtime release that changes behaviour is one new row in `_PROFILES`
(copy the nearest profile with `dataclasses.replace` and change what differs).  Each field cites the
RUNTIMES.md row it comes from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from webhook import mediatypes as mt
from webhook import platforms
from webhook.codes import Code, Severity
from webhook.findings import DEFAULT_SEVERITY, DENY, INFO, WARN
from webhook.platforms import Platform
from webhook.runtimes import Runtime, Target

CONTAINERD_MANIFEST_CAP = 4_393_216  # core/remotes/docker/resolver.go: a typo'd 4 MiB, top-level only
CRIO_MANIFEST_CAP = 4_194_304  # containers/image internal/iolimits: every manifest and the config
DOCKER_MAX_LAYERS = 125  # Docker Engine's overlay2 limit; containerd has no fixed one
CRIO_MAX_LAYERS = 500  # containers/storage overlay: the mount options of more layers do not fit
# containerd reads an image config of any size; pullcheck's bound on reading one (CRI-O's cap is 4 MiB).
CONFIG_READ_CAP = 16 * 1024 * 1024

# How an index entry is chosen: containerd's ordered fallback vector (`platforms.Only`, amd64 → 386,
# arm64 → 32-bit arm), or containers/image's exact os/architecture with its variant table.
Selection = Literal["fallback", "exact"]


@dataclass(frozen=True)
class Schema1:
    """What a top-level schema 1 manifest means for this runtime."""

    severity: Severity
    why: str  # completes "Docker schema 1 manifest: …"; {runtime} is the runtime's display name


@dataclass(frozen=True)
class Profile:
    """One runtime version range.  `name` is for people, e.g. 'containerd 2.1+ (transfer service)'."""

    name: str
    # -- reading what the registry served -----------------------------------------------------------
    # Content-Types taken for schema 1 besides the schema 1 types (containerd: '' and text/plain).
    schema1_content_types: frozenset[str] = frozenset({"", "text/plain"})
    # containers/image: every type it does not know is tried as signed schema 1.
    unknown_content_type_is_schema1: bool = False
    # containerd acts on the index entry's mediaType, containers/image on the child's Content-Type.
    child_type_from_descriptor: bool = True
    # -- size caps -----------------------------------------------------------------------------------
    manifest_cap: int = CONTAINERD_MANIFEST_CAP
    caps_child_manifests: bool = False  # whether the manifest cap covers manifests chosen from an index
    config_cap: int | None = None  # CRI-O reads the config through the same 4 MiB limit
    # -- choosing from an index ----------------------------------------------------------------------
    selection: Selection = "fallback"
    # containerd 2.1's transfer service fetches only the children matching the node exactly (and those
    # without a platform), every one of them, then takes the config by the fallback order.
    fetches_every_exact_match: bool = False
    follows_nested_index: bool = True  # index → index → manifest (CRI-O: a manifest list, not an image)
    # A platform-less entry's config is read and must match (containerd's images.Manifest).
    checks_platformless_config: bool = True
    # -- schema 1 ------------------------------------------------------------------------------------
    schema1: Schema1 = Schema1(DENY, "removed")
    schema1_child_refused: bool = (
        True  # a schema 1 manifest chosen from a list (conversion is top-level only)
    )
    # -- image or artifact ---------------------------------------------------------------------------
    # CRI-O: an OCI manifest with a Docker config, or a Docker manifest with OCI layer types, fails.
    refuses_mixed_media_types: bool = False
    # -- layers --------------------------------------------------------------------------------------
    # Layer types allowed in a Docker v2s2 manifest; OCI types there are mixed media types.
    docker_manifest_layer_types: frozenset[str] = mt.DOCKER_LAYER_TYPES
    checks_oci_layer_types: bool = True  # containers/image sniffs compression instead of reading the type
    unsupported_layer_types: frozenset[str] = frozenset()  # types this version has no processor for
    empty_diff_ids_ok: bool = False  # containers/image accepts an empty rootfs.diff_ids
    # Uncompressed layer types whose bytes are still checked for gzip/zstd (containerd: Docker's only).
    compression_sniffed: frozenset[str] = frozenset({mt.DOCKER_LAYER})
    # Descriptors whose size must equal what is served: 'manifest' (index entries), 'config', 'layer'.
    checked_sizes: frozenset[str] = frozenset({"manifest", "config", "layer"})
    checks_digest_header: bool = True  # a malformed Docker-Content-Digest fails the pull
    # A foreign layer none of whose `urls` answers is fetched from the registry (CRI-O never falls back).
    foreign_layer_registry_fallback: bool = True
    max_layers: int | None = None
    # -- names ---------------------------------------------------------------------------------------
    short_names_from_node_config: bool = False  # CRI-O: registries.conf decides; else docker.io
    # The profile of this runtime on a node that uses the local pull path (`use_local_image_pull`).
    local_pull: Profile | None = None

    def __str__(self) -> str:
        return self.name

    def severity(self, code: Code) -> Severity:
        """The default severity of a finding code on this runtime (the policy may override it)."""
        if code == Code.SCHEMA1:
            return self.schema1.severity
        if code == Code.MIXED_MEDIA_TYPES and not self.refuses_mixed_media_types:
            return INFO
        if code == Code.SHORT_NAME and not self.short_names_from_node_config:
            return INFO
        return DEFAULT_SEVERITY[code]

    def fetched_entries(
        self, entries: Sequence[Mapping[str, Any]], wanted: Platform
    ) -> list[Mapping[str, Any]]:
        """The index entries this runtime fetches for a node of platform `wanted`."""
        if self.fetches_every_exact_match:
            return platforms.exact_entries(entries, wanted)
        chosen = platforms.select(entries, wanted, self.selection)
        return [] if chosen is None else [chosen]


CONTAINERD_1_6 = Profile(
    "containerd 1.6",
    schema1=Schema1(INFO, "{runtime} converts it"),
    unsupported_layer_types=frozenset({mt.DOCKER_LAYER_ZSTD}),  # run with 1.6.20: no processor
)
CONTAINERD_1_7 = replace(
    CONTAINERD_1_6,
    name="containerd 1.7",
    schema1=Schema1(WARN, "{runtime} still pulls it, deprecated"),
    unsupported_layer_types=frozenset(),
)
CONTAINERD_2_0 = replace(
    CONTAINERD_1_7, name="containerd 2.0", schema1=Schema1(DENY, "disabled by default since containerd 2.0")
)
# containerd 2.1+ with `use_local_image_pull` (or settings that force the local path) pulls like 2.0.
CONTAINERD_2_1_LOCAL = replace(
    CONTAINERD_2_0, name="containerd 2.1+ (local pull)", schema1=Schema1(DENY, "removed in containerd 2.1")
)
CONTAINERD_2_1 = replace(
    CONTAINERD_2_1_LOCAL,
    name="containerd 2.1+ (transfer service)",
    fetches_every_exact_match=True,
    local_pull=CONTAINERD_2_1_LOCAL,
)
CRIO = Profile(
    "CRI-O",
    schema1_content_types=frozenset(),
    unknown_content_type_is_schema1=True,
    child_type_from_descriptor=False,
    manifest_cap=CRIO_MANIFEST_CAP,
    caps_child_manifests=True,
    config_cap=CRIO_MANIFEST_CAP,
    selection="exact",
    follows_nested_index=False,
    checks_platformless_config=False,
    schema1=Schema1(WARN, "{runtime} still pulls it, deprecated"),
    schema1_child_refused=False,
    refuses_mixed_media_types=True,
    docker_manifest_layer_types=mt.CRIO_DOCKER_LAYER_TYPES,
    checks_oci_layer_types=False,
    empty_diff_ids_ok=True,
    compression_sniffed=frozenset({mt.DOCKER_LAYER, mt.OCI_LAYER}),
    checked_sizes=frozenset({"config"}),
    checks_digest_header=False,  # not read on a by-tag pull
    foreign_layer_registry_fallback=False,
    max_layers=CRIO_MAX_LAYERS,
    short_names_from_node_config=True,
)
DOCKER_25 = replace(
    CONTAINERD_1_7,
    name="Docker Engine",
    schema1=Schema1(WARN, "{runtime} still pulls it, deprecated"),
    max_layers=DOCKER_MAX_LAYERS,
)
DOCKER_26 = replace(
    DOCKER_25, name="Docker Engine 26+", schema1=Schema1(DENY, "disabled by default since Docker 26")
)

# (runtime kind, first version, profile), newest first within a kind: the first row at or below a
# runtime's version is its profile.  A release that changes behaviour is one row here.
_PROFILES: tuple[tuple[str, tuple[int, int], Profile], ...] = (
    ("containerd", (2, 1), CONTAINERD_2_1),
    ("containerd", (2, 0), CONTAINERD_2_0),
    ("containerd", (1, 7), CONTAINERD_1_7),
    ("containerd", (0, 0), CONTAINERD_1_6),
    ("cri-o", (0, 0), CRIO),
    ("docker", (26, 0), DOCKER_26),
    ("docker", (0, 0), DOCKER_25),
)


def profile_of(runtime: Runtime) -> Profile:
    """The profile of a runtime as Kubernetes names it."""
    for kind, since, profile in _PROFILES:
        if runtime.kind == kind and runtime.version[:2] >= since:
            return profile
    raise ValueError(f"no profile for {runtime}")  # parse_runtime admits only the kinds above


def profile_for(target: Target) -> Profile:
    profile = profile_of(target.runtime)
    if target.local_pull and profile.local_pull is not None:
        return profile.local_pull
    return profile
