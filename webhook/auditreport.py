"""What an audit found: each image's result and the workloads it holds for.

Plain data, written by `webhook.audit` and read by every renderer of a report (the `pullcheck audit`
and `check` outputs, SARIF and JUnit, the metrics, the PolicyReports of `webhook.kube.policyreport`).
"""

from __future__ import annotations

from dataclasses import dataclass

from webhook.findings import ImageResult
from webhook.workloads import Workload


@dataclass(frozen=True)
class ImageAudit:
    """One image's result, for the targets of the workloads that use it."""

    result: ImageResult
    workloads: tuple[Workload, ...]


@dataclass(frozen=True)
class AuditReport:
    entries: tuple[ImageAudit, ...]  # an image judged differently for some workloads has one entry each
    problems: tuple[str, ...]  # what could not be read or judged, one line each
    workloads: int  # workloads judged (exempt ones left out)
    resolutions: int  # distinct (image, credential set) pairs resolved

    @property
    def results(self) -> list[ImageResult]:
        return [entry.result for entry in self.entries]
