"""Debian's docker-registry (distribution 2.8) on 127.0.0.1: plain, TLS, htpasswd and token flavours."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.harness import processes
from tests.harness.images import Pusher, make_layer
from tests.harness.pki import CertificateAuthority, self_signed_pair
from tests.harness.tokenserver import AccessRules, TokenServer

REGISTRY_BINARY = "/usr/bin/docker-registry"
_START_ATTEMPTS = 3
_READY_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RegistryProcess:
    """One docker-registry process with its own storage and config under `directory`."""

    def __init__(
        self, directory: Path, settings: dict[str, Any], *, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.directory = directory
        self.settings = settings
        self.tls = tls
        self.log_file = directory / "registry.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def pid(self) -> int:
        assert self._process is not None, "the registry is not running"
        return self._process.pid

    def _config(self) -> dict[str, Any]:
        http: dict[str, Any] = {"addr": f"127.0.0.1:{self.port}", "secret": secrets.token_hex(16)}
        if self.tls:
            http["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        return {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.directory / "storage")},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
            "compatibility": {"schema1": {"enabled": True}},
            # Without an allow list the registry refuses every manifest carrying layer `urls`.
            "validation": {"manifests": {"urls": {"allow": [r"^https?://127\.0\.0\.1(:\d+)?/"]}}},
            **self.settings,
        }

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(_START_ATTEMPTS):
            self.port = free_port()
            config_file = self.directory / "config.yml"
            config_file.write_text(yaml.safe_dump(self._config()))
            with self.log_file.open("ab") as log:
                self._process = subprocess.Popen(
                    [REGISTRY_BINARY, "serve", str(config_file)], stdout=log, stderr=subprocess.STDOUT
                )
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError(f"docker-registry did not start; see {self.log_file}:\n{self._log_tail()}")

    def _wait_ready(self) -> bool:
        """Ready once /v2/ answers anything (200, or 401 when auth is on)."""
        assert self._process is not None
        deadline = time.monotonic() + _READY_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                httpx.get(f"{self.scheme}://127.0.0.1:{self.port}/v2/", verify=False, timeout=1)
                return True
            except httpx.TransportError:
                time.sleep(0.05)
        return False

    def _log_tail(self) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])

    def stop(self) -> None:
        if self._process is None:
            return
        processes.stop(self._process, timeout=10)
        self._process = None


class Registry(Pusher):
    """A running registry and the push API bound to it.

    `host` is '127.0.0.1:PORT', `url` its base URL, `ca_file` the CA that signed its certificate (None
    for plain HTTP). Authenticated flavours set `username`/`password` (a user who may read the private
    repositories) and push with an administrator account of their own; the token flavour also sets
    `outsider_username`/`outsider_password` (logs in, may not read private repositories) and
    `token_server`."""

    def __init__(
        self,
        process: RegistryProcess,
        *,
        ca_file: Path | None = None,
        push_credentials: tuple[str, str] | None = None,
    ) -> None:
        self.process = process
        self.username: str | None = None
        self.password: str | None = None
        self.outsider_username: str | None = None
        self.outsider_password: str | None = None
        self.token_server: TokenServer | None = None
        url = f"{process.scheme}://127.0.0.1:{process.port}"
        super().__init__(url, ca_file=ca_file, credentials=push_credentials)

    @property
    def log_file(self) -> Path:
        return self.process.log_file

    def push_private_image(self, repository: str = "private/app", tag: str = "v1") -> str:
        """A small image in a repository only `username` may read; returns its reference."""
        self.push_image(repository, tag, [make_layer(f"{self.host} {repository}:{tag}")])
        return self.ref(repository, tag)

    def stop(self) -> None:
        self.close()
        self.process.stop()
        if self.token_server is not None:
            self.token_server.stop()
        shutil.rmtree(self.process.directory / "storage", ignore_errors=True)


def _users(*names: str) -> dict[str, str]:
    return {name: secrets.token_urlsafe(12) for name in names}


def start_plain(directory: Path) -> Registry:
    """Plain HTTP, schema 1 pushes allowed, deletes enabled."""
    process = RegistryProcess(directory, {})
    process.start()
    return Registry(process)


def start_tls(directory: Path, ca: CertificateAuthority) -> Registry:
    pair = ca.server_pair("tls-registry")
    process = RegistryProcess(directory, {}, tls=(pair.cert_file, pair.key_file))
    process.start()
    return Registry(process, ca_file=ca.ca_file)


def htpasswd_line(username: str, password: str) -> str:
    """A bcrypt entry made by apache2-utils' htpasswd."""
    result = subprocess.run(
        ["htpasswd", "-Bbn", username, password], check=True, capture_output=True, text=True, timeout=30
    )
    return result.stdout.strip() + "\n"


def start_htpasswd(directory: Path, ca: CertificateAuthority) -> Registry:
    """HTTPS + htpasswd (bcrypt); htpasswd has no per-repository rights, so every user reads everything."""
    directory.mkdir(parents=True, exist_ok=True)
    users = _users("pusher", "reader")
    password_file = directory / "htpasswd"
    password_file.write_text("".join(htpasswd_line(u, p) for u, p in users.items()))
    pair = ca.server_pair("htpasswd-registry")
    settings = {"auth": {"htpasswd": {"realm": "pullcheck-test", "path": str(password_file)}}}
    process = RegistryProcess(directory, settings, tls=(pair.cert_file, pair.key_file))
    process.start()
    registry = Registry(process, ca_file=ca.ca_file, push_credentials=("pusher", users["pusher"]))
    registry.username, registry.password = "reader", users["reader"]
    return registry


def start_token(directory: Path, ca: CertificateAuthority) -> Registry:
    """HTTPS + token auth against a token server of our own (`registry.token_server`).

    `username` may read `private/*`; `outsider_username` logs in but may not; anyone, anonymous
    included, may pull every other repository."""
    directory.mkdir(parents=True, exist_ok=True)
    users = _users("pusher", "reader", "outsider")
    rules = AccessRules(users=users, admin="pusher", readers={"reader": {"private/*"}})
    service, issuer = "pullcheck-test-registry", "pullcheck-test-token-issuer"
    signer = self_signed_pair(directory / "signer", "token-signer", issuer)
    token_server = TokenServer(signer, ca.server_pair("token-server"), rules, service=service, issuer=issuer)
    token_server.start()
    pair = ca.server_pair("token-registry")
    settings = {
        "auth": {
            "token": {
                "realm": token_server.realm,
                "service": service,
                "issuer": issuer,
                "rootcertbundle": str(token_server.root_cert_bundle),
            }
        }
    }
    process = RegistryProcess(directory, settings, tls=(pair.cert_file, pair.key_file))
    try:
        process.start()
    except Exception:
        token_server.stop()
        raise
    registry = Registry(process, ca_file=ca.ca_file, push_credentials=("pusher", users["pusher"]))
    registry.token_server = token_server
    registry.username, registry.password = "reader", users["reader"]
    registry.outsider_username, registry.outsider_password = "outsider", users["outsider"]
    return registry
