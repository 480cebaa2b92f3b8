"""Auditing many workloads at once (`pullcheck audit`, `pullcheck check`, the periodic audit of `serve`).

The cost grows with distinct images, not with workloads: each distinct (image, credential set) is
resolved once, for the union of the targets of the workloads using it, and each workload then sees the
findings for the targets its Pods may land on. Resolutions run concurrently, at most `per_host` at a
time against one registry host, each with its own deadline, so a slow or unreachable registry costs its
own images a finding and holds up nobody else's.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from webhook import pinning, podspec
from webhook.auditreport import AuditReport, ImageAudit
from webhook.codes import Code
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.errors import InvalidReference
from webhook.findings import INFO, Finding, ImageResult
from webhook.placement import PLACEMENT_FIELDS, Placement, for_targets
from webhook.policy import Policy
from webhook.ports import Check, PullSecretSource
from webhook.reference import parse
from webhook.runtimes import Target
from webhook.workloads import Workload

PER_HOST = 8  # concurrent resolutions against one registry host
WORKERS = 16
IMAGE_TIMEOUT = 30.0  # seconds for one image's resolution

Progress = Callable[[int, int], None]  # (resolved, total)


def _host(image: str) -> str:
    try:
        return parse(image).registry
    except InvalidReference:
        return ""  # judged without a registry request


class _Credentials:
    """Each workload's keyring (its pull secrets, then the node's), read once per secret selection."""

    def __init__(self, pull_secrets: PullSecretSource | None, node: Keyring) -> None:
        self._pull_secrets = pull_secrets
        self._node = node
        self._known: dict[tuple[str, tuple[str, ...], str], Keyring] = {}

    def __call__(self, workload: Workload) -> Keyring:
        if self._pull_secrets is None or not workload.namespace:
            return self._node
        key = (
            workload.namespace,
            podspec.pull_secret_names_of(workload.pod_spec),
            podspec.service_account_of(workload.pod_spec),
        )
        if key not in self._known:
            self._known[key] = self._pull_secrets.keyring(*key).merged(self._node)
        return self._known[key]


def _resolve_all(
    check: Check,
    jobs: Mapping[tuple[str, Keyring], Sequence[Target]],
    policy: Policy,
    *,
    per_host: int,
    workers: int,
    timeout: float,
    on_progress: Progress | None,
) -> dict[tuple[str, Keyring], ImageResult]:
    """Resolve every job, at most `per_host` at once per registry host: a finished job starts the next
    one of its host, so no thread waits on a busy host while another host has work."""
    queues: dict[str, deque[tuple[str, Keyring]]] = {}
    for key in jobs:
        queues.setdefault(_host(key[0]), deque()).append(key)
    results: dict[tuple[str, Keyring], ImageResult] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()
    finished = threading.Event()
    if not jobs:
        return results
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pullcheck-audit") as pool:

        def start_next(host: str) -> None:
            with lock:
                queue = queues[host]
                key = queue.popleft() if queue else None
            if key is not None:
                pool.submit(run, host, key)

        def run(host: str, key: tuple[str, Keyring]) -> None:
            image, keyring = key
            try:
                deadline = Deadline(timeout, policy.requests_per_admission)  # per image
                [result] = check([image], jobs[key], policy, keyring, deadline)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
                with lock:
                    failures.append(exc)
                finished.set()
                return
            with lock:
                results[key] = result
                done = len(results)
            if on_progress is not None:
                on_progress(done, len(jobs))
            start_next(host)  # before the count below can say "all done"
            if done == len(jobs):
                finished.set()

        for host, queue in queues.items():
            for _ in range(min(per_host, len(queue))):
                start_next(host)
        finished.wait()
    if failures:
        raise failures[0]
    return results


def audit(
    check: Check,
    workloads: Iterable[Workload],
    placement: Placement,
    policy: Policy,
    *,
    node_keyring: Keyring,
    pull_secrets: PullSecretSource | None = None,
    problems: Sequence[str] = (),
    per_host: int = PER_HOST,
    workers: int = WORKERS,
    timeout: float = IMAGE_TIMEOUT,
    on_progress: Progress | None = None,
) -> AuditReport:
    """Judge every image of the workloads, each distinct (image, credential set) resolved once."""
    credentials = _Credentials(pull_secrets, node_keyring)
    exempt_images: dict[str, bool] = {}
    jobs: dict[tuple[str, Keyring], set[Target]] = {}
    uses: dict[tuple[str, Keyring, tuple[Target, ...]], list[Workload]] = {}
    targets_by_spec: dict[str, tuple[Target, ...]] = {}
    judged = 0
    for workload in workloads:
        if policy.exemptions.exempt_namespace(workload.namespace):
            continue
        images = [
            i
            for i in workload.images
            if not exempt_images.setdefault(i, policy.exemptions.exempt_reference(i))
        ]
        judged += 1
        if not images:
            continue
        # Most workloads share a few placements: the node groups are narrowed once per distinct one (their
        # pull secrets and accounts, also in the kept spec, do not place them).
        placed = repr([workload.pod_spec.get(name) for name in PLACEMENT_FIELDS])
        if placed not in targets_by_spec:
            targets_by_spec[placed] = placement.targets(workload.pod_spec)
        targets = targets_by_spec[placed]
        keyring = credentials(workload)
        for image in images:
            jobs.setdefault((image, keyring), set()).update(targets)
            uses.setdefault((image, keyring, targets), []).append(workload)
    ordered_jobs = {key: sorted(targets, key=str) for key, targets in jobs.items()}
    results = _resolve_all(
        check,
        ordered_jobs,
        policy,
        per_host=per_host,
        workers=workers,
        timeout=timeout,
        on_progress=on_progress,
    )
    # Workloads whose image came out the same (other credentials, other nodes, no drift) share one entry.
    entries: dict[ImageResult, list[Workload]] = {}
    for (image, keyring, targets), users in uses.items():
        result = for_targets(results[(image, keyring)], targets)
        undrifted: list[Workload] | None = None  # the entry of `result` itself, found once
        for user in users:
            judged_result = with_drift(result, user.running.get(image), policy)
            if judged_result is not result:
                entries.setdefault(judged_result, []).append(user)
                continue
            if undrifted is None:
                undrifted = entries.setdefault(result, [])
            undrifted.append(user)
    return AuditReport(
        entries=tuple(ImageAudit(result, tuple(users)) for result, users in entries.items()),
        problems=tuple(problems),
        workloads=judged,
        resolutions=len(jobs),
    )


def _short(digest: str) -> str:
    algorithm, _, hex_digits = digest.partition(":")
    return f"{algorithm}:{hex_digits[:12]}"


def with_drift(result: ImageResult, running: frozenset[str] | None, policy: Policy) -> ImageResult:
    """The result with a DIGEST_DRIFT finding when a workload's Pods run another digest than the one its
    tag names now: a reschedule would pull something else than what runs. The index's manifests count as
    the index (a runtime may report the one it picked). An image written with a digest is not compared."""
    if not running or result.digest is None or not pinning.pinnable(result.image):
        return result
    stale = sorted(running - {result.digest, *result.child_digests})
    if not stale:
        return result
    message = f"running Pods use {', '.join(map(_short, stale))}; the tag now names {_short(result.digest)}"
    drift = policy.apply([Finding(Code.DIGEST_DRIFT, INFO, "", "", message)])
    return replace(result, findings=(*result.findings, *drift)) if drift else result
