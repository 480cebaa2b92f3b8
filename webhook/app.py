"""The Flask app: POST /validate and /mutate (AdmissionReviews), GET /healthz, /readyz and /metrics.

Only HTTP lives here: the body is read and parsed into a review, handed to the admission use case
(`webhook.engine.Webhook`), and its outcome answered, logged and counted. `create_app(settings)` builds
everything from a Settings object; nothing is read at import time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from webhook import admission, pinning, wiring
from webhook.admission import Request
from webhook.engine import Outcome, Webhook
from webhook.errors import InvalidReview
from webhook.logs import dumps, info_line
from webhook.metrics import Metrics
from webhook.policy import Policy
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


def _text(status: int, reason: str) -> Response:
    """A one-line plain answer; the reason may quote the request, so it is escaped."""
    return Response(printable(reason) + "\n", status=status, mimetype="text/plain")


def _request_fields(req: Request) -> dict[str, object]:
    """What every log line of one admission says about the request it answers."""
    return {
        "uid": req.uid,
        "namespace": req.namespace,
        "kind": req.kind,
        "name": req.name,
        "operation": req.operation,
        "dryRun": req.dry_run,
    }


# Images named in one admission's log line: a Pod may name thousands (one line of megabytes, which log
# shippers split or drop); the count of the rest is logged instead.
LOGGED_IMAGES = 100


def _log_admission(outcome: Outcome, seconds: float) -> None:
    req = outcome.request
    images = req.distinct_images
    shown = images[:LOGGED_IMAGES]
    verdicts = outcome.decision.verdicts
    fields: dict[str, object] = {
        **_request_fields(req),
        "mode": outcome.mode,
        "allowed": outcome.decision.allowed,
        "images": [redacted(image) for image in shown],  # the formatter escapes them
        "verdicts": {redacted(image): verdicts[image] for image in shown if image in verdicts},
        "exempt": [redacted(image) for image in outcome.exempt[:LOGGED_IMAGES]],
        "targets": list(outcome.targets),
        "durationMs": round(seconds * 1000, 2),
    }
    if len(images) > LOGGED_IMAGES:
        fields["omittedImages"] = len(images) - LOGGED_IMAGES
    info_line(log, "admission", fields)


def _log_mutation(req: Request, pinned: Mapping[str, str], seconds: float) -> None:
    fields = {
        **_request_fields(req),
        "pinned": dict(pinned),
        "durationMs": round(seconds * 1000, 2),
    }
    info_line(log, "mutation", fields)


def build_app(webhook: Webhook, metrics: Metrics, max_body_bytes: int = DEFAULT_MAX_BODY) -> Flask:
    """The Flask app around a Webhook, counting into `metrics`."""
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
            metrics.observe_invalid(413)
            return _text(413, f"the AdmissionReview is larger than {max_body_bytes} bytes")
        except (ValueError, RecursionError):
            metrics.observe_invalid(400)
            return _text(400, "the body is not JSON")
        try:
            return admission.parse_review(body)
        except InvalidReview as exc:
            metrics.observe_invalid(400)
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
        metrics.observe_admission(req.kind, outcome.mode, outcome.decision, seconds)
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
    def exposition() -> Response:
        data, content_type = metrics.exposition()
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

    checkers = wiring.CheckerPerRegistries(build_checker)
    node_keyring = wiring.NodeKeyring(wiring.read_keyring)
    nodes: NodeSource | None = None
    pull_secrets: PullSecretSource | None = None
    if settings.kubeconfig or settings.in_cluster:
        from webhook import background, kube

        api = kube.api_client(settings.kubeconfig, in_cluster=settings.in_cluster)
        # The cache bound as the policy says at start (a pull-secret cache is not rebuilt on a change).
        pull_secrets = kube.PullSecrets(api, max_bytes=policy_file.current().caches.pull_secrets)
        view = kube.NodeView(api) if settings.watch_nodes else None
        if view is not None:
            view.start()
            nodes = view
        background.start_background_audit(
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
        nodes=nodes,
        pull_secrets=pull_secrets,
        node_keyring=node_keyring,
    )
    return build_app(webhook, metrics, settings.max_body_bytes)
