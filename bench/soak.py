"""Soak `pullcheck serve`: AdmissionReviews at a fixed rate for a few minutes, a mix of warm, cold,
failing and slow images, beside an attacker mix, then throughput, latency, errors, timeouts and peak
memory per worker.

The attackers run all along: 100 slow clients (a third stop after one byte of a ClientHello, a third
say nothing, a third stop halfway through a request head) replaced every few seconds, admissions of Pods
whose images sit on a registry that stalls every layer, and admissions of images on a registry that
names a new token realm in every challenge while its token service fails every other request.

Run from the repository root: `python -m bench.soak` (what `make soak` does). Loopback only: a local
docker-registry (warm, cold and failing images) and the tests' hostile registries (slow ones and the
attackers'). Bounded by `--seconds` and by `--seconds * --rate` requests. Errors and timeouts of the
legitimate admissions must be 0; the attackers' answers are counted apart.
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

from bench.run import STALLED, Server, ms, open_stalled, percentile, review
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


ATTACK_SECONDS = 4.0  # how long each set of slow clients stays before the next replaces it
STALLING_IMAGES = 8  # per attacking admission, each with 200 layers whose HEADs never answer


def stalling_registry() -> hostile.HostileServer:
    server = hostile.HostileServer()
    for n in range(STALLING_IMAGES):
        server.route(f"/v2/stall/app{n}/manifests/", hostile.document(hostile.wide_manifest(200, f"s{n}")))
        server.route(f"/v2/stall/app{n}/blobs/", hostile.headers_late(60))
    return server


def rotating_registry() -> hostile.HostileServer:
    server = hostile.HostileServer()
    hostile.realm_rotating(server)
    return server


class Attackers:
    """The attacker mix, on threads of its own until `stop()`; what it got is counted, not judged."""

    def __init__(self, url: str, port: int, trust: ssl.SSLContext, stalling: str, rotating: str) -> None:
        self.answered = {"stalling": 0, "rotating": 0}
        self.unanswered = {"stalling": 0, "rotating": 0}
        self.slow_clients = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._slow_clients, args=(port, trust), daemon=True),
            threading.Thread(
                target=self._admissions, args=(url, trust, "stalling", stalling, 1.0), daemon=True
            ),
            threading.Thread(
                target=self._admissions, args=(url, trust, "rotating", rotating, 0.25), daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def _slow_clients(self, port: int, trust: ssl.SSLContext) -> None:
        while not self._stop.is_set():
            stalled = open_stalled(port, trust)
            self.slow_clients += len(stalled)
            self._stop.wait(ATTACK_SECONDS)
            for sock in stalled:
                sock.close()

    def _admissions(self, url: str, trust: ssl.SSLContext, kind: str, host: str, every: float) -> None:
        counter = iter(range(10**9))
        with httpx.Client(base_url=url, verify=trust, timeout=WEBHOOK_TIMEOUT) as client:
            while not self._stop.is_set():
                n = next(counter)
                if kind == "stalling":
                    images = [f"{host}/stall/app{i}:t{n}" for i in range(STALLING_IMAGES)]
                else:
                    images = [f"{host}/rotating/app:t{n}"]
                try:
                    client.post("/validate", json=review(images)).raise_for_status()
                    outcome = self.answered
                except httpx.HTTPError:
                    outcome = self.unanswered
                with self._lock:
                    outcome[kind] += 1
                self._stop.wait(every)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=WEBHOOK_TIMEOUT + ATTACK_SECONDS + 5)


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
        stalling, rotating = stalling_registry(), rotating_registry()
        webhook: Server | None = None
        attackers: Attackers | None = None
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
            hosts = [registry.host, slow.host, stalling.host, rotating.host]
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
            attackers = Attackers(url, port, trust(), stalling.host, rotating.host)
            begin = time.monotonic() + 0.5
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(one, range(total)))
            elapsed = time.monotonic() - begin
            attackers.stop()
            peaks = worker_peaks_mib(webhook.process.pid)
        finally:
            if attackers is not None:
                attackers.stop()
            if webhook is not None:
                webhook.stop()
            for server in (slow, stalling, rotating):
                server.closing.set()
                server.close()
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
    assert attackers is not None
    print(
        f"attackers beside them: {attackers.slow_clients} slow clients ({STALLED} at a time, replaced every"
        f" {ATTACK_SECONDS:g} s)"
    )
    for kind, what in (
        ("stalling", f"Pods of {STALLING_IMAGES} images of 200 layers that never answer"),
        ("rotating", "images behind a realm-rotating registry"),
    ):
        print(f"  {what}: {attackers.answered[kind]} answered, {attackers.unanswered[kind]} not")
    print(f"{'peak memory per worker':<28}{', '.join(f'{p:.1f} MiB' for p in peaks) or 'unknown'}")
    return 1 if errors or timeouts else 0


if __name__ == "__main__":
    if not os.path.isdir("/proc"):
        raise SystemExit("the soak reads worker memory from /proc")
    sys.exit(main())
