"""The runtimes' own pull paths, driven the way the kubelet drives them: the oracles of pullcheck's verdicts.

- containerd: a daemon of our own with its CRI plugin on (Debian's 1.6, or 2.1 built from Go modules by
  `build_containerd.sh`), driven through the CRI API by `crictl` (built from sigs.k8s.io/cri-tools).
  `PullImage` first; when it succeeds, `CreateContainer` in a host-network pod sandbox, because containerd
  2.1 pulls artifacts and unknown layer types without complaint and refuses only when a container is made
  from them (unpack, `mismatched image rootfs and manifest layers`, `no command specified`).
  CreateContainer does not start anything, so the image's own platform does not matter.
- CRI-O: `crio-pull` (tests/harness/tools/crio-pull), CRI-O 1.33's PullImage on the containers/image and
  containers/storage releases CRI-O 1.33 pins: copy into containers/storage (vfs), and on failure CRI-O's
  OCI-artifact fallback. An artifact pulled that way satisfies PullImage but can never back a container.

Every oracle answers PullResult(ok, message): ok when a container can be created from the image (what the
kubelet needs), and the runtime's own last words otherwise.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from tests.harness import processes
from tests.harness.images import Blob, Pusher, make_config, tar_with_file
from webhook import mediatypes as mt

PULL_TIMEOUT_SECONDS = 120
_READY_SECONDS = 30.0
HARNESS_DIR = Path(__file__).resolve().parent
TOOLS_DIR = HARNESS_DIR / "tools"
CONTAINERD2_VERSION = "2.1.9"
BUILD_TIMEOUT_SECONDS = 3600
_LOGRUS_MESSAGE = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
# gRPC status text as crictl prints it: `… rpc error: code = NotFound desc = <the runtime's message>`.
_GRPC_DESCRIPTION = re.compile(r"desc = (.*)$", re.DOTALL)


class PullResult(NamedTuple):
    ok: bool
    message: str


def _last_words(output: str) -> str:
    """The last non-empty line, or the `msg="…"` of a logrus line; then the gRPC description in it."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return ""
    logged = _LOGRUS_MESSAGE.search(lines[-1])
    words = logged.group(1).replace('\\"', '"') if logged else lines[-1]
    described = _GRPC_DESCRIPTION.search(words)
    return described.group(1) if described else words


def cache_dir() -> Path:
    return Path(os.environ.get("PULLCHECK_CACHE", Path.home() / ".cache" / "pullcheck")) / "bin"


def _build_locked(name: str, target: Path, build: list[str], cwd: Path, env: dict[str, str]) -> Path:
    """Run `build` (which writes into `target`.partial) once, under a lock: pytest-xdist workers ask together.

    Raises FileNotFoundError when Go is missing; CalledProcessError when the build fails."""
    if shutil.which("go") is None:
        raise FileNotFoundError(f"go is not installed, and {name} is not in {target}")
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / f"{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            subprocess.run(
                [arg.replace("{out}", str(partial)) for arg in build],
                cwd=cwd,
                env={**os.environ, **env},
                check=True,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_SECONDS,
            )
            partial.rename(target)
    return target


def containerd2_binaries(version: str = CONTAINERD2_VERSION) -> Path:
    """The directory holding containerd, ctr and the runc shim of `version`, built when not cached."""
    target = cache_dir() / f"containerd-{version}"
    if (target / "containerd-shim-runc-v2").exists():
        return target
    if shutil.which("go") is None:
        raise FileNotFoundError(f"go is not installed, and containerd {version} is not in {target}")
    cache_dir().mkdir(parents=True, exist_ok=True)
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


# The Go programs under tests/harness/tools/: name -> (package to build, extra environment, build tags).
_GO_TOOLS: dict[str, tuple[str, dict[str, str], str]] = {
    "crictl": ("sigs.k8s.io/cri-tools/cmd/crictl", {}, ""),
    # No C: signatures are checked in Go (openpgp), and the graph drivers that need C are left out.
    "crio-pull": (
        ".",
        {"CGO_ENABLED": "0"},
        "containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper",
    ),
    "pause": (".", {"CGO_ENABLED": "0"}, ""),
}


def go_tool(name: str) -> Path:
    """The binary of tests/harness/tools/NAME, built into the cache on first use.

    The cache key is a hash of the wrapper module (go.mod, go.sum, *.go), so a version bump rebuilds."""
    package, env, tags = _GO_TOOLS[name]
    source = TOOLS_DIR / name
    digest = hashlib.sha256()
    for path in sorted(source.iterdir()):
        if path.suffix in (".mod", ".sum", ".go"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    target = cache_dir() / f"{name}-{digest.hexdigest()[:12]}"
    binary = target / name
    if binary.exists():
        return binary
    build = ["nice", "-n", "19", "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w"]
    build += [f"-tags={tags}"] if tags else []
    build += ["-o", f"{{out}}/{name}", package]
    _build_locked(name, target, build, source, env)
    return binary


class Oracle:
    """A real pull path; `runtime` is the runtime it stands for, as pullcheck's `--runtime` takes it.

    Pulls are remembered per reference: the corpus does not change during a session."""

    name = ""
    runtime = ""
    platform = "linux/amd64"  # the node's, as pullcheck's `--platform` takes it

    def __init__(self) -> None:
        self._results: dict[str, PullResult] = {}

    def pull(self, ref: str) -> PullResult:
        if ref not in self._results:
            self._results[ref] = self._pull(ref)
        return self._results[ref]

    def _pull(self, ref: str) -> PullResult:
        raise NotImplementedError


class CrioPullPath(Oracle):
    """CRI-O 1.33's PullImage (containers/image v5.35.0 into containers/storage), one fresh store per pull.

    On this host's architecture by default; `arm64` stands for an arm64 node, whose containers/image
    reads the variant v8 from /proc/cpuinfo."""

    name = "cri-o"
    runtime = "cri-o://1.33.0"

    def __init__(self, directory: Path, binary: Path, architecture: str = "") -> None:
        super().__init__()
        self.directory = directory
        self.binary = binary
        self._platform_flags = ["-os", "linux", "-arch", architecture] if architecture else []
        if architecture == "arm64":
            self._platform_flags += ["-variant", "v8"]
        if architecture:
            self.platform = f"linux/{architecture}"
        directory.mkdir(parents=True, exist_ok=True)

    def _pull(self, ref: str) -> PullResult:
        with tempfile.TemporaryDirectory(prefix="crio-", dir=self.directory) as root:
            done = subprocess.run(
                [str(self.binary), "-root", root, *self._platform_flags, ref],
                capture_output=True,
                text=True,
                timeout=PULL_TIMEOUT_SECONDS,
            )
        if done.returncode != 0:
            raise RuntimeError(f"crio-pull {ref} exited {done.returncode}: {done.stderr}")
        answer = json.loads(done.stdout)
        if answer["outcome"] == "image":
            return PullResult(True, answer["message"])
        if answer["outcome"] == "artifact":
            return PullResult(False, f"PullImage pulled an OCI artifact, not an image: {answer['message']}")
        return PullResult(False, answer["message"])


def push_pause_image(pusher: Pusher, binary: Path) -> str:
    """The pod sandbox image for the containerd oracles: our own `pause`, pushed to the test registry."""
    repository = "oracle/pause"
    layer_tar = tar_with_file("pause", binary.read_bytes(), mode=0o755)
    layer = Blob(layer_tar, mt.OCI_LAYER)
    config = make_config([layer.digest], label="pause", entrypoint=["/pause"])
    pusher.push_image(repository, "oracle", [layer], config)
    return pusher.ref(repository, "oracle")


class ContainerdCRI(Oracle):
    """A containerd of our own (private root, state and socket) with the CRI plugin, driven by crictl."""

    def __init__(
        self,
        directory: Path,
        *,
        registry_hosts: list[str],
        sandbox_image: str,
        crictl: Path,
        containerd: str = "containerd",
        shim_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.directory = directory
        self.registry_hosts = registry_hosts
        self.sandbox_image = sandbox_image
        self.crictl = crictl
        self.containerd = containerd
        self.shim_dir = shim_dir
        self.version = self._version()
        self.major = int(self.version.split(".")[0])
        self.runtime = f"containerd://{self.version}"
        self.name = f"containerd-{self.version}"
        self.socket = directory / "containerd.sock"
        self.log_file = directory / "containerd.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._sandbox = ""
        self._containers = 0

    def _version(self) -> str:
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
        common = [
            f'root = "{d / "root"}"',
            f'state = "{d / "state"}"',
            "[grpc]",
            f'  address = "{self.socket}"',
            "[ttrpc]",
            f'  address = "{self.socket}.ttrpc"',
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{d / "opt"}"',
        ]
        # Pulls need no pod network; CNI directories of our own keep the host's plugins out.
        cni = [f'  bin_dir = "{d / "cni-bin"}"', f'  conf_dir = "{d / "cni-conf"}"']
        registry = [f'  config_path = "{d / "certs.d"}"']
        # The sandbox's pause process asks for oom_score_adj -998, which a machine that runs the tests
        # inside a container or a restricted VM refuses; this keeps it at ours.
        restrict_oom = ["  restrict_oom_score_adj = true"]

        def runc(plugin: str) -> list[str]:
            """runc keeps its containers' state in a directory of ours too, not in /run/containerd."""
            return [
                f"{plugin}.containerd.runtimes.runc]",
                '  runtime_type = "io.containerd.runc.v2"',
                f"{plugin}.containerd.runtimes.runc.options]",
                f'  Root = "{d / "runc"}"',
            ]

        if self.major < 2:
            cri = '[plugins."io.containerd.grpc.v1.cri"'
            return "\n".join(
                [
                    "version = 2",
                    *common,
                    f"{cri}]",
                    f'  sandbox_image = "{self.sandbox_image}"',
                    *restrict_oom,
                    f"{cri}.containerd]",
                    '  snapshotter = "native"',
                    *runc(cri),
                    f"{cri}.cni]",
                    *cni,
                    f"{cri}.registry]",
                    *registry,
                    "",
                ]
            )
        images, runtime = '[plugins."io.containerd.cri.v1.images"', '[plugins."io.containerd.cri.v1.runtime"'
        return "\n".join(
            [
                "version = 3",
                *common,
                f"{images}]",
                '  snapshotter = "native"',
                f"{images}.pinned_images]",
                f'  sandbox = "{self.sandbox_image}"',
                f"{images}.registry]",
                *registry,
                f"{runtime}]",
                *restrict_oom,
                *runc(runtime),
                f"{runtime}.cni]",
                f'  bin_dirs = ["{d / "cni-bin"}"]',
                f'  conf_dir = "{d / "cni-conf"}"',
                # The transfer service (the CRI plugin's pull path) unpacks only for the pairs listed
                # here, and its default pair uses overlayfs.
                '[[plugins."io.containerd.transfer.v1.local".unpack_config]]',
                '  platform = "linux/amd64"',
                '  snapshotter = "native"',
                "",
            ]
        )

    def _hosts_toml(self) -> None:
        """certs.d/HOST/hosts.toml: the test registries speak plain http, as a node's host config says."""
        for host in self.registry_hosts:
            host_dir = self.directory / "certs.d" / host
            host_dir.mkdir(parents=True, exist_ok=True)
            (host_dir / "hosts.toml").write_text(
                f'server = "http://{host}"\n\n[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n'
            )

    def _crictl(self, *args: str, timeout: float = PULL_TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
        endpoint = f"unix://{self.socket}"
        # A config file of our own (empty), so a machine's /etc/crictl.yaml never applies.
        command = [str(self.crictl), "--config", str(self.directory / "crictl.yaml")]
        command += ["--runtime-endpoint", endpoint, "--image-endpoint", endpoint]
        command += ["--timeout", f"{int(timeout)}s", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout + 10)

    def start(self) -> ContainerdCRI:
        for name in ("cni-bin", "cni-conf", "pods"):
            (self.directory / name).mkdir(parents=True, exist_ok=True)
        (self.directory / "crictl.yaml").write_text("")
        self._hosts_toml()
        config = self.directory / "config.toml"
        config.write_text(self._config())
        env = dict(os.environ)
        if self.shim_dir is not None:
            # containerd finds `containerd-shim-runc-v2` on PATH: take the one of the same release.
            env["PATH"] = f"{self.shim_dir}:{env.get('PATH', '')}"
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [self.containerd, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + _READY_SECONDS
        while time.monotonic() < deadline and self._process.poll() is None:
            if self._crictl("version", timeout=10).returncode == 0:
                try:
                    self._sandbox = self._run_sandbox()
                except RuntimeError:
                    self.stop()
                    raise
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.containerd} did not start: {_last_words(self.log_file.read_text())}")

    def _run_sandbox(self) -> str:
        """One pod sandbox in the host's network namespace (no CNI needed) for every CreateContainer."""
        pod = self.directory / "pod.json"
        pod.write_text(
            json.dumps(
                {
                    "metadata": {"name": "oracle", "namespace": "pullcheck", "uid": "oracle", "attempt": 0},
                    "log_directory": str(self.directory / "pods"),
                    "linux": {"security_context": {"namespace_options": {"network": 2}}},
                }
            )
        )
        done = self._crictl("runp", str(pod))
        if done.returncode != 0:
            raise RuntimeError(f"RunPodSandbox failed: {_last_words(done.stderr)}")
        return done.stdout.strip()

    def _pull(self, ref: str) -> PullResult:
        done = self._crictl("pull", ref)
        if done.returncode != 0:
            return PullResult(False, _last_words(done.stderr) or _last_words(done.stdout))
        return self._create(ref)

    def _create(self, ref: str) -> PullResult:
        """CreateContainer from the pulled image (no start): where containerd unpacks and reads the config."""
        self._containers += 1
        container = self.directory / f"container-{self._containers}.json"
        container.write_text(
            json.dumps(
                {
                    "metadata": {"name": f"c{self._containers}"},
                    "image": {"image": ref},
                    "log_path": f"c{self._containers}.log",
                    "linux": {},
                }
            )
        )
        done = self._crictl(
            "create", "--no-pull", self._sandbox, str(container), str(self.directory / "pod.json")
        )
        if done.returncode != 0:
            return PullResult(False, f"PullImage succeeded; CreateContainer: {_last_words(done.stderr)}")
        self._crictl("rm", done.stdout.strip())
        return PullResult(True, "pulled, and a container created")

    def stop(self) -> None:
        if self._sandbox:
            self._crictl("stopp", self._sandbox, timeout=30)
            self._crictl("rmp", self._sandbox, timeout=30)
            self._sandbox = ""
        if self._process is not None:
            processes.stop(self._process)
            self._process = None
        # Mounts of the native snapshotter are gone once the sandbox is; the files may be root-only.
        shutil.rmtree(self.directory / "root", ignore_errors=True)
        shutil.rmtree(self.directory / "state", ignore_errors=True)


def main() -> int:
    """Build whatever the oracles need that the cache lacks (`make binaries` runs this), then print it."""
    started = time.monotonic()
    for name in _GO_TOOLS:
        print(f"{name}: {go_tool(name)} ({time.monotonic() - started:.0f}s)", file=sys.stderr)
    print(f"containerd {CONTAINERD2_VERSION}: {containerd2_binaries()} ({time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
