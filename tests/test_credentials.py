"""Keyring: docker config parsing and the kubelet's credential matching (its keyring_test.go tables)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from webhook.credentials import Credential, Keyring, urls_match
from webhook.errors import ConfigError
from webhook.wiring import read_keyring


def _auth(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def _keyring(entries: dict[str, Any], source: str = "test") -> Keyring:
    return Keyring.from_docker_config({"auths": entries}, source)


def _lookup_image(keyring: Keyring, image: str) -> list[Credential]:
    host, _, repository = image.partition("/")
    return keyring.lookup(host, repository)


# kubelet TestURLsMatch
@pytest.mark.parametrize(
    ("glob", "target", "expected"),
    [
        ("*.kubernetes.io", "prefix.kubernetes.io", True),
        ("prefix.*.io", "prefix.kubernetes.io", True),
        ("prefix.kubernetes.*", "prefix.kubernetes.io", True),
        ("*-good.kubernetes.io", "prefix-good.kubernetes.io", True),
        ("*.kubernetes.io/blah", "prefix.kubernetes.io/blah", True),
        ("prefix.*.io/foo", "prefix.kubernetes.io/foo/bar", True),
        ("*.kubernetes.io:1111/blah", "prefix.kubernetes.io:1111/blah", True),
        ("prefix.*.io:1111/foo", "prefix.kubernetes.io:1111/foo/bar", True),
        ("*.kubernetes.io", "kubernetes.io", False),
        ("*.*.kubernetes.io", "prefix.kubernetes.io", False),
        ("*.*.kubernetes.io", "kubernetes.io", False),
        ("kubernetes.io", "kubernetes.com", False),
        ("k*.io", "quay.io", False),
        ("*.kubernetes.io:1234/blah", "prefix.kubernetes.io:1111/blah", False),
        ("prefix.*.io/foo", "prefix.kubernetes.io:1111/foo/bar", False),
    ],
)
def test_urls_match(glob: str, target: str, expected: bool) -> None:
    assert urls_match(glob, target) is expected


# kubelet TestDockerKeyringForGlob
@pytest.mark.parametrize(
    ("key", "target"),
    [
        ("https://hello.kubernetes.io", "hello.kubernetes.io"),
        ("https://*.docker.io", "prefix.docker.io"),
        ("https://prefix.*.io", "prefix.docker.io"),
        ("https://prefix.docker.*", "prefix.docker.io"),
        ("https://*.docker.io/path", "prefix.docker.io/path"),
        ("https://prefix.*.io/path", "prefix.docker.io/path/subpath"),
        ("https://prefix.docker.*/path", "prefix.docker.io/path"),
        ("https://*.docker.io:8888", "prefix.docker.io:8888"),
        ("https://prefix.*.io:8888", "prefix.docker.io:8888"),
        ("https://prefix.docker.*:8888", "prefix.docker.io:8888"),
        ("https://*.docker.io/path:1111", "prefix.docker.io/path:1111"),
        ("https://*.docker.io/v1/", "prefix.docker.io/path:1111"),
        ("https://*.docker.io/v2/", "prefix.docker.io/path:1111"),
        ("https://prefix.docker.*/path:1111", "prefix.docker.io/path:1111"),
        ("prefix.docker.io:1111", "prefix.docker.io:1111/path"),
        ("*.docker.io:1111", "prefix.docker.io:1111/path"),
    ],
)
def test_keyring_hit_for_glob(key: str, target: str) -> None:
    keyring = _keyring({key: {"email": "foo@bar.baz", "auth": _auth("foo", "bar")}})
    found = _lookup_image(keyring, target + "/foo/bar")
    assert [(c.username, c.password) for c in found][:1] == [("foo", "bar")]


# kubelet TestKeyringMiss
@pytest.mark.parametrize(
    ("key", "target"),
    [
        ("https://hello.kubernetes.io", "world.mesos.org/foo/bar"),
        ("https://*.docker.com", "prefix.docker.io"),
        ("https://suffix.*.io", "prefix.docker.io"),
        ("https://prefix.docker.c*", "prefix.docker.io"),
        ("https://prefix.*.io/path:1111", "prefix.docker.io/path/subpath:1111"),
        ("suffix.*.io", "prefix.docker.io"),
    ],
)
def test_keyring_miss(key: str, target: str) -> None:
    keyring = _keyring({key: {"auth": _auth("foo", "bar")}})
    assert _lookup_image(keyring, target + "/foo/bar") == []


def test_docker_hub_credentials_do_not_serve_other_registries() -> None:
    keyring = _keyring({"https://index.docker.io/v1/": {"auth": _auth("foo", "bar")}})
    assert keyring.lookup("world.mesos.org", "foo/bar") == []


@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "index.docker.io", "docker.io"])
@pytest.mark.parametrize("repository", ["library/jenkins", "google/docker-registry"])
def test_every_docker_hub_key_serves_docker_hub_images(key: str, repository: str) -> None:
    keyring = _keyring({key: {"auth": _auth("foo", "bar")}})
    assert [c.username for c in keyring.lookup("docker.io", repository)] == ["foo"]


# kubelet TestDockerKeyringLookup
@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("bar.example.com", ["ada"]),
        ("bar.example.com/pong", ["grace", "ada"]),
        ("bar.example.com/ping", ["ada"]),
        ("bar.example.com/pongz", ["grace", "ada"]),  # the kubelet's prefix is by string, not by path segment
        ("bar.example.com/pong/pang", ["grace", "ada"]),
        ("example.com", []),
        ("foo.example.com", []),
    ],
)
def test_most_specific_first(image: str, expected: list[str]) -> None:
    keyring = _keyring(
        {
            "bar.example.com/pong": {"username": "grace", "password": "squash"},
            "bar.example.com": {"username": "ada", "password": "smash"},
        }
    )
    assert [c.username for c in _lookup_image(keyring, image)] == expected


# kubelet TestIssue3797
@pytest.mark.parametrize("image", ["quay.io", "quay.io/foo", "quay.io/foo/bar"])
def test_key_with_scheme_and_version_path_matches_the_host(image: str) -> None:
    keyring = _keyring({"https://quay.io/v1/": {"username": "rex", "password": "tiny arms"}})
    assert [c.username for c in _lookup_image(keyring, image)] == ["rex"]


def test_port_must_match() -> None:
    keyring = _keyring({"127.0.0.1:5000": {"auth": _auth("a", "b")}})
    assert keyring.lookup("127.0.0.1:5000", "app")
    assert keyring.lookup("127.0.0.1:5001", "app") == []
    assert keyring.lookup("127.0.0.1", "app") == []


def test_legacy_dockercfg_without_auths_wrapper() -> None:
    keyring = Keyring.from_docker_config({"registry.example.com": {"auth": _auth("old", "pw")}}, "legacy")
    (credential,) = keyring.lookup("registry.example.com", "team/app")
    assert (credential.username, credential.password, credential.source) == ("old", "pw", "legacy")


def test_username_password_fields_and_identity_token() -> None:
    keyring = _keyring(
        {
            "a.example.com": {"username": "u", "password": "p"},
            "b.example.com": {"identitytoken": "refresh-me"},
            "c.example.com": {},  # kept for a credential helper: nothing to send
        }
    )
    assert keyring.lookup("a.example.com", "x")[0].password == "p"
    assert keyring.lookup("b.example.com", "x")[0].identity_token == "refresh-me"
    assert keyring.lookup("c.example.com", "x") == []


def test_config_json_with_only_a_credential_store_has_no_entries() -> None:
    assert len(Keyring.from_docker_config({"credsStore": "desktop"}, "config.json")) == 0


def test_auth_with_a_colon_in_the_password() -> None:
    keyring = _keyring({"r.example.com": {"auth": _auth("user", "pa:ss")}})
    assert keyring.lookup("r.example.com", "x")[0].password == "pa:ss"


@pytest.mark.parametrize(
    "entry",
    [
        {"auth": "!!!not base64"},
        {"auth": base64.b64encode(b"no-colon-here").decode()},
        {"username": 7},
        "just a string",
    ],
)
def test_bad_entries_name_the_entry_never_the_secret(entry: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        _keyring({"bad.example.com": entry}, source="secret team-a/regcred")
    message = str(raised.value)
    assert "bad.example.com" in message and "secret team-a/regcred" in message
    assert "no-colon-here" not in message and "\n" not in message


@pytest.mark.parametrize("key", ["[bad.example.com", "https://[::1/team"])
def test_a_key_that_is_no_url_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError, match="not a registry location") as raised:
        _keyring({key: {"username": "robot", "password": "s3cret-value"}}, source="secret team-a/regcred")
    assert "s3cret-value" not in str(raised.value) and "secret team-a/regcred" in str(raised.value)


def test_read_keyring_of_a_file_nested_too_deep(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("[" * 100_000)
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_keyring(str(path))


def test_auths_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match="auths"):
        Keyring.from_docker_config({"auths": ["x"]}, "config.json")


def test_merged_keeps_the_first_keyrings_credentials_first() -> None:
    secrets_ring = _keyring({"r.example.com": {"auth": _auth("pod", "1")}}, "secret")
    node_ring = _keyring({"r.example.com": {"auth": _auth("node", "2")}}, "node")
    assert [c.username for c in secrets_ring.merged(node_ring).lookup("r.example.com", "x")] == [
        "pod",
        "node",
    ]
    assert [c.username for c in node_ring.merged(secrets_ring).lookup("r.example.com", "x")] == [
        "node",
        "pod",
    ]
    assert Keyring.empty().merged(node_ring) == node_ring


def test_fingerprint_tells_contents_apart_and_hides_secrets() -> None:
    one = _keyring({"r.example.com": {"auth": _auth("user", "hunter2")}})
    same = _keyring({"r.example.com": {"username": "user", "password": "hunter2"}}, source="elsewhere")
    other = _keyring({"r.example.com": {"auth": _auth("user", "hunter3")}})
    assert one == same and hash(one) == hash(same) and one.fingerprint == same.fingerprint
    assert one != other and one.fingerprint != other.fingerprint
    assert one != Keyring.empty()
    for text in (one.fingerprint, repr(one), repr(one.lookup("r.example.com", "x"))):
        assert "hunter2" not in text and _auth("user", "hunter2") not in text


def test_credential_identity_differs_per_secret() -> None:
    a = Credential("user", "one")
    assert a.identity == Credential("user", "one", source="other").identity
    assert a.identity != Credential("user", "two").identity
    assert a.identity != Credential("user", "one", identity_token="t").identity
