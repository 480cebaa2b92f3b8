"""Measure `pullcheck audit -A` on a synthetic cluster in a real apiserver and print a table.

Run from the repository root: `python -m bench.audit` (what `make bench-audit` does). Pods spread over
namespaces, each with one image out of a few hundred distinct ones spread over several repositories
of a local docker-registry; three Nodes (containerd 2.1, containerd 1.7, CRI-O). Nothing here asserts;
the targets are printed beside the numbers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client as k8s

from bench.run import registry_requests
from tests.e2e.harness import CONTAINERD_1_7, CONTAINERD_2_1, CRIO_1_33, ControlPlane
from tests.harness.images import make_layer
from tests.harness.registry import Registry, start_plain

PULLCHECK = str(Path(sys.executable).parent / "pullcheck")
MIB = 1024 * 1024


def push_images(registry: Registry, images: int, repositories: int) -> list[str]:
    """`images` distinct tags over `repositories` repositories: one shared layer per repository, a
    config of its own per tag (so each tag is its own manifest digest)."""
    refs = []
    for n in range(images):
        repository = f"bench/app{n % repositories}"
        tag = f"v{n}"
        registry.push_image(repository, tag, [make_layer(repository)])
        refs.append(registry.ref(repository, tag))
    return refs


def create_pods(cluster: ControlPlane, images: list[str], pods: int, namespaces: int) -> None:
    names = [f"bench-{n}" for n in range(namespaces)]
    for name in names:
        cluster.create_namespace(name)
    core = cluster.core

    def create(n: int) -> None:
        body = k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name=f"pod-{n}"),
            spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="main", image=images[n % len(images)])]),
        )
        core.create_namespaced_pod(names[n % namespaces], body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, range(pods)))


def run_audit(cluster: ControlPlane, registry: Registry) -> tuple[float, int, int]:
    """(wall seconds, peak RSS in bytes, exit status) of one `pullcheck audit -A`."""
    command = [
        PULLCHECK, "audit", "-A", "--kubeconfig", str(cluster.kubeconfig),
        "--insecure-registry", registry.host, "-o", "json",
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss * 1024, process.returncode  # ru_maxrss is in KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=50_000)
    parser.add_argument("--images", type=int, default=3_000, help="distinct images")
    parser.add_argument("--repositories", type=int, default=30)
    parser.add_argument("--namespaces", type=int, default=50)
    args = parser.parse_args()
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
            outcome: dict[str, tuple[float, int, int]] = {}
            requests = registry_requests(registry, lambda: outcome.update(run=run_audit(cluster, registry)))
            seconds, peak, status = outcome["run"]
            # Without one resolution per distinct image, every Pod pays for its image's requests.
            per_image = requests / args.images
            per_pod = round(per_image * args.pods)
        finally:
            cluster.stop()
            registry.stop()
    rows = [
        ("setup: images pushed", f"{args.images} in {args.repositories} repositories", f"{pushed:.1f} s"),
        ("setup: Pods created", f"{args.pods} in {args.namespaces} namespaces", f"{created:.1f} s"),
        ("audit -A wall time", f"{seconds:.2f} s", "target < 60 s"),
        (
            "registry requests",
            f"{requests} ({per_image:.2f} per image)",
            "target ≈ distinct images (+ tokens)",
        ),
        ("per-Pod approach would make", f"{per_pod} requests", f"{per_pod / max(requests, 1):.0f}x"),
        ("peak memory (RSS)", f"{peak / MIB:.0f} MiB", "target < 500 MiB"),
        ("exit status", str(status), "0: nothing denied"),
    ]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"pullcheck audit: {args.pods} Pods, {args.images} distinct images, 3 Nodes, containerd and CRI-O")
    for name, value, note in rows:
        print(f"  {name:{width}}  {value:{value_width}}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
