"""The ports: what the core asks of the world, as protocols the adapters fulfil.

The admission use case (`webhook.engine`), the resolver and the audit take their collaborators through
these, so a test or another adapter can stand in for the registry, the cluster's Nodes or its pull
secrets. Nothing here does I/O; the implementations are `webhook.registry.RegistryClient` (`RegistrySource`),
`webhook.resolve.Checker` (`ImageChecker`), `webhook.kube.NodeView` (`NodeSource`) and
`webhook.kube.PullSecrets` (`PullSecretSource`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.documents import Document
from webhook.findings import ImageResult
from webhook.placement import NodeGroup
from webhook.policy import Policy
from webhook.reference import ImageReference
from webhook.routes import Endpoint, Route
from webhook.runtimes import Target

Check = Callable[[Sequence[str], Sequence[Target], Policy, Keyring, Deadline], list[ImageResult]]
"""Judging images: images, targets, policy, keyring, deadline -> one result per image, in order."""


class ImageChecker(Protocol):
    """Judges images for targets (`webhook.resolve.Checker`); the audit takes its `check` alone."""

    @property
    def check(self) -> Check: ...


class NodeSource(Protocol):
    """Where the cluster's Pods may run (`webhook.kube.NodeView`)."""

    def groups(self) -> list[NodeGroup]: ...

    def synced(self) -> bool: ...


class PullSecretSource(Protocol):
    """Credentials of a namespace's Pods (`webhook.kube.PullSecrets`)."""

    def keyring(
        self,
        namespace: str,
        secret_names: Sequence[str],
        service_account: str,
        deadline: Deadline | None = None,
    ) -> Keyring: ...


class ManifestHead(Protocol):
    """What a manifest HEAD told: the digest (or the malformed one the registry sent) and who answered."""

    @property
    def digest(self) -> str | None: ...

    @property
    def malformed_digest(self) -> str | None: ...

    @property
    def endpoint(self) -> Endpoint | None: ...


class BlobStat(Protocol):
    @property
    def size(self) -> int | None: ...


class RegistrySource(Protocol):
    """What the resolver needs of the registry client (`webhook.registry.RegistryClient`)."""

    def head_manifest(
        self,
        ref: ImageReference,
        reference: str,
        keyring: Keyring,
        deadline: Deadline,
        route: Route | None = None,
    ) -> ManifestHead: ...

    def get_manifest(
        self,
        ref: ImageReference,
        reference: str,
        keyring: Keyring,
        deadline: Deadline,
        expected_digest: str | None = None,
        route: Route | None = None,
    ) -> Document: ...

    def get_blob(
        self,
        ref: ImageReference,
        digest: str,
        keyring: Keyring,
        deadline: Deadline,
        route: Route | None = None,
    ) -> Document: ...

    def stat_blob(
        self,
        ref: ImageReference,
        digest: str,
        keyring: Keyring,
        deadline: Deadline,
        route: Route | None = None,
    ) -> BlobStat | None: ...

    def foreign_blob_reachable(
        self, ref: ImageReference, urls: Sequence[str], deadline: Deadline, route: Route | None = None
    ) -> bool: ...

    def read_blob_head(
        self,
        ref: ImageReference,
        digest: str,
        length: int,
        keyring: Keyring,
        deadline: Deadline,
        route: Route | None = None,
    ) -> bytes: ...

    def close(self) -> None: ...
