"""Registry credentials from docker config files and pull Secrets, matched the way the kubelet does.

The matching rules are the kubelet's credentialprovider keyring (`keyring.go`): a key is a
registry host with an optional scheme, port and path; host labels may be globs (`*.example.com`
matches exactly one label); the port must match; the key's path must be a prefix of the
repository path; every matching entry is returned, the most specific key first (reverse
lexical order, as the kubelet sorts); Docker Hub's `index.docker.io` key also serves images of
`docker.io`.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from webhook.errors import ConfigError

DOCKER_HUB = "docker.io"
_DOCKER_HUB_KEY = "index.docker.io"
# Top-level keys of a config.json: with any of them the credentials live under "auths" only.
_CONFIG_JSON_KEYS = frozenset(
    {
        "auths",
        "credsStore",
        "credHelpers",
        "HttpHeaders",
        "psFormat",
        "imagesFormat",
        "detachKeys",
        "proxies",
        "currentContext",
        "experimental",
        "plugins",
        "aliases",
        "features",
    }
)
# Keys the fingerprints and identities are keyed with: they never leave this process, so a
# fingerprint in a log or a cache key tells nothing about the password behind it.
_FINGERPRINT_KEY = secrets.token_bytes(32)


def _keyed_hash(*parts: str) -> str:
    mac = hmac.new(_FINGERPRINT_KEY, digestmod=hashlib.sha256)
    for part in parts:
        encoded = part.encode("utf-8", "surrogatepass")
        mac.update(len(encoded).to_bytes(8, "big") + encoded)
    return mac.hexdigest()


@dataclass(frozen=True)
class Credential:
    """One username/password (or identity token) pair; `source` says where it came from and is safe to log."""

    username: str
    password: str = field(repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = ""

    @property
    def identity(self) -> str:
        """A keyed hash of the secret parts: tells two credentials apart without revealing either."""
        return _keyed_hash("credential", self.username, self.password, self.identity_token)


@dataclass(frozen=True)
class _Entry:
    key: str  # schemeless 'host[:port][/path]', as the kubelet stores it
    credential: Credential


def _normalise_key(location: str) -> str:
    """A docker config key as the kubelet indexes it: scheme dropped, `/v1/` and `/v2/` mean the host."""
    value = location if location.startswith(("https://", "http://")) else "https://" + location
    parsed = urlsplit(value)
    path = parsed.path
    if path.startswith(("/v1/", "/v2/")):
        path = path[3:]
    return parsed.netloc + path if path not in ("", "/") else parsed.netloc


def _split_host(key_or_image: str) -> tuple[list[str], str, str]:
    """(host labels, port, path) of a schemeless key or image name."""
    parsed = urlsplit("https://" + key_or_image)
    host, port = parsed.netloc, ""
    if host.startswith("["):
        end = host.find("]")
        if end != -1 and host[end + 1 : end + 2] == ":":
            host, port = host[: end + 1], host[end + 2 :]
    elif host.count(":") == 1:
        host, port = host.split(":")
    return host.lower().split("."), port, parsed.path


def urls_match(glob: str, target: str) -> bool:
    """The kubelet's URLsMatchStr: host globs label by label, equal ports, the glob's path a prefix."""
    glob_labels, glob_port, glob_path = _split_host(glob)
    target_labels, target_port, target_path = _split_host(target)
    if glob_port != target_port or len(glob_labels) != len(target_labels):
        return False
    if not target_path.startswith(glob_path):
        return False
    return all(fnmatch.fnmatchcase(t, g) for g, t in zip(glob_labels, target_labels, strict=True))


def _is_docker_hub(host: str) -> bool:
    return host in (DOCKER_HUB, _DOCKER_HUB_KEY)


def _decode_auth(value: str, where: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ConfigError(f"{where}: 'auth' is not base64 of username:password") from None
    username, colon, password = decoded.partition(":")
    if not colon:
        raise ConfigError(f"{where}: 'auth' is not base64 of username:password")
    return username, password


def _string_field(entry: Mapping[str, Any], name: str, where: str) -> str:
    value = entry.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: '{name}' must be a string")
    return value


def _credential(location: str, entry: Any, source: str) -> Credential | None:
    where = f"{source}: entry {location!r}"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be an object")
    username = _string_field(entry, "username", where)
    password = _string_field(entry, "password", where)
    auth = _string_field(entry, "auth", where)
    if auth:
        username, password = _decode_auth(auth, where)
    identity_token = _string_field(entry, "identitytoken", where)
    if not (username or password or identity_token):
        return None  # an entry kept only for a credential helper: nothing to send
    return Credential(username, password, identity_token, source)


class Keyring:
    """Credentials indexed by registry location; immutable, comparable by a keyed hash of its content."""

    def __init__(self, groups: tuple[tuple[_Entry, ...], ...] = ()) -> None:
        # Each group is one docker config, sorted as the kubelet sorts one; lookups concatenate
        # the groups in order, like the kubelet's union of pull-secret and node keyrings.
        self._groups = groups
        self._fingerprint = _keyed_hash(
            "keyring",
            *(f"{g}\0{e.key}\0{e.credential.identity}" for g, group in enumerate(groups) for e in group),
        )

    @classmethod
    def empty(cls) -> Keyring:
        return cls()

    @classmethod
    def from_docker_config(cls, data: Mapping[str, Any], source: str) -> Keyring:
        """From a config.json / .dockerconfigjson (`{"auths": {...}}`) or a legacy .dockercfg (no wrapper)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: a docker config must be a JSON object")
        if _CONFIG_JSON_KEYS & data.keys():
            auths = data.get("auths") or {}
            if not isinstance(auths, Mapping):
                raise ConfigError(f"{source}: 'auths' must be an object")
        else:
            auths = data
        entries: list[_Entry] = []
        for location, entry in auths.items():
            if not isinstance(location, str) or not location.strip():
                raise ConfigError(f"{source}: a registry key is empty")
            credential = _credential(location, entry, source)
            if credential is not None:
                try:
                    key = _normalise_key(location.strip())
                except ValueError:  # urlsplit: 'Invalid IPv6 URL'
                    raise ConfigError(f"{source}: {location!r} is not a registry location") from None
                entries.append(_Entry(key, credential))
        # Reverse lexical order puts 'quay.io/team' before 'quay.io' (the kubelet's "most specific").
        # The sort is stable, so entries of one key keep their file order.
        entries.sort(key=lambda e: e.key, reverse=True)
        return cls((tuple(entries),) if entries else ())

    def merged(self, other: Keyring) -> Keyring:
        """Both keyrings' credentials, this one's first."""
        return Keyring(self._groups + other._groups)

    def lookup(self, host: str, repository: str) -> list[Credential]:
        """Every credential for `host/repository`, in the order the kubelet would try them."""
        image = f"{host}/{repository}" if repository else host
        found: list[Credential] = []
        for group in self._groups:
            matched = [e.credential for e in group if urls_match(e.key, image)]
            if not matched and _is_docker_hub(host):
                matched = [e.credential for e in group if e.key == _DOCKER_HUB_KEY]
            found.extend(matched)
        return found

    @property
    def fingerprint(self) -> str:
        """A keyed hash of every entry: equal for equal content, never reversible to a secret."""
        return self._fingerprint

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keyring) and hmac.compare_digest(self._fingerprint, other._fingerprint)

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __repr__(self) -> str:
        sources = sorted({e.credential.source for group in self._groups for e in group})
        return f"Keyring({len(self)} entries from {sources})"
