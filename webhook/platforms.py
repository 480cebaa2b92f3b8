"""Platforms (`os/arch[/variant]`) and how each runtime picks one entry of an index.

containerd: `platforms.Normalize` and `platforms.Only` (ordered fallbacks), entries without a platform
tried last.  CRI-O: containers/image `internal/pkg/platform` (`WantedPlatforms`, `MatchesPlatform`) and
`chooseInstance` of the OCI index and the docker manifest list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_OS_ALIASES = {"macos": "darwin"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


def parse(text: str) -> Platform:
    """Parse `os/arch[/variant]` as written by a person or a Node; raises ValueError."""
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform {text!r} is not os/arch[/variant]")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def normalize(platform: Platform) -> Platform:
    """containerd's `platforms.Normalize`."""
    os_name = _OS_ALIASES.get(platform.os.lower(), platform.os.lower())
    arch = platform.architecture.lower()
    variant = platform.variant.lower()
    if arch in ("i386",):
        arch, variant = "386", ""
    elif arch in ("x86_64", "x86-64", "amd64"):
        arch = "amd64"
        if variant == "v1":
            variant = ""
    elif arch in ("aarch64", "arm64"):
        arch = "arm64"
        if variant in ("8", "v8", "v8.0"):
            variant = ""
    elif arch == "armhf":
        arch, variant = "arm", "v7"
    elif arch == "armel":
        arch, variant = "arm", "v6"
    elif arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
    return Platform(os_name, arch, variant)


def _version(variant: str) -> int | None:
    digits = variant[1:] if variant.startswith("v") else variant
    return int(digits) if digits.isdigit() else None


def containerd_candidates(wanted: Platform) -> list[Platform]:
    """containerd's `platformVector`: the wanted platform, then what it falls back to, in order."""
    wanted = normalize(wanted)
    vector = [wanted]
    if wanted.architecture == "amd64":
        level = _version(wanted.variant)
        if level is not None and level > 1:
            vector += [Platform(wanted.os, "amd64", f"v{n}") for n in range(level - 1, 0, -1)]
        vector.append(Platform(wanted.os, "386"))
    elif wanted.architecture == "arm":
        level = _version(wanted.variant)
        if level is not None and level > 5:
            vector += [Platform(wanted.os, "arm", f"v{n}") for n in range(level - 1, 4, -1)]
    elif wanted.architecture == "arm64":
        vector = [wanted]
        vector += containerd_candidates(Platform(wanted.os, "arm", "v8"))
    return [normalize(p) for p in vector]


def crio_candidates(wanted: Platform) -> list[Platform]:
    """containers/image `WantedPlatforms`: exact os/arch, variants by the compatibility table.

    A wanted variant of '' matches any variant (`MatchesPlatform`)."""
    compatibility = {"arm": ["v8", "v7", "v6", "v5"], "arm64": ["v8"]}
    order = compatibility.get(wanted.architecture)
    if wanted.variant:
        variants = (
            order[order.index(wanted.variant) :] if order and wanted.variant in order else [wanted.variant]
        )
        variants = [*variants, ""]
    else:
        variants = ["", *(order or [])]
    return [Platform(wanted.os, wanted.architecture, v) for v in variants]


def entry_platform(entry: Mapping[str, Any]) -> Platform | None:
    """The platform of an index entry, or None when it has none (or an unreadable one)."""
    raw = entry.get("platform")
    if not isinstance(raw, Mapping):
        return None
    os_name, arch = raw.get("os"), raw.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        return None
    variant = raw.get("variant")
    return Platform(os_name, arch, variant if isinstance(variant, str) else "")


def select_containerd(entries: Sequence[Mapping[str, Any]], wanted: Platform) -> Mapping[str, Any] | None:
    """The index entry containerd pulls for `wanted`: best in fallback order, then any platform-less one."""
    candidates = containerd_candidates(wanted)
    best: tuple[int, int] | None = None
    chosen: Mapping[str, Any] | None = None
    for position, entry in enumerate(entries):
        platform = entry_platform(entry)
        if platform is None:
            rank = len(candidates)
        else:
            normal = normalize(platform)
            if normal not in candidates:
                continue
            rank = candidates.index(normal)
        if best is None or (rank, position) < best:
            best, chosen = (rank, position), entry
    return chosen


def _crio_matches(image: Platform, wanted: Platform) -> bool:
    # Variants compare exactly (run with c/image 5.35): a node reports none, so on amd64 only entries
    # without a variant match, and `amd64/v2`-only indexes have nothing for CRI-O.
    return (
        image.architecture == wanted.architecture
        and image.os == wanted.os
        and image.variant == wanted.variant
    )


def select_crio(entries: Sequence[Mapping[str, Any]], wanted: Platform) -> Mapping[str, Any] | None:
    """The index entry CRI-O pulls for `wanted`: first wanted platform in order, then a platform-less one."""
    for candidate in crio_candidates(wanted):
        for entry in entries:
            platform = entry_platform(entry)
            if platform is not None and _crio_matches(platform, candidate):
                return entry
    for entry in entries:
        if "platform" not in entry or entry_platform(entry) is None:
            return entry
    return None


def exact_entries(entries: Sequence[Mapping[str, Any]], wanted: Platform) -> list[Mapping[str, Any]]:
    """The entries containerd's strict matcher keeps (`platforms.OnlyStrict`): the normalised wanted
    platform, and entries without a platform (`FilterPlatforms` keeps those)."""
    normal = normalize(wanted)
    return [e for e in entries if (p := entry_platform(e)) is None or normalize(p) == normal]


def select(
    entries: Sequence[Mapping[str, Any]], wanted: Platform, selection: str
) -> Mapping[str, Any] | None:
    """The entry a runtime pulls, by its profile's `selection` ('fallback': containerd, 'exact': CRI-O)."""
    return select_crio(entries, wanted) if selection == "exact" else select_containerd(entries, wanted)


def runs_on(image: Platform, target: Platform) -> bool:
    """Whether a single-platform image (its config's os/architecture) can start on the target.

    Neither runtime refuses such an image at pull; the kernel runs what containerd's fallback vector
    lists (386 on amd64, 32-bit arm on arm64) and fails the rest with `exec format error`.  A node
    reports no variant, so the config's variant (amd64 `v2`) is not held against it (run: it starts)."""
    normal = normalize(image)
    candidates = containerd_candidates(target)
    if target.variant:
        return normal in candidates
    return any((c.os, c.architecture) == (normal.os, normal.architecture) for c in candidates)
