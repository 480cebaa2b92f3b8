"""CI reports: SARIF 2.1.0 (validated against the OASIS schema in tests/data) and JUnit XML, from
`check -f` on manifests of the real registry corpus; image lines from the YAML parser's positions."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from tests.harness.corpus import CorpusImage
from tests.harness.registry import Registry
from webhook import explain
from webhook.cli import main
from webhook.codes import Code
from webhook.findings import DEFAULT_SEVERITY
from webhook.manifests import SourceLine, image_lines

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())


def _manifests(bad: str, good: str) -> str:
    # The denied image is named in an annotation above its container, and the good image shares a line
    # number's worth of text with it: only the parser's positions find the right lines.
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  annotations: {{previous: "{bad}"}}
spec:
  template:
    spec:
      initContainers: [{{name: init, image: "{good}"}}]
      containers:
        - name: web
          image: "{bad}"
---
apiVersion: v1
kind: List
items:
  - apiVersion: batch/v1
    kind: CronJob
    metadata: {{name: nightly, namespace: ops}}
    spec:
      schedule: "@daily"
      jobTemplate:
        spec:
          template:
            spec:
              containers:
                - &job
                  name: job
                  image: {bad}
                - <<: *job
                  name: again
"""


def test_image_lines_come_from_the_parser() -> None:
    text = _manifests("r.example/bad:1", "r.example/good:1")
    assert image_lines(text, "app.yaml") == {
        ("shop/Deployment/web", "r.example/good:1"): SourceLine("app.yaml", 10, 37),
        ("shop/Deployment/web", "r.example/bad:1"): SourceLine("app.yaml", 13, 11),
        ("ops/CronJob/nightly", "r.example/bad:1"): SourceLine("app.yaml", 30, 19),
    }
    assert image_lines("kind: [unclosed", "x.yaml") == {}


def test_image_lines_of_json() -> None:
    text = json.dumps({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"image": "a:1"}]}})
    assert image_lines(text, "pod.json") == {
        ("Pod/p", "a:1"): SourceLine("pod.json", 1, text.index('"image"') + 1)
    }


@pytest.mark.registry
def test_check_files_as_sarif(
    tmp_path: Path,
    registry: Registry,
    corpus: dict[str, CorpusImage],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad, good = corpus["schema1_signed"].ref, corpus["oci_index"].ref
    (tmp_path / "my deploy").mkdir()
    (tmp_path / "my deploy" / "app.yaml").write_text(_manifests(bad, good))
    monkeypatch.chdir(tmp_path)
    status = main(
        ["check", "--insecure-registry", registry.host, "--runtime", "containerd://2.1.0",
         "--runtime", "cri-o://1.33.2", "-f", "my deploy/app.yaml", "-o", "sarif"]
    )  # fmt: skip
    assert status == 1  # --fail-on semantics as for the table
    log = json.loads(capsys.readouterr().out)
    jsonschema.Draft4Validator(SCHEMA).validate(log)
    [run] = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert [rule["id"] for rule in rules] == list(DEFAULT_SEVERITY)
    schema1_rule = rules[[rule["id"] for rule in rules].index("SCHEMA1")]
    assert schema1_rule["help"]["markdown"] == explain.to_markdown(Code.SCHEMA1)
    assert schema1_rule["shortDescription"]["text"] == explain.EXPLANATIONS[Code.SCHEMA1].title

    placed = {
        (
            r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
            r["properties"]["runtime"],
            r["level"],
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            r["locations"][0]["physicalLocation"]["region"]["startLine"],
        )
        for r in run["results"]
        if r["ruleId"] == "SCHEMA1"
    }
    assert placed == {
        ("shop/Deployment/web", "containerd://2.1.0", "error", "my%20deploy/app.yaml", 13),
        ("shop/Deployment/web", "cri-o://1.33.2", "warning", "my%20deploy/app.yaml", 13),
        ("ops/CronJob/nightly", "containerd://2.1.0", "error", "my%20deploy/app.yaml", 30),
        ("ops/CronJob/nightly", "cri-o://1.33.2", "warning", "my%20deploy/app.yaml", 30),
    }
    assert all(r["ruleIndex"] == list(DEFAULT_SEVERITY).index(r["ruleId"]) for r in run["results"])
    assert not [r for r in run["results"] if r["properties"]["image"] == good]


@pytest.mark.registry
def test_check_files_as_junit(
    tmp_path: Path, registry: Registry, corpus: dict[str, CorpusImage], capsys: pytest.CaptureFixture[str]
) -> None:
    bad, good = corpus["schema1_signed"].ref, corpus["oci_index"].ref
    path = tmp_path / "app.yaml"
    path.write_text(_manifests(bad, good))
    common = ["check", "--insecure-registry", registry.host, "-f", str(path), "-o", "junit"]
    assert main([*common, "--runtime", "containerd://2.1.0", "--runtime", "cri-o://1.33.2"]) == 1
    root = ET.fromstring(capsys.readouterr().out)
    [suite] = root
    cases = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    assert set(cases) == {
        ("shop/Deployment/web", good),
        ("shop/Deployment/web", bad),
        ("ops/CronJob/nightly", bad),
    }
    assert (suite.get("tests"), suite.get("failures")) == ("3", "2")
    assert list(cases[("shop/Deployment/web", good)]) == []  # passes
    failure = cases[("shop/Deployment/web", bad)].find("failure")
    assert failure is not None and failure.get("type") == "deny"
    assert failure.get("message") == "SCHEMA1 on containerd://2.1.0 linux/amd64"
    assert "rebuild" in (failure.text or "")  # the remedy travels with the failure
    assert cases[("shop/Deployment/web", bad)].get("line") == "13"

    # CRI-O only warns on schema 1: the run passes and so does the testcase, until --fail-on warn.
    assert main([*common, "--runtime", "cri-o://1.33.2"]) == 0
    suite = ET.fromstring(capsys.readouterr().out)[0]
    assert suite.get("failures") == "0"
    assert main([*common, "--runtime", "cri-o://1.33.2", "--fail-on", "warn"]) == 1
    suite = ET.fromstring(capsys.readouterr().out)[0]
    assert suite.get("failures") == "2"


def test_ci_reports_need_manifests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-o", "sarif", "nginx:1.27"]) == 2
    assert capsys.readouterr().err == "pullcheck: --output sarif reports on manifests: use it with -f FILE\n"


def test_reports_escape_what_the_manifests_say(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # An image string that is no reference (judged without a registry) carrying a terminal escape and a
    # control character XML 1.0 cannot hold at all.
    path = tmp_path / "pod.yaml"
    path.write_text(
        'kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{image: "bad\\x1b[2J\\x01image"}]\n'
    )
    assert main(["check", "-f", str(path), "-o", "junit"]) == 1
    case = ET.fromstring(capsys.readouterr().out).find("testsuite/testcase")
    assert case is not None and case.get("name") == "bad\\x1b[2J\\x01image"
    assert main(["check", "-f", str(path), "-o", "sarif"]) == 1
    result, *others = json.loads(capsys.readouterr().out)["runs"][0]["results"]
    assert all(other["locations"] == result["locations"] for other in others)
    assert result["ruleId"] == "INVALID_REFERENCE" and result["locations"][0]["physicalLocation"][
        "region"
    ] == {
        "startLine": 4,
        "startColumn": 17,
    }
    assert "\x1b" not in result["message"]["text"] and "bad\\x1b[2J\\x01image" in result["message"]["text"]
