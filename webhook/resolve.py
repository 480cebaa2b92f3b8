"""Checking: each image resolved for every way the targets' nodes reach it, then judged per target.

Each distinct image of a call is checked once, all of them concurrently, within one deadline; the
fetching and its caches are the resolver's (resolver.py), the rules judge, the policy weighs the
findings, and clean results are kept as long as the tag answer they rest on.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import wait
from dataclasses import dataclass, replace
from functools import partial

from webhook.cache import Section, size_of, weighs_itself
from webhook.codes import Code
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.documents import INDEX, Problem, Resolution, descriptors
from webhook.errors import InvalidReference
from webhook.findings import DENY, INFO, Answer, Finding, ImageResult
from webhook.policy import DEFAULT_CACHES, Policy
from webhook.ports import RegistrySource
from webhook.reference import ImageReference, parse, redacted
from webhook.resolver import Resolver, late, run_on_threads
from webhook.routes import Endpoint, Route, route_for, short_name_candidates
from webhook.rules import judge
from webhook.runtimes import Target

# What an admission may take past its deadline, whatever its number of images, layers or index entries:
# every wait ends at the deadline, this is for judging what came and answering.
ANSWER_MARGIN = 0.5

log = logging.getLogger(__name__)


class Checker:
    """Judges image references for targets; one instance serves a whole process, thread-safe."""

    def __init__(
        self,
        registry: RegistrySource,
        *,
        workers: int = 16,
        document_bytes: int = DEFAULT_CACHES.documents,
        answer_bytes: int = DEFAULT_CACHES.answers,
        tag_ttl: float = 30.0,
        negative_ttl: float = 10.0,
        on_cache: Callable[[str, bool, int], None] | None = None,
    ) -> None:
        self.resolver = Resolver(
            registry,
            workers=workers,
            document_bytes=document_bytes,
            answer_bytes=answer_bytes,
            tag_ttl=tag_ttl,
            negative_ttl=negative_ttl,
            on_cache=on_cache,
        )
        self._results: Section[Hashable, ImageResult] = Section(
            self.resolver.answers, "result"
        )  # per keyring

    @property
    def registry(self) -> RegistrySource:
        return self.resolver.registry

    def close(self) -> None:
        self.resolver.close()

    # -- public ------------------------------------------------------------------------------------

    def check(
        self,
        images: Sequence[str],
        targets: Sequence[Target],
        policy: Policy,
        keyring: Keyring,
        deadline: Deadline,
    ) -> list[ImageResult]:
        """One result per image string, in order; registry trouble becomes findings, never exceptions."""
        results: dict[str, ImageResult] = {}
        misses: list[str] = []
        context = _ResultContext(targets, policy, keyring)
        for image in dict.fromkeys(images):
            cached = self._results.get((image, context))
            if cached is not None:
                results[image] = cached
            else:
                misses.append(image)
        # Counted once per admission, not per image: a metric call costs more than the lookup.
        self.resolver.count("result", True, len(results))
        self.resolver.count("result", False, len(misses))
        if len(misses) == 1:
            # One image to fetch: the client bounds every read by the deadline, no pool hand-off needed.
            results[misses[0]] = self._check_one(misses[0], targets, policy, keyring, deadline, context)
        elif misses:
            results.update(self._check_concurrently(misses, targets, policy, keyring, deadline, context))
        return [results[image] for image in images]

    def _check_concurrently(
        self,
        images: list[str],
        targets: Sequence[Target],
        policy: Policy,
        keyring: Keyring,
        deadline: Deadline,
        context: _ResultContext,
    ) -> dict[str, ImageResult]:
        calls = [
            partial(self._check_one, image, targets, policy, keyring, deadline, context) for image in images
        ]
        futures = dict(zip(images, run_on_threads(calls, self.resolver.workers), strict=True))
        # One wait for all of them: the answer never comes later than the deadline plus one margin.
        done, _ = wait(futures.values(), timeout=deadline.remaining() + ANSWER_MARGIN)
        # Threads still reading end by themselves: every read they make is bounded by the deadline.
        for future in futures.values():
            future.cancel()  # those not started yet never start
        results: dict[str, ImageResult] = {}
        for image, future in futures.items():
            if future in done:
                results[image] = future.result()
            else:
                unanswered = _Routed(tuple(targets), Resolution(image, error=late(deadline)))
                results[image] = self._result(image, None, [unanswered], policy)
        return results

    def _check_one(
        self,
        image: str,
        targets: Sequence[Target],
        policy: Policy,
        keyring: Keyring,
        deadline: Deadline,
        context: _ResultContext,
    ) -> ImageResult:
        try:
            ref = parse(image)
        except InvalidReference as exc:
            invalid = Resolution(image, error=Problem(Code.INVALID_REFERENCE, str(exc)))
            return self._result(image, None, [_Routed(tuple(targets), invalid)], policy)
        try:
            groups = self._resolve_routes(ref, image, targets, policy, keyring, deadline)
            result = self._result(image, ref, groups, policy)
        except Exception as exc:  # noqa: BLE001 - a surprise in one image's documents stays with that image
            log.error("judging %s failed", ref, exc_info=exc)
            problem = Problem(
                Code.INVALID_DOCUMENT,
                f"pullcheck could not judge this image's documents ({type(exc).__name__})",
            )
            return self._result(
                image, ref, [_Routed(tuple(targets), Resolution(image, error=problem))], policy
            )
        if all(g.resolution.error is None and not g.resolution.failures for g in groups):
            # A clean answer holds as long as the tag answer it rests on.
            self._results.put((image, context), result, self.resolver.tag_ttl)
        return result

    def _result(
        self,
        image: str,
        ref: ImageReference | None,
        groups: Sequence[_Routed],
        policy: Policy,
    ) -> ImageResult:
        findings: list[Finding] = []
        for group in groups:
            unqualified = ref is not None and ref.unqualified and group.short_name is None
            for target in group.targets:
                findings += group.notes(target)
                findings += group.firm(judge(group.resolution, target, unqualified=unqualified))
        top = next((g.resolution.top for g in groups if g.resolution.top is not None), None)
        answers = tuple(
            Answer(g.endpoint.host, g.endpoint.role, tuple(str(t.runtime) for t in g.targets))
            for g in groups
            if g.endpoint is not None
        )
        return ImageResult(
            image=redacted(image),  # a password in the text never reaches a message, log or report
            reference=str(ref) if ref is not None else None,
            digest=top.digest if top else None,
            media_type=(top.content_type or None) if top else None,
            findings=policy.apply(findings),
            child_digests=tuple(d["digest"] for d in descriptors(top.body, "manifests"))
            if top and top.structure == INDEX
            else (),
            endpoints=answers,
        )

    def _resolve_routes(
        self,
        ref: ImageReference,
        image: str,
        targets: Sequence[Target],
        policy: Policy,
        keyring: Keyring,
        deadline: Deadline,
    ) -> list[_Routed]:
        """One resolution per way the targets' nodes reach the image (their runtime's node file)."""
        by_kind: dict[str, list[Target]] = {}
        for target in targets:
            by_kind.setdefault(target.runtime.kind, []).append(target)
        groups: dict[Hashable, _Routed] = {}
        for kind, members in by_kind.items():
            candidates, refusal = [ref], None
            through_node = kind == "cri-o" and ref.unqualified and policy.node.crio is not None
            if through_node:
                candidates, refusal = short_name_candidates(policy, ref, image)
            routes = [(c, route_for(policy, c, kind)) for c in candidates]
            key = (refusal, through_node, tuple(routes))
            if key in groups:
                groups[key] = replace(groups[key], targets=groups[key].targets + tuple(members))
                continue
            groups[key] = self._resolve_candidates(
                image, routes, refusal, through_node, members, keyring, deadline
            )
        return list(groups.values())

    def _resolve_candidates(
        self,
        image: str,
        routes: Sequence[tuple[ImageReference, Route | None]],
        refusal: str | None,
        short_name: bool,
        targets: list[Target],
        keyring: Keyring,
        deadline: Deadline,
    ) -> _Routed:
        """The first candidate that resolves (CRI-O tries each short-name candidate in turn)."""
        if refusal is not None:
            problem = Problem(Code.SHORT_NAME, refusal)
            return _Routed(tuple(targets), Resolution(image, error=problem), short_name=refusal, refused=True)
        routed = _Routed(tuple(targets), Resolution(image))
        for candidate, route in routes:
            if route is not None and route.blocked is not None:
                problem = Problem(Code.BLOCKED_REGISTRY, f"{candidate.name}: {route.blocked}")
                routed = _Routed(tuple(targets), Resolution(image, error=problem), blocked=True)
            else:
                resolution, endpoint = self.resolver.resolve(
                    candidate, image, targets, keyring, deadline, route
                )
                routed = _Routed(tuple(targets), resolution, endpoint)
            if short_name:
                routed = replace(routed, short_name=str(candidate))
            if routed.resolution.error is None:
                break
        return routed


@weighs_itself
class _ResultContext:
    """What an image's result depends on besides the image and the registry's content.

    Part of the key of every cached result, looked up for each image of an admission: built, hashed and
    weighed once per call. Equal contexts of two calls share their parts (the policy's, the targets), so
    comparing them on a hit is mostly identity checks."""

    __slots__ = ("_parts", "_hash", "_weight")

    def __init__(self, targets: Sequence[Target], policy: Policy, keyring: Keyring) -> None:
        self._parts = (
            tuple(targets),
            policy.on_resolution_error,
            tuple(sorted(policy.severities.items())),
            keyring.fingerprint,
            policy.registries,
            (policy.node.containerd_hosts_dir, policy.node.crio_registries_conf),
        )
        self._hash = hash(self._parts)
        self._weight = -1

    @property
    def weight(self) -> int:
        """What the key of each result of the call holds for the context (kept: weighed once a call)."""
        if self._weight < 0:
            self._weight = sys.getsizeof(self) + size_of(self._parts)
        return self._weight

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (
            isinstance(other, _ResultContext) and self._hash == other._hash and self._parts == other._parts
        )


@dataclass(frozen=True)
class _Routed:
    """One way some targets' nodes reach an image, and what was found there."""

    targets: tuple[Target, ...]
    resolution: Resolution
    endpoint: Endpoint | None = None  # the endpoint that served the manifest
    short_name: str | None = None  # CRI-O: the candidate a short name resolved to (or why it did not)
    refused: bool = False  # CRI-O refuses the short name itself
    blocked: bool = False  # the node's registries.conf blocks the registry

    def notes(self, target: Target) -> list[Finding]:
        """What CRI-O made of a short name, as the node's registries.conf says."""
        if self.short_name is None or self.refused:
            return []
        message = f"short name resolved through the node's registries.conf to {self.short_name}"
        return [Finding(Code.SHORT_NAME, INFO, str(target.runtime), str(target.platform), message)]

    def firm(self, findings: list[Finding]) -> list[Finding]:
        """A refusal written in the node's configuration is a deny that onResolutionError does not soften."""
        if not (self.refused or self.blocked):
            return findings
        firm_codes = {Code.SHORT_NAME, Code.BLOCKED_REGISTRY}
        return [
            replace(f, severity=DENY, from_node_config=True) if f.code in firm_codes else f for f in findings
        ]
