"""The policy file: defaults, every key, one clear error per bad field, reload."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from webhook.codes import Code, Severity
from webhook.errors import ConfigError
from webhook.findings import Finding
from webhook.policy import MIB, CacheLimits, MirrorOptions, Policy, RegistryOptions
from webhook.policyfile import PolicyFile, load_policy


def test_defaults() -> None:
    policy = load_policy(None)
    assert policy.mode == "warn" and policy.on_resolution_error == "warn"
    assert [str(t.runtime) for t in policy.targets] == ["containerd://2.1.0", "cri-o://1.33.0"]
    assert {str(t.platform) for t in policy.targets} == {"linux/amd64"}


def test_full_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        """
mode: enforce
onResolutionError: deny
targets:
  - {runtime: "containerd://2.1.0", platform: linux/arm64}
registries:
  - host: "127.0.0.1:5000"
    insecure: true
    caFile: /etc/pullcheck/ca.crt
    allowPrivateNetwork: true
    mirror: "mirror.internal:5000"
dockerConfig: /etc/pullcheck/config.json
severities: {SCHEMA1: warn}
exemptions: {namespaces: [team-legacy], images: ["registry.example.com/legacy/*"]}
resolutionTimeoutSeconds: 5
"""
    )
    policy = load_policy(str(path))
    assert policy.mode == "enforce" and policy.on_resolution_error == "deny"
    assert [(str(t.runtime), str(t.platform)) for t in policy.targets] == [
        ("containerd://2.1.0", "linux/arm64")
    ]
    assert policy.registries == (
        RegistryOptions(
            "127.0.0.1:5000",
            insecure=True,
            ca_file="/etc/pullcheck/ca.crt",
            allow_private_network=True,
            mirrors=(MirrorOptions("mirror.internal:5000"),),
        ),
    )
    assert policy.docker_config == "/etc/pullcheck/config.json"
    assert policy.severities == {"SCHEMA1": "warn"}
    assert policy.exemptions.exempt_namespace("team-legacy")
    assert policy.exemptions.exempt_image("registry.example.com/legacy/app:1", None, "registry.example.com")
    assert not policy.exemptions.exempt_image("registry.example.com/app:1", None, "registry.example.com")
    assert policy.resolution_timeout == 5.0


def test_every_bad_field_is_named_once() -> None:
    with pytest.raises(ConfigError) as error:
        Policy.from_mapping(
            {
                "mode": "block",
                "severites": {},
                "targets": [{"runtime": "rkt://1", "platform": "linux/amd64"}],
                "registries": [{"host": "x", "insecure": "yes", "port": 1}],
                "severities": {"SCHEMA1": "fatal", "NOPE": "deny"},
            },
            source="policy.yaml",
        )
    message = str(error.value)
    assert "\n" not in message
    for part in (
        "policy.yaml: ",
        "mode: 'block' is not one of enforce, warn, audit",
        "severites: unknown key",
        "targets[0]: runtime 'rkt://1'",
        "registries[0].insecure: must be true or false",
        "registries[0].port: unknown key",
        "severities.SCHEMA1: 'fatal' is not one of",
        "severities.NOPE: unknown finding code",
    ):
        assert part in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [("mode: [", "line 1"), ("- a\n- b\n", "must be a mapping"), ("resolutionTimeoutSeconds: 0", "above 0")],
)
def test_bad_files(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_policy(str(path))


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read the policy file"):
        load_policy("/nonexistent/policy.yaml")


def test_severity_overrides_and_resolution_outcome() -> None:
    policy = Policy.from_mapping(
        {"onResolutionError": "deny", "severities": {"SCHEMA1": "allow", "NOT_FOUND": "warn"}}
    )
    findings = [
        Finding(Code.SCHEMA1, Severity.DENY, "containerd://2.1.0", "linux/amd64", "schema 1"),
        Finding(Code.NOT_FOUND, Severity.DENY, "containerd://2.1.0", "linux/amd64", "no tag"),
        Finding(Code.UNAUTHORIZED, Severity.WARN, "containerd://2.1.0", "linux/amd64", "refused"),
    ]
    assert [(f.code, f.severity) for f in policy.apply(findings)] == [
        ("NOT_FOUND", "warn"),
        ("UNAUTHORIZED", "deny"),
    ]


def test_policy_file_reloads_and_keeps_last_good(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("mode: warn\n")
    watched = PolicyFile(str(path), interval=0)
    assert watched.current().mode == "warn"
    path.write_text("mode: enforce\n")
    os.utime(path, ns=(1, 1))  # a different stamp even on a coarse clock
    assert watched.current().mode == "enforce"
    path.write_text("mode: nonsense\n")
    os.utime(path, ns=(2, 2))
    assert watched.current().mode == "enforce"


def test_with_registries_replaces_same_host() -> None:
    policy = Policy(
        registries=(RegistryOptions("a:1", mirrors=(MirrorOptions("m"),)), RegistryOptions("b:1"))
    )
    changed = policy.with_registries([RegistryOptions("a:1", insecure=True)])
    assert changed.registries == (RegistryOptions("b:1"), RegistryOptions("a:1", insecure=True))


def test_a_policy_file_that_is_not_utf8_is_one_config_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"mode: w\xffarn\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_policy(str(path))


def test_a_reload_that_is_not_utf8_keeps_the_last_good_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("mode: enforce\n")
    watched = PolicyFile(str(path), interval=0)
    path.write_bytes(b"mode: w\xffarn\n")
    os.utime(path, ns=(1, 1))
    assert watched.current().mode == "enforce"


@pytest.mark.parametrize(
    "text", ["auditIntervalSeconds: .inf", "auditIntervalSeconds: 1.0e+300", "resolutionTimeoutSeconds: .nan"]
)
def test_intervals_and_timeouts_are_finite(tmp_path: Path, text: str) -> None:
    # An interval past threading.TIMEOUT_MAX reached Event.wait, which raised OverflowError: the audit
    # thread died.
    path = tmp_path / "p.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=text.split(":")[0]):
        load_policy(str(path))


def test_local_image_pull_on_targets_and_for_the_nodes() -> None:
    policy = Policy.from_mapping(
        {
            "localImagePull": True,
            "targets": [
                {"runtime": "containerd://2.1.0", "platform": "linux/amd64", "localImagePull": True},
                {"runtime": "containerd://2.1.0", "platform": "linux/arm64"},
            ],
        }
    )
    assert policy.local_image_pull is True
    assert [t.local_pull for t in policy.targets] == [True, False]
    with pytest.raises(ConfigError, match=r"targets\[0\].localImagePull: must be true or false"):
        Policy.from_mapping({"targets": [{"runtime": "containerd://2.1.0", "localImagePull": "yes"}]})


def test_cache_bounds_and_connections_per_registry() -> None:
    default = Policy.from_mapping({})
    assert default.caches == CacheLimits() and default.connections_per_registry == 32
    assert sum(vars(default.caches).values()) < 256 * MIB  # half the chart's memory limit at most
    policy = Policy.from_mapping(
        {"caches": {"documentsMiB": 48, "tokensMiB": 0.5}, "connectionsPerRegistry": 8}
    )
    assert policy.caches == CacheLimits(documents=48 * MIB, tokens=MIB // 2)
    assert policy.connections_per_registry == 8
    with pytest.raises(ConfigError) as error:
        Policy.from_mapping(
            {"caches": {"documentsMiB": 0, "blobs": 1, "tokensMiB": True}, "connectionsPerRegistry": 2.5}
        )
    for part in (
        "caches.documentsMiB: must be a number of MiB above 0 and at most 65536",
        "caches.blobs: unknown key",
        "caches.tokensMiB: must be a number",
        "connectionsPerRegistry: must be a whole number from 1 to 1024",
    ):
        assert part in str(error.value)
