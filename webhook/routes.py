"""Where a runtime asks for an image: its endpoints in order, as the node's configuration lays them out.

A route is worked out per image and per runtime kind, from the node's own file when the policy names one
(containerd's `hosts.toml` directory, CRI-O's `registries.conf`), else from the policy's `registries:`
entry (its `mirrors`, then the registry itself unless `upstreamFallback: false`).

containerd asks the hosts again for every request, in order (a tag only of hosts that can `resolve`;
blobs and manifests by digest of every host, as containerd 2.1's fetcher does); CRI-O settles on the
first endpoint that serves the manifest and fetches everything else there (`sticky`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

from webhook.cache import weighs_itself, weight_of_fields
from webhook.errors import InvalidReference
from webhook.nodeconfig import (
    PULL,
    RESOLVE,
    ContainerdHosts,
    CrioRegistries,
    HostsEntry,
    is_localhost,
    matching_prefix,
)
from webhook.policy import MirrorOptions, Policy, RegistryOptions
from webhook.reference import ImageReference, parse

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"  # what containerd and containers/image contact for docker.io
_ALL = frozenset({PULL, RESOLVE})


@weighs_itself
@dataclass(frozen=True)
class Endpoint:
    """One place a runtime asks, with the settings it asks with."""

    name: str  # what credentials are looked up under and messages say: 'docker.io', a mirror's host
    host: str  # host[:port] contacted: 'registry-1.docker.io'
    repository: str  # the repository asked for there (CRI-O may rewrite it)
    options: RegistryOptions  # TLS, the network guard and token realms for this endpoint
    scheme: str = "https"
    http_fallback: bool = (
        False  # plain http after https failed to connect (containerd localhost, CRI-O insecure)
    )
    path: str = "/v2"  # the API root (containerd's override_path may change it)
    capabilities: frozenset[str] = _ALL
    mirror: bool = False
    namespace: str | None = None  # containerd's ?ns=<registry> for a host that is not the registry itself

    @property
    def role(self) -> str:
        return "mirror" if self.mirror else "registry"

    @cached_property
    def weight(self) -> int:
        """What it holds (its settings too, unless the policy holds them): cache keys and answers of an
        image refer to the same endpoint, so it is weighed once."""
        return weight_of_fields(self)

    def describe(self) -> str:
        return (
            f"{self.role} {self.host}" if self.host == self.name else f"{self.role} {self.name} ({self.host})"
        )


@weighs_itself
@dataclass(frozen=True)
class Route:
    """The endpoints for one image on one kind of runtime, in the order the runtime tries them."""

    registry: str
    endpoints: tuple[Endpoint, ...]
    sticky: bool = False  # CRI-O: the endpoint that served the manifest serves everything after it
    blocked: str | None = None  # why the node refuses this registry outright
    source: str = "policy"  # where the route comes from: 'policy', a hosts directory, a registries.conf

    @cached_property
    def weight(self) -> int:
        """What it holds, its endpoints included: the tag, pinned tag and layer keys of an image share
        one route, so it is weighed once."""
        return weight_of_fields(self)

    def for_tag(self) -> tuple[Endpoint, ...]:
        """Endpoints that may resolve a tag (containerd: capabilities pull and resolve)."""
        return tuple(e for e in self.endpoints if _ALL <= e.capabilities)

    def for_digest(self) -> tuple[Endpoint, ...]:
        """Endpoints asked for a manifest by digest when resolving it (capability pull)."""
        return tuple(e for e in self.endpoints if PULL in e.capabilities)

    def for_fetch(self) -> tuple[Endpoint, ...]:
        """Endpoints asked for content once resolved: containerd 2.1's fetcher tries every host in order
        (as long as one may pull); CRI-O keeps to the endpoint it settled on."""
        return self.endpoints if self.for_digest() else ()

    def settled_on(self, endpoint: Endpoint) -> Route:
        """The route after `endpoint` served the manifest: CRI-O keeps to it, containerd does not."""
        return replace(self, endpoints=(endpoint,)) if self.sticky else self


def upstream_host(registry: str) -> str:
    return DOCKER_HUB_ENDPOINT if registry == DOCKER_HUB else registry


def route_for(policy: Policy, ref: ImageReference, runtime_kind: str) -> Route | None:
    """How a node of this runtime kind reaches `ref`'s registry; None when neither a node file nor a
    policy entry says anything about it (the registry client then asks the registry with its own settings)."""
    if runtime_kind == "cri-o" and policy.node.crio is not None:
        return crio_route(policy, ref, policy.node.crio)
    if runtime_kind == "containerd" and policy.node.containerd is not None:
        return containerd_route(policy, ref, policy.node.containerd)
    entry = policy.registry_options(ref.registry)
    if entry is None:
        return None
    return policy_route(entry, ref, sticky=runtime_kind == "cri-o")


def _entry(policy: Policy, host: str) -> RegistryOptions:
    return policy.registry_options(host) or RegistryOptions(host=host)


def policy_route(entry: RegistryOptions, ref: ImageReference, *, sticky: bool) -> Route:
    """The entry's mirrors in order, then the registry itself (unless upstreamFallback is false)."""
    endpoints = [_policy_mirror(entry, mirror, ref.repository) for mirror in entry.mirrors]
    if entry.upstream_fallback or not endpoints:
        upstream = upstream_host(ref.registry)
        scheme = "http" if entry.insecure else "https"
        endpoints.append(Endpoint(ref.registry, upstream, ref.repository, entry, scheme))
    # With one endpoint there is nothing to settle on: both runtimes ask alike.
    return Route(ref.registry, tuple(endpoints), sticky=sticky and len(endpoints) > 1)


def _policy_mirror(entry: RegistryOptions, mirror: MirrorOptions, repository: str) -> Endpoint:
    """A mirror with its entry's settings, except those the mirror writes itself."""
    options = replace(
        entry,
        host=mirror.host,
        insecure=entry.insecure if mirror.insecure is None else mirror.insecure,
        ca_file=mirror.ca_file or entry.ca_file,
        allow_private_network=(
            entry.allow_private_network
            if mirror.allow_private_network is None
            else mirror.allow_private_network
        ),
        token_realm_hosts=mirror.token_realm_hosts or entry.token_realm_hosts,
        mirrors=(),
    )
    scheme = "http" if options.insecure else "https"
    return Endpoint(
        mirror.host, mirror.host, repository, options, scheme, capabilities=mirror.capabilities, mirror=True
    )


# ---- containerd ----------------------------------------------------------------------------------


def containerd_route(policy: Policy, ref: ImageReference, hosts: ContainerdHosts) -> Route:
    """ConfigureHosts of containerd 2.1 (no default scheme, as the CRI plugin calls it)."""
    configured = hosts.hosts(ref.registry)
    entries = list(configured) if configured is not None else [HostsEntry(host="")]
    if entries and entries[-1].host == "":
        entries[-1] = _default_host(ref.registry, entries[-1])
    guard = _entry(policy, ref.registry)
    endpoints = []
    for i, entry in enumerate(entries):
        mirror = i < len(entries) - 1
        scheme, fallback = entry.scheme, False
        explicit_tls = bool(entry.ca_files) or entry.skip_verify is not None
        if scheme == "http" and explicit_tls and _port(entry.host) != "80":
            scheme, fallback = "https", True  # containerd tries TLS first, then plain http
        listed = policy.registry_options(entry.host)
        base = listed or replace(guard, host=entry.host, mirrors=())
        options = replace(
            base,
            insecure=scheme == "http" or fallback,
            ca_file=entry.ca_files[0] if entry.ca_files else None,
            ca_files=entry.ca_files[1:],
            skip_verify=bool(entry.skip_verify),
        )
        is_registry = entry.host == ref.registry or (
            ref.registry == DOCKER_HUB and entry.host == DOCKER_HUB_ENDPOINT
        )
        endpoints.append(
            Endpoint(
                ref.registry if is_registry else entry.host,
                entry.host,
                ref.repository,
                options,
                scheme,
                http_fallback=fallback,
                path=entry.path,
                capabilities=entry.capabilities,
                mirror=mirror,
                namespace=None if is_registry else ref.registry,
            )
        )
    return Route(ref.registry, tuple(endpoints), source=hosts.directory)


def _default_host(registry: str, root: HostsEntry) -> HostsEntry:
    """The registry itself as the last host, as containerd fills it in."""
    everything = frozenset({PULL, RESOLVE, "push"})
    if registry == DOCKER_HUB:
        return replace(root, scheme="https", host=DOCKER_HUB_ENDPOINT, path="/v2", capabilities=everything)
    if is_localhost(registry):
        port = _port(registry)
        scheme = "https" if port in ("", "443") else "http"
        skip_verify = True if port != "80" else root.skip_verify
        return replace(
            root, scheme=scheme, host=registry, path="/v2", capabilities=everything, skip_verify=skip_verify
        )
    return replace(root, scheme="https", host=registry, path="/v2", capabilities=everything)


def _port(host: str) -> str:
    if host.startswith("["):
        rest = host[host.find("]") + 1 :] if "]" in host else ""
        return rest[1:] if rest.startswith(":") else ""
    return host.rsplit(":", 1)[1] if host.count(":") == 1 else ""


# ---- CRI-O ---------------------------------------------------------------------------------------


def crio_route(policy: Policy, ref: ImageReference, conf: CrioRegistries) -> Route:
    """containers/image's PullSourcesFromReference: mirrors (by pull-from-mirror), then the location."""
    found = conf.find(ref.name)
    if found is None:
        entry = _entry(policy, ref.registry)
        upstream = Endpoint(
            ref.registry, upstream_host(ref.registry), ref.repository, replace(entry, insecure=False)
        )
        return Route(ref.registry, (upstream,), sticky=True, source=conf.source)
    if found.blocked:
        return Route(
            ref.registry,
            (),
            sticky=True,
            blocked=f"blocked by the node's registries.conf ({conf.source})",
            source=conf.source,
        )
    digested = ref.digest is not None
    mirrors = []
    for mirror in found.mirrors:
        wanted = "digest-only" if found.mirror_by_digest_only else mirror.pull_from_mirror
        if (wanted == "digest-only" and not digested) or (wanted == "tag-only" and digested):
            continue
        mirrors.append(mirror)
    endpoints = []
    for i, source in enumerate([*mirrors, found.endpoint]):
        rewritten = _rewrite(ref, found.prefix, source.location)
        if rewritten is None:
            continue
        base = policy.registry_options(rewritten.registry) or replace(
            _entry(policy, ref.registry), host=rewritten.registry, mirrors=()
        )
        options = replace(base, insecure=source.insecure, skip_verify=source.insecure)
        endpoints.append(
            Endpoint(
                rewritten.registry,
                upstream_host(rewritten.registry),
                rewritten.repository,
                options,
                "https",
                http_fallback=source.insecure,
                mirror=i < len(mirrors),
            )
        )
    return Route(ref.registry, tuple(endpoints), sticky=True, source=conf.source)


def _rewrite(ref: ImageReference, prefix: str, location: str) -> ImageReference | None:
    """rewriteReference: the location takes the place of the matched prefix."""
    text = str(ref)
    if not location:  # a '*.example.com' prefix without a location: the reference as it is
        return ref
    length = matching_prefix(text, prefix)
    if length == -1:
        return None
    try:
        return parse(location + text[length:])
    except InvalidReference:
        return None


def short_name_candidates(
    policy: Policy, ref: ImageReference, image: str
) -> tuple[list[ImageReference], str | None]:
    """What CRI-O pulls for an unqualified name: (candidates in order, or the reason it refuses)."""
    conf = policy.node.crio
    if conf is None:
        return [ref], None
    bare = ref.repository.removeprefix("library/") if ref.registry == DOCKER_HUB else ref.repository
    alias = conf.aliases.get(bare)
    tail = (f":{ref.tag}" if ref.tag and ref.digest is None else "") + (
        f"@{ref.digest}" if ref.digest else ""
    )
    if alias is not None:
        return [parse(alias + tail)], None
    search = conf.unqualified_search_registries
    if not search:
        return [], (
            f"short name {image!r} did not resolve to an alias and no unqualified-search registries are"
            f" defined in {conf.source}"
        )
    if conf.short_name_mode == "enforcing" and len(search) > 1:
        return (
            [],
            f"short name mode is enforcing, but image name {image} returns ambiguous list"
            f" ({', '.join(search)})",
        )
    return [parse(f"{registry}/{bare}{tail}") for registry in search], None
