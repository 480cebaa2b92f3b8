"""Pushing images over the registry HTTP API: blobs, manifests, indexes, and schema 1 through skopeo.

Everything is built from real bytes: layers are tar archives with one small file (gzip, zstd or
uncompressed), configs carry the layers' diff_ids, and every push function returns the manifest digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import ssl
import subprocess
import tarfile
import tempfile
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import zstandard

from webhook import mediatypes as mt

Json = dict[str, Any]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=False).encode()


@dataclass(frozen=True)
class Blob:
    """Bytes to upload, with the media type its descriptor announces."""

    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256(self.data)

    def descriptor(self, **extra: Any) -> Json:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


@dataclass(frozen=True)
class Layer(Blob):
    diff_id: str  # sha256 of the uncompressed tar


def tar_with_file(name: str, content: bytes, mode: int = 0o644) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(content), mode, 0
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def make_layer(content: str, compression: str = "gzip", media_type: str | None = None) -> Layer:
    """A one-file layer; `compression` is gzip, zstd or none. The file content makes it unique."""
    tar = tar_with_file("pullcheck.txt", content.encode())
    if compression == "gzip":
        data, default_type = gzip.compress(tar, mtime=0), mt.OCI_LAYER_GZIP
    elif compression == "zstd":
        data, default_type = zstandard.ZstdCompressor().compress(tar), mt.OCI_LAYER_ZSTD
    elif compression == "none":
        data, default_type = tar, mt.OCI_LAYER
    else:
        raise ValueError(f"unknown compression {compression!r}")
    return Layer(data, media_type or default_type, sha256(tar))


def make_config(
    diff_ids: Sequence[str],
    *,
    os: str = "linux",
    architecture: str = "amd64",
    variant: str = "",
    label: str = "",
    media_type: str = mt.OCI_CONFIG,
    entrypoint: Sequence[str] = (),
) -> Blob:
    """An image config whose rootfs lists `diff_ids` (pass other ones to make a mismatch)."""
    config: Json = {
        "architecture": architecture,
        "os": os,
        "config": {"Cmd": ["/pullcheck.txt"], "Labels": {"pullcheck.test": label}},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {n}"} for n in diff_ids],
    }
    if variant:
        config["variant"] = variant
    if entrypoint:
        config["config"] = {"Entrypoint": list(entrypoint), "Labels": {"pullcheck.test": label}}
    return Blob(canonical(config), media_type)


def image_manifest(
    config: Mapping[str, Any],
    layers: Sequence[Mapping[str, Any]],
    media_type: str = mt.OCI_MANIFEST,
    **extra: Any,
) -> Json:
    """An OCI or Docker v2s2 manifest body from descriptors; `extra` adds fields such as artifactType."""
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": dict(config),
        "layers": list(layers),
        **extra,
    }


def index_manifest(entries: Sequence[Mapping[str, Any]], media_type: str = mt.OCI_INDEX) -> Json:
    return {"schemaVersion": 2, "mediaType": media_type, "manifests": list(entries)}


def platform_entry(
    digest: str,
    size: int,
    media_type: str,
    os: str | None = None,
    architecture: str | None = None,
    variant: str = "",
) -> Json:
    """An index entry; without os/architecture it has no `platform` at all."""
    entry: Json = {"mediaType": media_type, "digest": digest, "size": size}
    if os and architecture:
        entry["platform"] = {
            "os": os,
            "architecture": architecture,
            **({"variant": variant} if variant else {}),
        }
    return entry


class _ChallengeAuth(httpx.Auth):
    """Answers a registry's 401 the way a client does: Basic directly, Bearer through the token realm."""

    def __init__(self, username: str, password: str, verify: ssl.SSLContext | bool) -> None:
        self._basic = httpx.BasicAuth(username, password)
        self._verify = verify
        self._tokens: dict[str, str] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        if response.status_code != 401:
            return
        challenge = response.headers.get("www-authenticate", "")
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            response = yield next(self._basic.auth_flow(request))
            return
        fields = dict(_challenge_params(params))
        key = f"{fields.get('service')}|{fields.get('scope')}"
        if key not in self._tokens:
            query = {k: v for k, v in fields.items() if k in ("service", "scope")}
            reply = httpx.get(fields["realm"], params=query, auth=self._basic, verify=self._verify)
            reply.raise_for_status()
            self._tokens[key] = reply.json()["token"]
        request.headers["Authorization"] = f"Bearer {self._tokens[key]}"
        yield request


def _challenge_params(text: str) -> Generator[tuple[str, str], None, None]:
    for part in text.split('",'):
        name, _, value = part.strip().partition("=")
        yield name.strip(), value.strip().strip('"')


class Pusher:
    """The push side of the registry HTTP API, bound to one registry."""

    def __init__(
        self, url: str, *, ca_file: Path | None = None, credentials: tuple[str, str] | None = None
    ) -> None:
        self.url = url
        self.host = url.split("://", 1)[1]
        self.ca_file = ca_file
        auth = _ChallengeAuth(*credentials, verify=self.verify) if credentials else None
        self._push_credentials = credentials
        self.http = httpx.Client(base_url=url, verify=self.verify, auth=auth, timeout=30)

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What to pass as httpx's `verify` to trust this registry."""
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True

    def ref(self, repository: str, tag_or_digest: str) -> str:
        separator = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"{self.host}/{repository}{separator}{tag_or_digest}"

    def push_blob(self, repository: str, data: bytes) -> str:
        """Monolithic upload: POST to open the session, PUT the bytes with the digest."""
        digest = sha256(data)
        started = self.http.post(f"/v2/{repository}/blobs/uploads/")
        started.raise_for_status()
        location = started.headers["location"]
        separator = "&" if "?" in location else "?"
        done = self.http.put(
            f"{location}{separator}digest={digest}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        done.raise_for_status()
        return digest

    def push_blobs(self, repository: str, blobs: Sequence[Blob]) -> None:
        for blob in blobs:
            self.push_blob(repository, blob.data)

    def push_manifest(
        self, repository: str, reference: str, body: Mapping[str, Any] | bytes, media_type: str
    ) -> str:
        """PUT a manifest under a tag or digest with an explicit Content-Type; returns its digest."""
        data = body if isinstance(body, bytes) else canonical(body)
        response = self.http.put(
            f"/v2/{repository}/manifests/{reference}", content=data, headers={"Content-Type": media_type}
        )
        if response.is_error:
            raise RuntimeError(
                f"manifest PUT {repository}:{reference} -> {response.status_code} {response.text}"
            )
        return response.headers.get("docker-content-digest") or sha256(data)

    def delete_blob(self, repository: str, digest: str) -> None:
        self.http.delete(f"/v2/{repository}/blobs/{digest}").raise_for_status()

    def delete_manifest(self, repository: str, digest: str) -> None:
        self.http.delete(f"/v2/{repository}/manifests/{digest}").raise_for_status()

    def manifest_size(self, repository: str, digest: str) -> int:
        response = self.http.get(
            f"/v2/{repository}/manifests/{digest}", headers={"Accept": ", ".join(mt.MANIFEST_ACCEPT)}
        )
        response.raise_for_status()
        return len(response.content)

    def push_image(
        self,
        repository: str,
        tag: str,
        layers: Sequence[Blob],
        config: Blob | None = None,
        *,
        manifest_type: str = mt.OCI_MANIFEST,
        **manifest_fields: Any,
    ) -> str:
        """Upload the layers and config, PUT the manifest; returns its digest.

        Without `config`, one is made from the layers' diff_ids (then every layer must be a `Layer`)."""
        if config is None:
            config_type = mt.DOCKER_CONFIG if manifest_type == mt.DOCKER_MANIFEST else mt.OCI_CONFIG
            diff_ids = [layer.diff_id for layer in layers if isinstance(layer, Layer)]
            assert len(diff_ids) == len(layers), "a made-up config needs Layer objects"
            config = make_config(diff_ids, label=tag, media_type=config_type)
        self.push_blobs(repository, [config, *layers])
        body = image_manifest(
            config.descriptor(), [layer.descriptor() for layer in layers], manifest_type, **manifest_fields
        )
        return self.push_manifest(repository, tag, body, manifest_type)

    def push_platform_image(
        self,
        repository: str,
        os: str,
        architecture: str,
        variant: str = "",
        *,
        manifest_type: str = mt.OCI_MANIFEST,
    ) -> Json:
        """A single-platform image pushed by digest; returns its index entry."""
        docker = manifest_type == mt.DOCKER_MANIFEST
        platform = "/".join(p for p in (os, architecture, variant) if p)
        layer = make_layer(f"{repository} {platform}", media_type=mt.DOCKER_LAYER_GZIP if docker else None)
        config = make_config(
            [layer.diff_id],
            os=os,
            architecture=architecture,
            variant=variant,
            label=platform,
            media_type=mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG,
        )
        self.push_blobs(repository, [config, layer])
        body = canonical(image_manifest(config.descriptor(), [layer.descriptor()], manifest_type))
        digest = self.push_manifest(repository, sha256(body), body, manifest_type)
        return platform_entry(digest, len(body), manifest_type, os, architecture, variant)

    def push_index(
        self, repository: str, tag: str, entries: Sequence[Mapping[str, Any]], media_type: str = mt.OCI_INDEX
    ) -> str:
        return self.push_manifest(repository, tag, index_manifest(entries, media_type), media_type)

    def push_schema1(self, repository: str, tag: str, content: str) -> str:
        """A signed schema 1 image, converted and signed by skopeo (the registry checks the JWS)."""
        layer = make_layer(content)
        config = make_config([layer.diff_id], label=tag)
        with tempfile.TemporaryDirectory(prefix="pullcheck-oci-") as scratch:
            layout = Path(scratch) / "layout"
            write_oci_layout(
                layout, [config, layer], image_manifest(config.descriptor(), [layer.descriptor()])
            )
            digest_file = Path(scratch) / "digest"
            command = ["skopeo", "copy", "--quiet", "--format", "v2s1", "--digestfile", str(digest_file)]
            command += self._skopeo_destination_flags()
            command += [f"oci:{layout}", f"docker://{self.ref(repository, tag)}"]
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
            return digest_file.read_text().strip()

    def _skopeo_destination_flags(self) -> list[str]:
        flags = (
            ["--dest-tls-verify=false"]
            if self.ca_file is None
            else ["--dest-cert-dir", str(self._cert_dir())]
        )
        if self._push_credentials:
            flags += ["--dest-creds", ":".join(self._push_credentials)]
        return flags

    def _cert_dir(self) -> Path:
        """containers/image reads `*.crt` files from a directory as extra CAs."""
        assert self.ca_file is not None
        directory = self.ca_file.parent / "skopeo-certs"
        directory.mkdir(exist_ok=True)
        (directory / "ca.crt").write_bytes(self.ca_file.read_bytes())
        return directory

    def close(self) -> None:
        self.http.close()


def write_oci_layout(directory: Path, blobs: Sequence[Blob], manifest: Mapping[str, Any]) -> None:
    """An OCI image layout with one manifest, as `skopeo copy oci:DIR` reads it."""
    blob_dir = directory / "blobs" / "sha256"
    blob_dir.mkdir(parents=True)
    manifest_blob = Blob(canonical(manifest), mt.OCI_MANIFEST)
    for blob in [*blobs, manifest_blob]:
        (blob_dir / blob.digest.removeprefix("sha256:")).write_bytes(blob.data)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (directory / "index.json").write_bytes(canonical(index_manifest([manifest_blob.descriptor()])))
