"""The periodic audit of `pullcheck serve`: every namespace of the cluster, as PolicyReports and metrics.

Wiring only: the cluster's workloads come from `webhook.kube.inventory`, the judging from
`webhook.audit`, the reports go to `webhook.kube.policyreport` and to the callback (the metrics).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from webhook.audit import audit
from webhook.auditreport import AuditReport
from webhook.credentials import Keyring
from webhook.findings import DENY
from webhook.kube.inventory import ClusterReader
from webhook.kube.policyreport import PolicyReportWriter
from webhook.placement import NodeGroup, Placement, pulling_locally, static_groups
from webhook.policy import Policy
from webhook.ports import Check, PullSecretSource

log = logging.getLogger("pullcheck.audit")


class BackgroundAudit:
    """Runs `run_once` every `interval()` seconds in a daemon thread; an interval of 0 pauses it (the
    policy is looked at again every `idle_poll` seconds, so turning audits on needs no restart)."""

    def __init__(
        self, run_once: Callable[[], object], interval: Callable[[], float], *, idle_poll: float = 30.0
    ) -> None:
        self._run_once = run_once
        self._interval = interval
        self._idle_poll = idle_poll
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pullcheck-audit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _loop(self) -> None:
        while not self._stopped.is_set():
            seconds = self._interval()
            if seconds <= 0:
                self._stopped.wait(self._idle_poll)
                continue
            try:
                self._run_once()
            except Exception as exc:  # noqa: BLE001 - the next run may succeed; the webhook goes on
                log.error("background audit failed: %s: %s", type(exc).__name__, exc)
            self._stopped.wait(seconds)


def start_background_audit(
    api: Any,
    *,
    policy: Callable[[], Policy],
    check_for: Callable[[Policy], Check],
    nodes: Callable[[], Sequence[NodeGroup]],
    pull_secrets: PullSecretSource,
    node_keyring: Callable[[Policy], Keyring],
    on_report: Callable[[AuditReport], None],
    interval: float | None = None,
) -> BackgroundAudit:
    """Audit every namespace of the cluster of `api` (a kubernetes ApiClient) every `interval` seconds,
    else the policy's auditIntervalSeconds; hand each report to `on_report` and write PolicyReports."""
    reader = ClusterReader(api)
    writer = PolicyReportWriter(api)

    def run_once() -> None:
        current = policy()
        inventory = reader.workloads(None)
        report = audit(
            check_for(current),
            inventory.workloads,
            Placement(
                pulling_locally(nodes(), current.local_image_pull),
                static_groups(current.targets),
            ),
            current,
            node_keyring=node_keyring(current),
            pull_secrets=pull_secrets,
            problems=inventory.problems,
            timeout=current.resolution_timeout,
        )
        on_report(report)
        written = writer.write(report)
        denied = sum(1 for r in report.results if r.verdict == DENY)
        log.info(
            "background audit: %d workloads, %d images (%d denied), %s policy reports",
            report.workloads,
            report.resolutions,
            denied,
            "no" if written is None else written,
        )

    background = BackgroundAudit(
        run_once, lambda: interval if interval is not None else policy().audit_interval
    )
    background.start()
    return background
