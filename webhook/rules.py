"""The rules: what each runtime does with the documents a registry served, as findings.

Pure functions over `webhook.documents.Resolution`; every row of RUNTIMES.md that a registry can show
has a rule here.  Severities are the defaults of DESIGN.md; the policy adjusts them afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook import mediatypes as mt
from webhook import platforms
from webhook.codes import Code, Severity
from webhook.documents import (
    INDEX,
    MANIFEST,
    SCHEMA1,
    Document,
    Resolution,
    Structure,
    config_descriptor,
    descriptors,
    schema1_blobs,
)
from webhook.findings import DENY, WARN, Finding
from webhook.platforms import Platform
from webhook.profiles import Profile, profile_for
from webhook.runtimes import Target

MAX_INDEX_DEPTH = 3  # index → index → …: how deep nested indexes are followed (the resolver's too)

_STRUCTURE_NAMES = {INDEX: "an index", MANIFEST: "an image manifest", SCHEMA1: "a schema 1 manifest"}


def judge(resolution: Resolution, target: Target, *, unqualified: bool = False) -> list[Finding]:
    """Everything the runtime of `target` would trip over when pulling and starting this image."""
    return _Judge(resolution, target).run(unqualified)


def effective_media_type(content_type: str, profile: Profile) -> str:
    """The media type a runtime acts on, read from the Content-Type the registry served."""
    if content_type in profile.schema1_content_types:
        return mt.DOCKER_SCHEMA1_SIGNED
    if profile.unknown_content_type_is_schema1 and content_type not in mt.MANIFEST_TYPES:
        return mt.DOCKER_SCHEMA1_SIGNED
    return content_type


def _expected_structure(media_type: str) -> Structure | None:
    if media_type in mt.SCHEMA1_TYPES:
        return SCHEMA1
    if media_type in mt.INDEX_TYPES:
        return INDEX
    if media_type in mt.IMAGE_MANIFEST_TYPES:
        return MANIFEST
    return None


class _Judge:
    def __init__(self, resolution: Resolution, target: Target) -> None:
        self.resolution = resolution
        self.target = target
        self.runtime = target.runtime
        self.profile = profile_for(target)
        self.findings: list[Finding] = []

    def add(self, code: Code, message: str, severity: Severity | None = None) -> None:
        self.findings.append(
            Finding(
                code=code,
                severity=severity or self.profile.severity(code),
                runtime=str(self.runtime),
                platform=str(self.target.platform),
                message=message,
            )
        )

    def too_large(self, what: str, size: int, cap: int) -> None:
        self.add(
            Code.MANIFEST_TOO_LARGE, f"{what} is {size} bytes, over {self.runtime_name}'s limit of {cap}"
        )

    @property
    def runtime_name(self) -> str:
        return self.runtime.display_name

    def run(self, unqualified: bool) -> list[Finding]:
        if unqualified:
            how = (
                "resolved through the node's registries.conf"
                if self.profile.short_names_from_node_config
                else "taken as docker.io"
            )
            self.add(Code.SHORT_NAME, f"short name: {how}")
        resolution = self.resolution
        if resolution.error is not None:
            self.add(resolution.error.code, resolution.error.message)
            return self.findings
        if resolution.top is None:  # the resolver always sets one of error and top
            return self.findings
        self.top_level(resolution.top)
        return self.findings

    # -- manifests -------------------------------------------------------------------------------

    def top_level(self, top: Document) -> None:
        malformed = self.resolution.malformed_digest_header
        if malformed is not None and self.profile.checks_digest_header:
            self.add(
                Code.DIGEST_MISMATCH,
                f"the registry's Docker-Content-Digest {malformed} is not a digest: {self.runtime_name} "
                "refuses the answer",
            )
            return
        if top.size > self.profile.manifest_cap:
            self.too_large("manifest", top.size, self.profile.manifest_cap)
            return
        media_type = effective_media_type(top.content_type, self.profile)
        structure = self.check_structure(top, media_type, "manifest")
        if structure == SCHEMA1:
            self.schema1(top, child=False)
        elif structure == INDEX:
            self.index(top)
        elif structure == MANIFEST:
            self.image_manifest(top, check_platform=True)

    def check_structure(self, document: Document, media_type: str, what: str) -> Structure | None:
        """The structure to judge further, or None after a finding that ends the pull."""
        expected = _expected_structure(media_type)
        actual = document.structure
        if expected is None:
            self.add(
                Code.MEDIA_TYPE_MISMATCH,
                f"{what} served as {document.content_type or 'no Content-Type'}, "
                f"a type {self.runtime_name} does not pull",
            )
            return None
        if actual != expected:
            served = document.content_type or "no Content-Type"
            found = _STRUCTURE_NAMES.get(actual, "not a manifest")
            self.add(
                Code.MEDIA_TYPE_MISMATCH,
                f"{what} served as {served} ({self.runtime_name} reads {media_type}) but the body is {found}",
            )
            if actual == SCHEMA1:
                self.add(Code.SCHEMA1, f"{what} body is Docker schema 1", severity=DENY)
            return None
        return expected

    def schema1(self, document: Document, *, child: bool) -> None:
        if child and self.profile.schema1_child_refused:
            # Conversion only applies to a top-level schema 1 manifest, in every containerd version.
            self.add(
                Code.SCHEMA1,
                f"the manifest selected from the list is Docker schema 1, which {self.runtime_name} "
                "cannot pull from a list",
                severity=DENY,
            )
        elif child:
            self.add(Code.SCHEMA1, "the manifest selected from the list is Docker schema 1 (deprecated)")
        else:
            why = self.profile.schema1.why.format(runtime=self.runtime_name)
            self.add(Code.SCHEMA1, f"Docker schema 1 manifest: {why}")
        for blob in schema1_blobs(document.body):
            if blob in self.resolution.missing:
                self.add(Code.MISSING_BLOB, f"layer {short(blob)} is missing from the registry")
                break

    def index(self, index: Document, depth: int = 0) -> None:
        entries = descriptors(index.body, "manifests")
        wanted = self.target.platform
        chosen = platforms.select(entries, wanted, self.profile.selection)
        fetched = self.profile.fetched_entries(entries, wanted)
        offered = sorted({str(p) for e in entries if (p := platforms.entry_platform(e)) is not None})
        has = f"; it has {', '.join(offered) or 'no platforms'}"
        if chosen is None:
            self.add(
                Code.NO_MATCHING_PLATFORM,
                f"the index has no entry for {wanted}"
                + (
                    f" ({self.runtime_name} takes no 386 or 32-bit arm fallback)"
                    if self.profile.selection == "exact"
                    else ""
                )
                + has,
            )
            return
        if chosen not in fetched:
            # The transfer service fetched only exact matches, then looks for the fallback's config.
            self.add(
                Code.NO_MATCHING_PLATFORM,
                f"the index has no entry for exactly {wanted}; {self.profile} fetches only those "
                f"and fails on the {platforms.entry_platform(chosen)} fallback{has}",
            )
            return
        for sibling in fetched:
            if sibling is not chosen and sibling["digest"] != chosen["digest"]:
                problem = self.child_problem(sibling)
                if problem is not None:
                    self.add(
                        problem[0],
                        f"{self.profile} fetches every entry for {wanted}, and another one is broken: "
                        + problem[1],
                    )
        problem = self.child_problem(chosen)
        if problem is not None:
            self.add(*problem)
            return
        child = self.resolution.manifests.get(chosen["digest"])
        if child is None:
            return  # not fetched: the deadline ran out first, reported by the resolver
        if self.profile.caps_child_manifests and child.size > self.profile.manifest_cap:
            self.too_large("manifest", child.size, self.profile.manifest_cap)
            return
        declared = chosen.get("mediaType")
        media_type = (
            (declared if isinstance(declared, str) else "")
            if self.profile.child_type_from_descriptor
            else effective_media_type(child.content_type, self.profile)
        )
        structure = self.check_structure(child, media_type, f"the {wanted} manifest")
        if structure == SCHEMA1:
            self.schema1(child, child=True)
        elif structure == INDEX and not self.profile.follows_nested_index:
            self.add(
                Code.NO_MATCHING_PLATFORM,
                f"the entry for {wanted} is itself an index, which {self.runtime_name} refuses "
                "(a manifest list instead of a single image's manifest)",
            )
        elif structure == INDEX and depth + 1 >= MAX_INDEX_DEPTH:
            self.add(
                Code.NO_MATCHING_PLATFORM,
                f"indexes nested more than {MAX_INDEX_DEPTH} deep: pullcheck does not follow them",
                severity=WARN,
            )
        elif structure == INDEX:
            self.index(child, depth + 1)
        elif structure == MANIFEST:
            platformless = platforms.entry_platform(chosen) is None
            self.image_manifest(child, check_platform=platformless, from_index=True)

    def child_problem(self, entry: Mapping[str, Any]) -> tuple[Code, str] | None:
        """Why the child manifest an index entry names cannot be fetched as described, if it cannot."""
        digest = entry["digest"]
        where = platforms.entry_platform(entry) or "platform-less"
        if digest in self.resolution.missing:
            return Code.MISSING_BLOB, f"the {where} manifest {short(digest)} is missing from the registry"
        problem = self.resolution.failures.get(digest)
        if problem is not None:
            return problem.code, problem.message
        child = self.resolution.manifests.get(digest)
        if child is None:
            return None
        size = self.size_problem(f"the {where} manifest {short(digest)}", "manifest", entry, child.size)
        if size is not None:
            return size
        config = config_descriptor(child.body)
        blobs = [config] if config is not None else []
        blobs += [
            d
            for d in descriptors(child.body, "layers")
            if not mt.is_nondistributable(str(d.get("mediaType")))
        ]
        for blob in blobs:
            if blob["digest"] in self.resolution.missing:
                return (
                    Code.MISSING_BLOB,
                    f"{short(blob['digest'])} of the {where} manifest is missing from the registry",
                )
            failure = self.resolution.failures.get(blob["digest"])
            if failure is not None:
                return failure.code, failure.message
        return None

    def size_problem(
        self, what: str, kind: str, descriptor: Mapping[str, Any], served: int | None
    ) -> tuple[Code, str] | None:
        """A descriptor whose size differs from what the registry serves, when this runtime checks it."""
        declared = descriptor.get("size")
        if kind not in self.profile.checked_sizes or served is None or not isinstance(declared, int):
            return None
        if declared == served:
            return None
        return (
            Code.SIZE_MISMATCH,
            f"{what} is {served} bytes but its descriptor says {declared}: {self.runtime_name} checks sizes",
        )

    def image_manifest(self, manifest: Document, *, check_platform: bool, from_index: bool = False) -> None:
        body = manifest.body
        is_oci = manifest_is_oci(manifest, body)
        config_desc = config_descriptor(body)
        artifact_type = body.get("artifactType") if isinstance(body, Mapping) else None
        config_type = config_desc.get("mediaType") if config_desc else None
        if config_desc is None:
            self.add(Code.MEDIA_TYPE_MISMATCH, "the image manifest has no config descriptor")
            return
        if config_type not in mt.CONFIG_TYPES:
            # The config decides, not `artifactType`: an image config with one runs everywhere (run).
            kind = (
                f"artifact of type {artifact_type}"
                if isinstance(artifact_type, str) and artifact_type
                else "artifact"
            )
            self.add(Code.NOT_AN_IMAGE, f"{kind} with config type {config_type}, not a container image")
            return
        if is_oci and config_type == mt.DOCKER_CONFIG:
            self.add(
                Code.MIXED_MEDIA_TYPES,
                "OCI manifest with a Docker config"
                + (
                    f": {self.runtime_name} refuses it (invalid mixed OCI image)"
                    if self.profile.refuses_mixed_media_types
                    else ""
                ),
            )
        layers = descriptors(body, "layers")
        self.layers(layers, is_oci)
        limit = self.profile.max_layers
        if limit is not None and len(layers) > limit:
            self.add(
                Code.UNSUPPORTED_LAYER,
                f"{len(layers)} layers, more than the {limit} {self.runtime_name} can stack",
            )
        config = self.config(config_desc)
        if config is None:
            return
        self.rootfs(config, layers)
        if check_platform:
            self.platform(config, from_index)

    def config(self, descriptor: Mapping[str, Any]) -> Mapping[str, Any] | None:
        digest = descriptor["digest"]
        if digest in self.resolution.missing:
            self.add(Code.MISSING_BLOB, f"the image config {short(digest)} is missing from the registry")
            return None
        problem = self.resolution.failures.get(digest)
        if problem is not None:
            self.add(problem.code, f"image config: {problem.message}")
            return None
        document = self.resolution.configs.get(digest)
        if document is None:
            return None
        cap = self.profile.config_cap
        if cap is not None and document.size > cap:
            self.too_large("image config", document.size, cap)
            return None
        mismatch = self.size_problem("the image config", "config", descriptor, document.size)
        if mismatch is not None:
            self.add(*mismatch)
            return None
        if not isinstance(document.body, Mapping):
            self.add(Code.MEDIA_TYPE_MISMATCH, "the image config is not a JSON object")
            return None
        return document.body

    def layers(self, layers: list[Mapping[str, Any]], is_oci: bool) -> None:
        for layer in layers:
            media_type = layer.get("mediaType")
            digest = layer["digest"]
            name = short(digest)
            if not isinstance(media_type, str):
                self.add(Code.UNSUPPORTED_LAYER, f"layer {name} has no mediaType")
                continue
            if media_type.endswith(mt.ENCRYPTED_SUFFIX):
                self.add(Code.ENCRYPTED_LAYER, f"layer {name} is encrypted ({media_type})")
            elif mt.is_nondistributable(media_type):
                self.add(Code.NONDISTRIBUTABLE_LAYER, f"layer {name} is non-distributable ({media_type})")
            problem = self.layer_problem(mt.without_encryption(media_type), is_oci) or self.content_problem(
                media_type, self.resolution.heads.get(digest)
            )
            size = self.size_problem(f"layer {name}", "layer", layer, self.resolution.sizes.get(digest))
            if problem is not None:
                code, message = problem
                self.add(code, f"layer {name}: {message}")
            elif self.resolution.foreign.get(digest) is False:
                self.unreachable_foreign_layer(name, digest)
            elif digest in self.resolution.missing and not mt.is_nondistributable(media_type):
                self.add(Code.MISSING_BLOB, f"layer {name} is missing from the registry")
            elif digest in self.resolution.failures:
                failure = self.resolution.failures[digest]
                self.add(failure.code, f"layer {name}: {failure.message}")
            elif size is not None:
                self.add(*size)

    def unreachable_foreign_layer(self, name: str, digest: str) -> None:
        if not self.profile.foreign_layer_registry_fallback:
            self.add(
                Code.MISSING_BLOB,
                f"layer {name}: none of its urls answers, and {self.runtime_name} does not fall back "
                "to the registry",
            )
        elif digest in self.resolution.missing:
            self.add(Code.MISSING_BLOB, f"layer {name}: none of its urls answers and the registry lacks it")

    def content_problem(self, media_type: str, head: bytes | None) -> tuple[Code, str] | None:
        """What the layer's first bytes (read for uncompressed and unknown types) mean to this runtime."""
        if head is None:
            return None
        content = mt.content_of(head)
        if content is None:
            return (
                Code.UNSUPPORTED_LAYER,
                f"{media_type} bytes are no tar archive, gzip or zstd: nothing to apply",
            )
        if (
            content != "tar"
            and media_type == mt.OCI_LAYER
            and media_type not in self.profile.compression_sniffed
        ):
            return (
                Code.UNSUPPORTED_LAYER,
                f"{content} bytes under the uncompressed type {media_type}: {self.runtime_name} reads "
                "them as a tar and fails",
            )
        return None

    def layer_problem(self, media_type: str, is_oci: bool) -> tuple[Code, str] | None:
        docker_type = media_type in mt.DOCKER_LAYER_TYPES
        profile = self.profile
        if media_type in profile.unsupported_layer_types:
            return Code.UNSUPPORTED_LAYER, f"{self.runtime_name} has no processor for {media_type}"
        if is_oci and not profile.checks_oci_layer_types:
            # containers/image does not check OCI layer types: it sniffs the compression of the bytes.
            return None
        if not is_oci and not docker_type:
            if mt.is_oci_layer(media_type):
                what = "Docker v2s2 manifest with an OCI layer type"
                if profile.refuses_mixed_media_types:
                    return Code.MIXED_MEDIA_TYPES, f"{what} {media_type}: {self.runtime_name} refuses it"
                return Code.MIXED_MEDIA_TYPES, what
            return Code.UNSUPPORTED_LAYER, f"no runtime can apply layer type {media_type}"
        if not is_oci and media_type not in profile.docker_manifest_layer_types:
            return (
                Code.UNSUPPORTED_LAYER,
                f"{self.runtime_name} refuses {media_type} in a Docker v2s2 manifest",
            )
        if not docker_type and not mt.is_oci_layer(media_type):
            return Code.UNSUPPORTED_LAYER, f"no runtime can apply layer type {media_type}"
        return None

    def rootfs(self, config: Mapping[str, Any], layers: list[Mapping[str, Any]]) -> None:
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, Mapping) else None
        count = len(diff_ids) if isinstance(diff_ids, list) else 0
        layer_count = len(layers)
        if count == layer_count:
            for position, (layer, diff_id) in enumerate(zip(layers, diff_ids or [], strict=True)):
                if diff_id == layer["digest"] and mt.is_compressed(str(layer.get("mediaType", ""))):
                    # Every runtime hashes the uncompressed tar and compares (run: all three fail).
                    self.add(
                        Code.ROOTFS_MISMATCH,
                        f"diff_id {position + 1} is the compressed layer's digest, not its tar's",
                    )
            return
        if self.profile.empty_diff_ids_ok and count == 0:
            return
        self.add(
            Code.ROOTFS_MISMATCH,
            f"config lists {count} diff_ids for {layer_count} layers",
        )

    def platform(self, config: Mapping[str, Any], from_index: bool) -> None:
        os_name, arch = config.get("os"), config.get("architecture")
        if not isinstance(os_name, str) or not isinstance(arch, str) or not os_name or not arch:
            return
        variant = config.get("variant")
        image = Platform(os_name, arch, variant if isinstance(variant, str) else "")
        if platforms.runs_on(image, self.target.platform):
            return
        if from_index and self.profile.checks_platformless_config:
            # containerd's images.Manifest checks a platform-less entry's config: no match, no pull.
            self.add(
                Code.NO_MATCHING_PLATFORM,
                f"the index entry {self.runtime_name} takes has no platform and its config says {image}, "
                f"not {self.target.platform}",
            )
            return
        self.add(
            Code.PLATFORM_MISMATCH,
            f"image is built for {image}; it pulls but cannot start on {self.target.platform}",
        )


def short(digest: str) -> str:
    """`sha256:` and the first 12 hex digits: enough for a person to tell layers apart."""
    algorithm, _, hex_digits = digest.partition(":")
    return f"{algorithm}:{hex_digits[:12]}" if hex_digits else digest


def manifest_is_oci(manifest: Document, body: Any) -> bool:
    """OCI or Docker v2s2, by the body's own mediaType, else by the Content-Type it was served with."""
    declared = body.get("mediaType") if isinstance(body, Mapping) else None
    if isinstance(declared, str) and declared in mt.IMAGE_MANIFEST_TYPES:
        return declared == mt.OCI_MANIFEST
    return manifest.content_type != mt.DOCKER_MANIFEST
