"""Rendering results for people (a table) and machines (the `pullcheck/v1` JSON document, CSV).

Tables and CSV cells pass every string through `webhook.text.printable` (JSON escapes by itself)."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TextIO, TypedDict

from webhook.auditreport import AuditReport
from webhook.codes import Code, Severity
from webhook.findings import ALLOW, DENY, REMEDY, WARN, ImageResult, ResultJson, worst
from webhook.text import printable
from webhook.workloads import Workload

API_VERSION = "pullcheck/v1"


class CheckDocument(TypedDict):
    apiVersion: str
    results: list[ResultJson]


class WorkloadJson(TypedDict):
    namespace: str
    kind: str
    name: str


class AuditResultJson(ResultJson):
    workloads: list[WorkloadJson]


class AuditDocument(TypedDict):
    apiVersion: str
    results: list[AuditResultJson]
    problems: list[str]


def to_json(results: Sequence[ImageResult]) -> str:
    document: CheckDocument = {"apiVersion": API_VERSION, "results": [r.to_json() for r in results]}
    return json.dumps(document, indent=2)


def reason(result: ImageResult) -> str:
    """One line saying why an image got its verdict: each worst finding once, with where it fails, and
    the mirrors that served it; registry text in it escaped."""
    mirrors = dict.fromkeys(a.endpoint for a in result.endpoints if a.role == "mirror")
    served = f"served by mirror {', '.join(mirrors)}" if mirrors else ""
    verdict = result.verdict
    if verdict == ALLOW:
        return printable(served)
    where: dict[tuple[Code, str], list[str]] = {}
    for finding in result.findings:
        if worst([finding.severity]) == verdict:
            targets = where.setdefault((finding.code, finding.message), [])
            target = f"{finding.runtime} {finding.platform}".strip()
            if target and target not in targets:
                targets.append(target)
    parts = []
    for (code, message), targets in where.items():
        on = f" [{', '.join(targets)}]" if targets else ""
        parts.append(f"{code}: {message}{on}")
    remedies = dict.fromkeys(REMEDY[code] for code, _ in where if code in REMEDY)
    text = "; ".join(parts) + (f" ({'; '.join(remedies)})" if remedies else "")
    return printable(f"{text} [{served}]" if served else text)


def to_table(results: Sequence[ImageResult]) -> str:
    """One line per image: verdict, image, reason; then a summary line."""
    images = [printable(r.image) for r in results]
    width = max((len(image) for image in images), default=5)
    lines = [f"{'VERDICT':7}  {'IMAGE':{width}}  REASON"]
    for result, image in zip(results, images, strict=True):
        lines.append(f"{result.verdict.upper():7}  {image:{width}}  {reason(result)}".rstrip())
    noun = "image" if len(results) == 1 else "images"
    lines.append(f"{len(results)} {noun}: {_counts([r.verdict for r in results])}")
    return "\n".join(lines)


# --- audits: images with the workloads that use them ----------------------------------------------


def _workload_json(workload: Workload) -> WorkloadJson:
    return {"namespace": workload.namespace, "kind": workload.kind, "name": workload.name}


def audit_to_json(report: AuditReport) -> str:
    """`check`'s document, each result with the workloads using the image, and what was not audited."""
    results: list[AuditResultJson] = [
        {**entry.result.to_json(), "workloads": [_workload_json(w) for w in entry.workloads]}
        for entry in report.entries
    ]
    document: AuditDocument = {
        "apiVersion": API_VERSION,
        "results": results,
        "problems": list(report.problems),
    }
    return json.dumps(document, indent=2)


CSV_COLUMNS = (
    "verdict",
    "namespace",
    "kind",
    "name",
    "image",
    "reference",
    "digest",
    "mediaType",
    "code",
    "severity",
    "runtime",
    "platform",
    "message",
)


def audit_to_csv(report: AuditReport) -> str:
    """One row per workload, image and finding (a clean image: one row with the finding columns empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in report.entries:
        r = entry.result
        findings: list[list[str]] = [
            [f.code, f.severity, f.runtime, f.platform, f.message] for f in r.findings
        ] or [[""] * len(CSV_COLUMNS[8:])]
        for workload in entry.workloads:
            for finding in findings:
                head = [r.verdict, workload.namespace, workload.kind, workload.name, r.image]
                row = head + [r.reference or "", r.digest or "", r.media_type or ""] + finding
                writer.writerow([printable(cell) for cell in row])
    return out.getvalue().rstrip("\n")


def _counts(verdicts: Iterable[str]) -> str:
    """'2 denied, 0 warned, 5 allowed'."""
    counted = Counter(verdicts)
    return f"{counted[DENY]} denied, {counted[WARN]} warned, {counted[ALLOW]} allowed"


def audit_summary(report: AuditReport) -> str:
    """'12 workloads: 2 denied, ...; 20 images: ...': each workload and image counted at its worst verdict."""
    by_workload: dict[str, list[Severity]] = {}
    by_image: dict[str, list[Severity]] = {}
    for entry in report.entries:
        by_image.setdefault(entry.result.image, []).append(entry.result.verdict)
        for workload in entry.workloads:
            by_workload.setdefault(workload.label, []).append(entry.result.verdict)
    workloads = {k: worst(v) for k, v in by_workload.items()}
    images = {k: worst(v) for k, v in by_image.items()}
    workload_part = (
        f"{len(workloads)} workload{'' if len(workloads) == 1 else 's'}: {_counts(workloads.values())}"
    )
    return (
        f"{workload_part}; {len(images)} image{'' if len(images) == 1 else 's'}: {_counts(images.values())}"
    )


def audit_to_table(report: AuditReport) -> str:
    """Denied, then warned rows (one per workload and image), then allowed images (one row each, with
    how many workloads use them); what was not audited; a summary line."""
    rows: list[tuple[str, str, str, str]] = []
    for verdict in (DENY, WARN):
        pairs = [
            (workload.label, entry.result)
            for entry in report.entries
            if entry.result.verdict == verdict
            for workload in entry.workloads
        ]
        for label, result in sorted(pairs, key=lambda pair: (pair[0], pair[1].image)):
            rows.append((verdict.upper(), printable(label), printable(result.image), reason(result)))
    allowed = sorted((e for e in report.entries if e.result.verdict == ALLOW), key=lambda e: e.result.image)
    for entry in allowed:
        users = entry.workloads
        # Drift is about the workloads, not the image: the one info finding an allowed row shows.
        drift = [f"{f.code}: {f.message}" for f in entry.result.findings if f.code == Code.DIGEST_DRIFT]
        rows.append(
            (
                ALLOW.upper(),
                printable(users[0].label) if len(users) == 1 else f"{len(users)} workloads",
                printable(entry.result.image),
                printable("; ".join(drift)),
            )
        )
    workload_width = max((len(row[1]) for row in rows), default=8)
    image_width = max((len(row[2]) for row in rows), default=5)
    lines = [f"{'VERDICT':7}  {'WORKLOAD':{workload_width}}  {'IMAGE':{image_width}}  REASON"]
    lines += [f"{v:7}  {w:{workload_width}}  {i:{image_width}}  {r}".rstrip() for v, w, i, r in rows]
    lines += [f"not audited: {printable(problem)}" for problem in report.problems]
    lines.append(audit_summary(report))
    return "\n".join(lines)


class ProgressBar:
    """`[#####.....] 120/300 images` redrawn in place on a terminal; erased when the last one is done."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        filled = self.WIDTH * done // max(total, 1)
        with self._lock:
            if done >= total:
                self.stream.write("\r\033[K")
            else:
                self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} images")
            self.stream.flush()
