"""Measure `pullcheck audit -A` on a synthetic cluster in a real apiserver and print a table.

Run from the repository root: `python -m bench.audit` (what `make bench-audit` does). Pods spread over
namespaces, each with one image out of thousands of distinct ones spread over several repositories
of a local docker-registry; three Nodes (containerd 2.1, containerd 1.7, CRI-O). Nothing here asserts;
the targets are printed beside the numbers. `--pullcheck` twice or more times several builds
interleaved on the same cluster (wall time follows the machine's other load; compare within one run).
"""

from __future__ import annotations

import argparse
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import orjson

from bench.run import registry_requests
from tests.e2e.harness import CONTAINERD_1_7, CONTAINERD_2_1, CRIO_1_33, ControlPlane
from tests.harness.images import image_manifest, make_config, make_layer
from tests.harness.registry import Registry, start_plain
from webhook import mediatypes as mt

PULLCHECK = str(Path(sys.executable).parent / "pullcheck")
MIB = 1024 * 1024


SETUP_THREADS = 8  # concurrent setup requests: the registry and the apiserver answer in parallel


def push_images(registry: Registry, images: int, repositories: int) -> list[str]:
    """`images` distinct tags over `repositories` repositories: one shared layer per repository,
    uploaded once, then per tag a config of its own (so each tag is its own manifest digest) and its
    manifest, over the pusher's keep-alive connections from several threads."""
    layers = {f"bench/app{r}": make_layer(f"bench/app{r}") for r in range(min(images, repositories))}
    with ThreadPoolExecutor(max_workers=SETUP_THREADS) as pool:
        list(pool.map(lambda item: registry.push_blob(item[0], item[1].data), layers.items()))

        def push(n: int) -> str:
            repository = f"bench/app{n % repositories}"
            tag = f"v{n}"
            layer = layers[repository]
            config = make_config([layer.diff_id], label=tag)
            registry.push_blob(repository, config.data)
            manifest = image_manifest(config.descriptor(), [layer.descriptor()])
            registry.push_manifest(repository, tag, manifest, mt.OCI_MANIFEST)
            return registry.ref(repository, tag)

        return list(pool.map(push, range(images)))


def _pod(name: str, image: str) -> bytes:
    return orjson.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": image}]},
        }
    )


def create_pods(cluster: ControlPlane, images: list[str], pods: int, namespaces: int) -> None:
    """Real Pods through the apiserver's create endpoint (admission, validation, etcd): raw JSON over
    one keep-alive connection per thread, without the typed client's model serialization."""
    names = [f"bench-{n}" for n in range(namespaces)]
    for name in names:
        cluster.create_namespace(name)
    tls = ssl.create_default_context(cafile=cluster.pki.ca_file)
    tls.load_cert_chain(cluster.pki.admin_cert, cluster.pki.admin_key)
    local = threading.local()
    clients: list[httpx.Client] = []

    def create(n: int) -> None:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=cluster.server, verify=tls, timeout=60)
            clients.append(local.http)
        body = _pod(f"pod-{n}", images[n % len(images)])
        response = local.http.post(
            f"/api/v1/namespaces/{names[n % namespaces]}/pods",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        if response.status_code != 201:
            raise RuntimeError(f"creating pod-{n}: HTTP {response.status_code} {response.text[:200]}")

    try:
        with ThreadPoolExecutor(max_workers=SETUP_THREADS) as pool:
            list(pool.map(create, range(pods)))
    finally:
        for http in clients:
            http.close()


@dataclass(frozen=True)
class Run:
    seconds: float  # wall
    cpu: float  # user + system seconds of the audit process
    peak: int  # RSS bytes
    status: int
    requests: int  # registry requests


def run_audit(pullcheck: str, cluster: ControlPlane, registry: Registry) -> Run:
    """One `pullcheck audit -A`, timed from outside, with the registry requests it made."""
    command = [
        pullcheck, "audit", "-A", "--kubeconfig", str(cluster.kubeconfig),
        "--insecure-registry", registry.host, "-o", "json",
    ]  # fmt: skip
    outcome: list[Run] = []

    def audit() -> None:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        cpu = usage.ru_utime + usage.ru_stime
        # ru_maxrss is in KiB on Linux
        outcome.append(Run(seconds, cpu, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status), 0))

    requests = registry_requests(registry, audit)
    return replace(outcome[0], requests=requests)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=50_000)
    parser.add_argument("--images", type=int, default=3_000, help="distinct images")
    parser.add_argument("--repositories", type=int, default=30)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1, help="audits run on the same cluster (default 1)")
    parser.add_argument(
        "--pullcheck",
        action="append",
        metavar="EXE",
        help="the pullcheck executable to time (repeatable: several are run interleaved on the same "
        "cluster, to compare builds; default: this environment's)",
    )
    args = parser.parse_args()
    executables = args.pullcheck or [PULLCHECK]
    runs: dict[str, list[Run]] = {exe: [] for exe in executables}
    with tempfile.TemporaryDirectory(prefix="pullcheck-bench-audit-") as directory:
        work = Path(directory)
        registry = start_plain(work / "registry")
        cluster = ControlPlane.start(work / "cluster")
        try:
            started = time.perf_counter()
            images = push_images(registry, args.images, args.repositories)
            pushed = time.perf_counter() - started
            for name, runtime in (
                ("n-c21", CONTAINERD_2_1),
                ("n-c17", CONTAINERD_1_7),
                ("n-crio", CRIO_1_33),
            ):
                cluster.create_node(name, runtime=runtime)
            started = time.perf_counter()
            create_pods(cluster, images, args.pods, args.namespaces)
            created = time.perf_counter() - started
            for _ in range(args.repeats):
                for exe in executables:
                    runs[exe].append(run_audit(exe, cluster, registry))
        finally:
            cluster.stop()
            registry.stop()
    print(f"pullcheck audit: {args.pods} Pods, {args.images} distinct images, 3 Nodes, containerd and CRI-O")
    print(f"  setup: {args.images} images pushed to {args.repositories} repositories in {pushed:.1f} s, "
          f"{args.pods} Pods created in {args.namespaces} namespaces in {created:.1f} s")  # fmt: skip
    for exe, measured in runs.items():
        print(_table(exe, measured, args.images, args.pods))
    return 0


def _table(exe: str, runs: list[Run], images: int, pods: int) -> str:
    """The median run of one executable (the runs' spread beside it when there are several)."""
    seconds = statistics.median(r.seconds for r in runs)
    cpu = statistics.median(r.cpu for r in runs)
    peak = statistics.median(r.peak for r in runs)
    requests = round(statistics.median(r.requests for r in runs))
    spread = f" (runs: {', '.join(f'{r.seconds:.1f}' for r in runs)})" if len(runs) > 1 else ""
    # Without one resolution per distinct image, every Pod pays for its image's requests.
    per_image = requests / images
    per_pod = round(per_image * pods)
    rows = [
        ("audit -A wall time", f"{seconds:.2f} s{spread}", "target < 60 s"),
        ("audit CPU (user + system)", f"{cpu:.1f} s", ""),
        (
            "registry requests",
            f"{requests} ({per_image:.2f} per image)",
            "target ≈ distinct images (+ tokens)",
        ),
        ("per-Pod approach would make", f"{per_pod} requests", f"{per_pod / max(requests, 1):.0f}x"),
        ("peak memory (RSS)", f"{peak / MIB:.0f} MiB", "target < 500 MiB"),
        ("exit status", ", ".join(sorted({str(r.status) for r in runs})), "0: nothing denied"),
    ]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    lines = [f"  {exe}, median of {len(runs)}:"]
    lines += [f"    {name:{width}}  {value:{value_width}}  {note}".rstrip() for name, value, note in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
