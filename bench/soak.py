"""Soak `pullcheck serve`: AdmissionReviews at a fixed rate for a few minutes, a mix of warm, cold,
failing and slow images, then throughput, latency, errors, timeouts and peak memory per worker.

Run from the repository root: `python -m bench.soak` (what `make soak` does). Loopback only: a local
docker-registry (warm, cold and failing images) and the tests' hostile registry (slow ones). Bounded
by `--seconds` and by `--seconds * --rate` requests. Errors and timeouts must be 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import ssl
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

from bench.run import Server, ms, percentile, review
from tests.harness import hostile
from tests.harness.images import make_layer
from tests.harness.registry import free_port, start_plain

WEBHOOK_TIMEOUT = 10.0  # the apiserver's default timeoutSeconds: a slower answer is a timeout
MIX = {"warm": 0.70, "cold": 0.10, "failing": 0.10, "slow": 0.10}
SLOW_SECONDS = 0.5


def slow_registry() -> hostile.HostileServer:
    """Every tag answers, half a second late, with one small linux/amd64 image."""
    layer = hostile.digest_of(b"soak layer")
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer]}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": hostile.OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": hostile.digest_of(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 1}
            ],
        }
    ).encode()
    server = hostile.HostileServer()
    server.route("/v2/slow/app/manifests/", hostile.headers_late(SLOW_SECONDS, hostile.document(manifest)))
    server.route(f"/v2/slow/app/blobs/{hostile.digest_of(config)}", hostile.document(config, None))
    server.route(f"/v2/slow/app/blobs/{layer}", hostile.document(b"x", None))
    return server


def worker_peaks_mib(master: int) -> list[float]:
    """VmHWM (peak resident memory) of each gunicorn worker."""
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return []
    peaks = []
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="how long to send (default 180)")
    parser.add_argument("--rate", type=float, default=50.0, help="AdmissionReviews per second (default 50)")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn worker processes (default 1)")
    args = parser.parse_args()
    total = int(args.seconds * args.rate)
    chooser = random.Random(6)  # noqa: S311 - a repeatable mix, not a secret
    kinds = chooser.choices(list(MIX), weights=list(MIX.values()), k=total)
    cold_needed = kinds.count("cold")

    with tempfile.TemporaryDirectory(prefix="pullcheck-soak-") as temp:
        work = Path(temp)
        registry = start_plain(work / "registry")
        slow = slow_registry()
        webhook: Server | None = None
        try:
            started = time.monotonic()
            warm = [registry.ref(f"soak/warm{n}", "v1") for n in range(5)]
            for n in range(5):
                registry.push_image(f"soak/warm{n}", "v1", [make_layer(f"warm {n}")])
            # Cold: a tag never asked for before, one per cold request (the blobs are shared).
            cold_layer = make_layer("cold")
            cold = []
            for n in range(cold_needed):
                registry.push_image("soak/cold", f"t{n}", [cold_layer])
                cold.append(registry.ref("soak/cold", f"t{n}"))
            print(
                f"pushed {len(warm)} warm and {len(cold)} cold images in {time.monotonic() - started:.1f} s"
            )

            policy = work / "policy.yaml"
            hosts = [registry.host, slow.host]
            policy.write_text(
                yaml.safe_dump(
                    {
                        "registries": [
                            {"host": h, "insecure": True, "allowPrivateNetwork": True} for h in hosts
                        ]
                    }
                )
            )
            port = free_port()
            url = f"https://127.0.0.1:{port}"
            command = [sys.executable, "-m", "webhook", "serve", "--port", str(port), "--config", str(policy)]
            command += ["--cert-dir", str(work / "pki"), "--workers", str(args.workers)]
            webhook = Server(command, url, work / "serve.log")

            def trust() -> ssl.SSLContext:
                return ssl.create_default_context(cafile=str(work / "pki" / "ca.crt"))

            webhook.wait_ready(trust)
            with httpx.Client(base_url=url, verify=trust()) as client:
                client.post("/validate", json=review(warm))  # warm means cached

            cold_images = iter(cold)
            counters = {"failing": iter(range(total)), "slow": iter(range(total))}

            def image_for(kind: str) -> list[str]:
                if kind == "warm":
                    return warm[:3]
                if kind == "cold":
                    return [next(cold_images)]
                if kind == "failing":
                    return [registry.ref("soak/absent", f"t{next(counters['failing'])}")]
                return [f"{slow.host}/slow/app:t{next(counters['slow'])}"]

            bodies = [(kind, review(image_for(kind))) for kind in kinds]
            local = threading.local()
            latencies: dict[str, list[float]] = {kind: [] for kind in MIX}
            errors: list[str] = []
            timeouts = 0
            lock = threading.Lock()

            def one(n: int) -> None:
                nonlocal timeouts
                if not hasattr(local, "client"):
                    local.client = httpx.Client(base_url=url, verify=trust(), timeout=WEBHOOK_TIMEOUT)
                scheduled = begin + n / args.rate
                time.sleep(max(0.0, scheduled - time.monotonic()))
                kind, body = bodies[n]
                try:
                    answer = local.client.post("/validate", json=body)
                    ok = (
                        answer.status_code == 200
                        and answer.json()["response"]["uid"] == body["request"]["uid"]
                    )
                    failure = None if ok else f"HTTP {answer.status_code}"
                except httpx.TimeoutException:
                    with lock:
                        timeouts += 1
                    return
                except httpx.HTTPError as error:
                    failure = repr(error)
                with lock:
                    latencies[kind].append(time.monotonic() - scheduled)
                    if failure:
                        errors.append(failure)

            threads = max(8, int(args.rate * (SLOW_SECONDS + 0.5)) * 2)
            begin = time.monotonic() + 0.5
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(one, range(total)))
            elapsed = time.monotonic() - begin
            peaks = worker_peaks_mib(webhook.process.pid)
        finally:
            if webhook is not None:
                webhook.stop()
            slow.close()
            registry.stop()

    every = [latency for values in latencies.values() for latency in values]

    def spread(values: list[float]) -> str:
        return f"{ms(percentile(values, 0.5))} / {ms(percentile(values, 0.99))} / {ms(max(values))}"

    print(f"\nsoak: {total} reviews at {args.rate:g}/s for {args.seconds:g} s, {args.workers} worker(s)")
    print(f"mix: {', '.join(f'{k} {v:.0%}' for k, v in MIX.items())} (slow: headers {SLOW_SECONDS} s late)")
    print(f"{'throughput':<28}{len(every) / elapsed:.1f} AdmissionReviews/s")
    print(f"{'latency p50 / p99 / max':<28}{spread(every)}")
    for kind, values in latencies.items():
        if values:
            print(f"  {kind:<26}{spread(values)}")
    print(f"{'errors':<28}{len(errors)}{'  ' + errors[0] if errors else ''}")
    print(f"{'timeouts':<28}{timeouts}")
    print(f"{'peak memory per worker':<28}{', '.join(f'{p:.1f} MiB' for p in peaks) or 'unknown'}")
    return 1 if errors or timeouts else 0


if __name__ == "__main__":
    if not os.path.isdir("/proc"):
        raise SystemExit("the soak reads worker memory from /proc")
    sys.exit(main())
