"""The one cache (webhook/cache.py): bounded by bytes, least recently used first, entries expire; and the
resolver's document cache holding its bound while distinct big manifests keep coming."""

from __future__ import annotations

import gc
import json
import sys
import tracemalloc
from collections.abc import Hashable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from tests.harness import hostile
from tests.harness.hostile import HostileServer
from webhook import cache
from webhook.cache import MIB, Cache, Section, kept_when_short, size_of
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.documents import Document
from webhook.policy import MirrorOptions, Policy, RegistryOptions
from webhook.reference import parse
from webhook.registry import RegistryClient
from webhook.resolve import Checker
from webhook.routes import route_for
from webhook.runtimes import default_targets


def _text(size: int) -> str:
    return "x" * size


def test_least_recently_used_entries_go_first_when_the_bytes_run_out() -> None:
    store: Cache[str, str] = Cache(10_000)
    for key in "abcd":
        store.put(key, _text(2000))
    store.get("a")  # now the most recently used
    store.put("e", _text(2000))
    assert store.bytes <= 10_000
    assert store.get("b") is None
    assert all(store.get(key) is not None for key in "acde")


def test_an_entry_heavier_than_the_bound_is_not_kept_and_evicts_nothing() -> None:
    store: Cache[str, str] = Cache(10_000)
    store.put("small", _text(100))
    store.put("huge", _text(20_000))
    assert store.get("huge") is None and store.get("small") is not None


def test_replacing_an_entry_counts_its_bytes_once() -> None:
    store: Cache[str, str] = Cache(100_000)
    for _ in range(10):
        store.put("same", _text(5000))
    assert len(store) == 1 and 5000 < store.bytes < 6000


def test_entries_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(cache, "monotonic", lambda: now[0])
    store: Cache[str, str] = Cache(10_000)
    store.put("short", "v", ttl=5)
    store.put("forever", "v")
    now[0] += 6
    assert store.get("short") is None and store.get("forever") == "v"
    assert len(store) == 1


def test_discard_only_forgets_the_value_it_was_given() -> None:
    store: Cache[str, str] = Cache(10_000)
    store.put("token", "new")
    store.discard("token", "old")
    assert store.get("token") == "new"
    store.discard("token", "new")
    assert store.get("token") is None


def test_sections_share_one_bound_and_keep_their_keys_apart() -> None:
    shared: Cache[tuple[str, Hashable], Any] = Cache(20_000)
    tags: Section[Hashable, str] = Section(shared, "tag")
    blobs: Section[Hashable, bool] = Section(shared, "blob")
    tags.put("k", "digest")
    blobs.put("k", False)
    assert tags.get("k") == "digest" and blobs.get("k") is False
    for n in range(100):
        tags.put(f"t{n}", _text(1000))
    assert shared.bytes <= 20_000


def test_size_of_counts_what_parsed_json_holds() -> None:
    document = json.loads(json.dumps({f"k{n}": [n, str(n)] for n in range(10_000)}))
    tracemalloc.start()
    try:
        copy = json.loads(json.dumps(document))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert size_of(copy) >= held * 0.8
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert size_of(deep) > 100_000 * 50  # weighed without recursion


def _descriptors_manifest(layers: int) -> bytes:
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 2}
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "0" * 64}
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": hostile.OCI_MANIFEST,
            "config": config | {"size": 2},
            "layers": [layer | {"digest": hostile.digest_of(b"%d" % n)} for n in range(layers)],
            "annotations": {f"a{n}": "b" for n in range(layers)},
        }
    ).encode()


def test_a_document_weighs_what_its_parsed_body_holds() -> None:
    """A manifest of many small descriptors and annotations holds several times its bytes once parsed:
    its weight (kept once worked out) is at least that, and not wildly more."""
    data = _descriptors_manifest(20_000)
    gc.collect()
    tracemalloc.start()
    try:
        document = Document.from_bytes(hostile.digest_of(data), hostile.OCI_MANIFEST, data)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held > 2 * len(data)
    assert held * 0.9 <= size_of(document) <= held * 1.5, (size_of(document), held)
    assert size_of(document) == document.weight
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert Document("sha256:" + "0" * 64, "", 0, deep).weight > 100_000 * 50  # weighed without recursion


def test_settings_worked_out_per_image_are_weighed_the_policys_own_are_not() -> None:
    """A route's endpoint for a mirror has settings of its own, made for this image and held by the cache
    entries that refer to the route; the registry's are the policy's, held once whatever refers to them."""
    realms = tuple(f"auth{n}.example.com" for n in range(50))
    entry = RegistryOptions(host="registry.test", mirrors=(MirrorOptions(host="mirror.test"),))
    policy = Policy(registries=(replace(entry, token_realm_hosts=realms),))
    route = route_for(policy, parse("registry.test/app:v1"), "containerd")
    assert route is not None
    mirror, upstream = route.endpoints
    assert upstream.options is policy.registries[0] and size_of(upstream.options) == 0
    assert mirror.options.token_realm_hosts == realms
    assert size_of(mirror.options) > sum(sys.getsizeof(realm) for realm in realms)
    assert size_of(route) > size_of(mirror.options) + size_of(upstream) > size_of(mirror.options)
    outside = RegistryOptions(host="elsewhere.test")  # as the client makes for a host outside the policy
    assert size_of(outside) >= sys.getsizeof(outside) + sys.getsizeof("elsewhere.test")


# ---- the resolver's caches under a stream of distinct big manifests ------------------------------------


@pytest.fixture
def server() -> Iterator[HostileServer]:
    hostile_server = HostileServer()
    yield hostile_server
    hostile_server.close()


def _annotated_manifest(n: int, entries: int) -> bytes:
    """A valid manifest of about `entries` x 14 bytes whose parsed form is many small objects."""
    blob = hostile.digest_of(b"%d" % n)
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob, "size": 2}
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob, "size": 2}
    annotations = {f"a{n}.{i}": "b" for i in range(entries)}
    manifest = {"schemaVersion": 2, "mediaType": hostile.OCI_MANIFEST, "config": config, "layers": [layer]}
    return json.dumps(manifest | {"annotations": annotations}).encode()


def _parsed_bytes() -> int:
    """Bytes still held by what JSON parsing allocated (other threads' allocations left out)."""
    gc.collect()
    parsed = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, json.decoder.__file__)])
    return sum(stat.size for stat in parsed.statistics("filename"))


@pytest.mark.served
def test_documents_stay_within_their_bytes_while_distinct_manifests_keep_coming(
    server: HostileServer,
) -> None:
    bound = 4 * MIB
    for n in range(12):
        server.route(f"/v2/big/app{n}/manifests/", hostile.document(_annotated_manifest(n, 20_000)))
    options = RegistryOptions(host=server.host, insecure=True, allow_private_network=True)
    checker = Checker(RegistryClient([options], network_guard=True), document_bytes=bound)
    tracemalloc.start()
    try:
        held = []
        for n in range(12):  # each ~0.3 MB on the wire, ~1.5 MiB parsed: 12 of them hold 18 MiB
            checker.check(
                [f"{server.host}/big/app{n}:v1"], default_targets(), Policy(), Keyring.empty(), Deadline(10)
            )
            if n in (5, 8, 11):  # the bound was reached by the fourth one
                held.append(_parsed_bytes())
    finally:
        tracemalloc.stop()
        checker.close()
    assert checker.resolver._documents.bytes <= bound
    assert max(held) < bound + 4 * MIB, [round(h / MIB, 1) for h in held]


def test_kept_when_short_remembers_short_strings_only() -> None:
    # A long string (which a Pod spec or a registry chooses) is worked out each time, never kept.
    asked: list[str] = []

    @kept_when_short(max_length=5, max_entries=2)
    def shout(text: str) -> str:
        asked.append(text)
        return text.upper()

    assert [shout(t) for t in ("abc", "abc", "abcdefgh", "abcdefgh")] == [
        "ABC",
        "ABC",
        "ABCDEFGH",
        "ABCDEFGH",
    ]
    assert asked == ["abc", "abcdefgh", "abcdefgh"]
    for text in ("d", "e", "f", "abc"):  # two entries at most: "abc" was pushed out
        shout(text)
    assert asked[-1] == "abc"
