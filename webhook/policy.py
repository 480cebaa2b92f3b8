"""The policy: what pullcheck checks, for which targets, and what it does about findings.

Built from a mapping (the YAML file, already parsed) with one clear error per bad field; the same
policy serves `check`, `serve` and `audit`.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar, get_args

from webhook import findings as fd
from webhook.cache import held_elsewhere, hold, kept_when_short, weighs_itself, weight_of_fields
from webhook.codes import Code, Severity
from webhook.errors import ConfigError, InvalidReference
from webhook.findings import Finding
from webhook.nodeconfig import PULL, RESOLVE, NodeConfig
from webhook.reference import parse
from webhook.runtimes import Target, default_targets, parse_target

Mode = Literal["enforce", "warn", "audit"]
OnResolutionError = Literal["allow", "warn", "deny"]
MODES: tuple[Mode, ...] = get_args(Mode)
RESOLUTION_OUTCOMES: tuple[OnResolutionError, ...] = get_args(OnResolutionError)
DEFAULT_RESOLUTION_TIMEOUT = 8.0  # seconds; below the webhook's default 10 s timeoutSeconds
DEFAULT_CONNECTIONS_PER_REGISTRY = 32
# A cold Pod of 30 images of 40 layers makes some 1,300 requests; a registry answering with ever more
# layers or children, as fast as they are asked, would make them until the deadline.
DEFAULT_REQUESTS_PER_ADMISSION = 4096
MAX_REQUESTS_PER_ADMISSION = 1_000_000
# The apiserver caps a webhook's timeoutSeconds at 30 and pullcheck answers by the deadline plus 0.5 s.
MAX_RESOLUTION_TIMEOUT = 29
MIN_AUDIT_INTERVAL = 60  # seconds; 0 turns the background audit off
MAX_CACHE_MIB = 65536
MAX_CONNECTIONS_PER_REGISTRY = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class CacheLimits:
    """Bytes each cache of one worker process may hold (the policy's `caches`, given in MiB).

    The defaults, 124 MiB together, leave room under the chart's 512 MiB memory limit for a worker's own
    ~80 MiB and the documents being read at any moment."""

    documents: int = 96 * MIB  # manifests, indexes and configs, weighed parsed
    answers: int = 16 * MIB  # tag answers, layer presence and whole image answers
    tokens: int = 4 * MIB  # registry bearer tokens (and the challenges that asked for them)
    pull_secrets: int = 8 * MIB  # keyrings of pull secrets and ServiceAccounts' secret names


DEFAULT_CACHES = CacheLimits()


@held_elsewhere
@dataclass(frozen=True)
class MirrorOptions:
    """One of an entry's `mirrors`: unset settings are the entry's own."""

    host: str
    insecure: bool | None = None
    ca_file: str | None = None
    allow_private_network: bool | None = None
    token_realm_hosts: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset({PULL, RESOLVE})  # resolve: tags; pull: content by digest


@weighs_itself
@dataclass(frozen=True)
class RegistryOptions:
    """One entry of the policy's `registries:` list: how to reach a registry host."""

    host: str  # 'registry.example.com:5000', 'docker.io', '127.0.0.1:5000', '[::1]:5000'
    insecure: bool = False  # plain HTTP allowed for this host (otherwise https only)
    ca_file: str | None = None  # extra CA bundle for this host, on top of the system CAs
    allow_private_network: bool = False  # lifts the network guard for this host only
    token_realm_hosts: tuple[str, ...] = field(default=())  # extra hosts allowed to receive credentials
    mirrors: tuple[MirrorOptions, ...] = ()  # tried in order before the registry itself
    upstream_fallback: bool = True  # ask the registry itself after its mirrors
    ca_files: tuple[str, ...] = ()  # more CA bundles (a hosts.toml `ca` list)
    skip_verify: bool = (
        False  # no certificate verification (hosts.toml skip_verify, registries.conf insecure)
    )

    @property
    def weight(self) -> int:
        """Nothing for the policy's own entries (every route and answer of their registry refers to them,
        see Policy); what they hold for settings worked out per image (a mirror's, a node file's, a host
        outside the policy), which live as long as the cache entries that refer to them."""
        return weight_of_fields(self)


@dataclass(frozen=True)
class Exemptions:
    namespaces: tuple[str, ...] = ()  # glob patterns on the namespace
    images: tuple[str, ...] = ()  # glob patterns on the image as written or in its normalised form
    registries: tuple[str, ...] = ()  # registry hosts, e.g. registry.example.com:5000

    def exempt_namespace(self, namespace: str) -> bool:
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.namespaces)

    def exempt_image(self, image: str, normalised: str | None, registry: str | None) -> bool:
        if registry is not None and registry in self.registries:
            return True
        forms = [image] if normalised is None else [image, normalised]
        return any(fnmatch.fnmatchcase(form, pattern) for form in forms for pattern in self.images)

    def exempt_reference(self, image: str) -> bool:
        """exempt_image for an image as written (in a Pod spec): its normalised form and registry too."""
        if not self.images and not self.registries:
            return False
        normalised, registry = _parsed(image)
        return self.exempt_image(image, normalised, registry)


@kept_when_short(max_length=512, max_entries=4096)  # every admission asks again for the same few images
def _parsed(image: str) -> tuple[str | None, str | None]:
    """The normalised form and registry of an image as written; (None, None) when it does not parse."""
    try:
        ref = parse(image)
    except InvalidReference:
        return None, None
    return str(ref), ref.registry


@dataclass(frozen=True)
class Policy:
    mode: Mode = "warn"
    on_resolution_error: OnResolutionError = "warn"
    targets: tuple[Target, ...] = field(default_factory=lambda: tuple(default_targets()))
    registries: tuple[RegistryOptions, ...] = ()
    docker_config: str | None = None
    severities: Mapping[Code, Severity] = field(default_factory=dict)
    exemptions: Exemptions = field(default_factory=Exemptions)
    resolution_timeout: float = DEFAULT_RESOLUTION_TIMEOUT
    audit_interval: float = 0.0  # seconds between background audits in `pullcheck serve`; 0: none
    pin_digests: bool = False  # POST /mutate pins each judged image to the digest it was judged at
    # The cluster's containerd 2.1+ Nodes use the local pull path (`use_local_image_pull`), not the
    # transfer service; a Node does not report which.
    local_image_pull: bool = False
    node: NodeConfig = field(default_factory=NodeConfig)  # the nodes' own registry files
    caches: CacheLimits = DEFAULT_CACHES
    connections_per_registry: int = DEFAULT_CONNECTIONS_PER_REGISTRY  # in flight per registry origin
    # Registry requests one admission may make, all its images together (the background audit: per image).
    requests_per_admission: int = DEFAULT_REQUESTS_PER_ADMISSION

    @staticmethod
    def from_mapping(data: Any, source: str = "policy") -> Policy:
        return _PolicyReader(source).read(data)

    def __post_init__(self) -> None:
        # The policy holds its registry entries: cache entries that refer to them weigh nothing for
        # them (while the policy lives; an entry that outlives a reload keeps the few it refers to).
        for entry in self.registries:
            hold(entry)

    def with_registries(self, extra: Iterable[RegistryOptions]) -> Policy:
        """This policy with more registries; an extra entry replaces one for the same host."""
        added = list(extra)
        hosts = {r.host for r in added}
        return replace(
            self, registries=tuple(r for r in self.registries if r.host not in hosts) + tuple(added)
        )

    def registry_options(self, host: str) -> RegistryOptions | None:
        return next((r for r in self.registries if r.host == host), None)

    def severity(self, finding: Finding) -> Severity:
        """The severity the policy gives a finding: an override, onResolutionError, or the default."""
        if finding.code in self.severities:
            return self.severities[finding.code]
        if finding.code in fd.RESOLUTION_CODES and not finding.from_node_config:
            return Severity(self.on_resolution_error)
        return finding.severity

    def apply(self, findings: Iterable[Finding]) -> tuple[Finding, ...]:
        """Findings with the policy's severities; an `allow` severity drops the finding."""
        adjusted = (replace(f, severity=self.severity(f)) for f in findings)
        return tuple(f for f in adjusted if f.severity != fd.ALLOW)


_Word = TypeVar("_Word", bound=str)

_TOP_KEYS = {
    "mode",
    "onResolutionError",
    "targets",
    "registries",
    "dockerConfig",
    "severities",
    "exemptions",
    "resolutionTimeoutSeconds",
    "auditIntervalSeconds",
    "pinDigests",
    "localImagePull",
    "nodeConfig",
    "caches",
    "connectionsPerRegistry",
    "registryRequestsPerAdmission",
}
_REGISTRY_KEYS = {
    "host",
    "insecure",
    "caFile",
    "allowPrivateNetwork",
    "mirror",
    "mirrors",
    "upstreamFallback",
    "tokenRealmHosts",
}
_MIRROR_KEYS = {"host", "insecure", "caFile", "allowPrivateNetwork", "tokenRealmHosts", "capabilities"}
_NODE_CONFIG_KEYS = {"containerdHostsDir", "crioRegistriesConf"}
_EXEMPTION_KEYS = {"namespaces", "images", "registries"}
_CACHE_KEYS = {
    "documentsMiB": "documents",
    "answersMiB": "answers",
    "tokensMiB": "tokens",
    "pullSecretsMiB": "pull_secrets",
}


class _PolicyReader:
    """Reads a parsed policy document, collecting one error per bad field."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []

    def error(self, path: str, problem: str) -> None:
        self.errors.append(f"{path}: {problem}")

    def unknown_keys(self, data: Mapping[Any, Any], known: Collection[str], path: str) -> None:
        """One error for each key of `data` (at `path`) that is not one of `known`."""
        for key in sorted(set(map(str, data)) - set(known)):
            self.error(
                f"{path}.{key}" if path else key, f"unknown key (expected one of {', '.join(sorted(known))})"
            )

    def read(self, data: Any) -> Policy:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{self.source}: the policy must be a mapping, not {type(data).__name__}")
        self.unknown_keys(data, _TOP_KEYS, "")
        policy = Policy(
            mode=self.choice(data, "mode", MODES, "warn"),
            on_resolution_error=self.choice(data, "onResolutionError", RESOLUTION_OUTCOMES, "warn"),
            targets=self.targets(data.get("targets")),
            registries=self.registries(data.get("registries")),
            docker_config=self.string(data.get("dockerConfig"), "dockerConfig"),
            severities=self.severities(data.get("severities")),
            exemptions=self.exemptions(data.get("exemptions")),
            resolution_timeout=self.timeout(data.get("resolutionTimeoutSeconds")),
            audit_interval=self.interval(data.get("auditIntervalSeconds")),
            pin_digests=self.boolean(data.get("pinDigests"), "pinDigests"),
            local_image_pull=self.boolean(data.get("localImagePull"), "localImagePull"),
            node=self.node_config(data.get("nodeConfig")),
            caches=self.caches(data.get("caches")),
            connections_per_registry=self.whole(
                data.get("connectionsPerRegistry"),
                "connectionsPerRegistry",
                DEFAULT_CONNECTIONS_PER_REGISTRY,
                MAX_CONNECTIONS_PER_REGISTRY,
            ),
            requests_per_admission=self.whole(
                data.get("registryRequestsPerAdmission"),
                "registryRequestsPerAdmission",
                DEFAULT_REQUESTS_PER_ADMISSION,
                MAX_REQUESTS_PER_ADMISSION,
            ),
        )
        if self.errors:
            raise ConfigError(f"{self.source}: " + "; ".join(self.errors))
        return policy

    def choice(self, data: Mapping[str, Any], key: str, allowed: tuple[_Word, ...], default: _Word) -> _Word:
        value = data.get(key, default)
        if value not in allowed:
            self.error(key, f"{value!r} is not one of {', '.join(allowed)}")
            return default
        return next(word for word in allowed if word == value)

    def string(self, value: Any, path: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.error(path, "must be a non-empty string")
            return None
        return value

    def strings(self, value: Any, path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.error(path, "must be a list of non-empty strings")
            return ()
        return tuple(value)

    def boolean(self, value: Any, path: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            self.error(path, "must be true or false")
            return False
        return value

    def timeout(self, value: Any) -> float:
        if value is None:
            return DEFAULT_RESOLUTION_TIMEOUT
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value <= MAX_RESOLUTION_TIMEOUT
        ):
            self.error(
                "resolutionTimeoutSeconds",
                f"must be a number of seconds above 0 and at most {MAX_RESOLUTION_TIMEOUT}",
            )
            return DEFAULT_RESOLUTION_TIMEOUT
        return float(value)

    def interval(self, value: Any) -> float:
        if value is None:
            return 0.0
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (value == 0 or MIN_AUDIT_INTERVAL <= value <= threading.TIMEOUT_MAX)
        ):
            self.error(
                "auditIntervalSeconds",
                f"must be 0 (no background audit) or at least {MIN_AUDIT_INTERVAL} seconds",
            )
            return 0.0
        return float(value)

    def caches(self, value: Any) -> CacheLimits:
        if value is None:
            return DEFAULT_CACHES
        if not isinstance(value, Mapping):
            self.error("caches", f"must be a mapping with {', '.join(_CACHE_KEYS)}")
            return DEFAULT_CACHES
        self.unknown_keys(value, _CACHE_KEYS, "caches")
        limits: dict[str, int] = {}
        for key in map(str, value):
            if key not in _CACHE_KEYS:
                continue
            size = value[key]
            if isinstance(size, bool) or not isinstance(size, int | float) or not 0 < size <= MAX_CACHE_MIB:
                self.error(f"caches.{key}", f"must be a number of MiB above 0 and at most {MAX_CACHE_MIB}")
                continue
            limits[_CACHE_KEYS[key]] = int(size * MIB)
        return replace(DEFAULT_CACHES, **limits)

    def whole(self, value: Any, key: str, default: int, maximum: int) -> int:
        """A whole number from 1 to `maximum`; `default` when absent."""
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
            self.error(key, f"must be a whole number from 1 to {maximum}")
            return default
        return value

    def targets(self, value: Any) -> tuple[Target, ...]:
        if value is None:
            return tuple(default_targets())
        if not isinstance(value, list) or not value:
            self.error("targets", "must be a non-empty list of {runtime, platform}")
            return tuple(default_targets())
        targets = []
        for i, entry in enumerate(value):
            path = f"targets[{i}]"
            if not isinstance(entry, Mapping) or set(entry) - {"runtime", "platform", "localImagePull"}:
                self.error(path, "must be a mapping with runtime, platform and optionally localImagePull")
                continue
            local = entry.get("localImagePull", False)
            if not isinstance(local, bool):
                self.error(f"{path}.localImagePull", "must be true or false")
                continue
            try:
                targets.append(
                    parse_target(
                        str(entry.get("runtime", "")),
                        str(entry.get("platform", "linux/amd64")),
                        local_pull=local,
                    )
                )
            except ValueError as exc:
                self.error(path, str(exc))
        return tuple(targets)

    def registries(self, value: Any) -> tuple[RegistryOptions, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error("registries", "must be a list of registry entries")
            return ()
        entries = []
        for i, entry in enumerate(value):
            path = f"registries[{i}]"
            if not isinstance(entry, Mapping):
                self.error(path, "must be a mapping with at least host")
                continue
            self.unknown_keys(entry, _REGISTRY_KEYS, path)
            host = self.string(entry.get("host"), f"{path}.host")
            if host is None:
                continue
            entries.append(
                RegistryOptions(
                    host=host,
                    insecure=self.boolean(entry.get("insecure"), f"{path}.insecure"),
                    ca_file=self.string(entry.get("caFile"), f"{path}.caFile"),
                    allow_private_network=self.boolean(
                        entry.get("allowPrivateNetwork"), f"{path}.allowPrivateNetwork"
                    ),
                    token_realm_hosts=self.strings(entry.get("tokenRealmHosts"), f"{path}.tokenRealmHosts"),
                    mirrors=self.mirrors(entry, path),
                    upstream_fallback=self.optional_boolean(
                        entry.get("upstreamFallback"), f"{path}.upstreamFallback"
                    )
                    is not False,
                )
            )
        return tuple(entries)

    def mirrors(self, entry: Mapping[str, Any], path: str) -> tuple[MirrorOptions, ...]:
        """`mirror: host` (one mirror) or `mirrors: [host | {host, …}]`, in the order they are tried."""
        value = entry.get("mirrors")
        if entry.get("mirror") is not None:
            if value is not None:
                self.error(f"{path}.mirror", "give either mirror or mirrors, not both")
                return ()
            value = [entry.get("mirror")]
            path += ".mirror"
        else:
            path += ".mirrors"
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error(path, "must be a list of mirror hosts or {host, …} mappings")
            return ()
        found = []
        for i, item in enumerate(value):
            where = f"{path}[{i}]" if not path.endswith(".mirror") else path
            if isinstance(item, str) and item:
                found.append(MirrorOptions(host=item))
                continue
            if not isinstance(item, Mapping):
                self.error(where, "must be a host or a mapping with at least host")
                continue
            self.unknown_keys(item, _MIRROR_KEYS, where)
            host = self.string(item.get("host"), f"{where}.host")
            if host is None:
                continue
            found.append(
                MirrorOptions(
                    host=host,
                    insecure=self.optional_boolean(item.get("insecure"), f"{where}.insecure"),
                    ca_file=self.string(item.get("caFile"), f"{where}.caFile"),
                    allow_private_network=self.optional_boolean(
                        item.get("allowPrivateNetwork"), f"{where}.allowPrivateNetwork"
                    ),
                    token_realm_hosts=self.strings(item.get("tokenRealmHosts"), f"{where}.tokenRealmHosts"),
                    capabilities=self.capabilities(item.get("capabilities"), f"{where}.capabilities"),
                )
            )
        return tuple(found)

    def optional_boolean(self, value: Any, path: str) -> bool | None:
        return None if value is None else self.boolean(value, path)

    def capabilities(self, value: Any, path: str) -> frozenset[str]:
        if value is None:
            return frozenset({PULL, RESOLVE})
        if not isinstance(value, list) or not value or not set(value) <= {PULL, RESOLVE}:
            self.error(path, "must be a non-empty list of pull and resolve")
            return frozenset({PULL, RESOLVE})
        return frozenset(value)

    def node_config(self, value: Any) -> NodeConfig:
        if value is None:
            return NodeConfig()
        if not isinstance(value, Mapping):
            self.error("nodeConfig", "must be a mapping with containerdHostsDir and crioRegistriesConf")
            return NodeConfig()
        self.unknown_keys(value, _NODE_CONFIG_KEYS, "nodeConfig")
        return NodeConfig(
            containerd_hosts_dir=self.string(
                value.get("containerdHostsDir"), "nodeConfig.containerdHostsDir"
            ),
            crio_registries_conf=self.string(
                value.get("crioRegistriesConf"), "nodeConfig.crioRegistriesConf"
            ),
        )

    def severities(self, value: Any) -> dict[Code, Severity]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error("severities", "must map finding codes to deny, warn, info or allow")
            return {}
        result = {}
        for code, severity in value.items():
            if code not in fd.CODES:
                self.error(f"severities.{code}", "unknown finding code")
            elif severity not in fd.SEVERITIES:
                self.error(f"severities.{code}", f"{severity!r} is not one of {', '.join(fd.SEVERITIES)}")
            else:
                result[Code(code)] = Severity(severity)
        return result

    def exemptions(self, value: Any) -> Exemptions:
        if value is None:
            return Exemptions()
        if not isinstance(value, Mapping):
            self.error("exemptions", "must be a mapping with namespaces, images and registries")
            return Exemptions()
        self.unknown_keys(value, _EXEMPTION_KEYS, "exemptions")
        return Exemptions(
            namespaces=self.strings(value.get("namespaces"), "exemptions.namespaces"),
            images=self.strings(value.get("images"), "exemptions.images"),
            registries=self.strings(value.get("registries"), "exemptions.registries"),
        )
