"""The image corpus: one repository `corpus/<name>` per case, tagged `<name>`, pushed into a registry.

Every image has layers and configs of its own (the case name is in the file content), so a runtime's
local store never lends one case the blobs of another."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.harness.images import Blob, Layer, Pusher, make_config, make_layer
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


class _Builder:
    def __init__(self, pusher: Pusher) -> None:
        self.pusher = pusher
        self.images: dict[str, CorpusImage] = {}

    def add(self, name: str, what: str, push: Callable[[str], object]) -> None:
        repository = f"corpus/{name}"
        push(repository)
        self.images[name] = CorpusImage(self.pusher.ref(repository, name), what)

    def tag(self, repository: str) -> str:
        return repository.removeprefix("corpus/")


def build_corpus(pusher: Pusher) -> dict[str, CorpusImage]:
    """Push every corpus image; returns name -> CorpusImage."""
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
    return b.images
