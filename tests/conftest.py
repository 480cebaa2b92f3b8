"""Session fixtures: real registries on 127.0.0.1 and the image corpus. The work is in tests/harness/."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.harness import registry as registries
from tests.harness.corpus import CorpusImage, build_corpus
from tests.harness.hostile import HostileServer
from tests.harness.oracles import (
    ContainerdCRI,
    CrioPullPath,
    containerd2_binaries,
    go_tool,
    push_pause_image,
)
from tests.harness.pki import CertificateAuthority
from tests.harness.registry import Registry

# Property tests judge what comes out, never how long it took: hypothesis's default 200 ms deadline per
# example is a timing assertion, and a loaded machine fails it.
settings.register_profile("pullcheck", deadline=None)
settings.load_profile("pullcheck")

# Markers of tests that start something: `make unit` leaves them out.
STARTS_SOMETHING = ("registry", "oracle", "e2e", "served", "helm")


@pytest.fixture(autouse=True)
def _unmarked_tests_start_nothing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `make unit` (PULLCHECK_UNIT_ONLY=1), a test that listens on a socket or runs a program without
    one of those markers fails, so the markers keep meaning what they say."""
    if not os.environ.get("PULLCHECK_UNIT_ONLY"):
        return
    if any(request.node.get_closest_marker(name) for name in STARTS_SOMETHING):
        return

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a server or a program: mark it served or helm")

    monkeypatch.setattr(socket.socket, "listen", refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("pki"))


def _serve(registry: Registry) -> Iterator[Registry]:
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _serve(registries.start_plain(tmp_path_factory.mktemp("registry")))


@pytest.fixture(scope="session")
def tls_registry(
    tmp_path_factory: pytest.TempPathFactory, test_ca: CertificateAuthority
) -> Iterator[Registry]:
    yield from _serve(registries.start_tls(tmp_path_factory.mktemp("tls-registry"), test_ca))


@pytest.fixture(scope="session")
def htpasswd_registry(
    tmp_path_factory: pytest.TempPathFactory, test_ca: CertificateAuthority
) -> Iterator[Registry]:
    yield from _serve(registries.start_htpasswd(tmp_path_factory.mktemp("htpasswd-registry"), test_ca))


@pytest.fixture(scope="session")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, test_ca: CertificateAuthority
) -> Iterator[Registry]:
    yield from _serve(registries.start_token(tmp_path_factory.mktemp("token-registry"), test_ca))


@pytest.fixture(scope="session")
def corpus_front() -> Iterator[HostileServer]:
    """The lying registry in front of the corpus cases a real registry cannot serve."""
    front = HostileServer()
    try:
        yield front
    finally:
        front.close()


@pytest.fixture(scope="session")
def corpus(registry: Registry, corpus_front: HostileServer) -> dict[str, CorpusImage]:
    return build_corpus(registry, corpus_front)


@pytest.fixture(scope="session")
def crio_oracle(tmp_path_factory: pytest.TempPathFactory) -> CrioPullPath:
    """CRI-O 1.33's pull path (tests/harness/tools/crio-pull, built on first use)."""
    return CrioPullPath(tmp_path_factory.mktemp("crio"), go_tool("crio-pull"))


@pytest.fixture(scope="session")
def crio_arm64_oracle(tmp_path_factory: pytest.TempPathFactory) -> CrioPullPath:
    """CRI-O 1.33's pull path as on an arm64 node (the crictl oracles can pull only for this host)."""
    return CrioPullPath(tmp_path_factory.mktemp("crio-arm64"), go_tool("crio-pull"), "arm64")


@pytest.fixture(scope="session")
def sandbox_image(registry: Registry) -> str:
    """The pod sandbox image of the containerd oracles, in the test registry."""
    return push_pause_image(registry, go_tool("pause"))


def _run_containerd(daemon: ContainerdCRI) -> Iterator[ContainerdCRI]:
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def containerd_oracle(
    tmp_path_factory: pytest.TempPathFactory,
    registry: Registry,
    corpus_front: HostileServer,
    sandbox_image: str,
) -> Iterator[ContainerdCRI]:
    """Debian's containerd 1.6 with its CRI plugin, driven by crictl."""
    daemon = ContainerdCRI(
        tmp_path_factory.mktemp("containerd"),
        registry_hosts=[registry.host, corpus_front.host],
        sandbox_image=sandbox_image,
        crictl=go_tool("crictl"),
    )
    yield from _run_containerd(daemon)


@pytest.fixture(scope="session")
def containerd2_oracle(
    tmp_path_factory: pytest.TempPathFactory,
    registry: Registry,
    corpus_front: HostileServer,
    sandbox_image: str,
) -> Iterator[ContainerdCRI]:
    """containerd 2.1 built from Go modules, CRI plugin on (it pulls through the transfer service)."""
    binaries = containerd2_binaries()
    daemon = ContainerdCRI(
        tmp_path_factory.mktemp("containerd2"),
        registry_hosts=[registry.host, corpus_front.host],
        sandbox_image=sandbox_image,
        crictl=go_tool("crictl"),
        containerd=str(binaries / "containerd"),
        shim_dir=binaries,
    )
    yield from _run_containerd(daemon)
