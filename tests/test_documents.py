"""Registry documents of any shape: validated at the edge, a deny finding for that image alone, never
an exception that decides the whole request.

No real registry serves these bodies (docker-registry refuses them on push), so the property tests
serve them through an in-memory transport under the real registry client and resolver; the webhook
test puts a hostile registry beside the real one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import hostile
from tests.harness.corpus import CorpusImage
from tests.harness.hostile import HostileServer
from tests.harness.registry import Registry
from tests.harness.serving import local_registries, write_policy
from webhook import mediatypes as mt
from webhook import rules
from webhook.app import Settings, create_app
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.digests import digest_of
from webhook.documents import (
    CONFIG,
    INDEX,
    MANIFEST,
    SCHEMA1,
    Document,
    DocumentKind,
    Resolution,
    structure_of,
    validated,
)
from webhook.errors import InvalidDocument
from webhook.findings import DENY, ImageResult
from webhook.policy import Policy
from webhook.registry import RegistryClient
from webhook.resolve import Checker
from webhook.runtimes import Target, default_targets

HOST = "registry.test"
TARGETS = default_targets()
LAYER = "sha256:" + "1" * 64


def oci_config() -> dict[str, Any]:
    return {
        "created": "2025-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"a": "b"}, "ExposedPorts": {"80/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "2" * 64]},
        "history": [{"created_by": "ADD", "empty_layer": False}],
    }


def oci_manifest(config: bytes) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": LAYER, "size": 10, "annotations": {"k": "v"}}],
        "annotations": {"org.opencontainers.image.title": "t"},
    }


def oci_index(child: bytes) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": digest_of(child),
                "size": len(child),
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ],
    }


def schema1_manifest() -> dict[str, Any]:
    return {
        "schemaVersion": 1,
        "name": "old",
        "tag": "v1",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": LAYER}],
        "history": [{"v1Compatibility": "{}"}],
    }


def encoded(body: Any) -> bytes:
    return json.dumps(body).encode()


class InMemoryRegistry:
    """Manifests by repository and tag or digest, blobs by digest; HEAD of any other blob is 200."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.configs: dict[str, bytes] = {}

    def image(self, repository: str, top: bytes, content_type: str) -> str:
        self.manifests[(repository, "v1")] = (content_type, top)
        self.manifests[(repository, digest_of(top))] = (content_type, top)
        return f"{HOST}/{repository}:v1"

    def manifest(self, repository: str, body: bytes, content_type: str = mt.OCI_MANIFEST) -> None:
        self.manifests[(repository, digest_of(body))] = (content_type, body)

    def handle(self, request: httpx.Request) -> httpx.Response:
        repository, kind, reference = request.url.path.removeprefix("/v2/").rsplit("/", 2)
        if kind == "manifests" and (repository, reference) in self.manifests:
            content_type, body = self.manifests[(repository, reference)]
            headers = {"Content-Type": content_type, "Docker-Content-Digest": digest_of(body)}
            return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else body)
        if kind == "blobs" and reference in self.configs:
            return httpx.Response(200, content=self.configs[reference])
        if kind == "blobs" and request.method == "HEAD":
            return httpx.Response(200)
        return httpx.Response(404)

    def check(self, *images: str) -> list[ImageResult]:
        checker = Checker(RegistryClient(transport=httpx.MockTransport(self.handle)))
        try:
            return checker.check(list(images), TARGETS, Policy(), Keyring.empty(), Deadline(10))
        finally:
            checker.close()


def _codes(result: ImageResult) -> set[str]:
    return {f.code for f in result.findings}


def _invalid(body: Any, kind: DocumentKind) -> bool:
    try:
        validated(body, kind, "document")
    except InvalidDocument:
        return True
    return False


# ---- the validation itself ---------------------------------------------------------------------------

CONFIG_DIGEST = "sha256:" + "c" * 64


@pytest.mark.parametrize(
    ("kind", "body", "says"),
    [
        (MANIFEST, {"config": {"mediaType": ["x"], "digest": CONFIG_DIGEST}}, "config.mediaType is a list"),
        (MANIFEST, {"config": {"digest": CONFIG_DIGEST, "size": 1.0}}, "config.size is a number, not an int"),
        (MANIFEST, {"config": {"digest": CONFIG_DIGEST, "size": True}}, "config.size is a boolean"),
        (MANIFEST, {"config": {"digest": CONFIG_DIGEST, "size": 2**63}}, "out of the int64 range"),
        (MANIFEST, {"layers": [{"digest": 7}]}, "layers[0].digest is a number, not a string"),
        (MANIFEST, {"layers": [{"mediaType": mt.OCI_LAYER}]}, "layers[0].digest is missing"),
        (MANIFEST, {"layers": ["sha256:x"]}, "layers[0] is a string, not an object"),
        (MANIFEST, {"layers": [], "artifactType": {"a": 1}}, "artifactType is an object"),
        (MANIFEST, {"layers": [], "annotations": {"k\x1b[2J": 1}}, 'annotations["k\\x1b[2J"] is a number'),
        (
            INDEX,
            {"manifests": [{"digest": CONFIG_DIGEST, "platform": {"os": 1}}]},
            "manifests[0].platform.os",
        ),
        (INDEX, {"manifests": [None]}, "manifests[0] is null, not an object"),
        (SCHEMA1, {"schemaVersion": 1, "fsLayers": [{}]}, "fsLayers[0].blobSum is missing"),
        (SCHEMA1, {"fsLayers": "sha256:x"}, "fsLayers is a string, not a list of objects"),
        (CONFIG, {"rootfs": {"diff_ids": "sha256:x"}}, "rootfs.diff_ids is a string, not a list of strings"),
        (CONFIG, {"os": ["linux"]}, "os is a list, not a string"),
        (CONFIG, {"config": {"Env": [1]}}, "config.Env[0] is a number"),
        (CONFIG, [], "the body is a list, not an object"),
        (CONFIG, None, "not JSON"),
    ],
)
def test_a_field_of_the_wrong_type_is_an_invalid_document(kind: DocumentKind, body: Any, says: str) -> None:
    with pytest.raises(InvalidDocument, match="^the document: ") as raised:
        validated(body, kind, "the document")
    assert says in str(raised.value)
    assert not any(c in str(raised.value) for c in "\x1b\r\n")


def test_nulls_are_absent_and_unknown_fields_kept_as_go_reads_them() -> None:
    body = {"artifactType": None, "layers": None, "config": {"digest": CONFIG_DIGEST, "urls": None}, "x": [1]}
    assert validated(body, MANIFEST, "m") == {"config": {"digest": CONFIG_DIGEST}, "x": [1]}
    assert validated({"rootfs": None, "os": "linux"}, CONFIG, "c") == {"os": "linux"}


def test_documents_that_decode_pass_unchanged() -> None:
    config = encoded(oci_config())
    child = encoded(oci_manifest(config))
    cases: list[tuple[Any, DocumentKind]] = [
        (oci_config(), CONFIG),
        (oci_manifest(config), MANIFEST),
        (oci_index(child), INDEX),
        (schema1_manifest(), SCHEMA1),
    ]
    for body, kind in cases:
        assert validated(body, kind, "d") == body
    assert Document.from_bytes(digest_of(config), "", config, config=True).body == oci_config()


# ---- arbitrary shapes through the client and resolver ----------------------------------------------

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from([mt.OCI_LAYER_GZIP, mt.OCI_CONFIG, LAYER, "linux", "amd64", "\x1b[31m"])
)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


@st.composite
def mutated(draw: st.DrawFn, document: dict[str, Any]) -> Any:
    """`document` with one to three places (the whole of it included) replaced by any JSON, or removed."""
    body: Any = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(body))
        path = draw(st.sampled_from(paths))
        if not path:
            body = draw(json_value)
            continue
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_value)
    return body


def shapes(document: dict[str, Any]) -> st.SearchStrategy[Any]:
    return mutated(document) | json_value


CONFIG_BYTES = encoded(oci_config())
MANIFEST_BODY = oci_manifest(CONFIG_BYTES)
CHILD_BYTES = encoded(MANIFEST_BODY)

PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _judged_with_a_schema1_neighbour(registry: InMemoryRegistry, image: str) -> ImageResult:
    """The image's result, judged in one call beside a schema 1 image that must stay denied."""
    old = registry.image("old", encoded(schema1_manifest()), mt.DOCKER_SCHEMA1)
    result, neighbour = registry.check(image, old)
    assert "SCHEMA1" in _codes(neighbour) and neighbour.verdict == DENY
    assert result.findings or result.verdict == "allow"
    return result


def _assert_invalid_document(result: ImageResult) -> None:
    invalid = [f for f in result.findings if f.code == "INVALID_DOCUMENT"]
    assert invalid and all(f.severity == DENY for f in invalid), result.findings
    assert {f.runtime for f in invalid} == {str(t.runtime) for t in TARGETS}


@PROPERTY
@given(shapes(MANIFEST_BODY))
def test_any_top_level_manifest_is_judged(body: Any) -> None:
    registry = InMemoryRegistry()
    registry.configs[digest_of(CONFIG_BYTES)] = CONFIG_BYTES
    result = _judged_with_a_schema1_neighbour(registry, registry.image("app", encoded(body), mt.OCI_MANIFEST))
    if _invalid(body, structure_of(body)):
        _assert_invalid_document(result)


@PROPERTY
@given(shapes(oci_index(CHILD_BYTES)))
def test_any_index_is_judged(body: Any) -> None:
    registry = InMemoryRegistry()
    registry.configs[digest_of(CONFIG_BYTES)] = CONFIG_BYTES
    registry.manifest("app", CHILD_BYTES)
    result = _judged_with_a_schema1_neighbour(registry, registry.image("app", encoded(body), mt.OCI_INDEX))
    if _invalid(body, structure_of(body)):
        _assert_invalid_document(result)


@PROPERTY
@given(shapes(MANIFEST_BODY))
def test_any_child_manifest_is_judged(body: Any) -> None:
    registry = InMemoryRegistry()
    registry.configs[digest_of(CONFIG_BYTES)] = CONFIG_BYTES
    child = encoded(body)
    registry.manifest("app", child)
    result = _judged_with_a_schema1_neighbour(
        registry, registry.image("app", encoded(oci_index(child)), mt.OCI_INDEX)
    )
    if _invalid(body, structure_of(body)):
        _assert_invalid_document(result)


@PROPERTY
@given(shapes(schema1_manifest()))
def test_any_schema1_manifest_is_judged(body: Any) -> None:
    registry = InMemoryRegistry()
    result = _judged_with_a_schema1_neighbour(
        registry, registry.image("app", encoded(body), mt.DOCKER_SCHEMA1)
    )
    if _invalid(body, structure_of(body)):
        _assert_invalid_document(result)


@PROPERTY
@given(shapes(oci_config()))
def test_any_image_config_is_judged(body: Any) -> None:
    registry = InMemoryRegistry()
    config = encoded(body)
    registry.configs[digest_of(config)] = config
    result = _judged_with_a_schema1_neighbour(
        registry, registry.image("app", encoded(oci_manifest(config)), mt.OCI_MANIFEST)
    )
    if _invalid(body, CONFIG):
        _assert_invalid_document(result)


def test_an_unexpected_error_judging_one_image_stays_with_that_image(monkeypatch: pytest.MonkeyPatch) -> None:

    def judge(resolution: Resolution, target: Target, *, unqualified: bool = False) -> list[Any]:
        if resolution.image.endswith("/app:v1") and resolution.error is None:
            raise TypeError("unhashable type: 'list'")
        return rules.judge(resolution, target, unqualified=unqualified)

    monkeypatch.setattr("webhook.resolve.judge", judge)
    registry = InMemoryRegistry()
    registry.configs[digest_of(CONFIG_BYTES)] = CONFIG_BYTES
    image = registry.image("app", CHILD_BYTES, mt.OCI_MANIFEST)
    result = _judged_with_a_schema1_neighbour(registry, image)
    _assert_invalid_document(result)
    assert "TypeError" in result.findings[0].message


# ---- the webhook: one bad document beside a schema 1 image in enforce mode ---------------------------


@pytest.fixture
def server() -> Iterator[HostileServer]:
    hostile_server = HostileServer()
    yield hostile_server
    hostile_server.close()


@pytest.mark.registry
def test_a_bad_document_denies_its_image_and_the_schema1_image_stays_denied(
    tmp_path: Path, registry: Registry, corpus: dict[str, CorpusImage], server: HostileServer
) -> None:
    config = encoded(oci_config())
    listed = oci_manifest(config)
    listed["config"]["mediaType"] = [mt.OCI_CONFIG]  # the TypeError of old
    server.route("/v2/listed/", hostile.document(encoded(listed)))
    bad_config = oci_config() | {"rootfs": {"type": "layers", "diff_ids": "sha256:" + "2" * 64}}
    server.route("/v2/config/app/manifests/", hostile.document(encoded(oci_manifest(encoded(bad_config)))))
    server.route("/v2/config/app/blobs/", hostile.document(encoded(bad_config), None))
    schema1 = corpus["schema1_signed"].ref
    listed_image, config_image = f"{server.host}/listed/app:v1", f"{server.host}/config/app:v1"

    policy = write_policy(tmp_path / "p.yaml", local_registries([registry.host, server.host]), mode="enforce")
    client = create_app(Settings(policy_file=str(policy))).test_client()
    reply = client.post("/validate", json=hostile.review(schema1, listed_image, config_image))
    response = reply.json["response"]  # type: ignore[index]

    assert response["allowed"] is False, response
    message = response["status"]["message"]
    assert message.startswith("pullcheck denied 3 images: ")
    assert f"{schema1}: SCHEMA1 fails" in message
    assert f"{listed_image}: INVALID_DOCUMENT fails" in message and "config.mediaType is a list" in message
    assert f"{config_image}: INVALID_DOCUMENT fails" in message and "rootfs.diff_ids is a string" in message
    judged = {entry["image"]: entry for entry in json.loads(response["auditAnnotations"]["images"])}
    assert list(judged[schema1]["findings"]) == ["SCHEMA1"]
    assert list(judged[listed_image]["findings"]) == ["INVALID_DOCUMENT"]
