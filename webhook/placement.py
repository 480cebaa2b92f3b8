"""Where a Pod may run: node groups, and the narrowing of them by a pod spec.

Pure: a `NodeGroup` is the Nodes that share a target (runtime, platform, pull path) and labels, from the
cluster (`webhook.kube.NodeView`) or the policy's static targets. `narrow` keeps the groups a Pod's
nodeName, nodeSelector and required node affinity admit (a Pod bound to nodes keeps only those nodes),
`groups_for` falls back to the static targets, `Placement` does it for many workloads (the audit), and
`upgraded` is the view of the same nodes running other runtimes (`pullcheck audit --upgrade-to`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from webhook.findings import Finding, ImageResult
from webhook.runtimes import Target

Member = tuple[str, str]  # a node of a group: its name and its kubernetes.io/hostname label


OS_LABEL, ARCH_LABEL = "kubernetes.io/os", "kubernetes.io/arch"


# Per-node labels a node group does not keep (one group per node would defeat grouping): a selector
# on them cannot narrow the groups, so it is treated as satisfied.
HOSTNAME_LABEL = "kubernetes.io/hostname"


PER_NODE_LABELS = frozenset({HOSTNAME_LABEL})


NODE_NAME_FIELD = "metadata.name"  # the one field nodeAffinity matchFields may name


PLACEMENT_FIELDS = ("nodeName", "nodeSelector", "affinity")  # what in a pod spec may narrow the groups


@dataclass(frozen=True)
class NodeGroup:
    """Nodes that share a target and labels (per-node labels left out)."""

    target: Target
    nodes: int | None  # None for the policy's static targets, where no Node is known
    labels: Mapping[str, str] = field(default_factory=dict)
    # (name, kubernetes.io/hostname label) of each node: what a Pod bound to nodes names them by.
    members: frozenset[Member] = frozenset()

    def knows(self, key: str) -> bool:
        """Whether a selector on this label can narrow the group (policy targets know os and arch only)."""
        return key not in PER_NODE_LABELS and (self.nodes is not None or key in (OS_LABEL, ARCH_LABEL))

    def label(self, key: str) -> str | None:
        """A label's value; os and arch fall back to what the node reports in nodeInfo."""
        if key in self.labels:
            return self.labels[key]
        if key == OS_LABEL:
            return self.target.platform.os
        if key == ARCH_LABEL:
            return self.target.platform.architecture
        return None


def static_groups(targets: Iterable[Target]) -> list[NodeGroup]:
    return [NodeGroup(t, None) for t in dict.fromkeys(targets)]


def pulling_locally(groups: Iterable[NodeGroup], local: bool) -> list[NodeGroup]:
    """Node groups as the policy's `localImagePull` describes them: a Node does not say whether its
    containerd 2.1+ uses the transfer service or the local pull path (`use_local_image_pull`)."""
    if not local:
        return list(groups)
    return [replace(g, target=replace(g.target, local_pull=True)) for g in groups]


def _number(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _expression_holds(
    group: NodeGroup, expression: Mapping[str, Any], member: Member | None = None, *, field: bool = False
) -> bool:
    """One nodeSelectorRequirement, as the scheduler reads it; unknown operators hold (cannot narrow).

    With a member, its hostname label and (for matchFields) its name are known too."""
    key, operator = expression.get("key"), expression.get("operator")
    if field:
        if key != NODE_NAME_FIELD or member is None:
            return True
        value: str | None = member[0]
    elif key == HOSTNAME_LABEL and member is not None:
        value = member[1] or None
    elif not isinstance(key, str) or not group.knows(key):
        return True
    else:
        value = group.label(key)
    raw_values = expression.get("values")
    values = [v for v in raw_values if isinstance(v, str)] if isinstance(raw_values, list) else []
    if operator == "In":
        return value in values
    if operator == "NotIn":
        return value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and len(values) == 1:
        have, bound = _number(value), _number(values[0])
        if have is None or bound is None:
            return False
        return have > bound if operator == "Gt" else have < bound
    return True


def _requirements(term: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    found = term.get(key) or []
    return [e for e in found if isinstance(e, Mapping)] if isinstance(found, list) else []


def _term_holds(group: NodeGroup, term: Any, member: Member | None = None) -> bool:
    if not isinstance(term, Mapping):
        return True
    # matchFields select Nodes by name: only a member (one node) can be told apart by them.
    return all(_expression_holds(group, e, member) for e in _requirements(term, "matchExpressions")) and all(
        _expression_holds(group, e, member, field=True) for e in _requirements(term, "matchFields")
    )


def _affinity_terms(pod_spec: Mapping[str, Any]) -> list[Any]:
    affinity = pod_spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    required = (
        node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        if isinstance(node_affinity, Mapping)
        else None
    )
    terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    return terms if isinstance(terms, list) else []


def schedulable(group: NodeGroup, pod_spec: Mapping[str, Any], member: Member | None = None) -> bool:
    """Whether the Pod's nodeName, nodeSelector and required node affinity admit the group's nodes
    (with a member: that one node of the group)."""
    node_name = pod_spec.get("nodeName")
    if member is not None and isinstance(node_name, str) and node_name and node_name != member[0]:
        return False
    selector = pod_spec.get("nodeSelector")
    if isinstance(selector, Mapping):
        for key, wanted in selector.items():
            if key == HOSTNAME_LABEL and member is not None:
                if member[1] != wanted:
                    return False
            elif group.knows(str(key)) and group.label(str(key)) != wanted:
                return False
    terms = _affinity_terms(pod_spec)
    if terms:
        return any(_term_holds(group, term, member) for term in terms)
    return True


def binds_to_nodes(pod_spec: Mapping[str, Any]) -> bool:
    """Whether the Pod names its node(s): spec.nodeName, a nodeSelector on kubernetes.io/hostname, or
    required node affinity on the hostname label or on metadata.name (how DaemonSet Pods are bound)."""
    node_name = pod_spec.get("nodeName")
    selector = pod_spec.get("nodeSelector")
    if (isinstance(node_name, str) and node_name) or (
        isinstance(selector, Mapping) and HOSTNAME_LABEL in selector
    ):
        return True
    return any(
        isinstance(term, Mapping)
        and (
            _requirements(term, "matchFields")
            or any(e.get("key") == HOSTNAME_LABEL for e in _requirements(term, "matchExpressions"))
        )
        for term in _affinity_terms(pod_spec)
    )


def narrow(groups: Sequence[NodeGroup], pod_spec: Mapping[str, Any]) -> list[NodeGroup]:
    """The groups the Pod may be scheduled on; a Pod bound to nodes keeps only those nodes."""
    if not any(pod_spec.get(name) for name in PLACEMENT_FIELDS):
        return list(groups)  # most Pods: nothing narrows, every group may take them
    if not binds_to_nodes(pod_spec):
        return [g for g in groups if schedulable(g, pod_spec)]
    narrowed = []
    for group in groups:
        if not group.members:  # the policy's targets: no node names to match
            if schedulable(group, pod_spec):
                narrowed.append(group)
            continue
        kept = frozenset(m for m in group.members if schedulable(group, pod_spec, m))
        if kept:
            narrowed.append(replace(group, nodes=len(kept), members=kept))
    return narrowed


def groups_for(
    known: Sequence[NodeGroup], static: Sequence[NodeGroup], pod_spec: Mapping[str, Any]
) -> list[NodeGroup]:
    """The groups a Pod may land on: the known Nodes it selects. A Pod that selects no current node (a
    pool still being created) is judged like one on the static targets, and if it selects none of
    those either, on all of them."""
    return narrow(known, pod_spec) or narrow(static, pod_spec) or list(static)


def targets_of(groups: Iterable[NodeGroup]) -> list[Target]:
    return list(dict.fromkeys(g.target for g in groups))


def concerns(finding: Finding, target: Target) -> bool:
    """Whether a finding bites on this target (a finding without a runtime bites everywhere)."""
    if not finding.runtime:
        return True
    if finding.runtime != target.runtime.text:
        return False
    return not finding.platform or finding.platform == str(target.platform)


def for_targets(result: ImageResult, targets: Sequence[Target]) -> ImageResult:
    """The result with only the findings that concern these targets (of a result judged for more)."""
    kept = tuple(f for f in result.findings if any(concerns(f, t) for t in targets))
    return replace(result, findings=kept)


@dataclass(frozen=True)
class Placement:
    """Where workloads may run: the cluster's node groups (if known) and the static targets."""

    known: Sequence[NodeGroup]
    static: Sequence[NodeGroup]

    def targets(self, pod_spec: Mapping[str, object]) -> tuple[Target, ...]:
        return tuple(sorted(targets_of(groups_for(self.known, self.static, pod_spec)), key=str))


def upgraded(groups: Sequence[NodeGroup], runtimes: Sequence[Target]) -> list[NodeGroup]:
    """The node groups as they would be running each of these runtimes instead of their own."""
    return [
        NodeGroup(Target(r.runtime, g.target.platform, g.target.local_pull), g.nodes, g.labels, g.members)
        for g in groups
        for r in dict.fromkeys(runtimes)
    ]
