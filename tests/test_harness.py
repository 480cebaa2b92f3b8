"""The test harness itself: registries, pushes, auth flavours and the corpus behave as the tests assume."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.harness.corpus import CorpusImage
from tests.harness.images import make_layer, sha256
from tests.harness.registry import Registry
from webhook import mediatypes as mt

pytestmark = pytest.mark.registry

ACCEPT = {"Accept": ", ".join(mt.MANIFEST_ACCEPT)}


def _repository_and_reference(ref: str) -> tuple[str, str]:
    path = ref.split("/", 1)[1]
    repository, _, tag = path.partition("@") if "@" in path else path.rpartition(":")
    return repository, tag


def _head_manifest(registry: Registry, ref: str) -> httpx.Response:
    repository, tag = _repository_and_reference(ref)
    return httpx.head(f"{registry.url}/v2/{repository}/manifests/{tag}", headers=ACCEPT)


def _challenge(response: httpx.Response) -> dict[str, str]:
    scheme, _, params = response.headers["www-authenticate"].partition(" ")
    fields = dict(part.split("=", 1) for part in params.split(","))
    return {"scheme": scheme, **{k: v.strip('"') for k, v in fields.items()}}


def test_plain_registry_serves_what_was_pushed(registry: Registry) -> None:
    assert registry.ca_file is None
    assert registry.url == f"http://{registry.host}" and registry.host.startswith("127.0.0.1:")
    layer = make_layer("harness push")
    digest = registry.push_image("harness/push", "v1", [layer])

    response = httpx.get(f"{registry.url}/v2/harness/push/manifests/v1", headers=ACCEPT)
    assert response.status_code == 200
    assert response.headers["content-type"] == mt.OCI_MANIFEST
    assert sha256(response.content) == digest == response.headers["docker-content-digest"]
    assert json.loads(response.content)["layers"][0]["digest"] == layer.digest
    assert httpx.head(f"{registry.url}/v2/harness/push/blobs/{layer.digest}").status_code == 200


def test_deleting_a_blob_leaves_the_manifest_pointing_at_nothing(registry: Registry) -> None:
    layer = make_layer("harness delete")
    registry.push_image("harness/delete", "v1", [layer])
    registry.delete_blob("harness/delete", layer.digest)
    assert httpx.head(f"{registry.url}/v2/harness/delete/blobs/{layer.digest}").status_code == 404
    assert httpx.head(f"{registry.url}/v2/harness/delete/manifests/v1", headers=ACCEPT).status_code == 200


def test_registry_log_goes_to_a_file(registry: Registry) -> None:
    assert "GET /v2/" in registry.log_file.read_text()


def test_tls_registry_is_trusted_only_through_its_ca(tls_registry: Registry) -> None:
    assert tls_registry.url.startswith("https://127.0.0.1:")
    assert tls_registry.ca_file is not None
    assert httpx.get(f"{tls_registry.url}/v2/", verify=tls_registry.verify).status_code == 200
    with pytest.raises(httpx.ConnectError) as refused:
        httpx.get(f"{tls_registry.url}/v2/")
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)


def test_tls_registry_takes_pushes(tls_registry: Registry) -> None:
    ref = tls_registry.push_private_image("harness/tls", "v1")
    assert ref == f"{tls_registry.host}/harness/tls:v1"
    response = httpx.head(
        f"{tls_registry.url}/v2/harness/tls/manifests/v1", headers=ACCEPT, verify=tls_registry.verify
    )
    assert response.status_code == 200


def test_htpasswd_registry_wants_basic_credentials(htpasswd_registry: Registry) -> None:
    ref = htpasswd_registry.push_private_image()
    repository, tag = _repository_and_reference(ref)
    url = f"{htpasswd_registry.url}/v2/{repository}/manifests/{tag}"
    verify = htpasswd_registry.verify
    assert htpasswd_registry.username and htpasswd_registry.password

    anonymous = httpx.head(url, headers=ACCEPT, verify=verify)
    assert anonymous.status_code == 401 and _challenge(anonymous)["scheme"] == "Basic"
    wrong = httpx.head(url, headers=ACCEPT, verify=verify, auth=(htpasswd_registry.username, "wrong"))
    assert wrong.status_code == 401
    reader = (htpasswd_registry.username, htpasswd_registry.password)
    assert httpx.head(url, headers=ACCEPT, verify=verify, auth=reader).status_code == 200


def _token(registry: Registry, scope: str, auth: tuple[str, str] | None) -> httpx.Response:
    challenge = _challenge(httpx.get(f"{registry.url}/v2/", verify=registry.verify))
    assert challenge["scheme"] == "Bearer"
    params = {"service": challenge["service"], "scope": scope}
    return httpx.get(challenge["realm"], params=params, auth=auth, verify=registry.verify)


def _jwt_part(token: str, index: int) -> dict[str, object]:
    part = token.split(".")[index]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def test_token_registry_grants_pull_to_readers_only(token_registry: Registry) -> None:
    ref = token_registry.push_private_image()
    repository, tag = _repository_and_reference(ref)
    url = f"{token_registry.url}/v2/{repository}/manifests/{tag}"
    verify = token_registry.verify
    scope = f"repository:{repository}:pull"
    assert token_registry.username and token_registry.password
    assert token_registry.outsider_username and token_registry.outsider_password

    anonymous = httpx.head(url, headers=ACCEPT, verify=verify)
    assert anonymous.status_code == 401
    assert _challenge(anonymous)["scope"] == scope

    reader_token = _token(token_registry, scope, (token_registry.username, token_registry.password))
    token = reader_token.json()["token"]
    header, claims = _jwt_part(token, 0), _jwt_part(token, 1)
    assert header["alg"] == "ES256" and len(header["x5c"]) == 1  # type: ignore[arg-type]
    assert claims["access"] == [{"type": "repository", "name": repository, "actions": ["pull"]}]
    assert {"iss", "aud", "exp", "nbf", "iat", "jti"} <= set(claims)
    bearer = {**ACCEPT, "Authorization": f"Bearer {token}"}
    assert httpx.head(url, headers=bearer, verify=verify).status_code == 200

    for auth in [None, (token_registry.outsider_username, token_registry.outsider_password)]:
        denied_token = _token(token_registry, scope, auth).json()["token"]
        assert _jwt_part(denied_token, 1)["access"] == [
            {"type": "repository", "name": repository, "actions": []}
        ]
        denied = {**ACCEPT, "Authorization": f"Bearer {denied_token}"}
        assert httpx.head(url, headers=denied, verify=verify).status_code == 401


def test_token_server_refuses_bad_passwords_and_counts_requests(token_registry: Registry) -> None:
    server = token_registry.token_server
    assert server is not None
    server.reset_counters()
    bad = _token(token_registry, "repository:private/app:pull", (token_registry.username or "", "not-it"))
    assert bad.status_code == 401
    _token(token_registry, "repository:corpus/public:pull", None)
    assert server.requests_served == 2
    assert server.usernames_seen == [token_registry.username]


CORPUS_CONTENT_TYPES = {
    "schema1_signed": mt.DOCKER_SCHEMA1_SIGNED,
    "schema2": mt.DOCKER_MANIFEST,
    "docker_list": mt.DOCKER_LIST,
    "index_child_schema1": mt.DOCKER_LIST,
    "oci_index": mt.OCI_INDEX,
    "oci": mt.OCI_MANIFEST,
    "artifact_type": mt.OCI_MANIFEST,
}


def test_corpus_images_resolve_with_their_media_types(
    registry: Registry, corpus: dict[str, CorpusImage]
) -> None:
    assert len(corpus) >= 25
    for name, image in corpus.items():
        # Pulled by the tag NAME, but cosign's by a sha256-<hex>.sig/.att tag, an image ID by digest, and
        # the malformed Docker-Content-Digest through a lying front (pushed to the registry all the same).
        by_name = image.ref == f"{registry.host}/corpus/{name}:{name}"
        assert by_name or name.startswith(("cosign_", "image_id_", "malformed_")), image.ref
        response = _head_manifest(registry, image.ref)
        # The registry answers 500 for a config digest on the manifests endpoint: that is the case.
        assert response.status_code == (500 if name == "image_id_as_digest" else 200), name
        if name in CORPUS_CONTENT_TYPES:
            assert response.headers["content-type"] == CORPUS_CONTENT_TYPES[name], name


@pytest.mark.parametrize(
    ("name", "what"),
    [("missing_config", "config"), ("missing_layer", "layers"), ("missing_child", "manifests")],
)
def test_corpus_missing_parts_are_gone(
    registry: Registry, corpus: dict[str, CorpusImage], name: str, what: str
) -> None:
    repository, tag = _repository_and_reference(corpus[name].ref)
    body = httpx.get(f"{registry.url}/v2/{repository}/manifests/{tag}", headers=ACCEPT).json()
    gone = body[what] if what == "config" else body[what][0]
    kind = "manifests" if what == "manifests" else "blobs"
    accept = ACCEPT if kind == "manifests" else {}
    response = httpx.head(f"{registry.url}/v2/{repository}/{kind}/{gone['digest']}", headers=accept)
    assert response.status_code == 404


def test_schema1_push_through_tls_and_token_auth(token_registry: Registry) -> None:
    digest = token_registry.push_schema1("harness/schema1", "v1", "harness schema1 over token auth")
    token = _token(token_registry, "repository:harness/schema1:pull", None).json()["token"]
    response = httpx.get(
        f"{token_registry.url}/v2/harness/schema1/manifests/v1",
        headers={**ACCEPT, "Authorization": f"Bearer {token}"},
        verify=token_registry.verify,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == mt.DOCKER_SCHEMA1_SIGNED
    assert response.headers["docker-content-digest"] == digest
