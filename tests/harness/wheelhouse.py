"""Wheels of pullcheck's build and run dependencies under ~/.cache/pullcheck/wheels, so that a test can
install pullcheck with pip and no index, as pre-commit installs a `language: python` hook.

`make wheels` (part of `make test`) fills it from the package index; the tests then only read it
(`PIP_NO_INDEX=1`, `PIP_FIND_LINKS=<directory>`). One directory per set of requirements in pyproject.toml.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pullcheck" / "wheels"
_COMPLETE = ".complete"


def requirements() -> list[str]:
    """What `pip install .` of this checkout needs: the build backend and the project's dependencies."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [*pyproject["build-system"]["requires"], "wheel", *pyproject["project"]["dependencies"]]


def directory() -> Path:
    key = hashlib.sha256(json.dumps(requirements()).encode()).hexdigest()[:16]
    return CACHE / f"{sys.version_info.major}.{sys.version_info.minor}-{key}"


def ready() -> Path | None:
    """The wheel directory when it is complete, else None (nothing is fetched)."""
    target = directory()
    return target if (target / _COMPLETE).exists() else None


def ensure() -> Path:
    """The wheel directory, downloading and building the wheels first when it is missing."""
    target = directory()
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel `make` and test workers: one fetches, the rest wait
        if not (target / _COMPLETE).exists():
            work = Path(tempfile.mkdtemp(dir=CACHE))
            try:
                subprocess.run(
                    [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(work), *requirements()],
                    check=True,
                )
                (work / _COMPLETE).touch()
                shutil.rmtree(target, ignore_errors=True)
                os.replace(work, target)  # a reader sees the whole directory or none
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return target


if __name__ == "__main__":
    print(ensure())
