"""Rows of RUNTIMES.md "Verified by CRI pulls", end to end through the resolver: a real docker-registry
for what a registry can hold, tests/harness/hostile.py for what only a lying one serves."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import pytest

from tests.harness import hostile
from tests.harness.hostile import HostileServer
from tests.harness.images import (
    Blob,
    canonical,
    image_manifest,
    make_config,
    make_layer,
    platform_entry,
    sha256,
    tar_with_file,
)
from tests.harness.registry import Registry
from webhook import mediatypes as mt
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.findings import ImageResult
from webhook.policy import Policy, RegistryOptions
from webhook.registry import RegistryClient
from webhook.resolve import Checker
from webhook.runtimes import parse_target

C16, C21, CRIO = "containerd://1.6.20", "containerd://2.1.9", "cri-o://1.33.2"
TARGETS = [parse_target(r, "linux/amd64") for r in (C16, C21, CRIO)]


def _check(host: str, image: str) -> ImageResult:
    policy = Policy(registries=(RegistryOptions(host, insecure=True),))
    checker = Checker(RegistryClient(policy.registries))
    try:
        [result] = checker.check([image], TARGETS, policy, Keyring.empty(), Deadline(30))
    finally:
        checker.close()
    return result


def _codes(result: ImageResult, runtime: str) -> set[str]:
    return {f.code for f in result.findings if f.runtime == runtime and f.severity == "deny"}


@pytest.mark.registry
def test_a_broken_second_amd64_entry_fails_only_the_transfer_service(registry: Registry) -> None:
    repository = "fidelity/two-amd64"
    first = registry.push_platform_image(repository, "linux", "amd64")
    layer = make_layer("second amd64")
    second_digest = registry.push_image(repository, "second", [layer])
    second = platform_entry(
        second_digest, registry.manifest_size(repository, second_digest), mt.OCI_MANIFEST, "linux", "amd64"
    )
    registry.push_index(repository, "v1", [first, second])
    registry.delete_manifest(repository, second_digest)
    result = _check(registry.host, registry.ref(repository, "v1"))
    assert _codes(result, C21) == {"MISSING_BLOB"}
    assert _codes(result, C16) == set() and _codes(result, CRIO) == set()


@pytest.mark.registry
def test_a_layer_descriptor_size_that_lies_fails_containerd(registry: Registry) -> None:
    layer = make_layer("size lie")
    config = make_config([layer.diff_id])
    registry.push_blobs("fidelity/size", [config, layer])
    body = image_manifest(config.descriptor(), [layer.descriptor(size=len(layer.data) + 7)])
    registry.push_manifest("fidelity/size", "v1", body, mt.OCI_MANIFEST)
    result = _check(registry.host, registry.ref("fidelity/size", "v1"))
    assert _codes(result, C16) == {"SIZE_MISMATCH"} and _codes(result, C21) == {"SIZE_MISMATCH"}
    assert _codes(result, CRIO) == set()  # CRI-O checks the config's size only


@pytest.mark.registry
def test_gzip_bytes_under_the_uncompressed_oci_type_fail_containerd(registry: Registry) -> None:
    tar = tar_with_file("pullcheck.txt", b"compressed but says tar")
    lying = Blob(gzip.compress(tar, mtime=0), mt.OCI_LAYER)
    honest = make_layer("plain tar", compression="none")
    registry.push_image("fidelity/gzip-as-tar", "v1", [lying], make_config([sha256(tar)]))
    registry.push_image("fidelity/plain-tar", "v1", [honest])
    result = _check(registry.host, registry.ref("fidelity/gzip-as-tar", "v1"))
    assert _codes(result, C16) == {"UNSUPPORTED_LAYER"} and _codes(result, C21) == {"UNSUPPORTED_LAYER"}
    assert _codes(result, CRIO) == set()  # containers/image detects the compression
    assert _check(registry.host, registry.ref("fidelity/plain-tar", "v1")).verdict == "allow"


@pytest.mark.registry
def test_an_image_id_used_as_a_digest_is_not_an_image(registry: Registry) -> None:
    layer = make_layer("image id")
    config = make_config([layer.diff_id])
    registry.push_image("fidelity/image-id", "v1", [layer], config)
    result = _check(registry.host, registry.ref("fidelity/image-id", config.digest))
    assert {f.code for f in result.findings} == {"NOT_AN_IMAGE"}, result.findings
    assert result.verdict == "deny"


@pytest.mark.registry
def test_a_nested_index_runs_on_containerd_not_on_crio(registry: Registry) -> None:
    repository = "fidelity/nested"
    inner = registry.push_index(
        repository, "inner", [registry.push_platform_image(repository, "linux", "amd64")]
    )
    entry = platform_entry(inner, registry.manifest_size(repository, inner), mt.OCI_INDEX)
    registry.push_index(repository, "v1", [entry])
    result = _check(registry.host, registry.ref(repository, "v1"))
    assert _codes(result, C16) == set() and _codes(result, C21) == set()
    assert _codes(result, CRIO) == {"NO_MATCHING_PLATFORM"}


@pytest.mark.registry
def test_a_cosign_signature_tag_fails_everywhere(registry: Registry) -> None:
    payload = Blob(canonical({"critical": {"identity": {}, "image": {}, "type": "cosign"}}), "")
    signature = Blob(payload.data, "application/vnd.dev.cosign.simplesigning.v1+json")
    config = make_config([sha256(payload.data)])
    registry.push_image("fidelity/signed", "sha256-" + "a" * 64 + ".sig", [signature], config)
    result = _check(registry.host, registry.ref("fidelity/signed", "sha256-" + "a" * 64 + ".sig"))
    for runtime in (C16, C21, CRIO):
        assert _codes(result, runtime) == {"UNSUPPORTED_LAYER"}, result.findings


@pytest.fixture
def server() -> Iterator[HostileServer]:
    hostile_server = HostileServer()
    yield hostile_server
    hostile_server.close()


@pytest.mark.served
def test_a_malformed_docker_content_digest_fails_containerd(server: HostileServer) -> None:
    config = canonical({"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": []}})
    manifest = canonical(image_manifest(Blob(config, mt.OCI_CONFIG).descriptor(), []))
    server.route("/v2/odd/app/manifests/", hostile.document(manifest, digest="sha256:not-a-digest"))
    server.route("/v2/odd/app/blobs/", hostile.document(config, None))
    result = _check(server.host, f"{server.host}/odd/app:v1")
    assert _codes(result, C16) == {"DIGEST_MISMATCH"} and _codes(result, C21) == {"DIGEST_MISMATCH"}
    assert _codes(result, CRIO) == set()
    assert json.dumps(result.to_json())  # the header is quoted into one line
