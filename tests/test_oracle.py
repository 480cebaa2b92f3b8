"""pullcheck's verdict on every corpus image agrees with a real pull through the CRI by the runtime it names.

Each oracle (tests/harness/oracles.py) answers whether a container can be created from the image: the
CRI's PullImage and, on containerd, CreateContainer after it. REFUSALS is what each runtime really says
for every case it refuses (a case absent there pulls and creates); the first test keeps it true, so a
runtime release that changes behaviour shows up here. The second test holds pullcheck to it: a refused
pull must be a `deny`, a usable image must not be. Where the two legitimately differ, DIFFERENCES says
why and the test checks that exact pair; PULLCHECK_GAPS are disagreements pullcheck has yet to fix
(strict expected failures, so the fix shows up as well).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.corpus import CorpusImage
from tests.harness.hostile import HostileServer
from tests.harness.oracles import Oracle
from tests.harness.registry import Registry

pytestmark = [pytest.mark.registry, pytest.mark.oracle]

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent

# Oracle key -> session fixture that provides it.
ORACLES = {
    "cri-o": "crio_oracle",
    "containerd-1.6": "containerd_oracle",
    "containerd-2.1": "containerd2_oracle",
    "cri-o-arm64": "crio_arm64_oracle",
}

CORPUS_NAMES = [
    "schema1_signed",
    "schema2",
    "oci",
    "oci_index",
    "docker_list",
    "other_platform",
    "index_missing_platform",
    "index_386_only",
    "index_armv7_only",
    "index_child_schema1",
    "artifact",
    "artifact_type",
    "zstd",
    "docker_zstd",
    "docker_oci_layers",
    "oci_docker_config",
    "diffids_mismatch",
    "diffids_empty",
    "missing_config",
    "missing_layer",
    "missing_child",
    "encrypted_layer",
    "unknown_layer",
    "foreign_layer",
    "index_without_platforms",
    "index_bare_arm",
    "index_amd64_v2_only",
    "index_amd64_variants",
    "two_amd64_second_broken",
    "nested_index",
    "config_variant",
    "image_artifact_type",
    "cosign_sig",
    "cosign_att",
    "image_id_as_digest",
    "oci_tar_type_gzip_bytes",
    "docker_tar_type_gzip_bytes",
    "diff_id_is_compressed_digest",
    "size_lie_child",
    "size_lie_config",
    "size_lie_layer",
    "foreign_layer_404",
    "buildx_attestations",
    "referrer_with_subject",
    "malformed_content_digest",
    "index_without_platforms_arm64_first",
    "config_over_4mib",
]
# The cases an arm64 node judges differently: indexes (arm variants, no arm64 entry).
ARM64_CASES = [
    "oci_index",
    "docker_list",
    "index_missing_platform",
    "index_386_only",
    "index_armv7_only",
    "index_bare_arm",
    "nested_index",
    "buildx_attestations",
]


def _names(oracle_key: str) -> list[str]:
    return ARM64_CASES if oracle_key.endswith("-arm64") else CORPUS_NAMES


# (oracle, case) -> the runtime's own words when it refuses, as recorded from the real pulls ("A … B": A,
# then B). A case absent here pulls, and a container is created from it.
_NO_PLATFORM_CRIO = 'no image found in image index for architecture "amd64", variant "", OS "linux"'
# An arm64 node's containers/image wants variant v8 (read from /proc/cpuinfo): no 32-bit arm fallback.
_NO_ARM64_CRIO = 'no image found in image index for architecture "arm64", variant "v8", OS "linux"'
_CRIO_ARTIFACT = (
    "PullImage pulled an OCI artifact, not an image: … unsupported image-specific operation on artifact"
)
_CRIO_NOT_A_LAYER = "ApplyLayer stdout:  stderr: unexpected EOF"
_NO_PLATFORM = "no match for platform in manifest"
_NO_PLATFORM_21 = "get image config descriptor: no match for platform in manifest"
_NOT_FETCHED = "could not fetch content descriptor … not found"
_NO_COMMAND = "PullImage succeeded; CreateContainer: … no command specified"
_NO_ROOTFS = "mismatched image rootfs and manifest layers"
_MIXED_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws not supported"
_DIFF_IDS = "number of layers and diffIDs don't match"
_ENCRYPTED_CONTAINERD = (
    "failed to get stream processor for application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
)
_GZIP_AS_TAR = "failed to extract layer … mount callback failed … unexpected EOF"
_WRONG_DIFF_ID = "wrong diff id calculated on extraction"
_BAD_HEADER = '"sha256:not-a-digest" in header not a valid digest'
REFUSALS: dict[tuple[str, str], str] = {
    ("cri-o", "index_missing_platform"): _NO_PLATFORM_CRIO,
    ("cri-o", "index_386_only"): _NO_PLATFORM_CRIO,
    ("cri-o", "index_armv7_only"): _NO_PLATFORM_CRIO,
    ("cri-o", "index_bare_arm"): _NO_PLATFORM_CRIO,
    ("cri-o", "index_amd64_v2_only"): _NO_PLATFORM_CRIO,
    ("cri-o", "index_amd64_variants"): _NO_PLATFORM_CRIO,
    ("cri-o", "artifact"): _CRIO_ARTIFACT + ' with type "application/vnd.cncf.helm.config.v1+json"',
    ("cri-o", "artifact_type"): _CRIO_ARTIFACT + ' with type "application/spdx+json"',
    ("cri-o", "referrer_with_subject"): _CRIO_ARTIFACT + ' with type "application/spdx+json"',
    (
        "cri-o",
        "docker_zstd",
    ): 'unsupported docker v2s2 media type: "application/vnd.docker.image.rootfs.diff.tar.zstd"',
    (
        "cri-o",
        "docker_oci_layers",
    ): 'unsupported docker v2s2 media type: "application/vnd.oci.image.layer.v1.tar+gzip"',
    ("cri-o", "oci_docker_config"): "invalid mixed OCI image with Docker v2s2 config",
    ("cri-o", "diffids_mismatch"): "image config has only 1 DiffID values, but a layer with index 1 exists",
    ("cri-o", "missing_config"): "parsing image configuration: fetching blob: blob unknown to registry",
    ("cri-o", "missing_layer"): "fetching blob: blob unknown to registry",
    ("cri-o", "missing_child"): "copying system image from manifest list: … manifest unknown",
    ("cri-o", "encrypted_layer"): "does not match config's DiffID",
    (
        "cri-o",
        "nested_index",
    ): "Unexpectedly received a manifest list instead of a manifest for a single image",
    ("cri-o", "cosign_sig"): _CRIO_NOT_A_LAYER,
    ("cri-o", "cosign_att"): _CRIO_NOT_A_LAYER,
    ("cri-o", "image_id_as_digest"): "reading manifest … received unexpected HTTP status: 500",
    ("cri-o", "diff_id_is_compressed_digest"): "does not match config's DiffID",
    ("cri-o", "size_lie_config"): "blob size mismatch",
    (
        "cri-o",
        "config_over_4mib",
    ): "parsing image configuration: exceeded maximum allowed size of 4194304 bytes",
    ("cri-o", "foreign_layer_404"): "failed fetching external blob from all urls",
    ("cri-o-arm64", "index_386_only"): _NO_ARM64_CRIO,
    ("cri-o-arm64", "index_armv7_only"): _NO_ARM64_CRIO,
    ("cri-o-arm64", "index_bare_arm"): _NO_ARM64_CRIO,
    ("cri-o-arm64", "buildx_attestations"): _NO_ARM64_CRIO,
    (
        "cri-o-arm64",
        "nested_index",
    ): "Unexpectedly received a manifest list instead of a manifest for a single image",
    ("containerd-1.6", "index_missing_platform"): _NO_PLATFORM,
    ("containerd-1.6", "index_armv7_only"): _NO_PLATFORM,
    ("containerd-1.6", "index_bare_arm"): _NO_PLATFORM,
    ("containerd-1.6", "index_amd64_v2_only"): _NO_PLATFORM,
    ("containerd-1.6", "index_amd64_variants"): _NO_PLATFORM,
    ("containerd-1.6", "index_child_schema1"): _MIXED_SCHEMA1,
    ("containerd-1.6", "artifact"): _NO_ROOTFS,
    ("containerd-1.6", "artifact_type"): _NO_ROOTFS,
    ("containerd-1.6", "referrer_with_subject"): _NO_ROOTFS,
    (
        "containerd-1.6",
        "docker_zstd",
    ): "failed to get stream processor for application/vnd.docker.image.rootfs.diff.tar.zstd",
    ("containerd-1.6", "diffids_mismatch"): _DIFF_IDS + ": 2 != 1",
    ("containerd-1.6", "diffids_empty"): _DIFF_IDS + ": 1 != 0",
    ("containerd-1.6", "missing_config"): _NOT_FETCHED,
    ("containerd-1.6", "missing_layer"): _NOT_FETCHED,
    ("containerd-1.6", "missing_child"): "failed open: content at … not found",
    ("containerd-1.6", "encrypted_layer"): _ENCRYPTED_CONTAINERD,
    (
        "containerd-1.6",
        "unknown_layer",
    ): "failed to get stream processor for application/vnd.example.layer.v1",
    ("containerd-1.6", "cosign_sig"): "no processor for media-type",
    ("containerd-1.6", "cosign_att"): "no processor for media-type",
    ("containerd-1.6", "image_id_as_digest"): "unexpected media type application/octet-stream",
    ("containerd-1.6", "oci_tar_type_gzip_bytes"): _GZIP_AS_TAR,
    ("containerd-1.6", "diff_id_is_compressed_digest"): _WRONG_DIFF_ID,
    ("containerd-1.6", "size_lie_child"): "failed to read expected number of bytes: unexpected EOF",
    ("containerd-1.6", "size_lie_config"): "failed to read expected number of bytes: unexpected EOF",
    ("containerd-1.6", "size_lie_layer"): "failed size validation",
    ("containerd-1.6", "index_without_platforms_arm64_first"): _NO_PLATFORM,
    ("containerd-1.6", "malformed_content_digest"): _BAD_HEADER,
    ("containerd-2.1", "schema1_signed"): "schema 1 image manifests are no longer supported",
    ("containerd-2.1", "index_missing_platform"): _NO_PLATFORM_21,
    ("containerd-2.1", "index_386_only"): "get image config descriptor: content digest … not found",
    ("containerd-2.1", "index_armv7_only"): _NO_PLATFORM_21,
    ("containerd-2.1", "index_bare_arm"): _NO_PLATFORM_21,
    ("containerd-2.1", "index_amd64_v2_only"): _NO_PLATFORM_21,
    ("containerd-2.1", "index_amd64_variants"): _NO_PLATFORM_21,
    ("containerd-2.1", "index_child_schema1"): _MIXED_SCHEMA1,
    ("containerd-2.1", "artifact"): _NO_COMMAND,
    ("containerd-2.1", "artifact_type"): _NO_COMMAND,
    ("containerd-2.1", "referrer_with_subject"): _NO_COMMAND,
    ("containerd-2.1", "cosign_sig"): _NO_COMMAND,
    ("containerd-2.1", "cosign_att"): _NO_COMMAND,
    ("containerd-2.1", "unknown_layer"): "PullImage succeeded; CreateContainer: … " + _NO_ROOTFS,
    ("containerd-2.1", "diffids_mismatch"): _DIFF_IDS + ": 2 != 1",
    ("containerd-2.1", "diffids_empty"): _DIFF_IDS + ": 1 != 0",
    ("containerd-2.1", "missing_config"): _NOT_FETCHED,
    ("containerd-2.1", "missing_layer"): _NOT_FETCHED,
    ("containerd-2.1", "missing_child"): "failed open: content at … not found",
    ("containerd-2.1", "two_amd64_second_broken"): _NOT_FETCHED,
    ("containerd-2.1", "encrypted_layer"): _ENCRYPTED_CONTAINERD,
    (
        "containerd-2.1",
        "image_id_as_digest",
    ): "get image config descriptor: unexpected media type application/octet-stream",
    ("containerd-2.1", "oci_tar_type_gzip_bytes"): _GZIP_AS_TAR,
    ("containerd-2.1", "diff_id_is_compressed_digest"): _WRONG_DIFF_ID,
    ("containerd-2.1", "size_lie_child"): "short read: expected … unexpected EOF",
    ("containerd-2.1", "size_lie_config"): "short read: expected … unexpected EOF",
    ("containerd-2.1", "size_lie_layer"): "failed size validation",
    ("containerd-2.1", "index_without_platforms_arm64_first"): _NO_PLATFORM_21,
    ("containerd-2.1", "malformed_content_digest"): _BAD_HEADER,
}


@dataclass(frozen=True)
class Difference:
    """A documented disagreement: what the real pull does, what pullcheck says, and why that is right."""

    pull_ok: bool
    verdict: str
    reason: str


_PLATFORM_MISMATCH = Difference(
    True,
    "deny",
    "PLATFORM_MISMATCH: no runtime refuses a single-platform image for another architecture at pull or "
    "create; the container then fails at start with `exec format error`",
)
_ENCRYPTED = Difference(
    False,
    "warn",
    "ENCRYPTED_LAYER: the pull fails only on nodes without decryption keys (CRI-O decryption_keys_path, "
    "containerd's ctd-decoder stream processor); pullcheck cannot see the nodes' keys, so it warns",
)

DIFFERENCES: dict[tuple[str, str], Difference] = {
    ("cri-o", "other_platform"): _PLATFORM_MISMATCH,
    ("containerd-1.6", "other_platform"): _PLATFORM_MISMATCH,
    ("containerd-2.1", "other_platform"): _PLATFORM_MISMATCH,
    ("cri-o", "index_without_platforms_arm64_first"): Difference(
        True,
        "deny",
        "PLATFORM_MISMATCH: CRI-O takes the first index entry without a platform unchecked and pulls the "
        "linux/arm64 image; the container then fails at start with `exec format error`",
    ),
    ("cri-o", "encrypted_layer"): _ENCRYPTED,
    ("containerd-1.6", "encrypted_layer"): _ENCRYPTED,
    ("containerd-2.1", "encrypted_layer"): _ENCRYPTED,
}

# Disagreements that are pullcheck's to fix (issue 10 section 2): strict expected failures, so the fix
# shows up too; whoever lands the rule removes its row here.
PULLCHECK_GAPS: dict[tuple[str, str], str] = {}


def _cases() -> list[Any]:
    cases = []
    for oracle_key in ORACLES:
        for name in _names(oracle_key):
            gap = PULLCHECK_GAPS.get((oracle_key, name))
            marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
            cases.append(pytest.param(oracle_key, name, marks=marks, id=f"{oracle_key}-{name}"))
    return cases


def _all_pairs() -> list[Any]:
    return [
        pytest.param(oracle_key, name, id=f"{oracle_key}-{name}")
        for oracle_key in ORACLES
        for name in _names(oracle_key)
    ]


def _check(runtime: str, platform: str, hosts: list[str], refs: list[str]) -> dict[str, Any]:
    """Run `pullcheck check` as the DESIGN.md contract says; returns image -> result."""
    command = [sys.executable, "-m", "webhook", "check", "--output", "json", "--runtime", runtime]
    command += ["--platform", platform]
    for host in hosts:
        command += ["--insecure-registry", host]
    command += refs
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPOSITORY_ROOT)
    assert done.returncode in (0, 1), f"pullcheck check exited {done.returncode}: {done.stderr}"
    document = json.loads(done.stdout)
    assert document["apiVersion"] == "pullcheck/v1"
    results = {result["image"]: result for result in document["results"]}
    assert set(results) == set(refs)
    denied = any(result["verdict"] == "deny" for result in results.values())
    assert done.returncode == (1 if denied else 0)
    return results


@pytest.fixture(scope="session")
def verdicts(
    registry: Registry, corpus_front: HostileServer, corpus: dict[str, CorpusImage]
) -> Callable[[Oracle, str], dict[str, Any]]:
    """(oracle, corpus name) -> pullcheck's result; one `check` run over the corpus per node kind."""
    by_node: dict[tuple[str, str], dict[str, Any]] = {}
    hosts = [registry.host, corpus_front.host]

    def verdict(oracle: Oracle, name: str) -> dict[str, Any]:
        node = (oracle.runtime, oracle.platform)
        if node not in by_node:
            by_node[node] = _check(*node, hosts, [image.ref for image in corpus.values()])
        result: dict[str, Any] = by_node[node][corpus[name].ref]
        return result

    return verdict


def _says(message: str, words: str) -> bool:
    """Whether `message` holds each part of `words` ("A … B"), in that order."""
    position = 0
    for part in words.split(" … "):
        position = message.find(part, position)
        if position < 0:
            return False
        position += len(part)
    return True


def _summary(result: dict[str, Any]) -> str:
    findings = ", ".join(f"{f['code']}={f['severity']}" for f in result["findings"]) or "no findings"
    return f"verdict {result['verdict']} ({findings})"


@pytest.mark.parametrize(("oracle_key", "name"), _all_pairs())
def test_runtime_does_what_the_table_says(
    request: pytest.FixtureRequest, corpus: dict[str, CorpusImage], oracle_key: str, name: str
) -> None:
    oracle: Oracle = request.getfixturevalue(ORACLES[oracle_key])
    pulled = oracle.pull(corpus[name].ref)
    refusal = REFUSALS.get((oracle_key, name))
    if refusal is None:
        assert pulled.ok, f"{oracle.runtime} refused {corpus[name].what}: {pulled.message}"
    else:
        assert not pulled.ok, f"{oracle.runtime} ran {corpus[name].what}; expected: {refusal}"
        assert _says(pulled.message, refusal), f"expected {refusal!r}, got: {pulled.message}"


@pytest.mark.parametrize(("oracle_key", "name"), _cases())
def test_verdict_agrees_with_the_real_pull(
    request: pytest.FixtureRequest,
    corpus: dict[str, CorpusImage],
    verdicts: Callable[[Oracle, str], dict[str, Any]],
    oracle_key: str,
    name: str,
) -> None:
    oracle: Oracle = request.getfixturevalue(ORACLES[oracle_key])
    pulled = oracle.pull(corpus[name].ref)
    result = verdicts(oracle, name)
    outcome = "succeeded" if pulled.ok else f"failed: {pulled.message}"
    node = f"{oracle.runtime} ({oracle.platform})"
    seen = f"{node} on {corpus[name].what}: pull {outcome}; pullcheck {_summary(result)}"

    documented = DIFFERENCES.get((oracle_key, name))
    if documented is not None:
        assert (pulled.ok, result["verdict"]) == (documented.pull_ok, documented.verdict), (
            f"documented difference no longer holds ({documented.reason}): {seen}"
        )
    else:
        assert pulled.ok == (result["verdict"] != "deny"), seen


def test_corpus_names_cover_the_corpus(corpus: dict[str, CorpusImage]) -> None:
    assert sorted(corpus) == sorted(CORPUS_NAMES)
    assert set(ARM64_CASES) <= set(CORPUS_NAMES)
    pairs = {(oracle_key, name) for oracle_key in ORACLES for name in _names(oracle_key)}
    assert set(REFUSALS) | set(DIFFERENCES) | set(PULLCHECK_GAPS) <= pairs
    assert not set(DIFFERENCES) & set(PULLCHECK_GAPS)
