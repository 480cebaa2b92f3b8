"""Digests as the runtimes check them; signed schema 1 payloads checked against skopeo and docker-registry."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import processes
from webhook import mediatypes as mt
from webhook.digests import (
    ALGORITHMS,
    digest_of,
    is_digest,
    manifest_digest,
    new_hasher,
    parse_digest,
    schema1_payload,
)

SKOPEO = shutil.which("skopeo")
REGISTRY = shutil.which("docker-registry")
HEX = {"sha256": "a" * 64, "sha384": "b" * 96, "sha512": "c" * 128}


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_parse_digest_accepts_each_runtime_algorithm(algorithm: str) -> None:
    text = f"{algorithm}:{HEX[algorithm]}"
    assert parse_digest(text) == (algorithm, HEX[algorithm])
    assert is_digest(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected <algorithm>:<hex>"),
        ("sha256", "expected <algorithm>:<hex>"),
        (":" + "a" * 64, "expected <algorithm>:<hex>"),
        ("sha256:", "expected <algorithm>:<hex>"),
        ("md5:" + "a" * 32, 'unsupported digest algorithm "md5"'),
        ("sha256+b64:" + "a" * 64, 'unsupported digest algorithm "sha256+b64"'),
        ("SHA256:" + "a" * 64, "malformed"),  # go-digest: not even a well-formed algorithm name
        ("sha256:" + "a" * 63, "sha256 needs 64 hex characters, got 63"),
        ("sha512:" + "c" * 64, "sha512 needs 128 hex characters, got 64"),
        ("sha256:" + "A" * 64, "lower-case"),
        ("sha256:" + "g" * 64, "lower-case"),
    ],
)
def test_parse_digest_refuses_what_go_digest_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_digest(text)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)
    assert not is_digest(text)


def test_digest_messages_stay_one_short_line() -> None:
    with pytest.raises(ValueError) as info:
        parse_digest("sha256:" + "\n" * 10_000)
    message = str(info.value)
    assert "\n" not in message
    assert len(message) < 300


def test_digest_of_and_streaming_hasher_agree_with_hashlib() -> None:
    data = b"layer bytes"
    assert digest_of(data) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert digest_of(data, "sha512") == "sha512:" + hashlib.sha512(data).hexdigest()
    hasher = new_hasher("sha384:" + HEX["sha384"])
    hasher.update(data[:5])
    hasher.update(data[5:])
    assert hasher.name == "sha384"
    assert hasher.hexdigest() == hashlib.sha384(data).hexdigest()
    assert new_hasher("sha256").name == "sha256"


@pytest.mark.parametrize("text", ["md5", "sha1:" + "a" * 40, "sha256:short"])
def test_new_hasher_refuses_what_runtimes_refuse(text: str) -> None:
    with pytest.raises(ValueError):
        new_hasher(text)


def _jose(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(payload: bytes, cut: int, *, protected: list[dict[str, object]] | None = None) -> bytes:
    """`payload` signed the libtrust way: the body up to `cut`, then the signatures, then the tail."""
    headers = protected or [{"formatLength": cut, "formatTail": _jose(payload[cut:])}]
    signatures = [
        {"header": {"alg": "ES256"}, "signature": "c2ln", "protected": _jose(json.dumps(h).encode())}
        for h in headers
    ]
    return payload[:cut] + b',\n   "signatures": ' + json.dumps(signatures).encode() + payload[cut:]


PRETTY = b'{\n   "schemaVersion": 1,\n   "name": "library/app",\n   "tag": "v1"\n}'


def test_schema1_payload_cuts_the_signatures_out() -> None:
    signed = _signed(PRETTY, len(PRETTY) - 2)
    assert signed != PRETTY
    assert schema1_payload(signed) == PRETTY
    assert manifest_digest(signed, mt.DOCKER_SCHEMA1_SIGNED) == digest_of(PRETTY)


@pytest.mark.parametrize(
    "data", [PRETTY, b"not json", b"[1, 2]", b'{"schemaVersion": 1, "signatures": null}'], ids=repr
)
def test_schema1_payload_returns_unsigned_input_unchanged(data: bytes) -> None:
    assert schema1_payload(data) == data


@pytest.mark.parametrize(
    ("protected", "reason"),
    [
        ([{"formatTail": "Cn0"}], "no formatLength"),
        ([{"formatLength": 10}], "no formatTail"),
        ([{"formatLength": 10, "formatTail": "!!"}], "base64url"),
        ([{"formatLength": 10_000, "formatTail": "Cn0"}], "outside the document"),
        ([{"formatLength": -1, "formatTail": "Cn0"}], "outside the document"),
        ([{"formatLength": 10, "formatTail": "Cn0"}, {"formatLength": 11, "formatTail": "Cn0"}], "disagree"),
        ([{"formatLength": 10, "formatTail": "Cn0"}, {"formatLength": 10, "formatTail": "fQ"}], "disagree"),
    ],
)
def test_schema1_payload_refuses_unreadable_signatures(
    protected: list[dict[str, object]], reason: str
) -> None:
    with pytest.raises(ValueError) as info:
        schema1_payload(_signed(PRETTY, len(PRETTY) - 2, protected=protected))
    assert reason in str(info.value)


def test_modern_manifests_are_hashed_as_served_even_with_a_signatures_field() -> None:
    body = _signed(PRETTY, len(PRETTY) - 2)
    for media_type in (mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_LIST):
        assert manifest_digest(body, media_type + "; charset=utf-8") == digest_of(body)


def test_unknown_types_are_judged_by_the_body_like_containers_image() -> None:
    signed = _signed(PRETTY, len(PRETTY) - 2)
    assert manifest_digest(signed, "application/json") == digest_of(PRETTY)
    schema2 = b'{"schemaVersion": 2, "signatures": []}'
    assert manifest_digest(schema2, "application/json") == digest_of(schema2)
    assert manifest_digest(b"\x00binary", "application/octet-stream") == digest_of(b"\x00binary")


# --- real signed schema 1 manifests -----------------------------------------------------------------


def _oci_layout(root: Path) -> Path:
    """A one-layer linux/amd64 image as an OCI layout, tagged v1."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as archive:
        content = b"hello\n"
        member = tarfile.TarInfo("hello.txt")
        member.size = len(content)
        archive.addfile(member, io.BytesIO(content))
    layer = tar_bytes.getvalue()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [{"created_by": "test"}],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, **blob(json.dumps(config).encode())},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, **blob(gzip.compress(layer, mtime=0))}],
    }
    entry = {"mediaType": mt.OCI_MANIFEST, **blob(json.dumps(manifest).encode())}
    entry["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return root


@pytest.mark.oracle
@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
def test_skopeo_signed_schema1_digest_matches_skopeo(tmp_path: Path) -> None:
    layout = _oci_layout(tmp_path / "layout")
    out = tmp_path / "out"
    subprocess.run(
        [SKOPEO, "--insecure-policy", "copy", "-q", "--format", "v2s1", f"oci:{layout}:v1", f"dir:{out}"],
        check=True,
        timeout=120,
    )
    manifest = out / "manifest.json"
    data = manifest.read_bytes()
    assert b'"signatures"' in data
    expected = subprocess.run(
        [SKOPEO, "manifest-digest", str(manifest)], check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()
    assert manifest_digest(data, mt.DOCKER_SCHEMA1_SIGNED) == expected
    assert digest_of(data) != expected  # the signatures really were cut out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def schema1_registry(tmp_path: Path) -> Iterator[str]:
    """docker-registry on 127.0.0.1 with schema 1 enabled; yields host:port."""
    if REGISTRY is None:
        pytest.skip("docker-registry is not installed")
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "log": {"level": "error"},
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "storage")}},
                "http": {"addr": f"127.0.0.1:{port}"},
                "compatibility": {"schema1": {"enabled": True}},
            }
        )
    )
    process = subprocess.Popen(
        [REGISTRY, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):  # noqa: S310
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        else:
            pytest.fail("docker-registry did not start")
        yield f"127.0.0.1:{port}"
    finally:
        processes.stop(process, timeout=10)


def _get_manifest(host: str, tag: str, accept: str | None) -> tuple[bytes, str, str]:
    request = urllib.request.Request(f"http://{host}/v2/test/app/manifests/{tag}")  # noqa: S310
    if accept:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.read(), response.headers["Content-Type"], response.headers["Docker-Content-Digest"]


@pytest.mark.registry
@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
def test_registry_signed_schema1_digests_match_docker_content_digest(
    tmp_path: Path, schema1_registry: str
) -> None:
    layout = _oci_layout(tmp_path / "layout")
    for tag, image_format in (("v2", "v2s2"), ("v1", "v2s1")):
        subprocess.run(
            [
                SKOPEO,
                "--insecure-policy",
                "copy",
                "-q",
                "--dest-tls-verify=false",
                "--format",
                image_format,
                f"oci:{layout}:v1",
                f"docker://{schema1_registry}/test/app:{tag}",
            ],
            check=True,
            timeout=120,
        )
    # Pushed as schema 1 (compact, signed by skopeo), and converted on the fly by the registry from
    # schema 2 when the Accept header lacks the v2 type (pretty-printed, signed by the registry).
    for tag, accept in (("v1", mt.DOCKER_SCHEMA1_SIGNED), ("v2", None)):
        body, content_type, announced = _get_manifest(schema1_registry, tag, accept)
        assert mt.strip_parameters(content_type) == mt.DOCKER_SCHEMA1_SIGNED
        assert b'"signatures"' in body
        assert manifest_digest(body, content_type) == announced
        assert digest_of(body) != announced
    body, content_type, announced = _get_manifest(schema1_registry, "v2", mt.DOCKER_MANIFEST)
    assert mt.strip_parameters(content_type) == mt.DOCKER_MANIFEST
    assert manifest_digest(body, content_type) == announced == digest_of(body)
