"""A token server of the tests' own for docker-registry's `auth: token`.

It checks Basic credentials and signs ES256 JWTs whose header carries `x5c` (its self-signed
certificate, the registry's `rootcertbundle`). Pull is granted on repositories the user may read,
push only to the administrator; anonymous callers may pull public repositories only. It counts the
requests it served and records the usernames it saw (never the passwords).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hmac
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.harness.pki import KeyPair

TOKEN_LIFETIME_SECONDS = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_es256(claims: dict[str, Any], signer: KeyPair) -> str:
    """A compact JWS: ES256 signature as the 64-byte r||s, the signing certificate in `x5c`."""
    certificate = base64.b64encode(signer.cert.public_bytes(serialization.Encoding.DER)).decode()
    header = {"typ": "JWT", "alg": "ES256", "x5c": [certificate]}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    der = signer.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@dataclass
class AccessRules:
    """Who may do what: `users` maps name to password; `readers` maps name to repository patterns."""

    users: dict[str, str]
    admin: str
    readers: dict[str, set[str]] = field(default_factory=dict)
    is_public: Callable[[str], bool] = lambda repository: not repository.startswith("private/")

    def actions(self, username: str | None, repository: str, wanted: list[str]) -> list[str]:
        if username == self.admin:
            return [a for a in wanted if a in ("pull", "push", "delete", "*")]
        patterns = self.readers.get(username or "", set())
        readable = self.is_public(repository) or any(fnmatch.fnmatchcase(repository, p) for p in patterns)
        return ["pull"] if readable and "pull" in wanted else []


class TokenServer:
    """A threaded HTTPS token endpoint on 127.0.0.1; `realm` is its URL."""

    def __init__(
        self, signer: KeyPair, tls: KeyPair, rules: AccessRules, *, service: str, issuer: str
    ) -> None:
        self.signer, self.rules, self.service, self.issuer = signer, rules, service, issuer
        self.requests_served = 0
        self.usernames_seen: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert_file, tls.key_file)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-server", daemon=True)

    @property
    def realm(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}/token"

    @property
    def root_cert_bundle(self) -> Path:
        return self.signer.cert_file

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def reset_counters(self) -> None:
        with self._lock:
            self.requests_served = 0
            self.usernames_seen.clear()

    def _authenticate(self, header: str | None) -> tuple[bool, str | None]:
        """(credentials acceptable, username); no header is an anonymous caller."""
        if not header:
            return True, None
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        with self._lock:
            self.usernames_seen.append(username)
        expected = self.rules.users.get(username)
        return expected is not None and hmac.compare_digest(expected, password), username

    def issue(self, username: str | None, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, wanted = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            granted = self.rules.actions(username, name, wanted.split(","))
            access.append({"type": "repository", "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": username or "",
            "aud": self.service,
            "exp": now + TOKEN_LIFETIME_SECONDS,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        return sign_es256(claims, self.signer)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                url = urlsplit(self.path)
                if url.path != "/token":
                    self._reply(404, {"errors": [{"code": "NOT_FOUND"}]})
                    return
                with server._lock:
                    server.requests_served += 1
                ok, username = server._authenticate(self.headers.get("Authorization"))
                if not ok:
                    self._reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                    return
                query = parse_qs(url.query)
                if query.get("service", [server.service])[0] != server.service:
                    self._reply(400, {"errors": [{"code": "DENIED", "message": "unknown service"}]})
                    return
                scopes = [s for value in query.get("scope", []) for s in value.split(" ")]
                token = server.issue(username, scopes)
                issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                body = {
                    "token": token,
                    "access_token": token,
                    "expires_in": TOKEN_LIFETIME_SECONDS,
                    "issued_at": issued_at,
                }
                self._reply(200, body)

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                """Silent: request lines could carry nothing secret, but the test output stays clean."""

        return Handler
