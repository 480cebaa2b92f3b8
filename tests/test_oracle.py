"""pullcheck's verdict on every corpus image agrees with a real pull by the runtime it names.

A failed pull must be a `deny`, a successful one must not. Where the two legitimately differ, the row
in DIFFERENCES says what the real pull does, what pullcheck says, and why; the test then checks that
exact pair, so a row that stops being true fails too.
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
from tests.harness.oracles import Oracle
from tests.harness.registry import Registry

pytestmark = [pytest.mark.registry, pytest.mark.oracle]

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
PLATFORM = "linux/amd64"

# Oracle key -> session fixture that provides it.
ORACLES = {
    "cri-o": "skopeo_oracle",
    "containerd-1.6": "containerd_oracle",
    "containerd-2.1": "containerd2_oracle",
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
]


@dataclass(frozen=True)
class Difference:
    """A documented disagreement: what the real pull does, what pullcheck says, and why that is right."""

    pull_ok: bool
    verdict: str
    reason: str


_PLATFORM_MISMATCH = Difference(
    True,
    "deny",
    "PLATFORM_MISMATCH: no runtime refuses a single-platform image for another architecture at pull; "
    "the container then fails at start with `exec format error`",
)
_ENCRYPTED = Difference(
    False,
    "warn",
    "ENCRYPTED_LAYER: the pull fails only on nodes without decryption keys (CRI-O decryption_keys_path, "
    "containerd's ctd-decoder stream processor); pullcheck cannot see the nodes' keys, so it warns",
)

_ARTIFACT_PULLS = Difference(
    True,
    "deny",
    "NOT_AN_IMAGE: containerd 2.x pulls and unpacks an artifact whose config is not an image config; "
    "the container then fails at create (`no command specified`)",
)
_CTR_386 = Difference(
    False,
    "allow",
    "ctr fetches with exact platform matching (platforms.Ordered) but unpacks with platforms.Only, "
    "whose amd64 vector falls back to 386, so it looks for a child it never fetched; the CRI plugin "
    "of containerd 1.6 uses one matcher for both and pulls the 386 image on an amd64 node",
)

DIFFERENCES: dict[tuple[str, str], Difference] = {
    ("cri-o", "other_platform"): _PLATFORM_MISMATCH,
    ("containerd-1.6", "other_platform"): _PLATFORM_MISMATCH,
    ("containerd-2.1", "other_platform"): _PLATFORM_MISMATCH,
    ("cri-o", "encrypted_layer"): _ENCRYPTED,
    ("containerd-1.6", "encrypted_layer"): _ENCRYPTED,
    ("containerd-2.1", "encrypted_layer"): _ENCRYPTED,
    ("containerd-2.1", "artifact"): _ARTIFACT_PULLS,
    ("containerd-2.1", "artifact_type"): _ARTIFACT_PULLS,
    ("containerd-1.6", "index_386_only"): _CTR_386,
    ("cri-o", "diffids_mismatch"): Difference(
        True,
        "deny",
        "skopeo 1.9.3 vendors containers/image 5.23, older than CRI-O's: current containers/image "
        "(storage/storage_dest.go, untrustedLayerDiffID) fails with `image config has only 1 DiffID "
        "values, but a layer with index 1 exists`; 5.23 does not compare layers with diff_ids",
    ),
}


# Disagreements that are pullcheck's to fix: expected to fail (strictly, so a fix shows up) until then.
PULLCHECK_BUGS: dict[tuple[str, str], str] = {}


def _cases() -> list[Any]:
    cases = []
    for oracle_key in ORACLES:
        for name in CORPUS_NAMES:
            bug = PULLCHECK_BUGS.get((oracle_key, name))
            marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
            cases.append(pytest.param(oracle_key, name, marks=marks, id=f"{oracle_key}-{name}"))
    return cases


def _check(runtime: str, registry: Registry, refs: list[str]) -> dict[str, Any]:
    """Run `pullcheck check` as the DESIGN.md contract says; returns image -> result."""
    command = [sys.executable, "-m", "webhook", "check", "--output", "json", "--runtime", runtime]
    command += ["--platform", PLATFORM, "--insecure-registry", registry.host, *refs]
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
def verdicts(registry: Registry, corpus: dict[str, CorpusImage]) -> Callable[[str, str], dict[str, Any]]:
    """(runtime, corpus name) -> pullcheck's result; one `check` run over the whole corpus per runtime."""
    by_runtime: dict[str, dict[str, Any]] = {}

    def verdict(runtime: str, name: str) -> dict[str, Any]:
        if runtime not in by_runtime:
            by_runtime[runtime] = _check(runtime, registry, [image.ref for image in corpus.values()])
        result: dict[str, Any] = by_runtime[runtime][corpus[name].ref]
        return result

    return verdict


def _summary(result: dict[str, Any]) -> str:
    findings = ", ".join(f"{f['code']}={f['severity']}" for f in result["findings"]) or "no findings"
    return f"verdict {result['verdict']} ({findings})"


@pytest.mark.parametrize(("oracle_key", "name"), _cases())
def test_verdict_agrees_with_the_real_pull(
    request: pytest.FixtureRequest,
    corpus: dict[str, CorpusImage],
    verdicts: Callable[[str, str], dict[str, Any]],
    oracle_key: str,
    name: str,
) -> None:
    oracle: Oracle = request.getfixturevalue(ORACLES[oracle_key])
    pulled = oracle.pull(corpus[name].ref)
    result = verdicts(oracle.runtime, name)
    outcome = "succeeded" if pulled.ok else f"failed: {pulled.message}"
    seen = f"{oracle.runtime} pull {outcome}; pullcheck {_summary(result)}"

    documented = DIFFERENCES.get((oracle_key, name))
    if documented is not None:
        assert (pulled.ok, result["verdict"]) == (documented.pull_ok, documented.verdict), (
            f"documented difference no longer holds ({documented.reason}): {seen}"
        )
    else:
        assert pulled.ok == (result["verdict"] != "deny"), seen


def test_corpus_names_cover_the_corpus(corpus: dict[str, CorpusImage]) -> None:
    assert sorted(corpus) == sorted(CORPUS_NAMES)
    assert {name for _, name in DIFFERENCES} | {name for _, name in PULLCHECK_BUGS} <= set(CORPUS_NAMES)
    assert not set(DIFFERENCES) & set(PULLCHECK_BUGS)


@pytest.mark.parametrize("oracle_key", list(ORACLES))
def test_oracle_tells_a_good_pull_from_a_broken_one(
    request: pytest.FixtureRequest, corpus: dict[str, CorpusImage], oracle_key: str
) -> None:
    oracle: Oracle = request.getfixturevalue(ORACLES[oracle_key])
    assert oracle.pull(corpus["oci"].ref).ok
    missing = oracle.pull(corpus["missing_layer"].ref)
    assert not missing.ok
    assert "404" in missing.message or "not found" in missing.message, missing.message
