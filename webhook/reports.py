"""CI reports of a judged set of workloads: SARIF 2.1.0 for code scanning, JUnit XML for test reports.

SARIF: one rule per finding code (its text from webhook.explain), one result per finding and workload,
located at the container's `image:` line when the workloads came from files, else at the workload
(`namespace/kind/name`). JUnit: one testcase per workload and image; an image whose verdict fails the
run (`--fail-on`) is a failure naming its codes and targets.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from webhook import __version__, explain
from webhook.auditreport import AuditReport
from webhook.codes import Code, Severity
from webhook.findings import DEFAULT_SEVERITY, DENY, INFO, REMEDY, WARN, Finding, ImageResult
from webhook.manifests import STDIN, SourceLine
from webhook.render import reason
from webhook.text import printable
from webhook.workloads import Workload

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SARIF_LEVELS = {DENY: "error", WARN: "warning", INFO: "note"}

# (workload label, image) -> where that container's image field stands in its manifest file.
ImageLines = Mapping[tuple[str, str], SourceLine]


def _rule(code: Code) -> dict[str, Any]:
    entry = explain.EXPLANATIONS[code]
    return {
        "id": code,
        "shortDescription": {"text": entry.title},
        "fullDescription": {"text": entry.meaning},
        "help": {"text": explain.to_text(code), "markdown": explain.to_markdown(code)},
        "defaultConfiguration": {"level": SARIF_LEVELS.get(DEFAULT_SEVERITY[code], "note")},
    }


def _uri(path: str) -> str:
    """A relative path as it was given (code scanning resolves it against the checkout), else a file URI;
    percent-encoded either way."""
    given = Path(path)
    return given.as_uri() if given.is_absolute() else quote(given.as_posix())


def _finding_text(result: ImageResult, finding: Finding) -> str:
    """'IMAGE: CODE: message [runtime platform] (remedy)': the table's words for one finding."""
    text = f"{printable(result.image)}: {finding.code}: {printable(finding.message)}"
    target = f"{finding.runtime} {finding.platform}".strip()
    if target:
        text += f" [{target}]"
    return f"{text} ({REMEDY[finding.code]})" if finding.code in REMEDY else text


def _location(workload: Workload, image: str, lines: ImageLines) -> dict[str, Any]:
    location: dict[str, Any] = {
        "logicalLocations": [{"fullyQualifiedName": printable(workload.label), "kind": "resource"}],
    }
    where = lines.get((workload.label, image))
    if where is not None and where.path != STDIN:
        location["physicalLocation"] = {
            "artifactLocation": {"uri": _uri(where.path)},
            "region": {"startLine": where.line, "startColumn": where.column},
        }
    return location


def to_sarif(report: AuditReport, lines: ImageLines | None = None) -> str:
    """The SARIF 2.1.0 log of a report; `lines` places each result at its manifest's `image:` line."""
    codes = list(DEFAULT_SEVERITY)  # the catalog, in its order
    index = {code: i for i, code in enumerate(codes)}
    results = []
    for entry in report.entries:
        for workload in entry.workloads:
            location = _location(workload, entry.result.image, lines or {})
            for finding in entry.result.findings:
                results.append(
                    {
                        "ruleId": finding.code,
                        "ruleIndex": index[finding.code],
                        "level": SARIF_LEVELS.get(finding.severity, "note"),
                        "message": {"text": _finding_text(entry.result, finding)},
                        "locations": [location],
                        "properties": {
                            "image": entry.result.image,
                            "reference": entry.result.reference,
                            "digest": entry.result.digest,
                            "runtime": finding.runtime,
                            "platform": finding.platform,
                        },
                    }
                )
    invocation = {
        "executionSuccessful": True,
        "toolExecutionNotifications": [
            {"level": "warning", "message": {"text": f"not audited: {problem}"}}
            for problem in report.problems
        ],
    }
    run = {
        "tool": {
            "driver": {
                "name": "pullcheck",
                "version": __version__,
                "rules": [_rule(code) for code in codes],
            }
        },
        "invocations": [invocation],
        "results": results,
    }
    return json.dumps({"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}, indent=2)


def _codes_and_targets(result: ImageResult, severity: Severity) -> str:
    """'SCHEMA1 on containerd://2.1.0 linux/amd64, cri-o://1.33.2 linux/amd64; NOT_FOUND'."""
    where: dict[str, list[str]] = {}
    for finding in result.findings:
        if finding.severity == severity:
            targets = where.setdefault(finding.code, [])
            target = f"{finding.runtime} {finding.platform}".strip()
            if target and target not in targets:
                targets.append(target)
    return "; ".join(f"{code} on {', '.join(t)}" if t else code for code, t in where.items())


def to_junit(report: AuditReport, fail_on: str = DENY, lines: ImageLines | None = None) -> str:
    """JUnit XML: a testcase per workload and image, failed when its verdict fails the run."""
    failing = {DENY} if fail_on == DENY else {DENY, WARN}
    suite = ET.Element("testsuite", name="pullcheck")
    cases = failures = skipped = 0
    for entry in sorted(report.entries, key=lambda e: e.result.image):
        result = entry.result
        for workload in sorted(entry.workloads, key=lambda w: w.label):
            case = ET.SubElement(
                suite, "testcase", classname=printable(workload.label), name=printable(result.image)
            )
            where = (lines or {}).get((workload.label, result.image))
            if where is not None and where.path != STDIN:
                case.set("file", printable(where.path))
                case.set("line", str(where.line))
            cases += 1
            if result.verdict in failing:
                failures += 1
                failure = ET.SubElement(
                    case,
                    "failure",
                    message=printable(_codes_and_targets(result, result.verdict)),
                    type=result.verdict,
                )
                failure.text = printable(reason(result))
            elif result.verdict == WARN:
                ET.SubElement(case, "system-out").text = printable(f"warn: {reason(result)}")
    for problem in report.problems:
        case = ET.SubElement(suite, "testcase", classname="not audited", name=printable(problem))
        ET.SubElement(case, "skipped", message=printable(problem))
        cases += 1
        skipped += 1
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites", name="pullcheck", tests=str(cases), failures=str(failures))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
