"""Which profile a runtime version gets: the rules ask it, so a wrong row is a wrong verdict."""

from __future__ import annotations

import pytest

from webhook import profiles
from webhook.codes import Code
from webhook.runtimes import parse_runtime


@pytest.mark.parametrize(
    ("runtime", "profile"),
    [
        ("containerd://1.6.20", profiles.CONTAINERD_1_6),
        ("containerd://1.7.27", profiles.CONTAINERD_1_7),
        ("containerd://2.0.5", profiles.CONTAINERD_2_0),
        ("containerd://2.1.9", profiles.CONTAINERD_2_1),
        ("containerd://2.3.4", profiles.CONTAINERD_2_1),
        ("cri-o://1.33.2", profiles.CRIO),
        ("docker://25.0.5", profiles.DOCKER_25),
        ("docker://27.3.1", profiles.DOCKER_26),
    ],
)
def test_profile_of_version(runtime: str, profile: profiles.Profile) -> None:
    assert profiles.profile_of(parse_runtime(runtime)) is profile


def test_severity_defaults_come_from_the_profile() -> None:
    assert profiles.CONTAINERD_1_6.severity(Code.SCHEMA1) == "info"
    assert profiles.CONTAINERD_2_0.severity(Code.SCHEMA1) == "deny"
    assert profiles.CRIO.severity(Code.MIXED_MEDIA_TYPES) == "deny"
    assert profiles.CONTAINERD_2_1.severity(Code.MIXED_MEDIA_TYPES) == "info"
    assert profiles.CRIO.severity(Code.SHORT_NAME) == "warn"
    assert profiles.DOCKER_26.severity(Code.SHORT_NAME) == "info"
    assert profiles.CRIO.severity(Code.NOT_FOUND) == "deny"
