"""`pullcheck check -f`: manifests (YAML, JSON, stdin) judged against the real registry corpus."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from tests.harness.corpus import CorpusImage
from tests.harness.registry import Registry
from webhook.cli import main

pytestmark = pytest.mark.registry


def _manifests(corpus: dict[str, CorpusImage]) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  template:
    spec:
      initContainers: [{{name: init, image: "{corpus["oci_index"].ref}"}}]
      containers: [{{name: web, image: "{corpus["schema1_signed"].ref}"}}]
---
apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: DaemonSet
    metadata: {{name: agent, namespace: shop}}
    spec:
      template:
        spec:
          nodeSelector: {{kubernetes.io/arch: arm64}}
          containers: [{{name: agent, image: "{corpus["index_armv7_only"].ref}"}}]
  - apiVersion: v1
    kind: Service
    metadata: {{name: web}}
"""


def _check(capsys: pytest.CaptureFixture[str], registry: Registry, *args: str) -> tuple[int, str, str]:
    status = main(["check", "--insecure-registry", registry.host, *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_file_names_the_object_of_each_image(
    tmp_path: Path, registry: Registry, corpus: dict[str, CorpusImage], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(_manifests(corpus))
    status, out, _ = _check(
        capsys, registry, "-f", str(path), "--runtime", "containerd://2.0.0", "--platform", "linux/amd64",
        "--platform", "linux/arm64", "-o", "json",
    )  # fmt: skip
    assert status == 1
    results = {r["image"]: r for r in json.loads(out)["results"]}
    schema1 = results[corpus["schema1_signed"].ref]
    assert schema1["verdict"] == "deny" and schema1["workloads"] == [
        {"namespace": "shop", "kind": "Deployment", "name": "web"}
    ]
    assert results[corpus["oci_index"].ref]["verdict"] == "allow"
    # The DaemonSet selects arm64 nodes and is judged there only: containerd 2.0 falls back from arm64
    # to arm/v7, so the arm/v7-only index runs; on linux/amd64 it would have no match.
    agent = results[corpus["index_armv7_only"].ref]
    assert agent["workloads"] == [{"namespace": "shop", "kind": "DaemonSet", "name": "agent"}]
    assert (agent["verdict"], agent["findings"]) == ("allow", [])


def test_stdin_and_table(
    registry: Registry,
    corpus: dict[str, CorpusImage],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(_manifests(corpus)))
    status, out, _ = _check(capsys, registry, "-f", "-", "--runtime", "cri-o://1.33.0")
    # The DaemonSet selects arm64, which no target has: judged on every target, as the webhook does.
    assert status == 1
    lines = out.splitlines()
    assert [line.split()[:3] for line in lines[1:3]] == [
        ["DENY", "shop/DaemonSet/agent", corpus["index_armv7_only"].ref],
        ["WARN", "shop/Deployment/web", corpus["schema1_signed"].ref],
    ]
    assert lines[-1] == "2 workloads: 1 denied, 1 warned, 0 allowed; 3 images: 1 denied, 1 warned, 1 allowed"


def test_usage_errors_are_one_line(
    tmp_path: Path, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Pod\nmetadata: {name: p}\nspec: {containers: {image: x}}\n")
    assert _check(capsys, registry, "-f", str(bad))[0] == 2
    assert capsys.readouterr().err == ""  # printed by main already; read through _check
    status, _, err = _check(capsys, registry, "-f", str(tmp_path / "missing.yaml"))
    assert status == 2
    status, _, err = _check(capsys, registry, "-f", str(bad), "nginx:1.27")
    assert status == 2 and err.strip() == "pullcheck: give IMAGE arguments or -f FILE, one of the two"


def test_pin_prints_the_manifests_pinned_and_the_report_on_stderr(
    tmp_path: Path,
    registry: Registry,
    corpus: dict[str, CorpusImage],
    capsys: pytest.CaptureFixture[str],
) -> None:
    entries = [registry.push_platform_image("pin/multi", "linux", arch) for arch in ("amd64", "arm64")]
    index_digest = registry.push_index("pin/multi", "v1", entries)
    multi = registry.ref("pin/multi", "v1")
    digested = f"{registry.ref('pin/multi', 'v1').rpartition(':')[0]}@{index_digest}"
    denied = corpus["index_armv7_only"].ref
    path = tmp_path / "app.yaml"
    path.write_text(f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  template:
    spec:
      initContainers: [{{name: init, image: "{multi}"}}]
      containers:
        - {{name: web, image: "{multi}"}}
        - {{name: bad, image: "{denied}"}}
        - {{name: fixed, image: "{digested}"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{image: "{multi}"}}
""")  # fmt: skip
    status, out, err = _check(capsys, registry, "-f", str(path), "--pin", "--runtime", "cri-o://1.33.0")
    assert status == 1  # the armv7-only image is denied, and reported as without --pin
    [reported] = [line.split()[:3] for line in err.splitlines() if line.startswith("DENY")]
    assert reported == ["DENY", "shop/Deployment/web", denied]
    deployment, config_map = yaml.safe_load_all(out)
    spec = deployment["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["image"] == f"{multi}@{index_digest}"
    assert [c["image"] for c in spec["containers"]] == [f"{multi}@{index_digest}", denied, digested]
    assert config_map == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                          "data": {"image": multi}}  # fmt: skip


def test_pin_needs_manifests(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _check(capsys, registry, "--pin", "nginx:1.27")
    assert status == 2 and err.strip() == "pullcheck: --pin rewrites manifests: give them with -f FILE"


def test_postrender_pin_passes_the_manifests_through_pinned(
    registry: Registry,
    corpus: dict[str, CorpusImage],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = corpus["oci"].ref
    digest = json.loads(_check(capsys, registry, image, "-o", "json")[1])["results"][0]["digest"]
    manifest = f"kind: Pod\nmetadata: {{name: p}}\nspec:\n  containers: [{{name: a, image: '{image}'}}]\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(manifest))
    status = main(["postrender", "--insecure-registry", registry.host, "--pin"])
    out, _ = capsys.readouterr()
    assert status == 0
    assert yaml.safe_load(out)["spec"]["containers"] == [{"name": "a", "image": f"{image}@{digest}"}]
