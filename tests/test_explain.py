"""`pullcheck explain`, and one text for explain, SARIF rule help and docs/findings.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from webhook import explain
from webhook.cli import main
from webhook.findings import CODES

FINDINGS_DOC = Path(__file__).resolve().parent.parent / "docs" / "findings.md"


def test_every_catalog_code_is_explained() -> None:
    # Whoever adds a finding code adds its explanation (and runs scripts/findings_doc.py).
    missing = sorted(CODES - set(explain.EXPLANATIONS))
    assert missing == [], f"add these codes to webhook/explain.py: {missing}"
    for code, entry in explain.EXPLANATIONS.items():
        assert entry.title and entry.meaning and entry.runtimes and entry.fixes, code


def test_findings_doc_is_written_from_the_explanations() -> None:
    text = FINDINGS_DOC.read_text()
    assert explain.findings_doc_section() in text, "docs/findings.md drifted: run scripts/findings_doc.py"
    # The summary table at its head names the same codes as the catalog.
    table_codes = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", text, re.MULTILINE))
    assert table_codes == set(CODES)


def test_explain_prints_the_runtime_error_and_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "schema1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SCHEMA1: Docker V2 Schema 1 manifest\n")
    assert "containerd 2.1 and later: refuses" in out
    assert "schema 1 image manifests are no longer supported" in out  # containerd 2.1's own words
    assert "skopeo copy --format v2s2 docker://IMAGE docker://IMAGE" in out


def test_explain_without_a_code_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(explain.EXPLANATIONS)


def test_an_unknown_code_is_a_usage_error_naming_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "SCHEMA2"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("pullcheck: unknown finding code 'SCHEMA2'; known codes: SCHEMA1, ")
    assert all(code in line for code in CODES)
