"""The nodes' own registry configuration, read the way the runtimes read it.

- containerd: a `certs.d` directory with one `<host>/hosts.toml` per registry (as
  `core/remotes/docker/config/hosts.go` of containerd 2.1 reads it): mirrors in file order, then the
  `server` (or the registry itself) as the last host; each host has a scheme, an API path, TLS settings
  and the capabilities it serves.
- CRI-O: `registries.conf` version 2 (as containers/image `pkg/sysregistriesv2` reads it): `[[registry]]`
  entries matched by the longest prefix, their mirrors and `pull-from-mirror` modes, `insecure`,
  `blocked`, `unqualified-search-registries` and `short-name-mode`.

Pure: the texts come in, data comes out; every problem is one ConfigError line naming the file.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.errors import ConfigError

RESOLVE = "resolve"
PULL = "pull"
PUSH = "push"
_CAPABILITIES = (PULL, RESOLVE, PUSH)
PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")
SHORT_NAME_MODES = ("disabled", "permissive", "enforcing")
DEFAULT_HOSTS_DIR = "_default"
# distribution/reference's domain grammar (what unqualified-search-registries entries must match).
_DOMAIN = re.compile(
    r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
    r"|\[(?:[a-fA-F0-9:]+)\])(?::[0-9]+)?"
)


@dataclass(frozen=True)
class NodeConfig:
    """The node files the policy names (`nodeConfig:`), read when the policy is loaded."""

    containerd_hosts_dir: str | None = None
    crio_registries_conf: str | None = None
    containerd: ContainerdHosts | None = None
    crio: CrioRegistries | None = None


# ---- containerd: hosts.toml ------------------------------------------------------------------------


@dataclass(frozen=True)
class HostsEntry:
    """One host of a hosts.toml (a `[host."…"]` table, or the `server` line); host '' = the registry."""

    scheme: str = ""
    host: str = ""
    path: str = "/v2"
    capabilities: frozenset[str] = frozenset(_CAPABILITIES)
    ca_files: tuple[str, ...] = ()
    skip_verify: bool | None = None


@dataclass(frozen=True)
class ContainerdHosts:
    """A certs.d directory: the hosts of each namespace directory ('docker.io', 'host_5000_', '_default')."""

    directory: str
    namespaces: Mapping[str, tuple[HostsEntry, ...]] = field(default_factory=dict)

    def hosts(self, registry: str) -> tuple[HostsEntry, ...] | None:
        """The configured hosts for `registry` as containerd finds them (hostPaths), None when none apply."""
        for name in _host_directories(registry):
            if name in self.namespaces:
                return self.namespaces[name]
        return None


def _host_directories(host: str) -> list[str]:
    """containerd's hostPaths: 'host_port_' (for 'host:port'), then the name itself, then '_default'."""
    names = []
    colon = host.rfind(":")
    if colon > 0:
        names.append(f"{host[:colon]}_{host[colon + 1 :]}_")
    return [*names, host, DEFAULT_HOSTS_DIR]


def parse_hosts_toml(text: str, source: str, base_dir: str) -> tuple[HostsEntry, ...]:
    """The hosts of one hosts.toml, mirrors in file order and the server last (its host may be '')."""
    data = _toml(text, source)
    tables = data.get("host", {})
    if not isinstance(tables, Mapping):
        raise ConfigError(f'{source}: host must be a table of [host."<url>"] tables')
    entries = []
    for name, table in tables.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f'{source}: host."{name}" must be a table')
        entries.append(_hosts_entry(str(name), table, source, base_dir, f'host."{name}"'))
    server = data.get("server", "")
    if not isinstance(server, str):
        raise ConfigError(f"{source}: server must be a string (a URL or host)")
    entries.append(_hosts_entry(server, data, source, base_dir, "server"))
    return tuple(entries)


def _hosts_entry(server: str, table: Mapping[str, Any], source: str, base_dir: str, where: str) -> HostsEntry:
    override_path = table.get("override_path", False)
    if not isinstance(override_path, bool):
        raise ConfigError(f"{source}: {where}: override_path must be true or false")
    scheme, host, path = "", "", "/v2"
    if server:
        url = server if server.startswith("http") else "https://" + server
        match = re.fullmatch(r"(https?)://([^/?#]+)([^?#]*)", url)
        if match is None:
            raise ConfigError(f"{source}: {where}: unable to parse server {server!r}")
        scheme, host, path = match.group(1), match.group(2), match.group(3)
        if path:
            path = _clean_path(path)
            if not path.endswith("/v2") and not override_path:
                path += "/v2"
        elif not override_path:
            path = "/v2"
    skip_verify = table.get("skip_verify")
    if skip_verify is not None and not isinstance(skip_verify, bool):
        raise ConfigError(f"{source}: {where}: skip_verify must be true or false")
    return HostsEntry(
        scheme=scheme,
        host=host,
        path=path,
        capabilities=_capabilities(table.get("capabilities"), source, where),
        ca_files=_ca_files(table.get("ca"), source, where, base_dir),
        skip_verify=skip_verify,
    )


def _clean_path(path: str) -> str:
    """Go's path.Clean for an absolute URL path."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def _capabilities(value: Any, source: str, where: str) -> frozenset[str]:
    if value is None or value == []:
        return frozenset(_CAPABILITIES)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: {where}: capabilities must be a list of pull, resolve, push")
    unknown = [v for v in value if v.lower() not in _CAPABILITIES]
    if unknown:
        raise ConfigError(
            f"{source}: {where}: unknown capability {unknown[0]!r} (expected pull, resolve, push)"
        )
    return frozenset(v.lower() for v in value)


def _ca_files(value: Any, source: str, where: str, base_dir: str) -> tuple[str, ...]:
    if value is None:
        return ()
    files = [value] if isinstance(value, str) else value
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"{source}: {where}: ca must be a file name or a list of file names")
    return tuple(f if f.startswith("/") else f"{base_dir.rstrip('/')}/{f}" for f in files)


def is_localhost(host: str) -> bool:
    """containerd's IsLocalhost: 'localhost' or a loopback address, with or without a port."""
    name = host
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        name = host.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# ---- CRI-O: registries.conf ------------------------------------------------------------------------


@dataclass(frozen=True)
class CrioEndpoint:
    location: str
    insecure: bool = False
    pull_from_mirror: str = ""  # '' | all | digest-only | tag-only (mirrors only)


@dataclass(frozen=True)
class CrioRegistry:
    prefix: str
    endpoint: CrioEndpoint
    mirrors: tuple[CrioEndpoint, ...] = ()
    blocked: bool = False
    mirror_by_digest_only: bool = False


@dataclass(frozen=True)
class CrioRegistries:
    source: str
    registries: tuple[CrioRegistry, ...] = ()  # sorted by prefix, one per prefix (the first written)
    unqualified_search_registries: tuple[str, ...] = ()
    short_name_mode: str = "enforcing"
    aliases: Mapping[str, str] = field(default_factory=dict)  # short name -> fully qualified name

    def find(self, name: str) -> CrioRegistry | None:
        """FindRegistry: the entry whose prefix matches `name` (repository without tag) the longest."""
        best: CrioRegistry | None = None
        for registry in self.registries:
            if matching_prefix(name, registry.prefix) != -1 and (
                best is None or len(registry.prefix) > len(best.prefix)
            ):
                best = registry
        return best


_REGISTRIES_KEYS = {
    "registry",
    "unqualified-search-registries",
    "short-name-mode",
    "credential-helpers",
    "additional-layer-store-auth-helper",
    "aliases",
}


def parse_registries_conf(text: str, source: str) -> CrioRegistries:
    """registries.conf v2 with containers/image's own validation (postProcessRegistries)."""
    data = _toml(text, source)
    if "registries" in data:
        raise ConfigError(f"{source}: version 1 [registries.*] tables are not supported; use version 2")
    unknown = sorted(set(data) - _REGISTRIES_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}")
    entries = data.get("registry", [])
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise ConfigError(f"{source}: registry must be an array of [[registry]] tables")
    registries = [_crio_registry(entry, source) for entry in entries]
    _check_conflicts(registries, source)
    search = data.get("unqualified-search-registries", [])
    if not isinstance(search, list) or not all(isinstance(s, str) for s in search):
        raise ConfigError(f"{source}: unqualified-search-registries must be a list of registry hosts")
    search = [_location(s, source) for s in search]
    for entry in search:
        if _DOMAIN.fullmatch(entry) is None:
            raise ConfigError(f"{source}: invalid unqualified-search-registries entry {entry!r}")
    mode = data.get("short-name-mode", "enforcing") or "enforcing"
    if mode not in SHORT_NAME_MODES:
        raise ConfigError(
            f"{source}: invalid short-name mode {mode!r} (expected {', '.join(SHORT_NAME_MODES)})"
        )
    aliases = data.get("aliases", {})
    if not isinstance(aliases, Mapping) or not all(isinstance(v, str) and v for v in aliases.values()):
        raise ConfigError(f"{source}: aliases must map short names to fully qualified names")
    unique: dict[str, CrioRegistry] = {}
    for registry in registries:
        unique.setdefault(registry.prefix, registry)
    return CrioRegistries(
        source=source,
        registries=tuple(unique[prefix] for prefix in sorted(unique)),
        unqualified_search_registries=tuple(search),
        short_name_mode=mode,
        aliases={str(k): str(v) for k, v in aliases.items()},
    )


def _crio_registry(entry: Mapping[str, Any], source: str) -> CrioRegistry:
    location = _location(_string(entry, "location", source), source)
    prefix = _string(entry, "prefix", source)
    if not prefix:
        if not location:
            raise ConfigError(f"{source}: invalid condition: both location and prefix are unset")
        prefix = location
    else:
        prefix = _location(prefix, source)
        if not prefix.startswith("*.") and not location:
            raise ConfigError(
                f"{source}: invalid condition: location is unset and prefix is not in the format:"
                " *.example.com"
            )
    if entry.get("pull-from-mirror"):
        raise ConfigError(f"{source}: pull-from-mirror must not be set for a non-mirror registry {prefix!r}")
    by_digest_only = _flag(entry, "mirror-by-digest-only", source)
    mirrors = entry.get("mirror", [])
    if not isinstance(mirrors, list) or not all(isinstance(m, Mapping) for m in mirrors):
        raise ConfigError(
            f"{source}: registry {prefix!r}: mirror must be an array of [[registry.mirror]] tables"
        )
    parsed = []
    for mirror in mirrors:
        mirror_location = _location(_string(mirror, "location", source), source)
        if not mirror_location:
            raise ConfigError(f"{source}: invalid condition: mirror location is unset")
        mode = _string(mirror, "pull-from-mirror", source)
        if by_digest_only and mode:
            raise ConfigError(
                f"{source}: cannot set mirror usage mirror-by-digest-only for the registry ({prefix!r}) and"
                f" pull-from-mirror for per-mirror ({mirror_location!r}) at the same time"
            )
        if mode and mode not in PULL_FROM_MIRROR:
            raise ConfigError(
                f"{source}: unsupported pull-from-mirror value {mode!r} for mirror {mirror_location!r}"
            )
        parsed.append(CrioEndpoint(mirror_location, _flag(mirror, "insecure", source), mode))
    return CrioRegistry(
        prefix=prefix,
        endpoint=CrioEndpoint(location, _flag(entry, "insecure", source)),
        mirrors=tuple(parsed),
        blocked=_flag(entry, "blocked", source),
        mirror_by_digest_only=by_digest_only,
    )


def _check_conflicts(registries: list[CrioRegistry], source: str) -> None:
    seen: dict[str, CrioRegistry] = {}
    for registry in registries:
        key = registry.endpoint.location or registry.prefix
        other = seen.setdefault(key, registry)
        for setting in ("insecure", "blocked"):
            mine = registry.endpoint.insecure if setting == "insecure" else registry.blocked
            theirs = other.endpoint.insecure if setting == "insecure" else other.blocked
            if mine != theirs:
                raise ConfigError(
                    f"{source}: registry {registry.endpoint.location!r} is defined multiple times with"
                    f" conflicting {setting!r} setting"
                )


def _location(value: str, source: str) -> str:
    trimmed = value.rstrip("/")
    if trimmed.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: invalid location {value!r}: URI schemes are not supported")
    return trimmed


def _string(table: Mapping[str, Any], key: str, source: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a string")
    return value


def _flag(table: Mapping[str, Any], key: str, source: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: {key} must be true or false")
    return value


def matching_prefix(ref: str, prefix: str) -> int:
    """refMatchingPrefix: the length of `ref` the prefix matches, -1 when it does not match."""
    if prefix.startswith("*."):
        index = ref.find(prefix[1:])
        if index == -1 or "/" in ref[:index]:
            return -1
        index += len(prefix) - 1
        return index if index == len(ref) or ref[index] in ":/@" else -1
    if len(ref) < len(prefix) or not ref.startswith(prefix):
        return -1
    if len(ref) == len(prefix):
        return len(prefix)
    return len(prefix) if ref[len(prefix)] in ":/@" else -1


def _toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from None
