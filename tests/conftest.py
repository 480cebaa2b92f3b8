"""Session fixtures: real registries on 127.0.0.1 and the image corpus. The work is in tests/harness/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import registry as registries
from tests.harness.corpus import CorpusImage, build_corpus
from tests.harness.oracles import ContainerdDaemon, SkopeoOracle, containerd2_binaries
from tests.harness.pki import CertificateAuthority
from tests.harness.registry import Registry


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
def corpus(registry: Registry) -> dict[str, CorpusImage]:
    return build_corpus(registry)


@pytest.fixture(scope="session")
def skopeo_oracle(tmp_path_factory: pytest.TempPathFactory) -> SkopeoOracle:
    return SkopeoOracle(tmp_path_factory.mktemp("skopeo"))


def _run_containerd(daemon: ContainerdDaemon) -> Iterator[ContainerdDaemon]:
    try:
        daemon.start()
    except RuntimeError as exc:
        pytest.skip(f"containerd cannot start here: {exc}")
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def containerd_oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerdDaemon]:
    """Debian's containerd 1.6 and ctr."""
    yield from _run_containerd(ContainerdDaemon(tmp_path_factory.mktemp("containerd")))


@pytest.fixture(scope="session")
def containerd2_oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerdDaemon]:
    """containerd 2.1 built from Go modules (cached outside the repository; built on first use).

    `ctr images pull --local` is containerd's client-side Pull and Unpack, which resolves the platform
    and checks the rootfs at pull time. The transfer-service pull (`ctr` without --local) reports
    success for an index without the platform; the CRI plugin only fails afterwards, reading the config."""
    try:
        binaries = containerd2_binaries()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    directory = tmp_path_factory.mktemp("containerd2")
    daemon = ContainerdDaemon(directory, str(binaries / "containerd"), str(binaries / "ctr"), ("--local",))
    yield from _run_containerd(daemon)
