"""The background audit's findings as `wgpolicyk8s.io/v1alpha2` PolicyReports, one per namespace.

The format Kyverno and Trivy write, so Policy Reporter and its UI show pullcheck's findings beside
theirs. Reports carry the label `app.kubernetes.io/managed-by: pullcheck`; a namespace that no longer
has workloads loses its report. Nothing is written when the CRD is not installed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

from kubernetes import client

from webhook.auditreport import AuditReport
from webhook.codes import Code, Severity
from webhook.findings import DENY, WARN, ImageResult
from webhook.text import printable

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "wgpolicyk8s.io", "v1alpha2", "policyreports"
REPORT_NAME = "pullcheck"
MANAGED_BY = {"app.kubernetes.io/managed-by": "pullcheck"}
POLICY = "pullcheck"
CLEAN_RULE = "image-pullable"
# A report is one etcd object (1.5 MiB at most): beyond this many results the passes are left out
# first; the summary still counts everything.
MAX_RESULTS = 1000
_RESULT: dict[str, Literal["fail", "warn"]] = {DENY: "fail", WARN: "warn"}
_SEVERITY: dict[str, Literal["high", "medium"]] = {DENY: "high", WARN: "medium"}
_NOT_FOUND = 404


def _message(result: ImageResult, code: Code, severity: Severity) -> str:
    findings = [f for f in result.findings if f.code == code and f.severity == severity]
    targets = ", ".join(dict.fromkeys(f"{f.runtime} {f.platform}".strip() for f in findings if f.runtime))
    return printable(f"{result.image}: {findings[0].message}" + (f" [{targets}]" if targets else ""))


class Timestamp(TypedDict):
    seconds: int
    nanos: int


class ReportResource(TypedDict):
    apiVersion: str
    kind: str
    name: str
    namespace: str
    uid: str


class ResultBase(TypedDict):
    source: str
    policy: str
    category: str
    scored: bool
    timestamp: Timestamp
    resources: list[ReportResource]
    properties: dict[str, str]


class PassResult(ResultBase):
    rule: str
    result: Literal["pass"]
    message: str


class FindingResult(ResultBase):
    rule: str
    result: Literal["fail", "warn"]
    severity: Literal["high", "medium"]
    message: str


ReportResult = PassResult | FindingResult


class ReportMetadata(TypedDict):
    name: str
    namespace: str
    labels: dict[str, str]
    resourceVersion: NotRequired[str]


class PolicyReport(TypedDict):
    """A wgpolicyk8s.io/v1alpha2 PolicyReport as pullcheck writes it."""

    apiVersion: str
    kind: Literal["PolicyReport"]
    metadata: ReportMetadata
    summary: dict[str, int]
    results: list[ReportResult]


def report_bodies(report: AuditReport, now: float | None = None) -> dict[str, PolicyReport]:
    """namespace -> the PolicyReport to write there."""
    stamp: Timestamp = {"seconds": int(now if now is not None else time.time()), "nanos": 0}
    results: dict[str, list[ReportResult]] = {}
    for entry in report.entries:
        result = entry.result
        verdict = result.verdict
        codes = dict.fromkeys(f.code for f in result.findings if f.severity == verdict)
        for workload in entry.workloads:
            if not workload.namespace:
                continue
            base: ResultBase = {
                "source": "pullcheck",
                "policy": POLICY,
                "category": "Image compatibility",
                "scored": True,
                "timestamp": stamp,
                "resources": [
                    {
                        "apiVersion": workload.api_version,
                        "kind": workload.kind,
                        "name": workload.name,
                        "namespace": workload.namespace,
                        "uid": workload.uid,
                    }
                ],
                "properties": {"image": printable(result.image), "digest": result.digest or ""},
            }
            found = results.setdefault(workload.namespace, [])
            if verdict not in _RESULT:
                found.append(
                    {
                        **base,
                        "rule": CLEAN_RULE,
                        "result": "pass",
                        "message": printable(f"{result.image}: pullable"),
                    }
                )
                continue
            for code in codes:
                found.append(
                    {
                        **base,
                        "rule": code,
                        "result": _RESULT[verdict],
                        "severity": _SEVERITY[verdict],
                        "message": _message(result, code, verdict),
                    }
                )
    bodies: dict[str, PolicyReport] = {}
    for namespace, entries in results.items():
        summary = {kind: sum(1 for e in entries if e["result"] == kind) for kind in ("pass", "fail", "warn")}
        kept = sorted(entries, key=lambda e: e["result"] == "pass")[:MAX_RESULTS]
        bodies[namespace] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "PolicyReport",
            "metadata": {"name": REPORT_NAME, "namespace": namespace, "labels": dict(MANAGED_BY)},
            "summary": {**summary, "error": 0, "skip": 0},
            "results": kept,
        }
    return bodies


class PolicyReportWriter:
    """Writes the reports through the API; needs get, list, create, update and delete on policyreports."""

    def __init__(self, api: client.ApiClient) -> None:
        self._custom: Any = client.CustomObjectsApi(api)

    def _existing(self) -> Mapping[str, str] | None:
        """namespace -> resourceVersion of pullcheck's reports; None when the CRD is not installed."""
        try:
            response = self._custom.list_cluster_custom_object(
                GROUP,
                VERSION,
                PLURAL,
                label_selector=",".join(f"{k}={v}" for k, v in MANAGED_BY.items()),
                _preload_content=False,
                _request_timeout=30,
            )
        except client.ApiException as exc:
            if exc.status == _NOT_FOUND:
                return None
            raise
        items = json.loads(response.data).get("items") or []
        return {
            str(i["metadata"]["namespace"]): str(i["metadata"]["resourceVersion"])
            for i in items
            if i["metadata"].get("name") == REPORT_NAME
        }

    def write(self, report: AuditReport) -> int | None:
        """Write one report per namespace and remove stale ones; the count written, None without the CRD."""
        existing = self._existing()
        if existing is None:
            log.info("the PolicyReport CRD is not installed; no reports written")
            return None
        bodies = report_bodies(report)
        for namespace, body in bodies.items():
            if namespace in existing:
                body["metadata"]["resourceVersion"] = existing[namespace]
                self._custom.replace_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, REPORT_NAME, body, _request_timeout=30
                )
            else:
                self._custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, body, _request_timeout=30
                )
        for namespace in set(existing) - set(bodies):
            self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, REPORT_NAME, _request_timeout=30
            )
        return len(bodies)
