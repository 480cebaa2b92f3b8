"""The Flask app: POST /validate and /mutate (AdmissionReviews), GET /healthz, /readyz and /metrics.

`create_app(settings)` builds everything from a Settings object; nothing is read at import time.
`Webhook` is the judging part, with its collaborators passed in, so tests can give it their own.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from webhook import admission, pinning, wiring
from webhook.admission import Decision, NodeGroup, Request
from webhook.codes import Code
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.errors import InvalidReview, PullcheckError
from webhook.logs import FIELDS, dumps
from webhook.metrics import Metrics
from webhook.policy import Mode, Policy
from webhook.policyfile import PolicyFile
from webhook.ports import ImageChecker, NodeSource, PullSecretSource
from webhook.reference import redacted
from webhook.text import printable

log = logging.getLogger("pullcheck.admission")

DEFAULT_MAX_BODY = admission.MAX_REVIEW_BYTES


@dataclass(frozen=True)
class Settings:
    policy_file: str | None = None
    kubeconfig: str | None = None  # read Nodes and pull secrets through this kubeconfig
    in_cluster: bool = False  # ... or through the Pod's service account
    watch_nodes: bool = True  # with cluster access: targets from the Nodes, else the policy's targets
    audit_interval: float | None = None  # seconds between background audits; None: the policy's
    max_body_bytes: int = DEFAULT_MAX_BODY
    policy_interval: float = 2.0  # seconds between looks at the policy file


class CheckerPerRegistries:
    """The checker for the current policy's registry, cache and connection settings; rebuilt when they change.

    The previous checker is closed only at the next change, so admissions still using it finish."""

    def __init__(self, build: Callable[[Policy], ImageChecker]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._current: tuple[Any, ImageChecker] | None = None
        self._retired: ImageChecker | None = None

    def __call__(self, policy: Policy) -> ImageChecker:
        current = self._current
        settings = _client_settings(policy)
        if current is not None and current[0] == settings:
            return current[1]
        with self._lock:
            if self._current is None or self._current[0] != settings:
                if self._retired is not None:
                    _close(self._retired)
                self._retired = self._current[1] if self._current else None
                self._current = (settings, self._build(policy))
            return self._current[1]


def _client_settings(policy: Policy) -> tuple[Any, ...]:
    """What a checker is built from: a change of any of these builds a new one."""
    return (policy.registries, policy.caches, policy.connections_per_registry)


def _close(checker: object) -> None:
    close = getattr(checker, "close", None)
    if callable(close):
        close()


class NodeKeyring:
    """The policy's node-level docker config, re-read when the path or the file changes."""

    def __init__(self, read: Callable[[str], Keyring]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._key: tuple[str | None, float | None] = (None, None)
        self._keyring = Keyring.empty()

    def __call__(self, policy: Policy) -> Keyring:
        path = policy.docker_config
        try:
            stamp = os.stat(path).st_mtime if path else None
        except OSError:
            stamp = None
        with self._lock:
            if (path, stamp) != self._key:
                try:
                    self._keyring = self._read(path) if path and stamp is not None else Keyring.empty()
                except PullcheckError as exc:
                    log.error("node docker config ignored: %s", exc)
                    self._keyring = Keyring.empty()
                self._key = (path, stamp)
            return self._keyring


@dataclass
class Outcome:
    """What one admission did, for the response, the log line and the metrics."""

    request: Request
    mode: Mode
    decision: Decision
    exempt: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()


class Webhook:
    def __init__(
        self,
        policy: Callable[[], Policy],
        checker: Callable[[Policy], ImageChecker],
        metrics: Metrics,
        *,
        nodes: NodeSource | None = None,
        pull_secrets: PullSecretSource | None = None,
        node_keyring: Callable[[Policy], Keyring] | None = None,
    ) -> None:
        self.policy = policy
        self.checker = checker
        self.metrics = metrics
        self.nodes = nodes
        self.pull_secrets = pull_secrets
        self.node_keyring = node_keyring or (lambda _policy: Keyring.empty())

    def ready(self) -> str | None:
        """Why the webhook is not ready, or None when it is."""
        self.policy()
        if self.nodes is not None and not self.nodes.synced():
            return "the node view has not synced yet"
        return None

    def groups(self, policy: Policy, pod_spec: Any) -> list[NodeGroup]:
        """The node groups this Pod may land on; the policy's targets when Nodes are unknown."""
        nodes = self.nodes.groups() if self.nodes is not None and self.nodes.synced() else []
        known = admission.pulling_locally(nodes, policy.local_image_pull)
        return admission.placement(known, admission.static_groups(policy.targets), pod_spec)

    def keyring(self, policy: Policy, req: Request) -> Keyring:
        """The Pod's pull-secret credentials first, then the node's, as the kubelet tries them."""
        node = self.node_keyring(policy)
        if self.pull_secrets is None or not req.namespace:
            return node
        return self.pull_secrets.keyring(req.namespace, req.pull_secret_names, req.service_account).merged(
            node
        )

    def judge(self, req: Request) -> Outcome:
        policy = self.policy()
        if not req.images or policy.exemptions.exempt_namespace(req.namespace):
            return Outcome(req, policy.mode, admission.ALLOW_ALL)
        deadline = Deadline(policy.resolution_timeout)
        images: list[str] = []
        exempt: list[str] = []
        for image in req.distinct_images:
            (exempt if policy.exemptions.exempt_reference(image) else images).append(image)
        if not images:
            return Outcome(req, policy.mode, admission.ALLOW_ALL, tuple(exempt))
        groups = self.groups(policy, req.pod_spec)
        targets = admission.targets_of(groups)
        results = self.checker(policy).check(images, targets, policy, self.keyring(policy, req), deadline)
        decision = admission.decide(results, groups, policy.mode)
        return Outcome(req, policy.mode, decision, tuple(exempt), tuple(str(t) for t in targets))

    def pins(self, req: Request) -> dict[str, str]:
        """Image as written -> pinned to the digest judged, for each image of the request that the
        policy's pinDigests rewrites. Judged like /validate judges it, through the same caches, so the
        validating call that follows finds the pinned image already resolved."""
        policy = self.policy()
        if not policy.pin_digests or policy.exemptions.exempt_namespace(req.namespace):
            return {}
        images = [
            image
            for image in req.distinct_images
            if pinning.pinnable(image) and not policy.exemptions.exempt_reference(image)
        ]
        if not images:
            return {}
        targets = admission.targets_of(self.groups(policy, req.pod_spec))
        deadline = Deadline(policy.resolution_timeout)
        results = self.checker(policy).check(images, targets, policy, self.keyring(policy, req), deadline)
        return pinning.pins(results)

    def fallback(self, req: Request, error: Exception) -> Outcome:
        """When judging failed unexpectedly: the policy's onResolutionError outcome, said in one line."""
        policy = self.policy()
        outcome = policy.on_resolution_error
        reason = (
            f"pullcheck could not judge this request ({type(error).__name__}); onResolutionError: {outcome}"
        )
        if outcome == "deny" and policy.mode == "enforce":
            decision = Decision(False, reason, (), {}, {}, (Code.INTERNAL_ERROR,))
        elif outcome == "allow" or policy.mode == "audit":
            decision = Decision(True, "", (), {"error": reason}, {}, (Code.INTERNAL_ERROR,))
        else:
            decision = Decision(
                True, "", (reason[: admission.WARNING_LENGTH],), {}, {}, (Code.INTERNAL_ERROR,)
            )
        return Outcome(req, policy.mode, decision)


def _text(status: int, reason: str) -> Response:
    """A one-line plain answer; the reason may quote the request, so it is escaped."""
    return Response(printable(reason) + "\n", status=status, mimetype="text/plain")


def _log_admission(outcome: Outcome, seconds: float) -> None:
    req = outcome.request
    fields = {
        "uid": req.uid,
        "namespace": req.namespace,
        "kind": req.kind,
        "name": req.name,
        "operation": req.operation,
        "dryRun": req.dry_run,
        "mode": outcome.mode,
        "allowed": outcome.decision.allowed,
        "images": [redacted(image) for image in req.distinct_images],  # the formatter escapes them
        "verdicts": dict(outcome.decision.verdicts),
        "exempt": [redacted(image) for image in outcome.exempt],
        "targets": list(outcome.targets),
        "durationMs": round(seconds * 1000, 2),
    }
    log.info("admission", extra={FIELDS: fields})


def _log_mutation(req: Request, pinned: Mapping[str, str], seconds: float) -> None:
    fields = {
        "uid": req.uid,
        "namespace": req.namespace,
        "kind": req.kind,
        "name": req.name,
        "operation": req.operation,
        "dryRun": req.dry_run,
        "pinned": dict(pinned),
        "durationMs": round(seconds * 1000, 2),
    }
    log.info("mutation", extra={FIELDS: fields})


def build_app(webhook: Webhook, max_body_bytes: int = DEFAULT_MAX_BODY) -> Flask:
    """The Flask app around a Webhook."""
    app = Flask("webhook")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return _text(error.code or 500, error.description or error.name)

    def read_review() -> Request | Response:
        """The request's AdmissionReview, or the error answer when the body is not one."""
        try:
            body = orjson.loads(request.get_data(cache=False))
        except RequestEntityTooLarge:
            webhook.metrics.observe_invalid(413)
            return _text(413, f"the AdmissionReview is larger than {max_body_bytes} bytes")
        except (ValueError, RecursionError):
            webhook.metrics.observe_invalid(400)
            return _text(400, "the body is not JSON")
        try:
            return admission.parse_review(body)
        except InvalidReview as exc:
            webhook.metrics.observe_invalid(400)
            return _text(400, f"not an AdmissionReview pullcheck can judge: {exc}")

    @app.post("/validate")
    def validate() -> Response:
        started = time.perf_counter()
        req = read_review()
        if isinstance(req, Response):
            return req
        try:
            outcome = webhook.judge(req)
        except Exception as exc:  # noqa: BLE001 - any bug still answers the apiserver, per policy
            log.error("judging %s %s/%s failed", req.kind, req.namespace, req.name, exc_info=exc)
            outcome = webhook.fallback(req, exc)
        seconds = time.perf_counter() - started
        webhook.metrics.observe_admission(req.kind, outcome.mode, outcome.decision, seconds)
        _log_admission(outcome, seconds)
        return Response(
            dumps(admission.response(req.api_version, req.uid, outcome.decision)),
            mimetype="application/json",
        )

    @app.post("/mutate")
    def mutate() -> Response:
        started = time.perf_counter()
        req = read_review()
        if isinstance(req, Response):
            return req
        try:
            pinned = webhook.pins(req)
        except Exception as exc:  # noqa: BLE001 - pinning never blocks: the request goes on unpinned
            log.error("pinning %s %s/%s failed", req.kind, req.namespace, req.name, exc_info=exc)
            pinned = {}
        operations = pinning.patch(req.kind, req.pod_spec, pinned)
        _log_mutation(req, pinned, time.perf_counter() - started)
        return Response(
            json.dumps(pinning.mutation_response(req.api_version, req.uid, operations)),
            mimetype="application/json",
        )

    @app.get("/healthz")
    def healthz() -> Response:
        return _text(200, "ok")

    @app.get("/readyz")
    def readyz() -> Response:
        reason = webhook.ready()
        return _text(503, reason) if reason else _text(200, "ok")

    @app.get("/metrics")
    def metrics() -> Response:
        data, content_type = webhook.metrics.exposition()
        return Response(data, content_type=content_type)

    return app


def create_app(settings: Settings) -> Flask:
    """The webhook as `pullcheck serve` runs it: policy file, registry client, and the cluster if asked."""
    metrics = Metrics()
    policy_file = PolicyFile(settings.policy_file, settings.policy_interval)

    def build_checker(policy: Policy) -> ImageChecker:
        return wiring.make_checker(
            policy, network_guard=True, on_request=metrics.observe_request, on_cache=metrics.observe_cache
        )

    checkers = CheckerPerRegistries(build_checker)
    node_keyring = NodeKeyring(wiring.read_keyring)
    nodes: NodeSource | None = None
    pull_secrets: PullSecretSource | None = None
    if settings.kubeconfig or settings.in_cluster:
        from webhook import audit, kube

        api = kube.api_client(settings.kubeconfig, in_cluster=settings.in_cluster)
        # The cache bound as the policy says at start (a pull-secret cache is not rebuilt on a change).
        pull_secrets = kube.PullSecrets(api, max_bytes=policy_file.current().caches.pull_secrets)
        view = kube.NodeView(api) if settings.watch_nodes else None
        if view is not None:
            view.start()
            nodes = view
        audit.start_background_audit(
            api,
            policy=policy_file.current,
            check_for=lambda policy: checkers(policy).check,
            nodes=lambda: view.groups() if view is not None and view.wait_synced(30) else [],
            pull_secrets=pull_secrets,
            node_keyring=node_keyring,
            on_report=metrics.observe_audit,
            interval=settings.audit_interval,
        )
    webhook = Webhook(
        policy_file.current,
        checkers,
        metrics,
        nodes=nodes,
        pull_secrets=pull_secrets,
        node_keyring=node_keyring,
    )
    return build_app(webhook, settings.max_body_bytes)
