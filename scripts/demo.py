"""`make demo`: pullcheck in a real API server, three Pods, three outcomes, as kubectl shows them.

Starts a local docker-registry with sample images, etcd and kube-apiserver (no kubelet: Pods are stored,
never run), two containerd 2.1 Nodes and one CRI-O Node, installs the Helm chart in enforce mode with the
webhook running here as `pullcheck serve`, then creates a Pod with a schema 1 image (refused), one whose
image carries an encrypted layer (admitted with a warning) and a healthy one (admitted). Everything
listens on 127.0.0.1 and is removed at the end.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import CONTAINERD_2_1, CRIO_1_33, ControlPlane  # noqa: E402 - after the path
from tests.e2e.pullcheck_webhook import install, registry_policy  # noqa: E402
from tests.harness.corpus import build_corpus  # noqa: E402
from tests.harness.registry import start_plain  # noqa: E402


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(cluster: ControlPlane, *args: str) -> None:
    print(f"$ kubectl {shlex.join(args)}", flush=True)
    done = cluster.kubectl(*args)
    for line in (done.stdout + done.stderr).splitlines():
        print(f"  {line}")
    print(f"  (exit status {done.returncode})", flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pullcheck-demo-") as scratch:
        work = Path(scratch)
        say("A local registry with sample images")
        registry = start_plain(work / "registry")
        cluster = None
        release = None
        try:
            corpus = build_corpus(registry)
            images = {name: corpus[name].ref for name in ("schema1_signed", "encrypted_layer", "oci_index")}
            for name, ref in images.items():
                print(f"  {ref:60} {corpus[name].what}")
            say("A real kube-apiserver and etcd, with two containerd 2.1 Nodes and one CRI-O Node")
            cluster = ControlPlane.start(work / "cluster")
            for name in ("node-a", "node-b"):
                cluster.create_node(name, runtime=CONTAINERD_2_1)
            cluster.create_node("node-c", runtime=CRIO_1_33)
            show(cluster, "get", "nodes", "-o", "wide")
            say("helm install of charts/pullcheck, enforce mode; the webhook runs here as `pullcheck serve`")
            policy = {"mode": "enforce", **registry_policy({"host": registry.host, "insecure": True})}
            release = install(cluster, work, {"policy": policy})
            release.start_webhook()
            namespace = release.judged_namespace("demo")
            print(f"  release {release.name} in {release.namespace}; Pods go to namespace {namespace}")
            say("1. A Docker schema 1 image: containerd 2.1 cannot pull it, so the Pod is refused")
            show(cluster, "run", "legacy", "-n", namespace, f"--image={images['schema1_signed']}")
            say("2. An image with an encrypted layer: admitted, with a warning (nodes need the keys)")
            show(cluster, "run", "sealed", "-n", namespace, f"--image={images['encrypted_layer']}")
            say("3. A healthy multi-platform image: admitted silently")
            show(cluster, "run", "web", "-n", namespace, f"--image={images['oci_index']}")
            show(cluster, "get", "pods", "-n", namespace)
            print("  (Pending: no scheduler or kubelet runs here; the Pods are stored, never run)")
            say("Done. Try it yourself: README.md, docs/install.md, charts/pullcheck/README.md")
        finally:
            if release is not None:
                release.uninstall()
            if cluster is not None:
                cluster.stop()
            registry.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
