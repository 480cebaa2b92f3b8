"""Find or build the control plane binaries the end-to-end tests run: kube-apiserver, etcd, kubectl, helm.

Each comes from Go modules pinned by a wrapper module under `tests/e2e/tools/`; the version in that
go.mod is the cache key. Lookup order per binary: `$KUBEBUILDER_ASSETS/<name>`, then
`${XDG_CACHE_HOME:-~/.cache}/pullcheck/bin/<name>-<version>/<name>`, else `go build` into that cache.
Running this file builds whatever is missing and prints where each binary is.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent / "tools"
NAMES = ("kube-apiserver", "etcd", "kubectl", "helm")


class MissingBinaries(RuntimeError):
    """A binary is neither prebuilt nor buildable (no Go toolchain)."""


@dataclass(frozen=True)
class Tool:
    name: str
    wrapper: str  # directory under tools/ holding the wrapper module
    module: str  # the module whose required version names the build
    package: str

    @property
    def built_as(self) -> str:
        # `go build -o DIR/` names a binary after its package, leaving out a /vN suffix (etcd's is "server").
        return re.sub(r"/v\d+$", "", self.package).rsplit("/", 1)[-1]

    @property
    def version(self) -> str:
        go_mod = (TOOLS_DIR / self.wrapper / "go.mod").read_text()
        found = re.search(rf"^\s*(?:require\s+)?{re.escape(self.module)}\s+(v\S+)", go_mod, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"{self.wrapper}/go.mod does not require {self.module}")
        return found.group(1)

    def ldflags(self) -> str:
        version = self.version
        flags = ["-s", "-w"]
        if self.wrapper == "kubernetes":
            # Without these the binaries call themselves v0.0.0-master, and helm's and kubectl's version
            # checks against the server would see a version no release has.
            major, minor = version.removeprefix("v").split(".")[:2]
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
                flags += [
                    f"-X {pkg}.gitVersion={version}",
                    f"-X {pkg}.gitMajor={major}",
                    f"-X {pkg}.gitMinor={minor}",
                    f"-X {pkg}.gitTreeState=clean",
                ]
        elif self.wrapper == "helm":
            # What helm's own Makefile stamps: its version and the Kubernetes version it assumes offline
            # (`helm template`, `helm lint`), taken from the client-go it is built with (v0.34 is 1.34).
            flags += [f"-X helm.sh/helm/v3/internal/version.version={version}"]
            client_go = Tool("", "helm", "k8s.io/client-go", "").version
            major, minor = client_go.removeprefix("v").split(".")[:2]
            for pkg in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
                flags += [f"-X {pkg}.k8sVersionMajor={int(major) + 1}", f"-X {pkg}.k8sVersionMinor={minor}"]
        return " ".join(flags)


TOOLS = {
    t.name: t
    for t in (
        Tool("kube-apiserver", "kubernetes", "k8s.io/kubernetes", "k8s.io/kubernetes/cmd/kube-apiserver"),
        Tool("kubectl", "kubernetes", "k8s.io/kubernetes", "k8s.io/kubernetes/cmd/kubectl"),
        Tool("etcd", "etcd", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3"),
        Tool("helm", "helm", "helm.sh/helm/v3", "helm.sh/helm/v3/cmd/helm"),
    )
}


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pullcheck" / "bin"


def cached_path(name: str) -> Path:
    tool = TOOLS[name]
    return cache_root() / f"{name}-{tool.version}" / name


def prebuilt_path(name: str) -> Path | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        candidate = Path(assets) / name
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def locate() -> dict[str, Path | None]:
    """Where each binary is now, without building anything."""
    found: dict[str, Path | None] = {}
    for name in NAMES:
        cached = cached_path(name)
        found[name] = prebuilt_path(name) or (cached if os.access(cached, os.X_OK) else None)
    return found


@contextmanager
def _build_lock() -> Iterator[None]:
    # pytest-xdist workers and a parallel `make` may all find the cache empty; one builds, the rest wait.
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise MissingBinaries(
            "the end-to-end tests need kube-apiserver, etcd, kubectl and helm: install Go >= 1.24 so "
            "tests/e2e/build_binaries.py can build them, or point KUBEBUILDER_ASSETS at a directory "
            "that holds them"
        )
    return go


def _build(names: list[str]) -> None:
    go = _go()
    by_wrapper: dict[str, list[Tool]] = {}
    for name in names:
        by_wrapper.setdefault(TOOLS[name].wrapper, []).append(TOOLS[name])
    for wrapper, tools in by_wrapper.items():
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=cache_root(), prefix=f".{wrapper}-") as out:
            command = [
                *(["nice", "-n", "19"] if shutil.which("nice") else []),
                go,
                "build",
                "-trimpath",
                # The stamp would describe this repository's checkout, not the release being built.
                "-buildvcs=false",
                f"-ldflags={tools[0].ldflags()}",
                "-o",
                out + "/",
                *(t.package for t in tools),
            ]
            print(
                f"building {', '.join(t.name for t in tools)} ({tools[0].version}) with Go", file=sys.stderr
            )
            # Module downloads go to the usual GOMODCACHE and objects to GOCACHE, both outside the repo.
            done = subprocess.run(
                command, cwd=TOOLS_DIR / wrapper, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            if done.returncode != 0:
                raise MissingBinaries(f"go build in tests/e2e/tools/{wrapper} failed:\n{done.stdout[-4000:]}")
            for tool in tools:
                target = cached_path(tool.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                # A rename inside one file system, so a reader sees the whole binary or none.
                os.replace(Path(out) / tool.built_as, target)
        print(f"built {wrapper} in {time.monotonic() - started:.0f}s", file=sys.stderr)


def ensure() -> dict[str, Path]:
    """Every binary's path, building the missing ones into the cache first."""
    found = locate()
    missing = [name for name, path in found.items() if path is None]
    if missing:
        with _build_lock():
            still_missing = [name for name in missing if not os.access(cached_path(name), os.X_OK)]
            if still_missing:
                _build(still_missing)
    return {name: path or cached_path(name) for name, path in found.items()}


def main() -> int:
    try:
        paths = ensure()
    except MissingBinaries as error:
        print(error, file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
