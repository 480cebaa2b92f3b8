"""The end-to-end fixtures: one real control plane per test session (per pytest-xdist worker)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import ControlPlane


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd and kube-apiserver on 127.0.0.1, built or found by tests/e2e/build_binaries.py."""
    plane = ControlPlane.start(tmp_path_factory.mktemp("cluster"))
    try:
        yield plane
    finally:
        plane.stop()
