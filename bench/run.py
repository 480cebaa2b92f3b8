"""Measure `pullcheck serve` (gunicorn, TLS, keep-alive) against a local docker-registry and print a table.

Run from the repository root: `python -m bench.run` (what `make bench` does). Nothing here asserts;
the targets are printed beside the numbers.
"""

from __future__ import annotations

import argparse
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.latency import LatencyProxy
from bench.tokens import token_and_tag_costs
from tests.harness.images import make_layer
from tests.harness.registry import Registry, free_port, start_plain

_REQUEST = re.compile(r'"(?:GET|HEAD|POST) /v2/')


def review(images: list[str]) -> dict[str, Any]:
    spec = {"containers": [{"name": f"c{n}", "image": image} for n, image in enumerate(images)]}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "bench",
            "object": {"metadata": {"name": "bench"}, "spec": spec},
        },
    }


class Server:
    def __init__(self, command: list[str], url: str, log: Path) -> None:
        self.url, self.log = url, log
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, trust: Callable[[], ssl.SSLContext]) -> None:
        for _ in range(150):
            if self.process.poll() is not None:
                raise SystemExit(f"{self.url} exited:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", verify=trust(), timeout=2).status_code == 200:
                    return
            except (httpx.TransportError, OSError):
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.url} did not become ready:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def closed_loop(
    url: str, context: ssl.SSLContext, body: dict[str, Any], clients: int, seconds: float
) -> tuple[float, list[float]]:
    """Each client sends its next request as soon as the last is answered: throughput and latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def client() -> None:
        mine = []
        with httpx.Client(base_url=url, verify=context) as http:
            while time.perf_counter() < end:
                started = time.perf_counter()
                http.post("/validate", json=body).raise_for_status()
                mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - started), latencies


def fixed_rate(
    url: str, context: ssl.SSLContext, body: dict[str, Any], rate: float, seconds: float
) -> list[float]:
    """Requests sent on a schedule; latency counted from the scheduled time (no coordinated omission)."""
    local = threading.local()
    start = time.perf_counter() + 0.2

    def one(n: int) -> float:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=url, verify=context)
        due = start + n / rate
        time.sleep(max(0.0, due - time.perf_counter()))
        local.http.post("/validate", json=body).raise_for_status()
        return time.perf_counter() - due

    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(one, range(int(rate * seconds))))


def registry_requests(registry: Registry, action: Callable[[], object]) -> int:
    """Requests the registry's access log records while `action` runs."""
    before = len(_REQUEST.findall(registry.log_file.read_text(errors="replace")))
    action()
    time.sleep(0.5)  # the registry writes its access log after answering
    return len(_REQUEST.findall(registry.log_file.read_text(errors="replace"))) - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each load phase")
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients (closed loop)")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="requests per second of the fixed-rate phase"
    )
    parser.add_argument(
        "--registry-delay",
        type=float,
        default=0.02,
        help="seconds the proxy holds each registry answer back in the cold wall-time phase",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pullcheck-bench-") as temporary:
        work = Path(temporary)
        registry = start_plain(work / "registry")
        servers: list[Server] = []
        try:

            def ref(name: str) -> str:
                return registry.ref(f"bench/{name}", "v1")

            for name in ["warm-a", "warm-b", "warm-c", "cold-one", *(f"cold-{n}" for n in range(11))]:
                registry.push_image(f"bench/{name}", "v1", [make_layer(name)])
            proxy_port = free_port()
            policy = work / "policy.yaml"
            policy.write_text(
                yaml.safe_dump(
                    {
                        "registries": [
                            {"host": host, "insecure": True, "allowPrivateNetwork": True}
                            for host in (registry.host, f"127.0.0.1:{proxy_port}")
                        ]
                    }
                )
            )
            pki = work / "pki"
            webhook_port, floor_port = free_port(), free_port()
            webhook = Server(
                [
                    sys.executable,
                    "-m",
                    "webhook",
                    "serve",
                    "--config",
                    str(policy),
                    "--port",
                    str(webhook_port),
                    "--cert-dir",
                    str(pki),
                ],
                f"https://127.0.0.1:{webhook_port}",
                work / "webhook.log",
            )
            servers.append(webhook)

            def trust() -> ssl.SSLContext:
                return ssl.create_default_context(cafile=str(pki / "ca.crt"))

            webhook.wait_ready(trust)
            floor = Server(
                [
                    sys.executable,
                    "-m",
                    "bench.floor",
                    "--port",
                    str(floor_port),
                    "--cert",
                    str(pki / "tls.crt"),
                    "--key",
                    str(pki / "tls.key"),
                ],
                f"https://127.0.0.1:{floor_port}",
                work / "floor.log",
            )
            servers.append(floor)
            floor.wait_ready(trust)
            context = trust()
            http = httpx.Client(base_url=webhook.url, verify=context, timeout=30)

            # Cold path: registry requests for one image, then again within the tag TTL; skopeo beside it.
            cold = registry_requests(registry, lambda: http.post("/validate", json=review([ref("cold-one")])))
            again = registry_requests(
                registry, lambda: http.post("/validate", json=review([ref("cold-one")]))
            )
            skopeo = registry_requests(
                registry,
                lambda: subprocess.run(
                    ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref('cold-one')}"],
                    check=True,
                    capture_output=True,
                ),
            )

            # Cold wall time: ten distinct images in one Pod against one, through a proxy that gives the
            # loopback registry a remote registry's round trip.
            proxy = LatencyProxy(("127.0.0.1", registry.process.port), args.registry_delay, port=proxy_port)
            slow = proxy.host

            def slow_ref(name: str) -> str:
                return f"{slow}/bench/{name}:v1"

            started = time.perf_counter()
            http.post("/validate", json=review([slow_ref("cold-0")])).raise_for_status()
            one_seconds = time.perf_counter() - started
            started = time.perf_counter()
            http.post(
                "/validate", json=review([slow_ref(f"cold-{n}") for n in range(1, 11)])
            ).raise_for_status()
            ten_seconds = time.perf_counter() - started
            proxy.close()

            # Warm: a 3-container Pod whose images are cached, against the floor served the same way.
            pod = review([ref("warm-a"), ref("warm-b"), ref("warm-c")])
            http.post("/validate", json=pod).raise_for_status()
            webhook_rps, webhook_latency = closed_loop(webhook.url, context, pod, args.clients, args.seconds)
            floor_rps, floor_latency = closed_loop(floor.url, context, pod, args.clients, args.seconds)
            paced = fixed_rate(webhook.url, context, pod, args.rate, args.seconds)
            http.close()
            token_costs = token_and_tag_costs(work / "token")
        finally:
            for server in servers:
                server.stop()
            registry.stop()

    rows = [
        (
            "warm 3-container Pod, closed loop",
            f"{args.clients} keep-alive clients, {args.seconds:g} s each",
            "",
            "",
        ),
        ("  pullcheck AdmissionReviews/s", f"{webhook_rps:.0f}", "", ""),
        ("  floor (do-nothing Flask) /s", f"{floor_rps:.0f}", "", ""),
        ("  ratio pullcheck / floor", f"{webhook_rps / floor_rps:.2f}", ">= 0.80", ""),
        (
            "  pullcheck p50 / p99",
            f"{ms(statistics.median(webhook_latency))} / {ms(percentile(webhook_latency, 0.99))}",
            "",
            "",
        ),
        (
            "  floor p50 / p99",
            f"{ms(statistics.median(floor_latency))} / {ms(percentile(floor_latency, 0.99))}",
            "",
            "",
        ),
        (
            f"warm p50 / p99 at {args.rate:g} req/s",
            f"{ms(statistics.median(paced))} / {ms(percentile(paced, 0.99))}",
            "p99 <= 10 ms",
            "",
        ),
        ("registry requests, 1 cold image", f"{cold}", "", f"skopeo inspect: {skopeo}"),
        ("registry requests, same image again", f"{again}", "0 within the tag TTL", ""),
        ("token registry, cold image: registry / token requests", f"{token_costs.cold}", "", ""),
        ("  after the tag TTL, token cached", f"{token_costs.after_ttl}", "<= 1 per image", ""),
        (f"cold wall time, 1 image, registry +{ms(args.registry_delay)}", ms(one_seconds), "", ""),
        ("cold wall time, 10 images", ms(ten_seconds), "", ""),
        ("  ratio 10 / 1", f"{ten_seconds / one_seconds:.2f}", "<= 1.5", ""),
    ]
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'measure':<{width}}{'result':<28}{'target':<22}beside")
    for name, value, target, beside in rows:
        print(f"{name:<{width}}{value:<28}{target:<22}{beside}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
