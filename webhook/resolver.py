"""Resolution: fetch what a runtime would fetch for an image, through the caches.

Documents are cached by registry+repository+digest (content is immutable), tag answers for a short time
and per credential set (access must be proven again for another namespace's Secrets), failures for a
shorter time, and concurrent resolutions of the same key share one lookup.  What the fetched documents
mean for a runtime is the checker's business (resolve.py).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import fields, replace
from functools import partial
from typing import Any, TypeVar

from webhook import errors
from webhook.cache import Cache, Section
from webhook.codes import Code
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.documents import (
    INDEX,
    MANIFEST,
    SCHEMA1,
    Document,
    Problem,
    Resolution,
    config_descriptor,
    descriptors,
    schema1_blobs,
)
from webhook.errors import (
    DeadlineExceeded,
    NotAnImage,
    NotFound,
    RegistryError,
    RegistryUnreachable,
)
from webhook.mediatypes import LAYER_HEAD, is_nondistributable, needs_sniffing
from webhook.policy import DEFAULT_CACHES
from webhook.ports import RegistrySource
from webhook.profiles import profile_for
from webhook.reference import ImageReference
from webhook.routes import Endpoint, Route
from webhook.rules import MAX_INDEX_DEPTH
from webhook.runtimes import Target

T = TypeVar("T")

Task = tuple[str, Callable[[Resolution], None]]  # a fetch for one digest, recording into a resolution


class _Flight:
    """One lookup under way; the future its followers wait on is made when the first of them comes
    (most lookups have none, and a future costs more than the bookkeeping around it)."""

    __slots__ = ("followed",)

    def __init__(self) -> None:
        self.followed: Future[object] | None = None


class _SingleFlight:
    """Concurrent callers of the same key wait for the first caller's answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, _Flight] = {}

    def run(self, key: Hashable, work: Callable[[], T], deadline: Deadline) -> T:
        """`work()`, or the answer of the caller already running it (waited for until `deadline`)."""
        while True:
            with self._lock:
                flight = self._running.get(key)
                if flight is None:
                    flight = self._running[key] = _Flight()
                    break
                if flight.followed is None:
                    flight.followed = Future()
                answer = flight.followed
            # The leader's deadline may be later than ours (another admission): wait for ours only.
            try:
                return answer.result(timeout=deadline.remaining())  # type: ignore[return-value]
            except FutureTimeout:
                raise DeadlineExceeded(
                    f"a lookup shared with another admission did not finish within the {deadline.seconds:g}s"
                    " deadline"
                ) from None
            except DeadlineExceeded:
                # The leader's time or requests ran out, not ours (another admission may spend its
                # requests on purpose): ask again while ours last.
                deadline.check("a lookup shared with another admission")
        try:
            value = work()
        except BaseException as exc:
            followed = self._landed(key, flight)
            if followed is not None:
                followed.set_exception(exc)
                del followed  # it holds the exception, whose traceback holds this frame
            raise
        followed = self._landed(key, flight)
        if followed is not None:
            followed.set_result(value)
        return value

    def _landed(self, key: Hashable, flight: _Flight) -> Future[object] | None:
        """Forget the lookup; the future of its followers, if any came."""
        with self._lock:
            del self._running[key]
            followed, flight.followed = flight.followed, None
            return followed


_thread_numbers = itertools.count(1)


def run_on_threads(calls: Sequence[Callable[[], T]], limit: int) -> list[Future[T]]:
    """Run `calls` on at most `limit` new threads, which end when no call is left; one future each, in
    order.  A future cancelled before its call started is skipped.

    Threads per call, not one shared pool: an admission full of images from a registry that hangs must
    not leave another admission waiting for threads until its own deadline.  Bare threads taking the
    calls in turn, not an executor per call: a pool's queue, locks and exit bookkeeping cost more CPU
    than a cold image's small fetches."""
    futures: list[Future[T]] = [Future() for _ in calls]
    pending = deque(zip(calls, futures, strict=True))

    def drain() -> None:
        while True:
            try:
                call, future = pending.popleft()
            except IndexError:
                return  # no call left (another thread of this call may have taken the last one)
            if future.set_running_or_notify_cancel():
                _settle(future, call)

    for _ in range(min(limit, len(calls))):
        name = f"pullcheck-fetch-{next(_thread_numbers)}"
        threading.Thread(target=drain, name=name, daemon=True).start()
    return futures


def _settle(future: Future[T], call: Callable[[], T]) -> None:
    """Run `call` into `future`."""
    try:
        future.set_result(call())
    except BaseException as exc:  # noqa: BLE001 - the caller reads it from the future
        future.set_exception(exc)
        # The exception's traceback holds this frame, which holds the future, which holds the
        # exception: without this, what the call's frames held (a response, its connection) would
        # wait for the garbage collector.
        del future, call


_ABSENT, _NO_SIZE = -2, -1  # layer-size cache values: a 404, a present blob without Content-Length

# Negative answers worth remembering briefly: they are what a burst of Pods of one bad image repeats.
_NEGATIVE_CODES = frozenset({Code.NOT_FOUND, Code.UNAUTHORIZED, Code.RATE_LIMITED})


class Resolver:
    """Fetches images' documents through the caches; one instance serves a whole process, thread-safe."""

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
        self.registry = registry
        self.tag_ttl = tag_ttl
        self.negative_ttl = negative_ttl
        self._on_cache = on_cache
        # Threads per call, not one shared pool (see run_on_threads): at most `workers` per call.
        self.workers = workers
        # Documents by registry, repository and digest, weighed parsed (a 4 MB manifest of small
        # descriptors holds several times its size); answers share one budget, the checker's results too.
        self._documents: Cache[Hashable, Document] = Cache(document_bytes)
        self.answers: Cache[tuple[str, Hashable], Any] = Cache(answer_bytes)
        self._blobs: Section[Hashable, int] = Section(self.answers, "blob")  # layer sizes (see _blob_size)
        self._heads: Section[Hashable, bytes] = Section(self.answers, "head")  # first bytes of layers sniffed
        self._tags: Section[Hashable, tuple[str, Endpoint | None] | Problem] = Section(
            self.answers, "tag"
        )  # per keyring
        self._flight = _SingleFlight()

    def close(self) -> None:
        self.registry.close()

    def resolve(
        self,
        ref: ImageReference,
        image: str,
        targets: Sequence[Target],
        keyring: Keyring,
        deadline: Deadline,
        route: Route | None = None,
    ) -> tuple[Resolution, Endpoint | None]:
        """Fetch what the targets' runtimes would fetch for `ref`, and the endpoint that answered."""
        resolution = Resolution(image)
        try:
            digest, top, endpoint = self._top_digest(ref, keyring, deadline, resolution, route)
            if route is not None and endpoint is not None:
                route = route.settled_on(endpoint)
            resolution.top = top or self._manifest(ref, digest, keyring, deadline, route)
        except RegistryError as exc:
            resolution.error = Problem(exc.code, str(exc))
            return resolution, None
        manifests = [resolution.top]
        indexes = [resolution.top]
        for _ in range(MAX_INDEX_DEPTH):  # an index of indexes: containerd follows it
            children = [
                d for i in indexes if i.structure == INDEX for d in self._fetched_children(i, targets)
            ]
            children = [d for d in dict.fromkeys(children) if d not in resolution.manifests]
            tasks: list[Task] = [
                (d, partial(self._child, ref, d, keyring, deadline, route=route)) for d in children
            ]
            self._fetch_all(tasks, resolution, deadline)
            indexes = [resolution.manifests[d] for d in children if d in resolution.manifests]
            manifests += indexes
        self._fetch_contents(ref, manifests, keyring, deadline, resolution, route)
        return resolution, endpoint

    # -- steps -------------------------------------------------------------------------------------

    def _top_digest(
        self,
        ref: ImageReference,
        keyring: Keyring,
        deadline: Deadline,
        resolution: Resolution,
        route: Route | None,
    ) -> tuple[str, Document | None, Endpoint | None]:
        """The digest the reference stands for now, proven readable with this keyring, and who said so.

        Returns the manifest too when finding the digest needed a GET (no Docker-Content-Digest).  A
        malformed Docker-Content-Digest is noted in `resolution`, and such an answer is not cached."""
        key = (ref.registry, ref.repository, ref.manifest_reference, keyring.fingerprint, route)
        cached = self._tags.get(key)
        self.count("tag", cached is not None)
        if isinstance(cached, Problem):
            raise _error_for(cached)
        if cached is not None:
            return cached[0], None, cached[1]

        def lookup() -> tuple[str, Document | None, str | None, Endpoint | None]:
            try:
                head = self.registry.head_manifest(ref, ref.manifest_reference, keyring, deadline, route)
                if head.digest is not None:
                    return head.digest, None, None, head.endpoint
                # containerd GETs from the host that answered the HEAD
                settled = (
                    route
                    if route is None or head.endpoint is None
                    else replace(route, endpoints=(head.endpoint,))
                )
                document = self.registry.get_manifest(
                    ref, ref.manifest_reference, keyring, deadline, ref.digest, settled
                )
                self._documents.put((ref.registry, ref.repository, document.digest), document)
                return document.digest, document, head.malformed_digest, head.endpoint
            except DeadlineExceeded:
                raise
            except RegistryUnreachable as exc:
                if ref.digest is not None:
                    self._blob_not_manifest(ref, ref.digest, keyring, deadline, exc, route)
                raise
            except RegistryError as exc:
                if exc.code in _NEGATIVE_CODES:
                    self._tags.put(key, Problem(exc.code, str(exc)), self.negative_ttl)
                raise

        digest, document, malformed, endpoint = self._flight.run(("tag", key), lookup, deadline)
        if ref.digest is not None and digest != ref.digest:
            raise _error_for(Problem(Code.DIGEST_MISMATCH, f"the registry announced {digest} for {ref}"))
        resolution.malformed_digest_header = malformed
        if malformed is not None:
            return digest, document, endpoint
        self._tags.put(key, (digest, endpoint), self.tag_ttl)
        if ref.digest is None:
            # The tag's answer also proves the digest readable with this keyring: the same image pinned
            # to it (by /mutate, then judged by /validate) is answered without asking again.
            pinned = (ref.registry, ref.repository, digest, keyring.fingerprint, route)
            self._tags.put(pinned, (digest, endpoint), self.tag_ttl)
        return digest, document, endpoint

    def _blob_not_manifest(
        self,
        ref: ImageReference,
        digest: str,
        keyring: Keyring,
        deadline: Deadline,
        trouble: RegistryError,
        route: Route | None,
    ) -> None:
        """Raise NotAnImage when a digest the manifests endpoint fails on names a blob (an image ID).

        containerd asks the blobs endpoint after the manifests one, as here; nothing runs a blob."""
        try:
            found = self.registry.stat_blob(ref, digest, keyring, deadline, route)
        except RegistryError:
            return
        if found is not None:
            raise NotAnImage(
                f"{digest} names a blob of {ref.registry}/{ref.repository} (an image ID or config?), "
                f"not a manifest: {trouble}"
            )

    def _manifest(
        self, ref: ImageReference, digest: str, keyring: Keyring, deadline: Deadline, route: Route | None
    ) -> Document:
        return self._cached(
            self._documents,
            "document",
            (ref.registry, ref.repository, digest),
            lambda: self.registry.get_manifest(ref, digest, keyring, deadline, digest, route),
            deadline,
        )

    def _config(
        self, ref: ImageReference, digest: str, keyring: Keyring, deadline: Deadline, route: Route | None
    ) -> Document:
        return self._cached(
            self._documents,
            "document",
            (ref.registry, ref.repository, digest),
            lambda: self.registry.get_blob(ref, digest, keyring, deadline, route),
            deadline,
        )

    def _blob_size(
        self, ref: ImageReference, digest: str, keyring: Keyring, deadline: Deadline, route: Route | None
    ) -> int | None:
        """The layer's announced size, _NO_SIZE when present without one; None when absent."""

        def stat() -> int:
            found = self.registry.stat_blob(ref, digest, keyring, deadline, route)
            return _ABSENT if found is None else _NO_SIZE if found.size is None else found.size

        size = self._cached(
            self._blobs,
            "blob",
            (ref.registry, ref.repository, digest, route),  # a mirror may lack what the registry has
            stat,
            deadline,
            ttl=lambda size: self.negative_ttl if size == _ABSENT else None,
        )
        return None if size == _ABSENT else size

    def _layer_head(
        self, ref: ImageReference, digest: str, keyring: Keyring, deadline: Deadline, route: Route | None
    ) -> bytes:
        return self._cached(
            self._heads,
            "head",
            (ref.registry, ref.repository, digest),
            lambda: self.registry.read_blob_head(ref, digest, LAYER_HEAD, keyring, deadline, route),
            deadline,
        )

    def _cached(
        self,
        cache: Cache[Hashable, T] | Section[Hashable, T],
        name: str,
        key: Hashable,
        fetch: Callable[[], T],
        deadline: Deadline,
        ttl: Callable[[T], float | None] = lambda _: None,
    ) -> T:
        """The cached value, else one fetch shared by every concurrent caller, then cached."""
        cached = cache.get(key)
        self.count(name, cached is not None)
        if cached is not None:
            return cached

        def fetch_and_keep() -> T:
            value = fetch()
            cache.put(key, value, ttl(value))
            return value

        return self._flight.run((name, key), fetch_and_keep, deadline)

    def _fetched_children(self, index: Document, targets: Sequence[Target]) -> list[str]:
        """The child digests that the targets' runtimes would fetch from this index."""
        entries = descriptors(index.body, "manifests")
        chosen: dict[str, None] = {}
        for target in targets:
            for entry in profile_for(target).fetched_entries(entries, target.platform):
                chosen[entry["digest"]] = None
        return list(chosen)

    def _child(
        self,
        ref: ImageReference,
        digest: str,
        keyring: Keyring,
        deadline: Deadline,
        resolution: Resolution,
        *,
        route: Route | None,
    ) -> None:
        try:
            resolution.manifests[digest] = self._manifest(ref, digest, keyring, deadline, route)
        except NotFound:
            resolution.missing.add(digest)
        except RegistryError as exc:
            resolution.failures[digest] = Problem(exc.code, str(exc))

    def _fetch_contents(
        self,
        ref: ImageReference,
        manifests: Iterable[Document],
        keyring: Keyring,
        deadline: Deadline,
        resolution: Resolution,
        route: Route | None,
    ) -> None:
        """Configs and layer presence of the image manifests, all at once."""
        configs: list[str] = []
        blobs: list[str] = []
        sniffed: list[str] = []
        foreign: dict[str, list[str]] = {}
        for manifest in manifests:
            if manifest.structure == SCHEMA1:
                blobs += schema1_blobs(manifest.body)
            elif manifest.structure == MANIFEST:
                config = config_descriptor(manifest.body)
                if config is not None:
                    configs.append(config["digest"])
                for layer in descriptors(manifest.body, "layers"):
                    media_type = str(layer.get("mediaType", ""))
                    urls = layer.get("urls")
                    if not is_nondistributable(media_type):
                        blobs.append(layer["digest"])
                    elif isinstance(urls, list) and urls:
                        foreign[layer["digest"]] = [u for u in urls if isinstance(u, str)]
                    if needs_sniffing(media_type):
                        sniffed.append(layer["digest"])

        def config_task(digest: str, into: Resolution) -> None:
            try:
                into.configs[digest] = self._config(ref, digest, keyring, deadline, route)
            except NotFound:
                into.missing.add(digest)
            except RegistryError as exc:
                into.failures[digest] = Problem(exc.code, str(exc))

        def blob_task(digest: str, into: Resolution) -> None:
            try:
                size = self._blob_size(ref, digest, keyring, deadline, route)
                if size is None:
                    into.missing.add(digest)
                    return
                into.present.add(digest)
                if size != _NO_SIZE:
                    into.sizes[digest] = size
            except RegistryError as exc:
                into.failures[digest] = Problem(exc.code, str(exc))

        def foreign_task(digest: str, into: Resolution) -> None:
            try:
                into.foreign[digest] = self.registry.foreign_blob_reachable(
                    ref, foreign[digest], deadline, route
                )
            except RegistryError:
                into.foreign[digest] = False
            if not into.foreign[digest]:
                blob_task(digest, into)  # containerd falls back to the registry

        def head_task(digest: str, into: Resolution) -> None:
            try:
                into.heads[digest] = self._layer_head(ref, digest, keyring, deadline, route)
            except RegistryError:
                pass  # the layer's presence check reports what is wrong with it

        tasks: list[Task] = [(d, partial(config_task, d)) for d in dict.fromkeys(configs)]
        tasks += [(d, partial(blob_task, d)) for d in dict.fromkeys(blobs)]
        tasks += [(d, partial(head_task, d)) for d in dict.fromkeys(sniffed)]
        tasks += [(d, partial(foreign_task, d)) for d in foreign]
        self._fetch_all(tasks, resolution, deadline)

    def _fetch_all(self, tasks: Sequence[Task], resolution: Resolution, deadline: Deadline) -> None:
        """Run the tasks concurrently until the deadline, the first in this thread (one hand-off fewer:
        its reads end by the deadline too).

        Each other task records into a resolution of its own, merged into `resolution` by this thread: a
        task still running at the deadline is abandoned (its reads end by the deadline, its connection
        goes back), its digest reported late, and nothing it does afterwards reaches `resolution`."""
        if not tasks:
            return
        (_, first), *others = tasks
        parts = [Resolution(resolution.image) for _ in others]
        calls = [partial(task, part) for (_, task), part in zip(others, parts, strict=True)]
        futures = run_on_threads(calls, max(self.workers - 1, 1))
        try:
            first(resolution)
            done, _ = wait(futures, timeout=deadline.remaining())
        finally:
            for future in futures:
                future.cancel()  # those not started yet never start
        for (digest, _), part, future in zip(others, parts, futures, strict=True):
            if future in done:
                future.result()  # a surprise in a task is the image's, as if it ran inline
                _merge(resolution, part)
            else:
                resolution.failures.setdefault(digest, late(deadline))

    def count(self, cache: str, hit: bool, lookups: int = 1) -> None:
        """Tell the cache hook of `lookups` hits or misses."""
        if self._on_cache is not None and lookups:
            self._on_cache(cache, hit, lookups)


def late(deadline: Deadline) -> Problem:
    return Problem(Code.REGISTRY_UNREACHABLE, f"no answer within the {deadline.seconds:g}s deadline")


def _merge(into: Resolution, part: Resolution) -> None:
    """What one task recorded (its maps and sets of digests) into the image's resolution."""
    for item in fields(part):
        value = getattr(part, item.name)
        if isinstance(value, dict | set):
            getattr(into, item.name).update(value)


_ERRORS_BY_CODE: dict[str, type[RegistryError]] = {
    cls.code: cls for cls in (errors.NotFound, errors.Unauthorized, errors.RateLimited, errors.DigestMismatch)
}


def _error_for(problem: Problem) -> RegistryError:
    """A cached problem raised again as the error class of its code."""
    return _ERRORS_BY_CODE.get(problem.code, RegistryError)(problem.message)
