"""The one cache (webhook/cache.py): bounded by bytes, least recently used first, entries expire; and the
resolver's document cache holding its bound while distinct big manifests keep coming."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Hashable, Iterator
from typing import Any

import pytest

from tests.harness import hostile
from tests.harness.hostile import HostileServer
from webhook import cache
from webhook.cache import MIB, Cache, Section, size_of
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.policy import Policy, RegistryOptions
from webhook.registry import RegistryClient
from webhook.resolve import Checker
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
