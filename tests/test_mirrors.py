"""Mirrors, as the policy writes them and as the nodes' own files (hosts.toml, registries.conf) do.

Two real registries on loopback: the `upstream` that images name and a `mirror` (the session registry).
The runtimes' pull paths read the same files as pullcheck and must agree with its verdicts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import registry as registries
from tests.harness.images import make_layer
from tests.harness.oracles import PULL_TIMEOUT_SECONDS, ContainerdCRI
from tests.harness.registry import Registry, free_port
from tests.test_app import answer, review
from webhook.app import Settings, create_app
from webhook.cli import main
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.policy import MirrorOptions, RegistryOptions
from webhook.reference import parse
from webhook.registry import RegistryClient

pytestmark = pytest.mark.registry

C21 = "containerd://2.1.9"
CRIO = "cri-o://1.33.0"


@dataclass(frozen=True)
class Images:
    healthy: str  # on the mirror only
    schema1: str  # schema 1, on the mirror only
    upstream_only: str  # missing on the mirror, present upstream
    upstream_only_too: str  # another one, for the mirror-down case (a runtime remembers what it pulled)
    layer_missing_on_mirror: str  # manifest on both, a layer only upstream


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    started = registries.start_plain(tmp_path_factory.mktemp("upstream"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def images(upstream: Registry, registry: Registry) -> Images:
    mirror = registry
    mirror.push_image("mirrored/app", "v1", [make_layer("served by the mirror")])
    mirror.push_schema1("mirrored/legacy", "v1", "schema 1 on the mirror")
    upstream.push_image("mirrored/fresh", "v1", [make_layer("only upstream")])
    upstream.push_image("mirrored/fresh", "v2", [make_layer("only upstream, too")])
    layer = make_layer("upstream keeps this layer")
    for side in (upstream, mirror):
        side.push_image("mirrored/partial", "v1", [layer])
    mirror.delete_blob("mirrored/partial", layer.digest)
    return Images(
        healthy=f"{upstream.host}/mirrored/app:v1",
        schema1=f"{upstream.host}/mirrored/legacy:v1",
        upstream_only=f"{upstream.host}/mirrored/fresh:v1",
        upstream_only_too=f"{upstream.host}/mirrored/fresh:v2",
        layer_missing_on_mirror=f"{upstream.host}/mirrored/partial:v1",
    )


def dead_host() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def hosts_dir(root: Path, registry: str, server: str, *mirrors: str) -> Path:
    """A containerd certs.d directory: `registry` served by `mirrors` in order, then `server`."""
    directory = root / registry
    directory.mkdir(parents=True)
    lines = [f'server = "http://{server}"', ""]
    for mirror in mirrors:
        lines += [f'[host."http://{mirror}"]', '  capabilities = ["pull", "resolve"]', ""]
    (directory / "hosts.toml").write_text("\n".join(lines))
    return root


def write_policy(path: Path, **policy: Any) -> Path:
    path.write_text(yaml.safe_dump(policy))
    return path


def check(
    policy: Path, runtime: str, *images: str, capsys: pytest.CaptureFixture[str]
) -> list[dict[str, Any]]:
    capsys.readouterr()
    status = main(["check", "--config", str(policy), "--output", "json", "--runtime", runtime, *images])
    out = capsys.readouterr().out
    assert status in (0, 1), out
    results: list[dict[str, Any]] = json.loads(out)["results"]
    return results


# ---- the policy's mirrors (issue: the broken `mirror:`) -------------------------------------------


def test_a_mirror_takes_its_entrys_settings(
    tmp_path: Path, images: Images, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's reproduction: the registry is down, the mirror (plain http, loopback) serves."""
    down = dead_host()
    entry = {"host": down, "mirror": registry.host, "insecure": True, "allowPrivateNetwork": True}
    policy = write_policy(tmp_path / "p.yaml", registries=[entry])
    healthy, legacy = (
        i.replace(images.healthy.split("/")[0], down) for i in (images.healthy, images.schema1)
    )
    ok, schema1 = check(policy, C21, healthy, legacy, capsys=capsys)
    assert ok["verdict"] == "allow", ok["findings"]
    assert ok["endpoints"] == [{"endpoint": registry.host, "role": "mirror", "runtimes": [C21]}]
    assert schema1["verdict"] == "deny"
    assert [f["code"] for f in schema1["findings"]] == ["SCHEMA1"]
    status = main(["check", "--config", str(policy), "--runtime", C21, healthy])
    assert status == 0
    assert f"served by mirror {registry.host}" in capsys.readouterr().out


def test_the_network_guard_lets_a_mirror_through_on_its_entrys_allowance(
    images: Images, registry: Registry
) -> None:
    down = dead_host()
    mirrors = (MirrorOptions(registry.host),)
    entry = RegistryOptions(host=down, insecure=True, allow_private_network=True, mirrors=mirrors)
    client = RegistryClient([entry], network_guard=True)
    try:
        head = client.head_manifest(parse(f"{down}/mirrored/app:v1"), "v1", Keyring.empty(), Deadline(10))
    finally:
        client.close()
    assert head.digest is not None
    assert head.endpoint is not None and head.endpoint.host == registry.host


def test_every_endpoint_tried_is_named_with_its_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    down, mirror = dead_host(), dead_host()
    entry = {"host": down, "mirrors": [{"host": mirror}], "insecure": True}
    policy = write_policy(tmp_path / "p.yaml", registries=[entry], onResolutionError="deny")
    [result] = check(policy, C21, f"{down}/team/app:v1", capsys=capsys)
    [finding] = result["findings"]
    assert finding["code"] == "REGISTRY_UNREACHABLE"
    assert f"mirror {mirror}: cannot connect" in finding["message"]
    assert f"registry {down}: cannot connect" in finding["message"]


def test_a_mirror_can_say_otherwise(
    tmp_path: Path, images: Images, registry: Registry, upstream: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mirror that writes `insecure: false` is asked over https (and fails), the registry then serves."""
    entry = {"host": upstream.host, "insecure": True, "mirrors": [{"host": registry.host, "insecure": False}]}
    policy = write_policy(tmp_path / "p.yaml", registries=[entry])
    [result] = check(policy, C21, images.upstream_only, capsys=capsys)
    assert result["verdict"] == "allow"
    assert result["endpoints"][0]["role"] == "registry"


def test_without_upstream_fallback_a_tag_the_mirror_lacks_is_not_found(
    tmp_path: Path, images: Images, registry: Registry, upstream: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = {"host": upstream.host, "insecure": True, "mirror": registry.host, "upstreamFallback": False}
    policy = write_policy(tmp_path / "p.yaml", registries=[entry])
    [result] = check(policy, C21, images.upstream_only, capsys=capsys)
    assert [f["code"] for f in result["findings"]] == ["NOT_FOUND"]
    assert registry.host in result["findings"][0]["message"]


# ---- node files: malformed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text", "problem"),
    [
        ("hosts", 'server = "http://a:1"\n[host."http://b:2"\ncapabilities = 1', "not valid TOML"),
        ("hosts", '[host."http://b:2"]\ncapabilities = ["pull", "fly"]', "unknown capability 'fly'"),
        ("crio", '[[registry]]\nlocation = "https://a"', "URI schemes are not supported"),
        (
            "crio",
            '[[registry]]\nlocation = "a"\n[[registry.mirror]]\nlocation = "b"\npull-from-mirror = "x"',
            "unsupported pull-from-mirror value 'x'",
        ),
        ("crio", 'short-name-mode = "lenient"', "invalid short-name mode 'lenient'"),
    ],
)
def test_a_malformed_node_file_is_one_line_and_exit_2(
    kind: str, text: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if kind == "hosts":
        (tmp_path / "certs.d" / "r.example").mkdir(parents=True)
        (tmp_path / "certs.d" / "r.example" / "hosts.toml").write_text(text)
        node = {"containerdHostsDir": str(tmp_path / "certs.d")}
    else:
        (tmp_path / "registries.conf").write_text(text)
        node = {"crioRegistriesConf": str(tmp_path / "registries.conf")}
    policy = write_policy(tmp_path / "p.yaml", nodeConfig=node)
    status = main(["check", "--config", str(policy), "r.example/app:v1"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and problem in err, err


# ---- containerd: hosts.toml, against containerd 2.1 itself -----------------------------------------


@pytest.mark.oracle
def test_containerd_and_pullcheck_read_the_same_hosts_toml(
    images: Images,
    registry: Registry,
    upstream: Registry,
    containerd2_oracle: ContainerdCRI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """containerd 2.1's CRI PullImage (then CreateContainer) and pullcheck, through one certs.d directory."""
    certs = containerd2_oracle.directory / "certs.d"
    cases = [
        (registry.host, images.healthy, True, "mirror"),
        (registry.host, images.schema1, False, "mirror"),
        (registry.host, images.upstream_only, True, "registry"),
        (registry.host, images.layer_missing_on_mirror, True, "mirror"),  # each blob is asked of every host
        (dead_host(), images.upstream_only_too, True, "registry"),  # the mirror is down
    ]
    for mirror, image, pulls, role in cases:
        shutil.rmtree(certs / upstream.host, ignore_errors=True)
        hosts_dir(certs, upstream.host, upstream.host, mirror)  # containerd reads it at every pull
        pulled = containerd2_oracle.pull(image)
        assert pulled.ok == pulls, (image, pulled.message)
        policy = write_policy(tmp_path / "p.yaml", nodeConfig={"containerdHostsDir": str(certs)})
        [result] = check(policy, C21, image, capsys=capsys)
        assert (result["verdict"] != "deny") == pulled.ok, (image, result["findings"])
        assert result["endpoints"][0]["role"] == role, (image, result)


# ---- CRI-O: registries.conf, against containers/image's pull path ----------------------------------


def registries_conf(path: Path, upstream: str, mirror: str, blocked: str, search: list[str]) -> Path:
    path.write_text(
        "\n".join(
            [
                f"unqualified-search-registries = {json.dumps(search)}",
                'short-name-mode = "permissive"',
                "[[registry]]",
                f'location = "{upstream}"',
                "insecure = true",
                "[[registry.mirror]]",
                f'location = "{mirror}"',
                "insecure = true",
                "[[registry]]",
                f'location = "{blocked}"',
                "blocked = true",
                "",
            ]
        )
    )
    return path


def skopeo_pull(directory: Path, conf: Path, image: str) -> tuple[bool, str]:
    """containers/image's pull into containers/storage (Debian's skopeo), reading `conf` as CRI-O reads its
    registries.conf: mirrors, insecure and blocked registries behave alike in its containers/image 5.23."""
    policy = directory / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    with tempfile.TemporaryDirectory(prefix="storage-", dir=directory) as scratch:
        root, runroot = Path(scratch) / "root", Path(scratch) / "run"
        storage = Path(scratch) / "storage.conf"
        storage.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{root}"\nrunroot = "{runroot}"\n')
        command = ["skopeo", "--policy", str(policy), "--registries-conf", str(conf)]
        command += [
            "--override-os",
            "linux",
            "--override-arch",
            "amd64",
            "copy",
            "--quiet",
            f"docker://{image}",
        ]
        command += [f"containers-storage:[vfs@{root}+{runroot}]localhost/pulled:latest"]
        env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(storage)}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=PULL_TIMEOUT_SECONDS)
        shutil.rmtree(root, ignore_errors=True)
    return done.returncode == 0, done.stderr.strip()[-300:]


@pytest.mark.oracle
def test_crio_and_pullcheck_read_the_same_registries_conf(
    tmp_path: Path,
    images: Images,
    registry: Registry,
    upstream: Registry,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    blocked = dead_host()
    conf = registries_conf(tmp_path / "registries.conf", upstream.host, registry.host, blocked, [])
    policy = write_policy(
        tmp_path / "p.yaml", nodeConfig={"crioRegistriesConf": str(conf)}, onResolutionError="allow"
    )
    cases = [
        (images.healthy, True, "mirror"),
        (images.schema1, True, "mirror"),  # CRI-O still pulls schema 1 (a warning)
        (images.upstream_only, True, "registry"),
        (images.layer_missing_on_mirror, False, "mirror"),  # settled on the mirror, which lacks a layer
        (f"{blocked}/team/app:v1", False, None),
    ]
    for image, pulls, role in cases:
        pulled, words = skopeo_pull(tmp_path, conf, image)
        assert pulled == pulls, (image, words)
        [result] = check(policy, CRIO, image, capsys=capsys)
        assert (result["verdict"] != "deny") == pulled, (image, result["findings"])
        assert [e["role"] for e in result["endpoints"]] == ([role] if role else []), (image, result)
    [blocked_result] = check(policy, CRIO, f"{blocked}/team/app:v1", capsys=capsys)
    [finding] = blocked_result["findings"]
    assert (finding["code"], finding["severity"]) == ("BLOCKED_REGISTRY", "deny")
    assert "blocked by the node's registries.conf" in finding["message"]


def test_crio_short_names_resolve_through_the_search_list(
    tmp_path: Path, images: Images, upstream: Registry, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = registries_conf(
        tmp_path / "registries.conf", upstream.host, registry.host, dead_host(), [dead_host(), upstream.host]
    )
    policy = write_policy(tmp_path / "p.yaml", nodeConfig={"crioRegistriesConf": str(conf)})
    [result] = check(policy, CRIO, "mirrored/fresh:v1", capsys=capsys)
    assert result["verdict"] == "allow", result["findings"]
    [note] = result["findings"]
    assert note["code"] == "SHORT_NAME" and images.upstream_only in note["message"]

    conf.write_text(conf.read_text().replace('"permissive"', '"enforcing"'))
    [refused] = check(policy, CRIO, "mirrored/fresh:v1", capsys=capsys)
    assert refused["verdict"] == "deny"
    assert "ambiguous" in refused["findings"][0]["message"]


def test_the_webhook_in_enforce_mode_denies_schema1_behind_a_mirror(
    tmp_path: Path, images: Images, registry: Registry
) -> None:
    """The issue's webhook half: the network guard lets the mirror through on its entry's allowance, the
    schema 1 image it serves is refused, and requests are counted under the mirror's name."""
    down = dead_host()
    entry = {"host": down, "mirror": registry.host, "insecure": True, "allowPrivateNetwork": True}
    policy = write_policy(tmp_path / "p.yaml", registries=[entry], mode="enforce")
    client = create_app(Settings(policy_file=str(policy))).test_client()
    legacy = images.schema1.replace(images.schema1.split("/")[0], down)
    healthy = images.healthy.replace(images.healthy.split("/")[0], down)
    refused = answer(client, review(legacy))
    assert refused["allowed"] is False
    assert "SCHEMA1" in refused["status"]["message"]
    assert answer(client, review(healthy))["allowed"] is True
    text = client.get("/metrics").get_data(as_text=True)
    assert f'pullcheck_registry_requests_total{{host="{registry.host}",method="HEAD",status="200"}}' in text
