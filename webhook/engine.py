"""The admission use case: a parsed AdmissionReview in, a decision out, with no web framework.

`webhook.app` maps HTTP to it and back (JSON, status codes, logs, metrics); this module knows only the
policy, the ports it is given (`webhook.ports`) and the pure admission and pinning functions.
`Webhook.judge` answers /validate, `Webhook.pins` /mutate, `Webhook.fallback` says what the policy's
onResolutionError makes of a failure, and `Webhook.ready` whether the webhook can judge yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webhook import admission, pinning, placement
from webhook.admission import Decision, Request
from webhook.codes import Code
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.placement import NodeGroup
from webhook.policy import Mode, Policy
from webhook.ports import ImageChecker, NodeSource, PullSecretSource


@dataclass
class Outcome:
    """What one admission did, for the response, the log line and the metrics."""

    request: Request
    mode: Mode
    decision: Decision
    exempt: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()


class Webhook:
    """Judges admission requests with the current policy; its collaborators are passed in, so tests
    can give it their own."""

    def __init__(
        self,
        policy: Callable[[], Policy],
        checker: Callable[[Policy], ImageChecker],
        *,
        nodes: NodeSource | None = None,
        pull_secrets: PullSecretSource | None = None,
        node_keyring: Callable[[Policy], Keyring] | None = None,
    ) -> None:
        self.policy = policy
        self.checker = checker
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
        known = placement.pulling_locally(nodes, policy.local_image_pull)
        return placement.groups_for(known, placement.static_groups(policy.targets), pod_spec)

    def keyring(self, policy: Policy, req: Request, deadline: Deadline) -> Keyring:
        """The Pod's pull-secret credentials first, then the node's, as the kubelet tries them; secrets
        not read by the admission's deadline are left out."""
        node = self.node_keyring(policy)
        if self.pull_secrets is None or not req.namespace:
            return node
        secrets = self.pull_secrets.keyring(
            req.namespace, req.pull_secret_names, req.service_account, deadline
        )
        return secrets.merged(node)

    def judge(self, req: Request) -> Outcome:
        policy = self.policy()
        if not req.images or policy.exemptions.exempt_namespace(req.namespace):
            return Outcome(req, policy.mode, admission.ALLOW_ALL)
        deadline = Deadline(policy.resolution_timeout, policy.requests_per_admission)
        images: list[str] = []
        exempt: list[str] = []
        for image in req.distinct_images:
            (exempt if policy.exemptions.exempt_reference(image) else images).append(image)
        if not images:
            return Outcome(req, policy.mode, admission.ALLOW_ALL, tuple(exempt))
        groups = self.groups(policy, req.pod_spec)
        targets = placement.targets_of(groups)
        results = self.checker(policy).check(
            images, targets, policy, self.keyring(policy, req, deadline), deadline
        )
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
        targets = placement.targets_of(self.groups(policy, req.pod_spec))
        deadline = Deadline(policy.resolution_timeout, policy.requests_per_admission)
        results = self.checker(policy).check(
            images, targets, policy, self.keyring(policy, req, deadline), deadline
        )
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
