"""Container runtimes as Kubernetes names them, and targets (runtime, platform) a Pod may land on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

from webhook import platforms
from webhook.cache import held_elsewhere
from webhook.platforms import Platform

RuntimeKind = Literal["containerd", "cri-o", "docker"]
KINDS: tuple[RuntimeKind, ...] = get_args(RuntimeKind)
_DISPLAY_NAMES: dict[RuntimeKind, str] = {"containerd": "containerd", "cri-o": "CRI-O", "docker": "Docker"}
_RUNTIME = re.compile(r"^(?P<kind>[a-z-]+)://v?(?P<version>\d+(?:\.\d+){0,2})(?P<suffix>[-+.~\w]*)$")


@dataclass(frozen=True)
class Runtime:
    kind: RuntimeKind
    version: tuple[int, int, int]
    text: str  # as Kubernetes reports it, e.g. containerd://2.1.3

    def __str__(self) -> str:
        return self.text

    def at_least(self, major: int, minor: int = 0) -> bool:
        return self.version[:2] >= (major, minor)

    @property
    def display_name(self) -> str:
        """For people: 'containerd 2.1', 'CRI-O 1.33', 'Docker 27.3'."""
        return f"{_DISPLAY_NAMES[self.kind]} {self.version[0]}.{self.version[1]}"


def parse_runtime(text: str) -> Runtime:
    """Parse `containerd://2.1.3`, `cri-o://1.33.2`, `docker://27.3.1`; raises ValueError."""
    match = _RUNTIME.match(text.strip().lower())
    kind = next((k for k in KINDS if k == (match and match["kind"])), None)
    if not match or kind is None:
        raise ValueError(f"runtime {text!r} is not containerd://X.Y.Z, cri-o://X.Y.Z or docker://X.Y.Z")
    numbers = [int(n) for n in match["version"].split(".")]
    numbers += [0] * (3 - len(numbers))
    return Runtime(kind, (numbers[0], numbers[1], numbers[2]), text.strip())


@held_elsewhere
@dataclass(frozen=True)
class Target:
    runtime: Runtime
    platform: Platform
    # containerd 2.1+ nodes with `use_local_image_pull` (or mirrors that force it): not the transfer service.
    local_pull: bool = False

    def __str__(self) -> str:
        return f"{self.runtime} on {self.platform}" + (" (local pull)" if self.local_pull else "")

    # Targets are part of the key of every cached image result, looked up for each image of each
    # admission: hashed once, as they never change.
    @cached_property
    def _hash(self) -> int:
        return hash((self.runtime, self.platform, self.local_pull))

    def __hash__(self) -> int:
        return self._hash


def parse_target(runtime: str, platform: str, *, local_pull: bool = False) -> Target:
    return Target(parse_runtime(runtime), platforms.parse(platform), local_pull)


# What `pullcheck check` and a webhook without Node access assume: the runtimes of a current cluster.
DEFAULT_TARGETS = (
    ("containerd://2.1.0", "linux/amd64"),
    ("cri-o://1.33.0", "linux/amd64"),
)


def default_targets() -> list[Target]:
    return [parse_target(r, p) for r, p in DEFAULT_TARGETS]
