"""The image corpus: one repository `corpus/<name>` per case, tagged `<name>`, pushed into a registry.

Every image has layers and configs of its own (the case name is in the file content), so a runtime's
local store never lends one case the blobs of another."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.harness.hostile import Handler, HostileServer, document, status
from tests.harness.images import (
    Blob,
    Layer,
    Pusher,
    canonical,
    image_manifest,
    index_manifest,
    make_config,
    make_layer,
    platform_entry,
    sha256,
)
from webhook import mediatypes as mt

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
SBOM_TYPE = "application/spdx+json"
UNKNOWN_LAYER = "application/vnd.example.layer.v1"
EMPTY_CONFIG = Blob(b"{}", mt.OCI_EMPTY)


@dataclass(frozen=True)
class CorpusImage:
    ref: str  # 127.0.0.1:PORT/corpus/<name>:<name>
    what: str  # one line: what is special about this image


def _docker_layer(content: str) -> Layer:
    return make_layer(content, media_type=mt.DOCKER_LAYER_GZIP)


def _encrypted(layer: Layer) -> Layer:
    """The layer's bytes under AES-CTR with a key nobody keeps: what a node without keys receives."""
    encryptor = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
    ciphertext = encryptor.update(layer.data) + encryptor.finalize()
    return Layer(ciphertext, mt.OCI_LAYER_GZIP + mt.ENCRYPTED_SUFFIX, layer.diff_id)


@dataclass(frozen=True)
class Pulled:
    """The tag or digest a corpus case is pulled by, when it is not the case's name."""

    reference: str


class _Builder:
    def __init__(self, pusher: Pusher) -> None:
        self.pusher = pusher
        self.images: dict[str, CorpusImage] = {}

    def add(self, name: str, what: str, push: Callable[[str], object]) -> None:
        """`push` pushes under tag NAME, or returns `Pulled` to name another tag or a digest."""
        repository = f"corpus/{name}"
        pushed = push(repository)
        reference = pushed.reference if isinstance(pushed, Pulled) else name
        self.images[name] = CorpusImage(self.pusher.ref(repository, reference), what)

    def tag(self, repository: str) -> str:
        return repository.removeprefix("corpus/")


def build_corpus(pusher: Pusher, front: HostileServer | None = None) -> dict[str, CorpusImage]:
    """Push every corpus image; returns name -> CorpusImage. `front` serves the cases that need a
    registry to lie (no real registry sends a malformed Docker-Content-Digest); without one they are
    left out."""
    p = pusher
    b = _Builder(p)

    def simple(repository: str) -> str:
        return p.push_image(repository, b.tag(repository), [make_layer(repository)])

    def index(repository: str, platforms: list[tuple[str, str, str]], media_type: str = mt.OCI_INDEX) -> str:
        child_type = mt.DOCKER_MANIFEST if media_type == mt.DOCKER_LIST else mt.OCI_MANIFEST
        entries = [
            p.push_platform_image(repository, *platform, manifest_type=child_type) for platform in platforms
        ]
        return p.push_index(repository, b.tag(repository), entries, media_type)

    def docker_image(repository: str, layers: list[Layer]) -> str:
        return p.push_image(repository, b.tag(repository), layers, manifest_type=mt.DOCKER_MANIFEST)

    b.add(
        "schema1_signed",
        "Docker V2 Schema 1 signed manifest (pushed by skopeo --format v2s1)",
        lambda r: p.push_schema1(r, b.tag(r), r),
    )
    b.add("schema2", "Docker v2s2 manifest, gzip layer", lambda r: docker_image(r, [_docker_layer(r)]))
    b.add("oci", "OCI manifest, gzip layer", simple)
    b.add(
        "oci_index",
        "OCI index with linux/amd64 and linux/arm64",
        lambda r: index(r, [("linux", "amd64", ""), ("linux", "arm64", "")]),
    )
    b.add(
        "docker_list",
        "Docker manifest list with linux/amd64 and linux/arm64",
        lambda r: index(r, [("linux", "amd64", ""), ("linux", "arm64", "")], mt.DOCKER_LIST),
    )

    def other_platform(repository: str) -> str:
        layer = make_layer(repository)
        config = make_config([layer.diff_id], architecture="arm64", label=repository)
        return p.push_image(repository, b.tag(repository), [layer], config)

    b.add("other_platform", "single-platform image whose config says linux/arm64", other_platform)
    b.add(
        "index_missing_platform",
        "OCI index with linux/arm64 and linux/s390x only",
        lambda r: index(r, [("linux", "arm64", ""), ("linux", "s390x", "")]),
    )
    b.add("index_386_only", "OCI index with linux/386 only", lambda r: index(r, [("linux", "386", "")]))
    b.add(
        "index_armv7_only", "OCI index with linux/arm/v7 only", lambda r: index(r, [("linux", "arm", "v7")])
    )

    def index_child_schema1(repository: str) -> str:
        child = p.push_schema1(repository, "amd64-schema1", repository)
        entries = [
            {
                "mediaType": mt.DOCKER_SCHEMA1_SIGNED,
                "digest": child,
                "size": p.manifest_size(repository, child),
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            p.push_platform_image(repository, "linux", "arm64", manifest_type=mt.DOCKER_MANIFEST),
        ]
        return p.push_index(repository, b.tag(repository), entries, mt.DOCKER_LIST)

    b.add(
        "index_child_schema1", "Docker manifest list whose linux/amd64 child is schema 1", index_child_schema1
    )

    def artifact(repository: str) -> str:
        chart = make_layer(repository, media_type=HELM_CHART)
        config = Blob(b'{"name":"pullcheck-chart","version":"0.1.0","apiVersion":"v2"}', HELM_CONFIG)
        return p.push_image(repository, b.tag(repository), [chart], config)

    b.add("artifact", "Helm chart: config application/vnd.cncf.helm.config.v1+json", artifact)

    def artifact_type(repository: str) -> str:
        sbom = Blob(b'{"spdxVersion":"SPDX-2.3","name":"' + repository.encode() + b'"}', SBOM_TYPE)
        return p.push_image(repository, b.tag(repository), [sbom], EMPTY_CONFIG, artifactType=SBOM_TYPE)

    b.add("artifact_type", "OCI manifest with artifactType and the empty config", artifact_type)
    b.add(
        "zstd", "OCI manifest with a zstd layer", lambda r: p.push_image(r, b.tag(r), [make_layer(r, "zstd")])
    )
    b.add(
        "docker_zstd",
        "Docker v2s2 manifest with a rootfs.diff.tar.zstd layer",
        lambda r: docker_image(r, [make_layer(r, "zstd", mt.DOCKER_LAYER_ZSTD)]),
    )
    b.add(
        "docker_oci_layers",
        "Docker v2s2 manifest with OCI layer media types",
        lambda r: docker_image(r, [make_layer(r)]),
    )

    def oci_docker_config(repository: str) -> str:
        layer = make_layer(repository)
        config = make_config([layer.diff_id], label=repository, media_type=mt.DOCKER_CONFIG)
        return p.push_image(repository, b.tag(repository), [layer], config)

    b.add("oci_docker_config", "OCI manifest with a Docker config media type", oci_docker_config)

    def diffids_mismatch(repository: str) -> str:
        layers = [make_layer(f"{repository} 1"), make_layer(f"{repository} 2")]
        config = make_config([layers[0].diff_id], label=repository)
        return p.push_image(repository, b.tag(repository), layers, config)

    b.add("diffids_mismatch", "two layers, one diff_id in the config", diffids_mismatch)

    def diffids_empty(repository: str) -> str:
        layer = make_layer(repository)
        return p.push_image(repository, b.tag(repository), [layer], make_config([], label=repository))

    b.add("diffids_empty", "one layer, empty rootfs.diff_ids", diffids_empty)

    def missing_config(repository: str) -> str:
        layer = make_layer(repository)
        config = make_config([layer.diff_id], label=repository)
        digest = p.push_image(repository, b.tag(repository), [layer], config)
        p.delete_blob(repository, config.digest)
        return digest

    b.add("missing_config", "config blob deleted after the push", missing_config)

    def missing_layer(repository: str) -> str:
        layer = make_layer(repository)
        digest = p.push_image(repository, b.tag(repository), [layer])
        p.delete_blob(repository, layer.digest)
        return digest

    b.add("missing_layer", "layer blob deleted after the push", missing_layer)

    def missing_child(repository: str) -> str:
        entries = [p.push_platform_image(repository, "linux", arch) for arch in ("amd64", "arm64")]
        digest = p.push_index(repository, b.tag(repository), entries)
        p.delete_manifest(repository, entries[0]["digest"])
        return digest

    b.add("missing_child", "OCI index whose linux/amd64 child manifest was deleted", missing_child)
    b.add(
        "encrypted_layer",
        "OCI manifest with a tar+gzip+encrypted layer (AES-CTR ciphertext)",
        lambda r: p.push_image(r, b.tag(r), [_encrypted(make_layer(r))]),
    )
    b.add(
        "unknown_layer",
        f"OCI manifest with a {UNKNOWN_LAYER} layer",
        lambda r: p.push_image(r, b.tag(r), [make_layer(r, media_type=UNKNOWN_LAYER)]),
    )

    def foreign_layer(repository: str) -> str:
        foreign = make_layer(f"{repository} foreign", media_type=mt.DOCKER_FOREIGN_LAYER_GZIP)
        regular = _docker_layer(repository)
        p.push_blobs(repository, [foreign])
        # The external URL is this registry's own blob URL: loopback, and it serves the bytes.
        urls = [f"{p.url}/v2/{repository}/blobs/{foreign.digest}"]
        config = make_config(
            [foreign.diff_id, regular.diff_id], label=repository, media_type=mt.DOCKER_CONFIG
        )
        p.push_blobs(repository, [config, regular])
        body = {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": config.descriptor(),
            "layers": [foreign.descriptor(urls=urls), regular.descriptor()],
        }
        return p.push_manifest(repository, b.tag(repository), body, mt.DOCKER_MANIFEST)

    b.add("foreign_layer", "Docker v2s2 with a foreign layer fetched from its urls", foreign_layer)

    def index_without_platforms(repository: str) -> str:
        entries = [p.push_platform_image(repository, "linux", arch) for arch in ("amd64", "arm64")]
        for entry in entries:
            del entry["platform"]
        return p.push_index(repository, b.tag(repository), entries)

    b.add(
        "index_without_platforms",
        "OCI index whose entries have no platform (amd64 first)",
        index_without_platforms,
    )
    _add_verified_shapes(p, b)
    if front is not None:
        _add_lying_front(p, b, front)
    return b.images


COSIGN_SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO = "application/vnd.in-toto+json"


def _cosign_config(layer: Blob) -> Blob:
    """The image config cosign writes for its signature and attestation manifests."""
    config = {
        "architecture": "",
        "os": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    }
    return Blob(canonical(config), mt.OCI_CONFIG)


def _add_verified_shapes(p: Pusher, b: _Builder) -> None:
    """The shapes of RUNTIMES.md "Verified by CRI pulls", and more users meet (buildx, cosign, OCI 1.1)."""

    def index(repository: str, platforms: list[tuple[str, str, str]]) -> str:
        entries = [p.push_platform_image(repository, *platform) for platform in platforms]
        return p.push_index(repository, b.tag(repository), entries)

    b.add(
        "index_bare_arm",
        "OCI index with linux/arm (no variant) only",
        lambda r: index(r, [("linux", "arm", "")]),
    )
    b.add(
        "index_amd64_v2_only",
        "OCI index with linux/amd64/v2 only (as GOAMD64=v2 builds publish)",
        lambda r: index(r, [("linux", "amd64", "v2")]),
    )
    b.add(
        "index_amd64_variants",
        "OCI index with linux/amd64/v3 and linux/amd64/v2, no plain amd64",
        lambda r: index(r, [("linux", "amd64", "v3"), ("linux", "amd64", "v2")]),
    )

    def two_amd64_second_broken(repository: str) -> str:
        first = p.push_platform_image(repository, "linux", "amd64")
        # A second, distinct child for the same platform, whose layer blob is then deleted.
        layer = make_layer(f"{repository} second amd64")
        config = make_config([layer.diff_id], label=f"{repository} second")
        p.push_blobs(repository, [config, layer])
        body = canonical(image_manifest(config.descriptor(), [layer.descriptor()]))
        second = p.push_manifest(repository, sha256(body), body, mt.OCI_MANIFEST)
        p.delete_blob(repository, layer.digest)
        entries = [first, platform_entry(second, len(body), mt.OCI_MANIFEST, "linux", "amd64")]
        return p.push_index(repository, b.tag(repository), entries)

    b.add(
        "two_amd64_second_broken",
        "OCI index with two linux/amd64 entries; the second one's layer blob is missing",
        two_amd64_second_broken,
    )

    def nested_index(repository: str) -> str:
        inner = index_manifest([p.push_platform_image(repository, "linux", "amd64")])
        inner_digest = p.push_manifest(repository, sha256(canonical(inner)), inner, mt.OCI_INDEX)
        outer = [{"mediaType": mt.OCI_INDEX, "digest": inner_digest, "size": len(canonical(inner))}]
        return p.push_index(repository, b.tag(repository), outer)

    b.add("nested_index", "OCI index whose only entry is another index (then linux/amd64)", nested_index)

    def config_variant(repository: str) -> str:
        layer = make_layer(repository)
        config = make_config([layer.diff_id], variant="v2", label=repository)
        return p.push_image(repository, b.tag(repository), [layer], config)

    b.add("config_variant", "single linux/amd64 image whose config says variant v2", config_variant)
    b.add(
        "image_artifact_type",
        "runnable OCI image (image config, tar+gzip layer) whose manifest also carries artifactType",
        lambda r: p.push_image(r, b.tag(r), [make_layer(r)], artifactType="application/vnd.example.app"),
    )

    def cosign(repository: str, layer: Blob, suffix: str, annotations: dict[str, str]) -> Pulled:
        subject = p.push_image(repository, b.tag(repository), [make_layer(repository)])
        tag = subject.replace(":", "-") + suffix
        body = image_manifest(_cosign_config(layer).descriptor(), [layer.descriptor(annotations=annotations)])
        p.push_blobs(repository, [_cosign_config(layer), layer])
        p.push_manifest(repository, tag, body, mt.OCI_MANIFEST)
        return Pulled(tag)

    def cosign_signature(repository: str) -> Pulled:
        payload = json.dumps(
            {
                "critical": {
                    "identity": {"docker-reference": repository},
                    "image": {"docker-manifest-digest": "sha256:" + "0" * 64},
                    "type": "cosign container image signature",
                },
                "optional": None,
            }
        ).encode()
        signature = {"dev.cosignproject.cosign/signature": "MEUCIQDpullcheck"}
        return cosign(repository, Blob(payload, COSIGN_SIMPLE_SIGNING), ".sig", signature)

    def cosign_attestation(repository: str) -> Pulled:
        envelope = json.dumps(
            {"payloadType": IN_TOTO, "payload": "e30=", "signatures": [{"keyid": "", "sig": "MEUCIQ"}]}
        ).encode()
        predicate = {"predicateType": "https://slsa.dev/provenance/v1"}
        return cosign(repository, Blob(envelope, DSSE_ENVELOPE), ".att", predicate)

    b.add("cosign_sig", "cosign signature: tag sha256-<hex>.sig, simple-signing layer", cosign_signature)
    b.add("cosign_att", "cosign attestation: tag sha256-<hex>.att, DSSE envelope layer", cosign_attestation)

    def image_id(repository: str) -> Pulled:
        layer = make_layer(repository)
        config = make_config([layer.diff_id], label=repository)
        p.push_image(repository, b.tag(repository), [layer], config)
        return Pulled(config.digest)

    b.add("image_id_as_digest", "an image ID (its config digest) used as repo@sha256:…", image_id)

    def gzip_as_tar(repository: str, media_type: str) -> str:
        layer = make_layer(repository)
        return p.push_image(repository, b.tag(repository), [Layer(layer.data, media_type, layer.diff_id)])

    b.add(
        "oci_tar_type_gzip_bytes",
        "OCI manifest: gzip bytes under the uncompressed type application/vnd.oci.image.layer.v1.tar",
        lambda r: gzip_as_tar(r, mt.OCI_LAYER),
    )
    b.add(
        "docker_tar_type_gzip_bytes",
        "Docker v2s2 manifest: gzip bytes under the uncompressed type …rootfs.diff.tar",
        lambda r: p.push_image(
            r,
            b.tag(r),
            [Layer(make_layer(r).data, mt.DOCKER_LAYER, make_layer(r).diff_id)],
            manifest_type=mt.DOCKER_MANIFEST,
        ),
    )

    def diff_id_compressed(repository: str) -> str:
        layer = make_layer(repository)
        config = make_config([layer.digest], label=repository)
        return p.push_image(repository, b.tag(repository), [layer], config)

    b.add("diff_id_is_compressed_digest", "config diff_id is the gzip layer's digest", diff_id_compressed)

    def size_lie(repository: str, what: str) -> str:
        layer = make_layer(repository)
        config = make_config([layer.diff_id], label=repository)
        p.push_blobs(repository, [config, layer])
        config_descriptor = (
            config.descriptor(size=len(config.data) + 1) if what == "config" else config.descriptor()
        )
        layer_descriptor = (
            layer.descriptor(size=len(layer.data) - 1) if what == "layer" else layer.descriptor()
        )
        body = image_manifest(config_descriptor, [layer_descriptor])
        if what != "child":
            return p.push_manifest(repository, b.tag(repository), body, mt.OCI_MANIFEST)
        data = canonical(body)
        digest = p.push_manifest(repository, sha256(data), data, mt.OCI_MANIFEST)
        entry = platform_entry(digest, len(data) + 7, mt.OCI_MANIFEST, "linux", "amd64")
        return p.push_index(repository, b.tag(repository), [entry])

    b.add(
        "size_lie_child",
        "OCI index whose linux/amd64 entry's size is 7 bytes too large",
        lambda r: size_lie(r, "child"),
    )
    b.add("size_lie_config", "config descriptor's size is 1 byte too large", lambda r: size_lie(r, "config"))
    b.add("size_lie_layer", "layer descriptor's size is 1 byte too small", lambda r: size_lie(r, "layer"))

    def foreign_404(repository: str) -> str:
        foreign = make_layer(f"{repository} foreign", media_type=mt.DOCKER_FOREIGN_LAYER_GZIP)
        config = make_config([foreign.diff_id], label=repository, media_type=mt.DOCKER_CONFIG)
        p.push_blobs(repository, [config, foreign])
        # The URL is on this registry (loopback) and answers 404; the registry itself has the blob.
        urls = [f"{p.url}/v2/{repository}/blobs/sha256:{'0' * 64}"]
        body = image_manifest(config.descriptor(), [foreign.descriptor(urls=urls)], mt.DOCKER_MANIFEST)
        return p.push_manifest(repository, b.tag(repository), body, mt.DOCKER_MANIFEST)

    b.add(
        "foreign_layer_404", "foreign layer whose urls[] answers 404; the registry has the blob", foreign_404
    )

    def buildx_attestations(repository: str) -> str:
        image = p.push_platform_image(repository, "linux", "amd64")
        statement = Blob(json.dumps({"_type": "https://in-toto.io/Statement/v0.1"}).encode(), IN_TOTO)
        config = {
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [statement.digest]},
        }
        config_blob = Blob(canonical(config), mt.OCI_CONFIG)
        p.push_blobs(repository, [config_blob, statement])
        predicate = {"in-toto.io/predicate-type": "https://spdx.dev/Document"}
        data = canonical(
            image_manifest(config_blob.descriptor(), [statement.descriptor(annotations=predicate)])
        )
        digest = p.push_manifest(repository, sha256(data), data, mt.OCI_MANIFEST)
        entry = platform_entry(digest, len(data), mt.OCI_MANIFEST, "unknown", "unknown")
        entry["annotations"] = {
            "vnd.docker.reference.digest": image["digest"],
            "vnd.docker.reference.type": "attestation-manifest",
        }
        return p.push_index(repository, b.tag(repository), [image, entry])

    b.add(
        "buildx_attestations",
        "buildx output: linux/amd64 image plus an unknown/unknown attestation manifest",
        buildx_attestations,
    )

    def referrer(repository: str) -> str:
        subject = p.push_image(repository, "subject", [make_layer(repository)])
        sbom = Blob(b'{"spdxVersion":"SPDX-2.3","name":"' + repository.encode() + b'"}', SBOM_TYPE)
        subject_size = p.manifest_size(repository, subject)
        return p.push_image(
            repository,
            b.tag(repository),
            [sbom],
            EMPTY_CONFIG,
            artifactType=SBOM_TYPE,
            subject={"mediaType": mt.OCI_MANIFEST, "digest": subject, "size": subject_size},
        )

    b.add("referrer_with_subject", "OCI 1.1 artifact (SBOM) with a subject, pulled by its tag", referrer)

    def index_without_platforms_arm64_first(repository: str) -> str:
        entries = [p.push_platform_image(repository, "linux", arch) for arch in ("arm64", "amd64")]
        for entry in entries:
            del entry["platform"]
        return p.push_index(repository, b.tag(repository), entries)

    b.add(
        "index_without_platforms_arm64_first",
        "OCI index whose entries have no platform, the linux/arm64 one first",
        index_without_platforms_arm64_first,
    )

    def big_config(repository: str) -> str:
        layer = make_layer(repository)
        config = make_config([layer.diff_id], label="x" * (4 * 1024 * 1024 + 1024))
        return p.push_image(repository, b.tag(repository), [layer], config)

    b.add("config_over_4mib", "image config of just over 4 MiB (CRI-O's cap on configs)", big_config)


def _add_lying_front(p: Pusher, b: _Builder, front: HostileServer) -> None:
    """An image behind `front`: its manifest answers carry a malformed Docker-Content-Digest; blobs are
    redirected to the real registry, where the image was pushed."""
    name = "malformed_content_digest"
    repository = f"corpus/{name}"
    digest = p.push_image(repository, name, [make_layer(repository)])
    body = p.http.get(f"/v2/{repository}/manifests/{digest}", headers={"Accept": mt.OCI_MANIFEST}).content

    def to_registry(handler: Handler) -> None:
        handler.reply(307, headers=[("Location", p.url + handler.path)])

    front.route("/v2/", status(200, [("Content-Type", "application/json")], b"{}"))
    front.route(f"/v2/{repository}/manifests/", document(body, digest="sha256:not-a-digest"))
    front.route(f"/v2/{repository}/blobs/", to_registry)
    what = "manifest answers carry Docker-Content-Digest: sha256:not-a-digest (a lying front)"
    b.images[name] = CorpusImage(f"{front.host}/{repository}:{name}", what)
