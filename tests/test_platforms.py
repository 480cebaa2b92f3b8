"""Platform normalisation and each runtime's choice from an index (containerd platforms, containers/image)."""

from __future__ import annotations

import pytest

from webhook import platforms
from webhook.platforms import Platform, containerd_candidates, crio_candidates, normalize, parse
from webhook.runtimes import parse_runtime


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("linux/x86_64", "linux/amd64"),
        ("linux/x86-64", "linux/amd64"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/7", "linux/arm/v7"),
        ("linux/i386", "linux/386"),
        ("macos/arm64", "darwin/arm64"),
        ("Linux/AMD64", "linux/amd64"),
    ],
)
def test_normalize_like_containerd(given: str, normal: str) -> None:
    assert str(normalize(parse(given))) == normal


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "linux/arm/v7/x", ""])
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="os/arch"):
        parse(text)


def test_containerd_fallback_order() -> None:
    assert [str(p) for p in containerd_candidates(parse("linux/amd64/v3"))] == [
        "linux/amd64/v3",
        "linux/amd64/v2",
        "linux/amd64",
        "linux/386",
    ]
    assert [str(p) for p in containerd_candidates(parse("linux/arm64"))] == [
        "linux/arm64",
        "linux/arm/v8",
        "linux/arm/v7",
        "linux/arm/v6",
        "linux/arm/v5",
    ]
    assert [str(p) for p in containerd_candidates(parse("linux/arm/v6"))] == ["linux/arm/v6", "linux/arm/v5"]


def test_crio_wanted_platforms() -> None:
    assert [p.variant for p in crio_candidates(parse("linux/arm64"))] == ["", "v8"]
    assert [p.variant for p in crio_candidates(parse("linux/arm/v7"))] == ["v7", "v6", "v5", ""]
    assert {p.architecture for p in crio_candidates(parse("linux/amd64"))} == {"amd64"}


def entry(platform: str | None, n: int) -> dict[str, object]:
    result: dict[str, object] = {"digest": f"sha256:{n}"}
    if platform is not None:
        os_name, arch, *variant = platform.split("/")
        result["platform"] = {
            "os": os_name,
            "architecture": arch,
            **({"variant": variant[0]} if variant else {}),
        }
    return result


def test_containerd_prefers_best_match_then_platformless() -> None:
    entries = [entry(None, 0), entry("linux/386", 1), entry("linux/amd64", 2)]
    assert platforms.select_containerd(entries, parse("linux/amd64"))["digest"] == "sha256:2"  # type: ignore[index]
    assert platforms.select_containerd(entries[:2], parse("linux/amd64"))["digest"] == "sha256:1"  # type: ignore[index]
    assert platforms.select_containerd(entries[:1], parse("linux/amd64"))["digest"] == "sha256:0"  # type: ignore[index]
    assert platforms.select_containerd([entry("linux/s390x", 3)], parse("linux/amd64")) is None


def test_containerd_normalises_entries_crio_does_not() -> None:
    entries = [entry("linux/aarch64", 1)]
    assert platforms.select_containerd(entries, parse("linux/arm64")) is not None
    assert platforms.select_crio(entries, parse("linux/arm64")) is None


def test_crio_matches_any_variant_when_none_is_wanted() -> None:
    entries = [entry("linux/arm64/v8", 1)]
    assert platforms.select_crio(entries, parse("linux/arm64")) is not None
    assert platforms.select_crio([entry("linux/arm/v7", 2)], parse("linux/arm64")) is None
    assert platforms.select_crio([entry("linux/386", 2)], parse("linux/amd64")) is None


def test_crio_takes_platformless_entry_last() -> None:
    entries = [entry(None, 0), entry("linux/amd64", 1)]
    assert platforms.select_crio(entries, parse("linux/amd64"))["digest"] == "sha256:1"  # type: ignore[index]
    assert platforms.select_crio(entries[:1], parse("linux/amd64"))["digest"] == "sha256:0"  # type: ignore[index]


def test_runs_on() -> None:
    assert platforms.runs_on(Platform("linux", "386"), parse("linux/amd64"))
    assert platforms.runs_on(Platform("linux", "arm", "v7"), parse("linux/arm64"))
    assert not platforms.runs_on(Platform("linux", "arm64"), parse("linux/amd64"))
    assert not platforms.runs_on(Platform("windows", "amd64"), parse("linux/amd64"))


@pytest.mark.parametrize(
    ("text", "kind", "version"),
    [
        ("containerd://2.1.3", "containerd", (2, 1, 3)),
        ("containerd://1.7.27-k3s1", "containerd", (1, 7, 27)),
        ("cri-o://1.33.2", "cri-o", (1, 33, 2)),
        ("docker://27.3.1", "docker", (27, 3, 1)),
        ("containerd://v2.0", "containerd", (2, 0, 0)),
    ],
)
def test_parse_runtime(text: str, kind: str, version: tuple[int, int, int]) -> None:
    runtime = parse_runtime(text)
    assert (runtime.kind, runtime.version, str(runtime)) == (kind, version, text)


@pytest.mark.parametrize("text", ["containerd", "rkt://1.0.0", "containerd://", "cri-o://one"])
def test_parse_runtime_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="runtime"):
        parse_runtime(text)
