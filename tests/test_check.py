"""`pullcheck check` against the real registry corpus: the verdict and the reason for every image."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.corpus import CorpusImage
from tests.harness.registry import Registry
from webhook.cli import main

pytestmark = pytest.mark.registry

C16, C21, CRIO = "containerd://1.6.20", "containerd://2.1.0", "cri-o://1.33.0"

# corpus image -> {runtime: (verdict, codes of that severity)} on linux/amd64
EXPECTED: dict[str, dict[str, tuple[str, set[str]]]] = {
    "schema1_signed": {C16: ("allow", set()), C21: ("deny", {"SCHEMA1"}), CRIO: ("warn", {"SCHEMA1"})},
    "schema2": {C16: ("allow", set()), C21: ("allow", set()), CRIO: ("allow", set())},
    "oci": {C16: ("allow", set()), C21: ("allow", set()), CRIO: ("allow", set())},
    "oci_index": {C16: ("allow", set()), C21: ("allow", set()), CRIO: ("allow", set())},
    "docker_list": {C16: ("allow", set()), C21: ("allow", set()), CRIO: ("allow", set())},
    "other_platform": {r: ("deny", {"PLATFORM_MISMATCH"}) for r in (C16, C21, CRIO)},
    "index_missing_platform": {r: ("deny", {"NO_MATCHING_PLATFORM"}) for r in (C16, C21, CRIO)},
    "index_386_only": {
        C16: ("allow", set()),
        C21: ("deny", {"NO_MATCHING_PLATFORM"}),  # the transfer service fetches exact matches only
        CRIO: ("deny", {"NO_MATCHING_PLATFORM"}),
    },
    "index_armv7_only": {r: ("deny", {"NO_MATCHING_PLATFORM"}) for r in (C16, C21, CRIO)},
    "index_child_schema1": {
        C16: ("deny", {"SCHEMA1"}),
        C21: ("deny", {"SCHEMA1"}),
        CRIO: ("warn", {"SCHEMA1"}),
    },
    "artifact": {r: ("deny", {"NOT_AN_IMAGE"}) for r in (C16, C21, CRIO)},
    "artifact_type": {r: ("deny", {"NOT_AN_IMAGE"}) for r in (C16, C21, CRIO)},
    "zstd": {C16: ("allow", set()), C21: ("allow", set()), CRIO: ("allow", set())},
    "docker_zstd": {
        C16: ("deny", {"UNSUPPORTED_LAYER"}),
        C21: ("allow", set()),
        CRIO: ("deny", {"UNSUPPORTED_LAYER"}),
    },
    "docker_oci_layers": {
        C16: ("allow", set()),
        C21: ("allow", set()),
        CRIO: ("deny", {"MIXED_MEDIA_TYPES"}),
    },
    "oci_docker_config": {
        C16: ("allow", set()),
        C21: ("allow", set()),
        CRIO: ("deny", {"MIXED_MEDIA_TYPES"}),
    },
    "diffids_mismatch": {r: ("deny", {"ROOTFS_MISMATCH"}) for r in (C16, C21, CRIO)},
    "diffids_empty": {
        C16: ("deny", {"ROOTFS_MISMATCH"}),
        C21: ("deny", {"ROOTFS_MISMATCH"}),
        CRIO: ("allow", set()),
    },
    "missing_config": {r: ("deny", {"MISSING_BLOB"}) for r in (C16, C21, CRIO)},
    "missing_layer": {r: ("deny", {"MISSING_BLOB"}) for r in (C16, C21, CRIO)},
    "missing_child": {r: ("deny", {"MISSING_BLOB"}) for r in (C16, C21, CRIO)},
    "encrypted_layer": {r: ("warn", {"ENCRYPTED_LAYER"}) for r in (C16, C21, CRIO)},
    "unknown_layer": {
        C16: ("deny", {"UNSUPPORTED_LAYER"}),
        C21: ("deny", {"UNSUPPORTED_LAYER"}),
        CRIO: ("allow", set()),
    },
    "foreign_layer": {r: ("warn", {"NONDISTRIBUTABLE_LAYER"}) for r in (C16, C21, CRIO)},
    "index_without_platforms": {C16: ("allow", set()), C21: ("allow", set()), CRIO: ("allow", set())},
}
SEVERITY_OF = {"deny": "deny", "warn": "warn", "allow": "info"}


def check_json(registry: Registry, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    status = main(["check", "--output", "json", "--insecure-registry", registry.host, *args])
    return status, json.loads(capsys.readouterr().out)


def test_corpus_is_covered(corpus: dict[str, CorpusImage]) -> None:
    assert set(EXPECTED) <= set(corpus)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_verdicts(
    name: str, registry: Registry, corpus: dict[str, CorpusImage], capsys: pytest.CaptureFixture[str]
) -> None:
    image = corpus[name].ref
    args = [a for r in (C16, C21, CRIO) for a in ("--runtime", r)]
    status, document = check_json(registry, *args, image, capsys=capsys)
    [result] = document["results"]
    assert result["image"] == image
    for runtime, (verdict, codes) in EXPECTED[name].items():
        mine = [f for f in result["findings"] if f["runtime"] == runtime]
        worst = {f["severity"] for f in mine}
        got = "deny" if "deny" in worst else "warn" if "warn" in worst else "allow"
        assert got == verdict, (runtime, mine)
        if codes:
            assert {f["code"] for f in mine if f["severity"] == verdict} == codes, (runtime, mine)
        assert all(f["message"] and "\n" not in f["message"] for f in mine)
    overall = {"deny", "warn", "allow"} & {v for v, _ in EXPECTED[name].values()}
    assert result["verdict"] == next(v for v in ("deny", "warn", "allow") if v in overall)
    assert status == (1 if result["verdict"] == "deny" else 0)
    assert result["digest"].startswith("sha256:") or name.startswith("missing")


def test_arm64_nodes(
    registry: Registry, corpus: dict[str, CorpusImage], capsys: pytest.CaptureFixture[str]
) -> None:
    refs = [corpus[n].ref for n in ("index_armv7_only", "other_platform", "oci_index")]
    _, document = check_json(
        registry, "--runtime", C21, "--runtime", CRIO, "--platform", "linux/arm64", *refs, capsys=capsys
    )
    armv7, other, index = document["results"]
    assert {(f["runtime"], f["code"]) for f in armv7["findings"]} == {
        (C21, "NO_MATCHING_PLATFORM"),
        (CRIO, "NO_MATCHING_PLATFORM"),
    }
    assert other["verdict"] == "allow" and index["verdict"] == "allow"


def test_table_output_and_exit_status(
    registry: Registry, corpus: dict[str, CorpusImage], capsys: pytest.CaptureFixture[str]
) -> None:
    refs = [corpus["schema1_signed"].ref, corpus["encrypted_layer"].ref, corpus["oci"].ref]
    status = main(["check", "--insecure-registry", registry.host, *refs])
    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    assert lines[0].split() == ["VERDICT", "IMAGE", "REASON"]
    assert lines[1].startswith("DENY") and "SCHEMA1" in lines[1] and "removed in containerd 2.1" in lines[1]
    assert lines[2].startswith("WARN") and "ENCRYPTED_LAYER" in lines[2]
    assert lines[3].split() == ["ALLOW", corpus["oci"].ref]
    assert lines[4] == "3 images: 1 denied, 1 warned, 1 allowed"
    assert main(["check", "--insecure-registry", registry.host, "--fail-on", "warn", refs[1]]) == 1
    assert main(["check", "--insecure-registry", registry.host, refs[2]]) == 0


def test_not_found_and_invalid(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    status, document = check_json(
        registry, "--runtime", C21, f"{registry.host}/corpus/oci:no-such-tag", "Not/Valid:ref", capsys=capsys
    )
    missing, invalid = document["results"]
    assert status == 1
    assert [f["code"] for f in missing["findings"]] == ["NOT_FOUND"]
    assert invalid["reference"] is None and [f["code"] for f in invalid["findings"]] == ["INVALID_REFERENCE"]


def test_unreachable_registry_follows_on_resolution_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.harness.registry import free_port

    dead = f"127.0.0.1:{free_port()}"
    policy = tmp_path / "policy.yaml"
    policy.write_text("onResolutionError: deny\n")
    status = main(["check", "--output", "json", "--runtime", C21, "--insecure-registry", dead, f"{dead}/x:1"])
    [result] = json.loads(capsys.readouterr().out)["results"]
    assert status == 0 and result["verdict"] == "warn"
    assert [f["code"] for f in result["findings"]] == ["REGISTRY_UNREACHABLE"]
    status = main(
        ["check", "--config", str(policy), "--runtime", C21, "--insecure-registry", dead, f"{dead}/x:1"]
    )
    assert status == 1


def test_usage_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: sometimes\n")
    assert main(["check", "--config", str(bad), "nginx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mode: 'sometimes' is not one of" in err and "Traceback" not in err
    assert main(["check", "--runtime", "rkt://1.0", "nginx"]) == 2
    assert "runtime 'rkt://1.0'" in capsys.readouterr().err
    assert main(["check", "--docker-config", str(tmp_path / "none.json"), "nginx"]) == 2
    assert "cannot read the docker config" in capsys.readouterr().err


def test_python_dash_m_is_the_same_command(registry: Registry, corpus: dict[str, CorpusImage]) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "check",
            "-o",
            "json",
            "--insecure-registry",
            registry.host,
            corpus["oci"].ref,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["apiVersion"] == "pullcheck/v1"
