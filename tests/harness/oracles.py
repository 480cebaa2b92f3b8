"""The runtimes' own pull paths, run for real against the test registry: the oracles of pullcheck's verdicts.

- CRI-O: `skopeo copy docker://… containers-storage:[vfs@ROOT+RUNROOT]…` is containers/image's pull
  into containers/storage, the path CRI-O uses. Debian's skopeo 1.9.3 vendors containers/image 5.23,
  older than current CRI-O's (see the oracle test data for where that matters).
- containerd: `ctr images pull` (fetch and unpack with the native snapshotter) against a containerd
  daemon of our own: Debian's 1.6, or a 2.x built from Go modules by `build_containerd.sh`.

Every oracle answers (ok, message): whether the pull succeeded, and the runtime's last words.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from webhook.platforms import Platform

PULL_TIMEOUT_SECONDS = 120
_READY_SECONDS = 30.0
HARNESS_DIR = Path(__file__).resolve().parent
CONTAINERD2_VERSION = "2.1.9"
LINUX_AMD64 = Platform("linux", "amd64")
BUILD_TIMEOUT_SECONDS = 3600
_LOGRUS_MESSAGE = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


class PullResult(NamedTuple):
    ok: bool
    message: str


def _last_words(output: str) -> str:
    """The last non-empty line, or the `msg="…"` of a logrus line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return ""
    logged = _LOGRUS_MESSAGE.search(lines[-1])
    return logged.group(1).replace('\\"', '"') if logged else lines[-1]


def cache_dir() -> Path:
    return Path(os.environ.get("PULLCHECK_CACHE", Path.home() / ".cache" / "pullcheck")) / "bin"


def containerd2_binaries(version: str = CONTAINERD2_VERSION) -> Path:
    """The directory holding containerd and ctr of `version`, built from Go modules when not cached.

    Raises FileNotFoundError when Go is missing; CalledProcessError when the build fails."""
    target = cache_dir() / f"containerd-{version}"
    if (target / "ctr").exists():
        return target
    if shutil.which("go") is None:
        raise FileNotFoundError(f"go is not installed, and containerd {version} is not in {target}")
    cache_dir().mkdir(parents=True, exist_ok=True)
    # One build at a time: pytest-xdist workers ask together.
    with (cache_dir() / f"containerd-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(
            [str(HARNESS_DIR / "build_containerd.sh"), version, str(cache_dir())],
            check=True,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_SECONDS,
        )
    return target


class Oracle:
    """A real pull path; `runtime` is the runtime it stands for, as pullcheck's `--runtime` takes it.

    Pulls are remembered per (reference, platform): the corpus does not change during a session."""

    name = ""
    runtime = ""

    def __init__(self) -> None:
        self._results: dict[tuple[str, Platform], PullResult] = {}

    def pull(self, ref: str, platform: Platform = LINUX_AMD64) -> PullResult:
        key = (ref, platform)
        if key not in self._results:
            self._results[key] = self._pull(ref, platform)
        return self._results[key]

    def _pull(self, ref: str, platform: Platform) -> PullResult:
        raise NotImplementedError


class SkopeoOracle(Oracle):
    """CRI-O's pull path: containers/image into a fresh containers/storage (vfs) per pull."""

    name = "cri-o"
    runtime = "cri-o://1.33.0"

    def __init__(self, directory: Path, binary: str = "skopeo") -> None:
        super().__init__()
        self.directory = directory
        self.binary = binary
        directory.mkdir(parents=True, exist_ok=True)
        # Hermetic settings: accept any image, no mirrors or search registries from the host.
        self.policy = directory / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.registries_conf = directory / "registries.conf"
        self.registries_conf.write_text("unqualified-search-registries = []\n")
        self.storage_conf = directory / "storage.conf"

    def version(self) -> str:
        return subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()

    def _pull(self, ref: str, platform: Platform) -> PullResult:
        with tempfile.TemporaryDirectory(prefix="storage-", dir=self.directory) as scratch:
            root, runroot = Path(scratch) / "root", Path(scratch) / "run"
            self.storage_conf.write_text(
                f'[storage]\ndriver = "vfs"\ngraphroot = "{root}"\nrunroot = "{runroot}"\n'
            )
            command = [self.binary, "--policy", str(self.policy), "--override-os", platform.os]
            command += ["--override-arch", platform.architecture]
            if platform.variant:
                command += ["--override-variant", platform.variant]
            command += ["copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}"]
            command += [f"containers-storage:[vfs@{root}+{runroot}]localhost/pulled:latest"]
            env = {
                **os.environ,
                "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
                "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
            }
            result = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=PULL_TIMEOUT_SECONDS
            )
            # vfs layers may hold files only root may remove; the temp dir cleanup handles the rest.
            shutil.rmtree(root, ignore_errors=True)
        if result.returncode == 0:
            return PullResult(True, "pulled")
        return PullResult(False, _last_words(result.stderr))


# containerd 2.x pulls through the transfer service (so does its CRI plugin); it unpacks only for the
# (platform, snapshotter) pairs configured here, and the default pair uses overlayfs.
_TRANSFER_UNPACK = [
    '[[plugins."io.containerd.transfer.v1.local".unpack_config]]',
    '  platform = "linux/amd64"',
    '  snapshotter = "native"',
]


class ContainerdDaemon(Oracle):
    """A containerd of our own (temp root, state and socket; CRI plugin off) and `ctr images pull`."""

    def __init__(
        self,
        directory: Path,
        containerd: str = "containerd",
        ctr: str = "ctr",
        pull_flags: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.pull_flags = pull_flags
        self.directory = directory
        self.containerd, self.ctr = containerd, ctr
        self.runtime = f"containerd://{self.version()}"
        self.name = f"containerd-{self.version()}"
        self.socket = directory / "containerd.sock"
        self.log_file = directory / "containerd.log"
        self._process: subprocess.Popen[bytes] | None = None

    def version(self) -> str:
        """`1.6.20` from `containerd github.com/containerd/containerd 1.6.20~ds1 …` or `… 2.1.9+unknown`."""
        words = subprocess.run(
            [self.containerd, "--version"], capture_output=True, text=True, check=True
        ).stdout
        found = re.search(r"\d+\.\d+\.\d+", words.split()[2])
        if found is None:
            raise RuntimeError(f"cannot read the version of {self.containerd}: {words}")
        return found.group(0)

    def _config(self) -> str:
        d = self.directory
        major = int(self.runtime.removeprefix("containerd://").split(".")[0])
        disabled = [
            "io.containerd.grpc.v1.cri",
            "io.containerd.cri.v1.images",
            "io.containerd.cri.v1.runtime",
        ]
        disabled = [p for p in disabled if major >= 2 or p == "io.containerd.grpc.v1.cri"]
        return "\n".join(
            [
                f"version = {3 if major >= 2 else 2}",
                f'root = "{d / "root"}"',
                f'state = "{d / "state"}"',
                f"disabled_plugins = {json.dumps(disabled)}",
                "[grpc]",
                f'  address = "{self.socket}"',
                "[ttrpc]",
                f'  address = "{self.socket}.ttrpc"',
                "[debug]",
                '  level = "info"',
                '[plugins."io.containerd.internal.v1.opt"]',
                f'  path = "{d / "opt"}"',
                *(_TRANSFER_UNPACK if major >= 2 else []),
                "",
            ]
        )

    def start(self) -> ContainerdDaemon:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "config.toml"
        config.write_text(self._config())
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [self.containerd, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + _READY_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            probe = subprocess.run(
                [self.ctr, "--address", str(self.socket), "version"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            if probe.returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.containerd} did not start: {_last_words(self.log_file.read_text())}")

    def _pull(self, ref: str, platform: Platform) -> PullResult:
        command = [
            self.ctr,
            "--address",
            str(self.socket),
            "images",
            "pull",
            "--plain-http",
            *self.pull_flags,
        ]
        command += ["--platform", str(platform), "--snapshotter", "native", ref]
        result = subprocess.run(command, capture_output=True, text=True, timeout=PULL_TIMEOUT_SECONDS)
        if result.returncode == 0:
            return PullResult(True, "pulled and unpacked")
        return PullResult(False, _last_words(result.stderr) or _last_words(result.stdout))

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        shutil.rmtree(self.directory / "root", ignore_errors=True)
        shutil.rmtree(self.directory / "state", ignore_errors=True)
