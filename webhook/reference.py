"""Image references exactly as containerd, CRI-O and the kubelet read them.

A port of github.com/distribution/reference v0.6.0 (with opencontainers/go-digest for digests):
`parse_strict` is upstream `Parse`, `parse` is `ParseNormalizedNamed` followed by `TagNameOnly`,
which turns `nginx` into `docker.io/library/nginx:latest`.

Grammar (upstream's):

    reference      := name [ ":" tag ] [ "@" digest ]
    name           := [ domain "/" ] path
    domain         := host [ ":" port ]            host: DNS-like name, IPv4, or [IPv6] (no zone)
    path           := component [ "/" component ]*   component: [a-z0-9]+ joined by ".", "_", "__" or "-"+
    tag            := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest         := sha256:<64 hex> | sha384:<96 hex> | sha512:<128 hex>   (lower-case hex)

Limits: the path is at most 255 characters (upstream counts the path only since v0.6.0).  Upstream
puts no limit on the registry host; we refuse hosts over 255 characters, which no DNS name reaches,
so that every input is bounded before a regular expression sees it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from webhook.digests import ALGORITHMS, parse_digest, quoted
from webhook.errors import InvalidReference

__all__ = ["ImageReference", "InvalidReference", "StrictReference", "parse", "parse_strict", "redacted"]

DEFAULT_REGISTRY: Final = "docker.io"
LEGACY_DEFAULT_REGISTRY: Final = "index.docker.io"
OFFICIAL_REPOSITORY_PREFIX: Final = "library/"
DEFAULT_TAG: Final = "latest"
PATH_MAX: Final = 255
HOST_MAX: Final = 255
TAG_MAX: Final = 128
_DIGEST_MAX = max(len(algorithm) + 1 + length for algorithm, length in ALGORITHMS.items())
TEXT_MAX: Final = HOST_MAX + 1 + PATH_MAX + 1 + TAG_MAX + 1 + _DIGEST_MAX

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"

# re.ASCII: Go's \w is [0-9A-Za-z_]; fullmatch: Python's $ would accept a trailing newline.
_REFERENCE_RE = re.compile(rf"((?:{_DOMAIN}/)?{_PATH})(?::({_TAG}))?(?:@({_DIGEST}))?", re.ASCII)
_NAME_RE = re.compile(rf"(?:({_DOMAIN})/)?({_PATH})", re.ASCII)
_DOMAIN_RE = re.compile(_DOMAIN, re.ASCII)
_PATH_RE = re.compile(_PATH, re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_DIGEST_RE = re.compile(_DIGEST, re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)
# `https://user:secret@host/...`: the user-info is never repeated in a message.
_USERINFO_RE = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?)[^/@]*@(?=[^@]*/)")


@dataclass(frozen=True)
class ImageReference:
    """A normalised image reference: what a runtime pulls for the text a Pod names."""

    registry: str  # 'docker.io' for Docker Hub; host[:port]; IPv6 in brackets
    repository: str  # 'library/nginx'
    tag: str | None  # 'latest' when the text named neither tag nor digest
    digest: str | None  # 'sha256:<hex>'; when set, the runtimes pull by it and ignore the tag
    unqualified: bool = False  # the text named no registry (a short name CRI-O resolves via registries.conf)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def manifest_reference(self) -> str:
        """What goes after /v2/<repository>/manifests/: the digest if pinned, else the tag."""
        if self.digest is not None:
            return self.digest
        if self.tag is None:
            raise ValueError(f"{self.name} names neither a tag nor a digest")
        return self.tag


@dataclass(frozen=True)
class StrictReference:
    """Upstream `Parse` without normalisation: `domain` is '' when the text names none."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text


def redacted(text: str) -> str:
    """The image text with any `user:password@` masked (`***@host/app`). No valid reference has one, so
    a valid reference comes back unchanged."""
    if "@" not in text:  # most images: the admission log line redacts each one
        return text
    return _USERINFO_RE.sub(r"\1***@", text)


def _invalid(text: str, reason: str) -> InvalidReference:
    return InvalidReference(f"invalid reference {quoted(redacted(text))}: {reason}")


def _check_length(text: str) -> None:
    if len(text) > TEXT_MAX:
        raise _invalid(text, f"longer than {TEXT_MAX} characters")


def _diagnose(text: str) -> str:
    """Which part of text that does not match the grammar is wrong, for the message."""
    name, at, digest = text.partition("@")
    if at and _DIGEST_RE.fullmatch(digest) is None:
        return "digest must be <algorithm>:<hex>, e.g. sha256: and 64 lower-case hex digits"
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if _TAG_RE.fullmatch(tag) is None:
            return (
                f"tag must be 1 to {TAG_MAX} letters, digits, '_', '.' or '-', not starting with '.' or '-'"
            )
    first, slash_found, path = name.partition("/")
    if slash_found and _DOMAIN_RE.fullmatch(first) is None and _PATH_RE.fullmatch(name) is None:
        if any(mark in first for mark in ".:[") or first == "localhost":
            return "registry must be a host name, IPv4 address or [IPv6 address], with an optional :port"
    return (
        "repository name must be path components of lower-case letters and digits, separated by"
        " '.', '_', '__' or '-', joined by '/'"
    )


def _strict(text: str, shown_as: str) -> StrictReference:
    """Upstream `Parse` of `text`; errors quote `shown_as` (what the user wrote)."""
    _check_length(text)
    match = _REFERENCE_RE.fullmatch(text)
    if match is None:
        # Go's strings.ToLower maps U+0130 to a plain "i"; Python's full case mapping adds a dot.
        lowered = text.replace("\u0130", "i").lower()
        if lowered != text and _REFERENCE_RE.fullmatch(lowered) is not None:
            raise _invalid(shown_as, "repository name must be lowercase")
        raise _invalid(shown_as, _diagnose(shown_as))
    name, tag, digest = match.groups()
    name_match = _NAME_RE.fullmatch(name)
    domain, path = (name_match.group(1) or "", name_match.group(2)) if name_match else ("", name)
    if len(path) > PATH_MAX:
        raise _invalid(shown_as, f"repository name must not be more than {PATH_MAX} characters")
    if len(domain) > HOST_MAX:
        raise _invalid(shown_as, f"registry host must not be more than {HOST_MAX} characters")
    if digest is not None:
        try:
            parse_digest(digest)
        except ValueError as error:
            raise _invalid(shown_as, str(error)) from None
    return StrictReference(domain, path, tag, digest)


def parse_strict(text: str) -> StrictReference:
    """Upstream `Parse`: the grammar alone, no Docker Hub normalisation (`nginx` has no domain)."""
    if text == "":
        raise _invalid(text, "repository name must have at least one component")
    return _strict(text, text)


def _split_docker_domain(text: str) -> tuple[str, str, bool]:
    """Upstream splitDockerDomain: (registry, remainder, named no registry)."""
    first, slash, rest = text.partition("/")
    if not slash:
        return DEFAULT_REGISTRY, OFFICIAL_REPOSITORY_PREFIX + text, True
    if first == "localhost" or any(mark in first for mark in ".:") or first.lower() != first:
        registry, remainder, unqualified = first, rest, False
    else:
        registry, remainder, unqualified = DEFAULT_REGISTRY, text, True
    if registry == LEGACY_DEFAULT_REGISTRY:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in remainder:
        remainder = OFFICIAL_REPOSITORY_PREFIX + remainder
    return registry, remainder, unqualified


def parse(text: str) -> ImageReference:
    """The reference a runtime pulls for `text` (`nginx` -> docker.io/library/nginx:latest).

    Upstream `ParseNormalizedNamed` then `TagNameOnly`; a tag given with a digest is kept (the
    digest is what gets pulled).  Raises InvalidReference (a ValueError) with a one-line message.
    """
    _check_length(text)
    if text == "":
        raise _invalid(text, "the image name is empty")
    if _IDENTIFIER_RE.fullmatch(text) is not None:
        raise _invalid(text, "a 64-character hex string is an image ID, not a repository name")
    registry, remainder, unqualified = _split_docker_domain(text)
    remote = remainder.partition(":")[0]
    if remote.lower() != remote:
        raise _invalid(text, "repository name must be lowercase")
    strict = _strict(f"{registry}/{remainder}", text)
    # The registry is the first component as written (upstream leaves Domain() empty for a first
    # component such as `my_host.example`, but containerd still contacts that host).
    repository = strict.name[len(registry) + 1 :]
    tag = DEFAULT_TAG if strict.tag is None and strict.digest is None else strict.tag
    return ImageReference(registry, repository, tag, strict.digest, unqualified)
