"""Prometheus metrics of one webhook process, in a registry of its own (so tests can make many)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from webhook.admission import Decision
from webhook.auditreport import AuditReport
from webhook.findings import DENY, WARN
from webhook.podspec import POD_SPEC_PATHS
from webhook.policy import Mode
from webhook.registry import RequestEvent
from webhook.text import printable

# Warm admissions take milliseconds, cold ones up to the resolution deadline (seconds).
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _leading_number(header: str | None) -> float | None:
    """The count of a RateLimit-Remaining header such as '97;w=21600' (Docker Hub)."""
    if header is None:
        return None
    try:
        return float(header.split(";", 1)[0].strip())
    except ValueError:
        return None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.admission_seconds = Histogram(
            "pullcheck_admission_duration_seconds",
            "Time to answer one AdmissionReview, resolution included.",
            ["kind"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "pullcheck_admission_decisions",
            "Admission answers by policy mode, outcome (allowed or denied) and finding code (none: clean).",
            ["mode", "outcome", "code"],
            registry=self.registry,
        )
        self.invalid_requests = Counter(
            "pullcheck_invalid_requests",
            "Requests refused before judging, by HTTP status (400 malformed or unknown kind, 413 too large).",
            ["status"],
            registry=self.registry,
        )
        self.registry_requests = Counter(
            "pullcheck_registry_requests",
            "HTTP requests to registries by registry (as the policy lists it; other: every registry it does"
            " not list), method and status (0 when no answer came).",
            ["host", "method", "status"],
            registry=self.registry,
        )
        self.cache_lookups = Counter(
            "pullcheck_cache_lookups",
            "Resolution cache lookups by cache and result (hit or miss).",
            ["cache", "result"],
            registry=self.registry,
        )
        self.ratelimit_remaining = Gauge(
            "pullcheck_registry_ratelimit_remaining",
            "Pulls left according to the registry's last RateLimit-Remaining header.",
            ["host"],
            registry=self.registry,
        )
        self.workload_findings = Gauge(
            "pullcheck_workload_findings",
            "Deny and warn findings of the last background audit: 1 per workload, image, code and severity.",
            ["namespace", "kind", "name", "image", "code", "severity"],
            registry=self.registry,
        )
        self.audit_completed = Gauge(
            "pullcheck_audit_completed_timestamp_seconds",
            "When the last background audit finished (Unix time).",
            registry=self.registry,
        )

    def observe_audit(self, report: AuditReport) -> None:
        """The background audit's hook: the gauge holds the last audit's deny and warn findings only."""
        current = {
            (w.namespace, w.kind, w.name, printable(entry.result.image), f.code, f.severity)
            for entry in report.entries
            for f in entry.result.findings
            if f.severity in (DENY, WARN)
            for w in entry.workloads
        }
        self.workload_findings.clear()
        for labels in current:
            self.workload_findings.labels(*labels).set(1)
        self.audit_completed.set_to_current_time()

    def observe_admission(self, kind: str, mode: Mode, decision: Decision, seconds: float) -> None:
        # The kinds pullcheck judges; CONNECT and subresource reviews may name any other.
        self._child(self.admission_seconds, kind if kind in POD_SPEC_PATHS else "other").observe(seconds)
        outcome = "allowed" if decision.allowed else "denied"
        for code in decision.codes or ("none",):
            self._child(self.decisions, mode, outcome, code).inc()

    def observe_invalid(self, status: int) -> None:
        self.invalid_requests.labels(str(status)).inc()

    def observe_request(self, event: RequestEvent) -> None:
        """The registry client's on_request hook."""
        self.registry_requests.labels(event.registry, event.method, str(event.status or 0)).inc()
        remaining = _leading_number(event.ratelimit_remaining)
        if remaining is not None:
            self.ratelimit_remaining.labels(event.registry).set(remaining)

    def observe_cache(self, cache: str, hit: bool, lookups: int = 1) -> None:
        """The checker's on_cache hook: `lookups` hits (or misses) of one cache."""
        self._child(self.cache_lookups, cache, "hit" if hit else "miss").inc(lookups)

    def _child(self, metric: Any, *labels: str) -> Any:
        """metric.labels(*labels), kept: prometheus_client validates and hashes labels on every call.
        Only for metrics whose label values come from a small fixed set (kinds, modes, codes, caches)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type, for GET /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
