"""The rules over plain data: one test (or more) for every row of RUNTIMES.md a registry can show."""

from __future__ import annotations

import json
from typing import Any

import pytest

from webhook import mediatypes as mt
from webhook.codes import Code, Severity
from webhook.digests import digest_of
from webhook.documents import Document, Problem, Resolution
from webhook.findings import DENY, INFO, WARN, Finding, worst
from webhook.profiles import CONTAINERD_MANIFEST_CAP, CRIO_MANIFEST_CAP, profile_of
from webhook.rules import effective_media_type, judge
from webhook.runtimes import parse_runtime, parse_target

CONTAINERD_16 = "containerd://1.6.20"
CONTAINERD_17 = "containerd://1.7.27"
CONTAINERD_20 = "containerd://2.0.0"
CONTAINERD_21 = "containerd://2.1.3"
CRIO = "cri-o://1.33.2"
DOCKER_25 = "docker://25.0.5"
DOCKER_27 = "docker://27.3.1"
ALL_RUNTIMES = (CONTAINERD_16, CONTAINERD_17, CONTAINERD_20, CONTAINERD_21, CRIO)


def doc(body: Any, content_type: str) -> Document:
    data = json.dumps(body).encode()
    return Document(digest_of(data), content_type, len(data), body)


def layer(media_type: str = mt.OCI_LAYER_GZIP, n: int = 1, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": "sha256:" + f"{n:x}" * 64, "size": 10, **extra}


def config_body(
    os: str = "linux", arch: str = "amd64", diff_ids: int | None = 1, variant: str = ""
) -> dict[str, Any]:
    body: dict[str, Any] = {"os": os, "architecture": arch, "rootfs": {"type": "layers"}}
    if variant:
        body["variant"] = variant
    if diff_ids is not None:
        body["rootfs"]["diff_ids"] = [digest_of(f"tar {i}".encode()) for i in range(diff_ids)]
    return body


class Image:
    """Builds a Resolution the way the registry adapter fills it."""

    def __init__(self) -> None:
        self.resolution = Resolution("example")

    def manifest(
        self,
        *,
        oci: bool = True,
        layers: list[dict[str, Any]] | None = None,
        config: dict[str, Any] | None = None,
        config_type: str | None = None,
        content_type: str | None = None,
        top: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> Document:
        layers = [layer(mt.OCI_LAYER_GZIP if oci else mt.DOCKER_LAYER_GZIP)] if layers is None else layers
        config_doc = doc(config if config is not None else config_body(diff_ids=len(layers)), mt.OCI_CONFIG)
        media_type = mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST
        body = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": config_type or (mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG),
                "digest": config_doc.digest,
                "size": config_doc.size,
            },
            "layers": layers,
            **(extra or {}),
        }
        manifest = doc(body, content_type if content_type is not None else media_type)
        self.resolution.configs[config_doc.digest] = config_doc
        if top:
            self.resolution.top = manifest
        else:
            self.resolution.manifests[manifest.digest] = manifest
        return manifest

    def index(self, children: list[tuple[Document, dict[str, str] | None]], docker: bool = False) -> Document:
        entries = []
        for child, platform in children:
            entry: dict[str, Any] = {
                "mediaType": child.content_type,
                "digest": child.digest,
                "size": child.size,
            }
            if platform is not None:
                entry["platform"] = platform
            entries.append(entry)
        media_type = mt.DOCKER_LIST if docker else mt.OCI_INDEX
        self.resolution.top = doc(
            {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}, media_type
        )
        return self.resolution.top

    def schema1(self, top: bool = True, content_type: str = mt.DOCKER_SCHEMA1_SIGNED) -> Document:
        body = {
            "schemaVersion": 1,
            "name": "library/old",
            "tag": "v1",
            "architecture": "amd64",
            "fsLayers": [{"blobSum": "sha256:" + "a" * 64}],
            "history": [{"v1Compatibility": "{}"}],
        }
        manifest = doc(body, content_type)
        if top:
            self.resolution.top = manifest
        else:
            self.resolution.manifests[manifest.digest] = manifest
        return manifest

    def judge(self, runtime: str, platform: str = "linux/amd64") -> list[Finding]:
        return judge(self.resolution, parse_target(runtime, platform))


def codes(findings: list[Finding]) -> dict[Code, Severity]:
    """code -> severity (the worst one when a code appears more than once)."""
    result: dict[Code, Severity] = {}
    for f in findings:
        result[f.code] = worst([result[f.code], f.severity]) if f.code in result else f.severity
    return result


def verdict(findings: list[Finding]) -> str:
    return worst(f.severity for f in findings)


# -- healthy images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ALL_RUNTIMES)
@pytest.mark.parametrize("oci", [True, False])
def test_healthy_single_platform_image_has_no_findings(runtime: str, oci: bool) -> None:
    image = Image()
    image.manifest(oci=oci)
    assert image.judge(runtime) == []


def test_findings_name_their_target() -> None:
    image = Image()
    image.manifest(config=config_body(arch="arm64"))
    [finding] = image.judge(CRIO, "linux/amd64")
    assert (finding.runtime, finding.platform) == (CRIO, "linux/amd64")


# -- schema 1 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runtime", "severity", "words"),
    [
        (CONTAINERD_16, INFO, "converts"),
        (CONTAINERD_17, WARN, "deprecated"),
        (CONTAINERD_20, DENY, "disabled by default since containerd 2.0"),
        (CONTAINERD_21, DENY, "removed in containerd 2.1"),
        (CRIO, WARN, "deprecated"),
        (DOCKER_25, WARN, "deprecated"),
        (DOCKER_27, DENY, "Docker 26"),
    ],
)
def test_schema1_severity_by_runtime(runtime: str, severity: str, words: str) -> None:
    image = Image()
    image.schema1()
    [finding] = image.judge(runtime)
    assert (finding.code, finding.severity) == ("SCHEMA1", severity)
    assert words in finding.message


@pytest.mark.parametrize("runtime", [CONTAINERD_16, CONTAINERD_17])
def test_schema1_child_of_a_list_fails_on_every_containerd(runtime: str) -> None:
    image = Image()
    child = image.schema1(top=False)
    image.index([(child, {"os": "linux", "architecture": "amd64"})], docker=True)
    assert codes(image.judge(runtime)) == {"SCHEMA1": DENY}


def test_schema1_child_of_a_list_only_warns_on_crio() -> None:
    image = Image()
    child = image.schema1(top=False)
    image.index([(child, {"os": "linux", "architecture": "amd64"})], docker=True)
    assert codes(image.judge(CRIO)) == {"SCHEMA1": WARN}


def test_unsigned_schema1_is_schema1_too() -> None:
    image = Image()
    image.schema1(content_type=mt.DOCKER_SCHEMA1)
    assert codes(image.judge(CONTAINERD_21)) == {"SCHEMA1": DENY}


@pytest.mark.parametrize("content_type", ["", "text/plain"])
def test_containerd_takes_empty_or_text_plain_for_schema1(content_type: str) -> None:
    image = Image()
    image.schema1(content_type=content_type)
    assert codes(image.judge(CONTAINERD_17)) == {"SCHEMA1": WARN}
    image = Image()
    image.manifest(content_type=content_type)
    assert codes(image.judge(CONTAINERD_17)) == {"MEDIA_TYPE_MISMATCH": DENY}


def test_crio_takes_any_unknown_type_for_signed_schema1() -> None:
    image = Image()
    image.schema1(content_type="application/json")
    assert codes(image.judge(CRIO)) == {"SCHEMA1": WARN}
    image = Image()
    image.manifest(content_type="application/json")
    assert codes(image.judge(CRIO)) == {"MEDIA_TYPE_MISMATCH": DENY}


def test_schema1_body_under_a_schema2_type() -> None:
    image = Image()
    image.schema1(content_type=mt.DOCKER_MANIFEST)
    for runtime in (CONTAINERD_16, CRIO):
        assert codes(image.judge(runtime)) == {"MEDIA_TYPE_MISMATCH": DENY, "SCHEMA1": DENY}


def test_schema1_missing_layer() -> None:
    image = Image()
    image.schema1()
    image.resolution.missing.add("sha256:" + "a" * 64)
    assert codes(image.judge(CONTAINERD_16))[Code.MISSING_BLOB] == DENY


# -- platforms ----------------------------------------------------------------------------------------

LINUX_AMD64 = {"os": "linux", "architecture": "amd64"}
LINUX_ARM64 = {"os": "linux", "architecture": "arm64"}


def test_index_selects_the_target_platform() -> None:
    image = Image()
    amd = image.manifest(top=False)
    arm = image.manifest(top=False, config=config_body(arch="arm64"), layers=[layer(n=2)])
    image.index([(amd, LINUX_AMD64), (arm, LINUX_ARM64)])
    for runtime in ALL_RUNTIMES:
        assert image.judge(runtime, "linux/amd64") == []
        assert image.judge(runtime, "linux/arm64") == []


def test_index_without_the_platform() -> None:
    image = Image()
    arm = image.manifest(top=False, config=config_body(arch="arm64"))
    s390 = image.manifest(top=False, config=config_body(arch="s390x"), layers=[layer(n=3)])
    image.index([(arm, LINUX_ARM64), (s390, {"os": "linux", "architecture": "s390x"})])
    for runtime in ALL_RUNTIMES:
        [finding] = image.judge(runtime)
        assert (finding.code, finding.severity) == ("NO_MATCHING_PLATFORM", DENY)
        assert "linux/arm64, linux/s390x" in finding.message


def test_386_only_runs_on_containerd_before_the_transfer_service() -> None:
    image = Image()
    child = image.manifest(top=False, config=config_body(arch="386"))
    image.index([(child, {"os": "linux", "architecture": "386"})])
    for runtime in (CONTAINERD_16, CONTAINERD_20):
        assert image.judge(runtime) == []
    assert judge(image.resolution, parse_target(CONTAINERD_21, "linux/amd64", local_pull=True)) == []
    # Run: the transfer service fetches exact matches only, then wants the 386 config it never fetched.
    for runtime in (CONTAINERD_21, CRIO):
        assert codes(image.judge(runtime)) == {"NO_MATCHING_PLATFORM": DENY}


@pytest.mark.parametrize("entry", [{"variant": "v7"}, {}])
def test_32bit_arm_only_runs_on_arm64_containerd_before_the_transfer_service(entry: dict[str, str]) -> None:
    image = Image()
    child = image.manifest(top=False, config=config_body(arch="arm", variant="v7"))
    image.index([(child, {"os": "linux", "architecture": "arm", **entry})])
    assert image.judge(CONTAINERD_20, "linux/arm64") == []
    for runtime in (CONTAINERD_21, CRIO):
        assert codes(image.judge(runtime, "linux/arm64")) == {"NO_MATCHING_PLATFORM": DENY}


def test_transfer_service_fetches_every_matching_entry() -> None:
    image = Image()
    good = image.manifest(top=False)
    broken = image.manifest(top=False, layers=[layer(n=2)])
    image.index([(good, LINUX_AMD64), (broken, LINUX_AMD64)])
    del image.resolution.manifests[broken.digest]
    image.resolution.missing.add(broken.digest)
    for runtime in (CONTAINERD_16, CONTAINERD_20, CRIO):
        assert image.judge(runtime) == []  # they take the first
    assert codes(image.judge(CONTAINERD_21)) == {"MISSING_BLOB": DENY}
    # A layer of the second child missing fails it too: every matching child's layers are fetched.
    image.resolution.missing.discard(broken.digest)
    image.resolution.manifests[broken.digest] = broken
    image.resolution.missing.add(layer(n=2)["digest"])
    for runtime in (CONTAINERD_16, CONTAINERD_20, CRIO):
        assert image.judge(runtime) == []
    assert codes(image.judge(CONTAINERD_21)) == {"MISSING_BLOB": DENY}


def test_crio_variants_are_exact() -> None:
    image = Image()
    v2 = image.manifest(top=False, config=config_body(variant="v2"))
    v3 = image.manifest(top=False, config=config_body(variant="v3"), layers=[layer(n=2)])
    image.index([(v2, {**LINUX_AMD64, "variant": "v2"}), (v3, {**LINUX_AMD64, "variant": "v3"})])
    assert codes(image.judge(CRIO)) == {"NO_MATCHING_PLATFORM": DENY}


def test_single_image_whose_config_has_a_variant_runs_everywhere() -> None:
    image = Image()
    image.manifest(config=config_body(variant="v2"))
    for runtime in ALL_RUNTIMES:
        assert image.judge(runtime) == []


def test_nested_index_is_followed_by_containerd_refused_by_crio() -> None:
    image = Image()
    child = image.manifest(top=False)
    inner = image.index([(child, LINUX_AMD64)])
    image.resolution.manifests[inner.digest] = inner
    image.index([(inner, {})])
    for runtime in (CONTAINERD_16, CONTAINERD_21):
        assert image.judge(runtime) == []
    assert codes(image.judge(CRIO)) == {"NO_MATCHING_PLATFORM": DENY}


def test_descriptor_sizes_are_checked_by_containerd() -> None:
    image = Image()
    manifest = image.manifest()
    [lying] = manifest.body["layers"]
    image.resolution.sizes[lying["digest"]] = lying["size"] + 1
    assert codes(image.judge(CONTAINERD_21)) == {"SIZE_MISMATCH": DENY}
    assert image.judge(CRIO) == []  # CRI-O checks the config's size only


def test_config_size_is_checked_by_every_runtime() -> None:
    image = Image()
    manifest = image.manifest()
    manifest.body["config"]["size"] += 1
    for runtime in ALL_RUNTIMES:
        assert codes(image.judge(runtime)) == {"SIZE_MISMATCH": DENY}


def test_index_child_size_is_checked_by_containerd() -> None:
    image = Image()
    child = image.manifest(top=False)
    index = image.index([(child, LINUX_AMD64)])
    index.body["manifests"][0]["size"] += 3
    assert codes(image.judge(CONTAINERD_16)) == {"SIZE_MISMATCH": DENY}
    assert image.judge(CRIO) == []


def test_diff_id_equal_to_the_compressed_digest_fails_everywhere() -> None:
    image = Image()
    gzipped = layer(mt.OCI_LAYER_GZIP)
    image.manifest(layers=[gzipped], config={**config_body(), "rootfs": {"diff_ids": [gzipped["digest"]]}})
    for runtime in ALL_RUNTIMES:
        assert codes(image.judge(runtime)) == {"ROOTFS_MISMATCH": DENY}
    plain = Image()
    tar = layer(mt.OCI_LAYER)
    plain.manifest(layers=[tar], config={**config_body(), "rootfs": {"diff_ids": [tar["digest"]]}})
    assert plain.judge(CONTAINERD_21) == []  # an uncompressed layer's diff_id is its digest


def test_gzip_bytes_under_the_oci_uncompressed_type_fail_on_containerd() -> None:
    image = Image()
    tar = layer(mt.OCI_LAYER)
    image.manifest(layers=[tar])
    image.resolution.heads[tar["digest"]] = b"\x1f\x8b\x08" + bytes(509)
    for runtime in (CONTAINERD_16, CONTAINERD_21):
        assert codes(image.judge(runtime)) == {"UNSUPPORTED_LAYER": DENY}
    assert image.judge(CRIO) == []  # CRI-O detects the compression
    image.resolution.heads[tar["digest"]] = bytes(257) + b"ustar" + bytes(250)
    assert image.judge(CONTAINERD_21) == []


def test_cosign_signature_fails_everywhere() -> None:
    image = Image()
    signature = layer("application/vnd.dev.cosign.simplesigning.v1+json")
    image.manifest(layers=[signature])
    image.resolution.heads[signature["digest"]] = b'{"critical":{"identity":{}}}'
    for runtime in ALL_RUNTIMES:
        assert codes(image.judge(runtime)) == {"UNSUPPORTED_LAYER": DENY}


def test_malformed_docker_content_digest_fails_containerd() -> None:
    image = Image()
    image.manifest()
    image.resolution.malformed_digest_header = "'sha256:nothex'"
    for runtime in (CONTAINERD_16, CONTAINERD_21):
        assert codes(image.judge(runtime)) == {"DIGEST_MISMATCH": DENY}
    assert image.judge(CRIO) == []


def test_crio_stacks_at_most_500_layers() -> None:
    image = Image()
    image.manifest(layers=[layer(n=n) for n in range(1, 502)])
    assert codes(image.judge(CRIO)) == {"UNSUPPORTED_LAYER": DENY}
    assert image.judge(CONTAINERD_21) == []


def test_platformless_entries_match_last_and_are_checked_by_config() -> None:
    image = Image()
    child = image.manifest(top=False, config=config_body(arch="arm64"))
    image.index([(child, None)])
    assert codes(image.judge(CONTAINERD_21, "linux/amd64")) == {"NO_MATCHING_PLATFORM": DENY}
    assert image.judge(CONTAINERD_21, "linux/arm64") == []
    # containers/image takes the platform-less entry unchecked: the pull works, the start fails.
    assert codes(image.judge(CRIO, "linux/amd64")) == {"PLATFORM_MISMATCH": DENY}


def test_single_platform_image_for_another_platform() -> None:
    image = Image()
    image.manifest(config=config_body(arch="arm64"))
    for runtime in (CONTAINERD_21, CRIO):
        [finding] = image.judge(runtime, "linux/amd64")
        assert (finding.code, finding.severity) == ("PLATFORM_MISMATCH", DENY)
        assert "linux/arm64" in finding.message
    assert image.judge(CRIO, "linux/arm64") == []


def test_index_child_missing_or_unreadable() -> None:
    image = Image()
    child = image.manifest(top=False)
    image.index([(child, LINUX_AMD64)])
    del image.resolution.manifests[child.digest]
    image.resolution.missing.add(child.digest)
    assert codes(image.judge(CRIO)) == {"MISSING_BLOB": DENY}
    image.resolution.missing.clear()
    image.resolution.failures[child.digest] = Problem(Code.DIGEST_MISMATCH, "bytes do not match")
    assert codes(image.judge(CRIO)) == {"DIGEST_MISMATCH": DENY}


def test_index_child_whose_declared_type_disagrees_with_its_body() -> None:
    image = Image()
    child = image.manifest(top=False)
    image.index([(child, LINUX_AMD64)])
    entry = image.resolution.top.body["manifests"][0]  # type: ignore[union-attr]
    entry["mediaType"] = mt.OCI_INDEX
    assert codes(image.judge(CONTAINERD_21)) == {"MEDIA_TYPE_MISMATCH": DENY}
    # containers/image reads the child's own Content-Type, which is right here.
    assert image.judge(CRIO) == []


# -- artifacts and mixed types ------------------------------------------------------------------------


def test_helm_chart_is_not_an_image() -> None:
    image = Image()
    image.manifest(
        config_type="application/vnd.cncf.helm.config.v1+json",
        layers=[layer("application/vnd.cncf.helm.chart.content.v1.tar+gzip")],
    )
    for runtime in ALL_RUNTIMES:
        assert codes(image.judge(runtime)) == {"NOT_AN_IMAGE": DENY}


def test_artifact_type_is_not_an_image() -> None:
    image = Image()
    image.manifest(config_type=mt.OCI_EMPTY, extra={"artifactType": "application/vnd.example.sbom"})
    [finding] = image.judge(CRIO)
    assert finding.code == "NOT_AN_IMAGE" and "application/vnd.example.sbom" in finding.message
    [finding] = image.judge(CONTAINERD_21)
    assert finding.code == "NOT_AN_IMAGE" and mt.OCI_EMPTY in finding.message
    assert "application/vnd.example.sbom" in finding.message


def test_artifact_type_on_a_runnable_image_runs_everywhere() -> None:
    # Run: containerd ignores artifactType, and CRI-O 1.33 asks about artifacts only when the image pull
    # itself has failed (the config decides).
    image = Image()
    image.manifest(extra={"artifactType": "application/vnd.example.thing"})
    for runtime in ALL_RUNTIMES:
        assert image.judge(runtime) == []


def test_oci_manifest_with_docker_config() -> None:
    image = Image()
    image.manifest(config_type=mt.DOCKER_CONFIG)
    assert codes(image.judge(CRIO)) == {"MIXED_MEDIA_TYPES": DENY}
    assert codes(image.judge(CONTAINERD_21)) == {"MIXED_MEDIA_TYPES": INFO}
    assert verdict(image.judge(CONTAINERD_21)) == "allow"


def test_docker_manifest_with_oci_layers() -> None:
    image = Image()
    image.manifest(oci=False, layers=[layer(mt.OCI_LAYER_GZIP)])
    assert codes(image.judge(CRIO)) == {"MIXED_MEDIA_TYPES": DENY}
    assert codes(image.judge(CONTAINERD_21)) == {"MIXED_MEDIA_TYPES": INFO}


def test_docker_manifest_with_zstd_layers() -> None:
    image = Image()
    image.manifest(oci=False, layers=[layer(mt.DOCKER_LAYER_ZSTD)])
    assert codes(image.judge(CRIO)) == {"UNSUPPORTED_LAYER": DENY}
    assert codes(image.judge(CONTAINERD_16)) == {"UNSUPPORTED_LAYER": DENY}
    assert image.judge(CONTAINERD_17) == []
    assert image.judge(CONTAINERD_21) == []


def test_oci_zstd_layers_work_everywhere() -> None:
    image = Image()
    image.manifest(layers=[layer(mt.OCI_LAYER_ZSTD)])
    for runtime in ALL_RUNTIMES:
        assert image.judge(runtime) == []


def test_unknown_layer_type() -> None:
    image = Image()
    image.manifest(layers=[layer("application/vnd.example.layer.v1")])
    assert codes(image.judge(CONTAINERD_21)) == {"UNSUPPORTED_LAYER": DENY}
    # containers/image sniffs an OCI manifest's layer compression instead of reading its type.
    assert image.judge(CRIO) == []
    image = Image()
    image.manifest(oci=False, layers=[layer("application/vnd.example.layer.v1")])
    assert codes(image.judge(CRIO)) == {"UNSUPPORTED_LAYER": DENY}


def test_encrypted_layer_warns() -> None:
    image = Image()
    image.manifest(layers=[layer(mt.OCI_LAYER_GZIP + "+encrypted")])
    for runtime in (CONTAINERD_21, CRIO):
        assert codes(image.judge(runtime)) == {"ENCRYPTED_LAYER": WARN}


def test_foreign_layer_warns_and_is_not_required_in_the_registry() -> None:
    image = Image()
    foreign = layer(mt.DOCKER_FOREIGN_LAYER_GZIP, urls=["https://example.invalid/layer"])
    image.manifest(oci=False, layers=[foreign])
    image.resolution.missing.add(foreign["digest"])
    for runtime in (CONTAINERD_21, CRIO):
        assert codes(image.judge(runtime)) == {"NONDISTRIBUTABLE_LAYER": WARN}


def test_docker_engine_stacks_at_most_125_layers() -> None:
    image = Image()
    image.manifest(layers=[layer(n=n) for n in range(1, 127)], config=config_body(diff_ids=126))
    [finding] = image.judge(DOCKER_27)
    assert (finding.code, finding.severity) == ("UNSUPPORTED_LAYER", DENY) and "126 layers" in finding.message
    assert image.judge(CONTAINERD_21) == [] and image.judge(CRIO) == []
    image = Image()
    image.manifest(layers=[layer(n=n) for n in range(1, 126)])
    assert image.judge(DOCKER_27) == []


# -- rootfs, blobs, sizes -----------------------------------------------------------------------------


def test_diff_ids_fewer_than_layers_fail_everywhere() -> None:
    image = Image()
    image.manifest(layers=[layer(n=1), layer(n=2)], config=config_body(diff_ids=1))
    for runtime in (CONTAINERD_21, CRIO):
        [finding] = image.judge(runtime)
        assert (finding.code, finding.severity) == ("ROOTFS_MISMATCH", DENY)
        assert "1 diff_ids for 2 layers" in finding.message


def test_empty_diff_ids_pass_on_crio_only() -> None:
    image = Image()
    image.manifest(config=config_body(diff_ids=None))
    assert image.judge(CRIO) == []
    assert codes(image.judge(CONTAINERD_21)) == {"ROOTFS_MISMATCH": DENY}


def test_missing_config_and_layer() -> None:
    image = Image()
    manifest = image.manifest()
    config_digest = manifest.body["config"]["digest"]
    image.resolution.configs.clear()
    image.resolution.missing.add(config_digest)
    assert codes(image.judge(CRIO)) == {"MISSING_BLOB": DENY}
    image = Image()
    manifest = image.manifest()
    image.resolution.missing.add(manifest.body["layers"][0]["digest"])
    [finding] = image.judge(CONTAINERD_21)
    assert finding.code == "MISSING_BLOB" and "layer" in finding.message


def test_layer_check_that_failed_is_reported() -> None:
    image = Image()
    manifest = image.manifest()
    image.resolution.failures[manifest.body["layers"][0]["digest"]] = Problem(
        Code.REGISTRY_UNREACHABLE, "HTTP 500"
    )
    assert codes(image.judge(CRIO)) == {"REGISTRY_UNREACHABLE": WARN}


def test_manifest_size_caps_differ_between_runtimes() -> None:
    image = Image()
    manifest = image.manifest()
    between = CRIO_MANIFEST_CAP + 1000
    assert between < CONTAINERD_MANIFEST_CAP
    image.resolution.top = Document(manifest.digest, manifest.content_type, between, manifest.body)
    assert codes(image.judge(CRIO)) == {"MANIFEST_TOO_LARGE": DENY}
    assert image.judge(CONTAINERD_21) == []


def test_config_over_crio_cap() -> None:
    image = Image()
    manifest = image.manifest()
    digest = manifest.body["config"]["digest"]
    config = image.resolution.configs[digest]
    image.resolution.configs[digest] = Document(
        digest, config.content_type, CRIO_MANIFEST_CAP + 1, config.body
    )
    manifest.body["config"]["size"] = CRIO_MANIFEST_CAP + 1
    assert codes(image.judge(CRIO)) == {"MANIFEST_TOO_LARGE": DENY}
    assert image.judge(CONTAINERD_21) == []


@pytest.mark.parametrize(
    ("content_type", "body_kind"),
    [(mt.OCI_MANIFEST, "index"), (mt.OCI_INDEX, "manifest"), ("application/octet-stream", "manifest")],
)
def test_content_type_against_body(content_type: str, body_kind: str) -> None:
    image = Image()
    if body_kind == "index":
        child = image.manifest(top=False)
        image.index([(child, LINUX_AMD64)])
        top = image.resolution.top
        image.resolution.top = Document(top.digest, content_type, top.size, top.body)  # type: ignore[union-attr]
    else:
        image.manifest(content_type=content_type)
    for runtime in (CONTAINERD_21, CRIO):
        assert codes(image.judge(runtime)).get(Code.MEDIA_TYPE_MISMATCH) == DENY


def test_resolution_error_becomes_a_finding_per_target() -> None:
    resolution = Resolution("x", error=Problem(Code.NOT_FOUND, "tag v9 not found"))
    for runtime in (CONTAINERD_21, CRIO):
        [finding] = judge(resolution, parse_target(runtime, "linux/amd64"))
        assert (finding.code, finding.severity, finding.message) == ("NOT_FOUND", DENY, "tag v9 not found")


def test_short_name_warns_on_crio_only() -> None:
    image = Image()
    image.manifest()
    crio = judge(image.resolution, parse_target(CRIO, "linux/amd64"), unqualified=True)
    containerd = judge(image.resolution, parse_target(CONTAINERD_21, "linux/amd64"), unqualified=True)
    assert codes(crio) == {"SHORT_NAME": WARN}
    assert verdict(containerd) == "allow"


def test_effective_media_type() -> None:
    containerd, crio = profile_of(parse_runtime(CONTAINERD_21)), profile_of(parse_runtime(CRIO))
    assert effective_media_type("text/plain", containerd) == mt.DOCKER_SCHEMA1_SIGNED
    assert effective_media_type("application/json", containerd) == "application/json"
    assert effective_media_type("application/json", crio) == mt.DOCKER_SCHEMA1_SIGNED
    assert effective_media_type(mt.OCI_INDEX, crio) == mt.OCI_INDEX


def test_foreign_layer_whose_urls_fail_falls_back_on_containerd_only() -> None:
    image = Image()
    foreign = layer(mt.DOCKER_FOREIGN_LAYER_GZIP, urls=["https://example.invalid/layer"])
    image.manifest(oci=False, layers=[foreign])
    image.resolution.foreign[foreign["digest"]] = False
    image.resolution.present.add(foreign["digest"])
    assert codes(image.judge(CONTAINERD_21)) == {"NONDISTRIBUTABLE_LAYER": WARN}
    assert codes(image.judge(CRIO)) == {"NONDISTRIBUTABLE_LAYER": WARN, "MISSING_BLOB": DENY}
    image.resolution.present.discard(foreign["digest"])
    image.resolution.missing.add(foreign["digest"])
    assert codes(image.judge(CONTAINERD_21)) == {"NONDISTRIBUTABLE_LAYER": WARN, "MISSING_BLOB": DENY}
    image.resolution.foreign[foreign["digest"]] = True
    assert codes(image.judge(CRIO)) == {"NONDISTRIBUTABLE_LAYER": WARN}
