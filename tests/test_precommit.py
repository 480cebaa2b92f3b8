"""The pre-commit hook of .pre-commit-hooks.yaml, installed and run by the real `pre-commit` from PyPI in a
temporary git repository. pre-commit installs the `language: python` hook with pip, here from the wheels
`make wheels` keeps (PIP_NO_INDEX): no package index is asked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness import wheelhouse
from tests.harness.corpus import CorpusImage
from tests.harness.registry import Registry

pytestmark = pytest.mark.registry

ROOT = Path(__file__).resolve().parent.parent
PRE_COMMIT = str(Path(sys.executable).parent / "pre-commit")
GIT_USER = ["-c", "user.name=pullcheck", "-c", "user.email=dev@pullcheck.invalid"]


def _git(repository: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *GIT_USER, *args], cwd=repository, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _hook_repository(parent: Path) -> tuple[Path, str]:
    """This checkout's hooks file and package, committed in a repository of their own for pre-commit to
    clone (uncommitted changes of the checkout included)."""
    repository = parent / "pullcheck-hooks"
    repository.mkdir()
    for name in (".pre-commit-hooks.yaml", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, repository / name)
    shutil.copytree(ROOT / "webhook", repository / "webhook", ignore=shutil.ignore_patterns("__pycache__"))
    _git(repository, "init", "-q")
    _git(repository, "add", ".")
    _git(repository, "commit", "-q", "-m", "hooks")
    return repository, _git(repository, "rev-parse", "HEAD")


def _deployment(name: str, image: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": [{"name": name, "image": image}]}}},
        }
    )


def test_the_hook_judges_the_committed_manifests(
    tmp_path: Path, registry: Registry, corpus: dict[str, CorpusImage]
) -> None:
    wheels = wheelhouse.ready()
    if wheels is None:
        pytest.fail("no wheels for an offline install of pullcheck: run `make wheels` first")
    hooks, revision = _hook_repository(tmp_path)
    project = tmp_path / "project"
    (project / "deploy").mkdir(parents=True)
    _git(project, "init", "-q")
    config = {
        "repos": [
            {
                "repo": str(hooks),
                "rev": revision,
                "hooks": [
                    {
                        "id": "pullcheck",
                        "args": ["--insecure-registry", registry.host, "--runtime", "containerd://2.1.0"],
                    }
                ],
            }
        ]
    }
    (project / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    (project / "deploy" / "web.yaml").write_text(_deployment("web", corpus["schema1_signed"].ref))
    (project / "deploy" / "api.yaml").write_text(_deployment("api", corpus["oci_index"].ref))
    (project / "README.md").write_text("not a manifest\n")
    _git(project, "add", ".")
    env = {
        **{k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
        "HOME": str(tmp_path),
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-cache"),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "VIRTUALENV_NO_PERIODIC_UPDATE": "1",
    }

    def pre_commit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PRE_COMMIT, "run", *args], cwd=project, capture_output=True, text=True, env=env, timeout=600
        )

    failed = pre_commit("--all-files")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    output = failed.stdout
    assert "pullcheck (can the nodes pull and run these images?)" in output and "Failed" in output
    # Both manifests went to one pullcheck (the config file too, a YAML file with no workloads in it).
    assert f"DENY     shop/Deployment/web  {corpus['schema1_signed'].ref}  SCHEMA1" in output
    assert f"ALLOW    shop/Deployment/api  {corpus['oci_index'].ref}" in output
    assert "2 workloads: 1 denied, 0 warned, 1 allowed" in output

    (project / "deploy" / "web.yaml").write_text(_deployment("web", corpus["oci"].ref))
    passed = pre_commit("--files", "deploy/web.yaml", "README.md")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Passed" in passed.stdout
