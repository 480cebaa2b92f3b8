"""The resolver: concurrency, caches, single flight and credential isolation, counted at the wire."""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.harness.corpus import CorpusImage
from tests.harness.registry import Registry
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.digests import digest_of
from webhook.policy import Policy, RegistryOptions
from webhook.registry import RegistryClient, RequestEvent
from webhook.resolve import Checker
from webhook.runtimes import default_targets

TARGETS = default_targets()


class Counting:
    """Counts the registry requests a checker makes, by (method, kind)."""

    def __init__(self) -> None:
        self.events: list[RequestEvent] = []
        self.lock = threading.Lock()

    def __call__(self, event: RequestEvent) -> None:
        with self.lock:
            self.events.append(event)

    def take(self) -> Counter[tuple[str, str]]:
        with self.lock:
            counted = Counter((e.method, e.kind) for e in self.events)
            self.events.clear()
        return counted


@pytest.fixture
def counted(registry: Registry) -> Iterator[tuple[Checker, Counting, Policy]]:
    counting = Counting()
    policy = Policy(registries=(RegistryOptions(registry.host, insecure=True),))
    checker = Checker(RegistryClient(policy.registries, on_request=counting), tag_ttl=60, negative_ttl=60)
    yield checker, counting, policy
    checker.close()


@pytest.mark.registry
def test_cold_then_warm_costs(
    counted: tuple[Checker, Counting, Policy], corpus: dict[str, CorpusImage]
) -> None:
    checker, counting, policy = counted
    image = corpus["oci_index"].ref
    [result] = checker.check([image], TARGETS, policy, Keyring.empty(), Deadline(30))
    assert result.verdict == "allow"
    # HEAD the tag, GET the index, GET the one amd64 child both runtimes select, its config, HEAD its layer.
    assert counting.take() == Counter(
        {("HEAD", "manifest"): 1, ("GET", "manifest"): 2, ("GET", "blob"): 1, ("HEAD", "blob"): 1}
    )
    again = checker.check([image], TARGETS, policy, Keyring.empty(), Deadline(30))
    assert again == [result]
    assert counting.take() == Counter()  # within the tag TTL: no request at all


@pytest.mark.registry
def test_tag_ttl_expired_costs_one_head(registry: Registry, corpus: dict[str, CorpusImage]) -> None:
    counting = Counting()
    policy = Policy(registries=(RegistryOptions(registry.host, insecure=True),))
    checker = Checker(RegistryClient(policy.registries, on_request=counting), tag_ttl=0)
    try:
        images = [corpus["oci"].ref, corpus["schema2"].ref]
        checker.check(images, TARGETS, policy, Keyring.empty(), Deadline(30))
        counting.take()
        checker.check(images, TARGETS, policy, Keyring.empty(), Deadline(30))
        assert counting.take() == Counter({("HEAD", "manifest"): 2})
    finally:
        checker.close()


@pytest.mark.registry
def test_same_image_twice_is_resolved_once(
    counted: tuple[Checker, Counting, Policy], corpus: dict[str, CorpusImage]
) -> None:
    checker, counting, policy = counted
    image = corpus["schema2"].ref
    results = checker.check([image, image], TARGETS, policy, Keyring.empty(), Deadline(30))
    assert results[0] == results[1]
    assert counting.take()[("HEAD", "manifest")] == 1


@pytest.mark.registry
def test_concurrent_checks_share_one_lookup(
    counted: tuple[Checker, Counting, Policy], corpus: dict[str, CorpusImage]
) -> None:
    checker, counting, policy = counted
    image = corpus["docker_list"].ref
    results: list[str] = []
    start = threading.Barrier(8)

    def admit() -> None:
        start.wait()
        [result] = checker.check([image], TARGETS, policy, Keyring.empty(), Deadline(30))
        results.append(result.verdict)

    threads = [threading.Thread(target=admit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["allow"] * 8
    counts = counting.take()
    assert counts[("HEAD", "manifest")] == 1 and counts[("GET", "manifest")] == 2


@pytest.mark.registry
def test_not_found_is_remembered_briefly(
    counted: tuple[Checker, Counting, Policy], registry: Registry
) -> None:
    checker, counting, policy = counted
    missing = f"{registry.host}/corpus/oci:gone"
    for _ in range(5):
        [result] = checker.check([missing], TARGETS, policy, Keyring.empty(), Deadline(30))
        assert {f.code for f in result.findings} == {"NOT_FOUND"}
    assert counting.take() == Counter({("HEAD", "manifest"): 1})


@pytest.mark.registry
def test_access_is_proven_again_for_other_credentials(
    htpasswd_registry: Registry,
) -> None:
    """A private image one namespace may read must not be judged from cache for another namespace."""
    image = htpasswd_registry.push_private_image()
    policy = Policy(
        registries=(RegistryOptions(htpasswd_registry.host, ca_file=str(htpasswd_registry.ca_file)),)
    )
    counting = Counting()
    checker = Checker(RegistryClient(policy.registries, on_request=counting), tag_ttl=60, negative_ttl=60)
    auth = base64.b64encode(f"{htpasswd_registry.username}:{htpasswd_registry.password}".encode()).decode()
    allowed = Keyring.from_docker_config({"auths": {htpasswd_registry.host: {"auth": auth}}}, "secret a/pull")
    try:
        [granted] = checker.check([image], TARGETS, policy, allowed, Deadline(30))
        [refused] = checker.check([image], TARGETS, policy, Keyring.empty(), Deadline(30))
    finally:
        checker.close()
    assert granted.verdict == "allow"
    assert {f.code for f in refused.findings} == {"UNAUTHORIZED"}
    assert refused.verdict == "warn"  # onResolutionError defaults to warn


def _manifest_transport(
    images: int, barrier: threading.Barrier
) -> tuple[httpx.MockTransport, dict[str, str]]:
    """A registry whose HEADs all wait at one barrier: it only passes if they are in flight together."""
    config = json.dumps(
        {"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": []}}
    )
    config_digest = digest_of(config.encode())
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config.encode()),
            },
            "layers": [],
        }
    ).encode()
    manifest_digest = digest_of(manifest)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            barrier.wait()
            return httpx.Response(200, headers={"Docker-Content-Digest": manifest_digest})
        if "/manifests/" in request.url.path:
            return httpx.Response(
                200, content=manifest, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
            )
        return httpx.Response(200, content=config.encode())

    return httpx.MockTransport(handler), {f"registry.test/app{n}:v1": manifest_digest for n in range(images)}


def test_images_of_one_call_are_resolved_concurrently() -> None:
    """Ten images cost one round trip of wall time: all ten HEADs are in flight at once."""
    barrier = threading.Barrier(10, timeout=10)
    transport, images = _manifest_transport(10, barrier)
    checker = Checker(RegistryClient(transport=transport))
    try:
        results = checker.check(list(images), TARGETS, Policy(), Keyring.empty(), Deadline(20))
    finally:
        checker.close()
    assert [r.verdict for r in results] == ["allow"] * 10
    assert not barrier.broken


def test_deadline_answers_for_a_registry_that_hangs() -> None:
    release = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        release.wait(10)
        return httpx.Response(500)

    checker = Checker(RegistryClient(transport=httpx.MockTransport(handler)))
    try:
        [result] = checker.check(["registry.test/slow:v1"], TARGETS, Policy(), Keyring.empty(), Deadline(0.5))
    finally:
        release.set()
        checker.close()
    assert {f.code for f in result.findings} == {"REGISTRY_UNREACHABLE"}
    assert result.verdict == "warn"


def test_an_admission_of_hanging_images_does_not_starve_another() -> None:
    """Twenty images from a registry that hangs hold no threads another admission needs."""
    release = threading.Event()
    healthy_barrier = threading.Barrier(2, timeout=10)
    healthy, images = _manifest_transport(2, healthy_barrier)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "hanging.test":
            release.wait(10)
            return httpx.Response(500)
        return healthy.handle_request(request)

    checker = Checker(RegistryClient(transport=httpx.MockTransport(handler)), workers=4)
    hanging = [f"hanging.test/app{n}:v1" for n in range(20)]
    stuck = threading.Thread(
        target=checker.check, args=(hanging, TARGETS, Policy(), Keyring.empty(), Deadline(8))
    )
    try:
        stuck.start()
        results = checker.check(list(images), TARGETS, Policy(), Keyring.empty(), Deadline(5))
    finally:
        release.set()
        stuck.join()
        checker.close()
    assert [r.verdict for r in results] == ["allow", "allow"]


def test_a_registry_that_refuses_head_is_asked_with_get() -> None:
    """405 to HEAD (and a HEAD without Docker-Content-Digest) fall back to GET, as containerd does."""
    barrier = threading.Barrier(1)
    healthy, images = _manifest_transport(1, barrier)
    methods: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        methods.append(f"{request.method} {request.url.path.split('/')[-2]}")
        if request.method == "HEAD":
            return httpx.Response(405)
        return healthy.handle_request(request)

    checker = Checker(RegistryClient(transport=httpx.MockTransport(handler)))
    try:
        [result] = checker.check(list(images), TARGETS, Policy(), Keyring.empty(), Deadline(10))
    finally:
        checker.close()
    assert result.verdict == "allow" and result.digest == next(iter(images.values()))
    assert methods[:2] == ["HEAD manifests", "GET manifests"]
