"""Routes: the endpoints each runtime asks, read from the policy or the nodes' files (pure, no network)."""

from __future__ import annotations

from webhook.nodeconfig import ContainerdHosts, parse_hosts_toml, parse_registries_conf
from webhook.policy import MirrorOptions, Policy, RegistryOptions
from webhook.reference import parse
from webhook.routes import containerd_route, crio_route, route_for

POLICY = Policy()


def hosts(**files: str) -> ContainerdHosts:
    return ContainerdHosts(
        "/certs.d", {name: parse_hosts_toml(text, name, f"/certs.d/{name}") for name, text in files.items()}
    )


def where(route: object) -> list[tuple[str, str, str, bool]]:
    return [(e.scheme, e.host, e.repository, e.mirror) for e in route.endpoints]  # type: ignore[attr-defined]


def test_containerd_defaults_without_a_hosts_file() -> None:
    empty = hosts()
    docker = containerd_route(POLICY, parse("nginx"), empty)
    assert where(docker) == [("https", "registry-1.docker.io", "library/nginx", False)]
    local = containerd_route(POLICY, parse("127.0.0.1:5000/app:v1"), empty).endpoints[0]
    # containerd: https without verification first, then plain http, for loopback registries
    assert (local.scheme, local.http_fallback, local.options.skip_verify) == ("https", True, True)
    other = containerd_route(POLICY, parse("registry.example.com/app:v1"), empty).endpoints[0]
    assert (other.scheme, other.http_fallback) == ("https", False)


def test_hosts_toml_mirrors_capabilities_and_namespace() -> None:
    text = (
        'server = "https://registry.example.com"\n'
        '[host."http://pull-only.internal:5000"]\n  capabilities = ["pull"]\n'
        '[host."https://both.internal/base"]\n  override_path = true\n  ca = "ca.pem"\n'
    )
    route = containerd_route(
        POLICY, parse("registry.example.com/team/app:v1"), hosts(**{"registry.example.com": text})
    )
    assert [e.host for e in route.for_tag()] == ["both.internal", "registry.example.com"]
    assert [e.host for e in route.for_fetch()] == [
        "pull-only.internal:5000",
        "both.internal",
        "registry.example.com",
    ]
    pull_only, both, server = route.endpoints
    assert (pull_only.namespace, server.namespace) == ("registry.example.com", None)
    assert (both.path, both.options.ca_file) == ("/base", "/certs.d/registry.example.com/ca.pem")
    assert server.path == "/v2" and not server.mirror


def test_hosts_directory_lookup_order() -> None:
    files = {
        "_default": '[host."https://fallback.internal"]\n',
        "registry.example.com_5000_": '[host."https://port-form.internal"]\n',
    }
    found = containerd_route(POLICY, parse("registry.example.com:5000/app:v1"), hosts(**files))
    assert found.endpoints[0].host == "port-form.internal"
    other = containerd_route(POLICY, parse("elsewhere.example.com/app:v1"), hosts(**files))
    assert [e.host for e in other.endpoints] == ["fallback.internal", "elsewhere.example.com"]


CONF = parse_registries_conf(
    "\n".join(
        [
            "[[registry]]",
            'prefix = "example.com/foo"',
            'location = "internal.example.com/bar"',
            "[[registry.mirror]]",
            'location = "digests.internal"',
            'pull-from-mirror = "digest-only"',
            "[[registry.mirror]]",
            'location = "tags.internal/cache"',
            'pull-from-mirror = "tag-only"',
            "insecure = true",
            "[[registry]]",
            'location = "example.com"',
            "[[registry]]",
            'prefix = "*.blocked.example"',
            "blocked = true",
        ]
    ),
    "registries.conf",
)
DIGEST = "sha256:" + "a" * 64


def test_crio_longest_prefix_rewrites_and_pull_from_mirror() -> None:
    tagged = crio_route(POLICY, parse("example.com/foo/app:v1"), CONF)
    assert where(tagged) == [
        ("https", "tags.internal", "cache/app", True),
        ("https", "internal.example.com", "bar/app", False),
    ]
    assert tagged.sticky and tagged.endpoints[0].http_fallback and tagged.endpoints[0].options.skip_verify
    pinned = crio_route(POLICY, parse(f"example.com/foo/app@{DIGEST}"), CONF)
    assert [e.host for e in pinned.endpoints] == ["digests.internal", "internal.example.com"]
    shorter = crio_route(POLICY, parse("example.com/other:v1"), CONF)
    assert where(shorter) == [("https", "example.com", "other", False)]


def test_crio_blocked_by_wildcard_prefix() -> None:
    route = crio_route(POLICY, parse("registry.blocked.example/app:v1"), CONF)
    assert route.blocked == "blocked by the node's registries.conf (registries.conf)"
    assert route.endpoints == ()


def test_policy_mirrors_inherit_the_entry_unless_they_say_otherwise() -> None:
    entry = RegistryOptions(
        host="registry.example.com",
        insecure=True,
        allow_private_network=True,
        mirrors=(
            MirrorOptions("a.internal"),
            MirrorOptions("b.internal", insecure=False, capabilities=frozenset({"pull"})),
        ),
        upstream_fallback=False,
    )
    route = route_for(Policy(registries=(entry,)), parse("registry.example.com/app:v1"), "containerd")
    assert route is not None
    a, b = route.endpoints
    assert (a.scheme, a.options.allow_private_network, a.options.host) == ("http", True, "a.internal")
    assert (b.scheme, b.options.allow_private_network) == ("https", True)
    assert route.for_tag() == (a,)
