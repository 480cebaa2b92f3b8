"""Session fixtures: real registries on 127.0.0.1 and the image corpus. The work is in tests/harness/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import registry as registries
from tests.harness.corpus import CorpusImage, build_corpus
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
