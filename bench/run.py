"""Measure `pullcheck serve` against the plain gunicorn floor and a local docker-registry; print a table.

Run from the repository root: `python -m bench.run` (what `make bench` does; it installs `wrk`). Nothing
here asserts; the targets are printed beside the numbers.

Throughput comes from `wrk` (native, keep-alive TLS) so the load generator costs little beside the
server; the figure that stays stable on a shared machine is the server's CPU per request, read from
/proc for the server's whole process group. The floor is the plain gunicorn command line with the same
workers, threads and --reuse-port, serving a Flask app that parses the review and admits it
(bench/floor.py). Repeats are interleaved (pullcheck, floor, floor, pullcheck, …) and medians printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.latency import BareClient, LatencyProxy, ReplayingProxy
from bench.tokens import token_and_tag_costs
from tests.harness.images import make_layer
from tests.harness.registry import Registry, free_port, start_plain

_REQUEST = re.compile(r'"(?:GET|HEAD|POST) /v2/')


def review(images: list[str]) -> dict[str, Any]:
    """A bare Pod of these images."""
    spec = {"containers": [{"name": f"c{n}", "image": image} for n, image in enumerate(images)]}
    return _envelope({"metadata": {"name": "bench"}, "spec": spec})


def _envelope(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "bench",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:kube-system",
                    "system:authenticated",
                ],
            },
            "object": pod,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def realistic_review(images: list[str]) -> dict[str, Any]:
    """A Pod as a Deployment makes it: 40 annotations, labels, 20 env vars, resources and probes per
    container; no containers at all when `images` is empty."""

    def container(n: int, image: str) -> dict[str, Any]:
        return {
            "name": f"c{n}",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 8080 + n, "protocol": "TCP", "name": f"http-{n}"}],
            "env": [{"name": f"SETTING_{k}", "value": f"value-{k}-{'x' * 24}"} for k in range(20)],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080 + n}, "periodSeconds": 10},
            "livenessProbe": {"httpGet": {"path": "/live", "port": 8080 + n}, "periodSeconds": 20},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        }

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "bench-7d9f8c6b5-",
            "namespace": "bench",
            "labels": {"app": "bench", "pod-template-hash": "7d9f8c6b5", "tier": "backend"},
            "annotations": {f"example.com/annotation-{k}": f"value-{k}-{'y' * 40}" for k in range(40)},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "bench-7d9f8c6b5",
                    "uid": "0b7c6a3e-1d2f-4a5b-9c8d-7e6f5a4b3c2d",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [container(n, image) for n, image in enumerate(images)],
            "volumes": [{"name": "config", "configMap": {"name": "bench-config"}}],
            "restartPolicy": "Always",
            "serviceAccountName": "default",
            "dnsPolicy": "ClusterFirst",
            "terminationGracePeriodSeconds": 30,
        },
    }
    return _envelope(pod)


class Server:
    """A server process in a process group of its own, so its CPU can be read from /proc."""

    def __init__(self, command: list[str], url: str, log: Path) -> None:
        self.url, self.log = url, log
        self.port = int(url.rsplit(":", 1)[1])
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

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

    def cpu_seconds(self) -> float:
        """User and system CPU of every live process in the server's process group."""
        return group_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(group: int) -> float:
    """User and system CPU of every live process whose process group is `group`."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == group:  # pgrp
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / _TICKS


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class ColdBlocks:
    """Admissions of one never-seen image and of ten: the median wall seconds of each, and per image the
    CPU seconds each measured process spent over each block (1 per Pod, 10 per Pod)."""

    one: float
    ten: float
    cpu_per_image: dict[str, tuple[float, float]]

    def row(self, label: str) -> tuple[str, str, str, str]:
        cpu = "; ".join(
            f"{name} CPU per image {ms(one)} / {ms(ten)}" for name, (one, ten) in self.cpu_per_image.items()
        )
        return (label, f"{ms(self.one)} / {ms(self.ten)}, {self.ten / self.one:.2f}", "ratio <= 1.3", cpu)


def cold_blocks(
    admit: Callable[[list[str]], object],
    names: Iterator[str],
    admissions: int,
    cpu: dict[str, Callable[[], float]],
) -> ColdBlocks:
    """`admissions` admissions of one image each, then as many of ten, every image taken new from `names`.
    The CPU readers in `cpu` are read around each block (/proc counts in 10 ms ticks, too coarse to read
    one admission by itself)."""
    walls: dict[int, float] = {}
    spent: dict[str, list[float]] = {name: [] for name in cpu}
    for size in (1, 10):
        before = {name: read() for name, read in cpu.items()}
        times = []
        for _ in range(admissions):
            batch = [next(names) for _ in range(size)]
            started = time.perf_counter()
            admit(batch)
            times.append(time.perf_counter() - started)
            time.sleep(0.05)  # let the threads of this admission end before the next one starts
        time.sleep(0.3)  # the last answer is out; let the CPU counters settle
        for name, read in cpu.items():
            spent[name].append((read() - before[name]) / (size * admissions))
        walls[size] = statistics.median(times)
    return ColdBlocks(walls[1], walls[10], {name: (one, ten) for name, (one, ten) in spent.items()})


@dataclass(frozen=True)
class Load:
    per_second: float
    cpu_ms_per_request: float  # the server's, over the whole run


_WRK_SCRIPT = """
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(server: Server, body: Path, connections: int, seconds: float, work: Path) -> Load:
    """A closed loop of keep-alive TLS connections from `wrk` (one thread)."""
    script = work / "post.lua"
    script.write_text(_WRK_SCRIPT)
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "-s",
        str(script),
        f"{server.url}/validate",
    ]
    before = server.cpu_seconds()
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, "BENCH_BODY": str(body)}
    ).stdout
    cpu = server.cpu_seconds() - before
    if "Non-2xx" in output or "Socket errors" in output:
        raise SystemExit(f"wrk saw errors against {server.url}:\n{output}")
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    return Load(rate, cpu * 1000 / max(requests, 1))


@dataclass(frozen=True)
class Paced:
    latencies: list[float]
    client_cpu_ms_per_request: float


def fixed_rate(server: Server, body: bytes, rate: float, seconds: float, connections: int = 4) -> Paced:
    """Requests sent on a schedule over keep-alive TLS connections; each latency is counted from the
    request's scheduled time, so a stall is not hidden (what wrk2 does). The generator's own CPU per
    request is reported beside it."""
    head = (
        f"POST /validate HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    request = head + body
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    total = int(rate * seconds)
    start = time.perf_counter() + 0.3
    latencies: list[float] = []
    lock = threading.Lock()

    def sender(first: int) -> None:
        mine = []
        with context.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=10)) as sock:
            for n in range(first, total, connections):
                due = start + n / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sock.sendall(request)
                _read_answer(sock)
                mine.append(time.perf_counter() - due)
        with lock:
            latencies.extend(mine)

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    threads = [threading.Thread(target=sender, args=(k,)) for k in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    return Paced(latencies, cpu * 1000 / max(total, 1))


def _read_answer(sock: ssl.SSLSocket) -> None:
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("the server closed a paced connection")
        answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"paced request answered {head[:40]!r}")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("the server closed a paced connection")
        rest += chunk


STALLED = 100


def open_stalled(port: int, context: ssl.SSLContext) -> list[socket.socket]:
    """100 clients that stall: a third after one byte of a ClientHello, a third silent, a third
    after half a request head."""

    def half_a_head(raw: socket.socket) -> socket.socket:
        try:
            tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
            tls.sendall(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
            return tls
        except OSError:  # a server whose threads are all held does not finish the handshake
            return raw

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=3)

    with ThreadPoolExecutor(max_workers=STALLED // 3 + 1) as pool:
        stalled = list(pool.map(half_a_head, [connect() for _ in range(STALLED // 3)]))
    for n in range(STALLED - len(stalled)):
        raw = connect()
        if n % 2 == 0:
            raw.sendall(b"\x16")  # the first byte of a TLS handshake record
        stalled.append(raw)
    return stalled


def fresh_connection_latencies(server: Server, context: ssl.SSLContext, body: bytes, count: int) -> str:
    """Max and median seconds of `count` admissions, each on a new TLS connection (10 s timeout)."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        try:
            with httpx.Client(verify=context, timeout=10) as client:
                response = client.post(
                    f"{server.url}/validate", content=body, headers={"Content-Type": "application/json"}
                )
                response.raise_for_status()
        except httpx.TimeoutException:
            return "no answer within 10 s"
        latencies.append(time.perf_counter() - started)
    return f"{ms(statistics.median(latencies))} / {ms(max(latencies))}"


def beside_stalled(server: Server, context: ssl.SSLContext, body: bytes) -> tuple[str, str, str]:
    """Admissions on new connections with no stalled clients, beside 100 of them, and once they left."""
    alone = fresh_connection_latencies(server, context, body, 20)
    stalled = open_stalled(server.port, context)
    try:
        beside = fresh_connection_latencies(server, context, body, 20)
    finally:
        for sock in stalled:
            sock.close()
    return alone, beside, fresh_connection_latencies(server, context, body, 20)


def registry_requests(registry: Registry, action: Callable[[], object]) -> int:
    """Requests the registry's access log records while `action` runs."""
    before = len(_REQUEST.findall(registry.log_file.read_text(errors="replace")))
    action()
    time.sleep(0.5)  # the registry writes its access log after answering
    return len(_REQUEST.findall(registry.log_file.read_text(errors="replace"))) - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each load run (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per measure (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="server processes, both servers (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per process (default 8)")
    parser.add_argument("--connections", type=int, default=16, help="wrk keep-alive connections (default 16)")
    parser.add_argument("--rate", type=float, default=200.0, help="fixed-rate requests/s (default 200)")
    parser.add_argument(
        "--cold", type=int, default=10, help="cold admissions of 1 and of 10 new images (default 10)"
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

            # Every cold admission judges images never seen before: per client and registry model, one to
            # open its connections, `--cold` of one image, then `--cold` of ten.
            cold_names = [f"cold-{n}" for n in range(4 * (11 * args.cold + 1))]
            for name in ["warm-a", "warm-b", "warm-c", "cold-one", *cold_names]:
                registry.push_image(f"bench/{name}", "v1", [make_layer(name)])
            proxy_port, replay_port = free_port(), free_port()
            policy = work / "policy.yaml"
            policy.write_text(
                yaml.safe_dump(
                    {
                        "registries": [
                            {"host": host, "insecure": True, "allowPrivateNetwork": True}
                            for host in (registry.host, f"127.0.0.1:{proxy_port}", f"127.0.0.1:{replay_port}")
                        ]
                    }
                )
            )
            pki = work / "pki"
            webhook_port, floor_port = free_port(), free_port()
            shape = ["--workers", str(args.workers), "--threads", str(args.threads)]
            webhook = Server(
                [
                    sys.executable, "-m", "webhook", "serve", "--config", str(policy),
                    "--port", str(webhook_port), "--cert-dir", str(pki), *shape,
                ],
                f"https://127.0.0.1:{webhook_port}",
                work / "webhook.log",
            )  # fmt: skip
            servers.append(webhook)

            def trust() -> ssl.SSLContext:
                return ssl.create_default_context(cafile=str(pki / "ca.crt"))

            webhook.wait_ready(trust)
            floor = Server(
                [
                    sys.executable, "-m", "gunicorn", "-k", "gthread", *shape, "--reuse-port",
                    "--certfile", str(pki / "tls.crt"), "--keyfile", str(pki / "tls.key"),
                    "--bind", f"127.0.0.1:{floor_port}", "--log-level", "warning", "bench.floor:app",
                ],
                f"https://127.0.0.1:{floor_port}",
                work / "floor.log",
            )  # fmt: skip
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

            # Cold wall time and CPU: Pods of ten distinct images against Pods of one, each registry answer
            # 20 ms late. First through a proxy to the registry on this machine, whose CPU competes with
            # the server's as a remote registry's would not; then with the registry's answers recorded
            # and replayed, a remote registry's CPU being elsewhere. Beside pullcheck, a bare client doing
            # the same requests with next to no CPU: what the setup itself allows.
            proxy = LatencyProxy(("127.0.0.1", registry.process.port), args.registry_delay, port=proxy_port)
            replay = ReplayingProxy(
                ("127.0.0.1", registry.process.port), args.registry_delay, port=replay_port
            )
            pending = iter(cold_names)
            replayed = [f"bench/{name}:v1" for name in cold_names[len(cold_names) // 2 :]]
            BareClient(replay.host).pull_metadata(replayed)  # records every answer the replay phase asks
            recorded = replay.forwarded

            def served(host: str) -> Callable[[list[str]], object]:
                return lambda names: http.post(
                    "/validate", json=review([f"{host}/bench/{n}:v1" for n in names])
                )

            def bare(host: str) -> Callable[[list[str]], object]:
                client = BareClient(host)
                return lambda names: client.pull_metadata([f"bench/{n}:v1" for n in names])

            def measure(
                admit: Callable[[list[str]], object], cpu: dict[str, Callable[[], float]]
            ) -> ColdBlocks:
                admit([next(pending)])  # opens the connections; not counted
                return cold_blocks(admit, pending, args.cold, cpu)

            registry_cpu = {"registry": lambda: process_cpu_seconds(registry.process.pid)}
            cold_runs = {
                "registry on this machine, pullcheck": measure(
                    served(proxy.host), {"server": webhook.cpu_seconds, **registry_cpu}
                ),
                "registry on this machine, bare client": measure(bare(proxy.host), registry_cpu),
                "registry answers replayed, pullcheck": measure(
                    served(replay.host), {"server": webhook.cpu_seconds}
                ),
                "registry answers replayed, bare client": measure(bare(replay.host), {}),
            }
            not_recorded = replay.forwarded - recorded
            proxy.close()
            replay.close()

            # Warm: closed loops from wrk, pullcheck and the floor interleaved; then paced requests.
            pod = realistic_review([ref("warm-a"), ref("warm-b"), ref("warm-c")])
            empty = realistic_review([])
            bodies = {"warm": work / "warm.json", "empty": work / "empty.json"}
            bodies["warm"].write_text(json.dumps(pod))
            bodies["empty"].write_text(json.dumps(empty))
            http.post("/validate", json=pod).raise_for_status()
            targets = {"pullcheck": webhook, "floor": floor}
            for server in targets.values():  # warm caches and connections in every worker
                wrk(server, bodies["warm"], args.connections, 1, work)
            loads: dict[tuple[str, str], list[Load]] = {}
            paced: dict[str, list[Paced]] = {name: [] for name in targets}
            for repeat in range(args.repeats):
                order = list(targets) if repeat % 2 == 0 else list(reversed(targets))
                for name in order:
                    for kind, body in bodies.items():
                        load = wrk(targets[name], body, args.connections, args.seconds, work)
                        loads.setdefault((name, kind), []).append(load)
                for name in order:
                    paced[name].append(
                        fixed_rate(targets[name], bodies["warm"].read_bytes(), args.rate, args.seconds)
                    )
            http.close()
            slow_clients = {
                name: beside_stalled(targets[name], context, bodies["warm"].read_bytes()) for name in targets
            }
            token_costs = token_and_tag_costs(work / "token")
        finally:
            for server in servers:
                server.stop()
            registry.stop()

    def median_rate(name: str, kind: str) -> float:
        return statistics.median(load.per_second for load in loads[(name, kind)])

    def median_cpu(name: str, kind: str) -> float:
        return statistics.median(load.cpu_ms_per_request for load in loads[(name, kind)])

    def paced_row(name: str) -> str:
        p50 = statistics.median(statistics.median(run.latencies) for run in paced[name])
        p99 = statistics.median(percentile(run.latencies, 0.99) for run in paced[name])
        return f"{ms(p50)} / {ms(p99)}"

    rows = [
        (
            f"closed loop: wrk, {args.connections} keep-alive TLS connections; {args.workers} workers x "
            f"{args.threads} threads; median of {args.repeats} interleaved {args.seconds:g} s runs",
            "",
            "",
            "",
        )
    ]
    for kind, label, goal in (("warm", "warm 3-container Pod", 0.9), ("empty", "Pod without images", 0.95)):
        rate_ratio = median_rate("pullcheck", kind) / median_rate("floor", kind)
        cpu_ratio = median_cpu("floor", kind) / median_cpu("pullcheck", kind)
        rows += [
            (f"{label} (realistic body)", "", "", ""),
            ("  pullcheck AdmissionReviews/s", f"{median_rate('pullcheck', kind):.0f}", "", ""),
            ("  floor (plain gunicorn + Flask) /s", f"{median_rate('floor', kind):.0f}", "", ""),
            ("  ratio pullcheck / floor", f"{rate_ratio:.2f}", f">= {goal}", ""),
            (
                "  server CPU per request",
                f"{median_cpu('pullcheck', kind):.3f} ms",
                "",
                f"floor: {median_cpu('floor', kind):.3f} ms",
            ),
            ("  ratio floor / pullcheck CPU", f"{cpu_ratio:.2f}", f">= {goal}", ""),
        ]
    client_cpu = statistics.median(run.client_cpu_ms_per_request for run in paced["pullcheck"])
    rows += [
        (
            f"warm p50 / p99 at {args.rate:g} req/s, pullcheck",
            paced_row("pullcheck"),
            "p99 <= 5 ms",
            f"generator CPU {client_cpu:.3f} ms/request",
        ),
        (f"  floor at {args.rate:g} req/s", paced_row("floor"), "", ""),
        ("warm admission on a new connection, p50 / max", "", "", ""),
        ("  pullcheck, alone", slow_clients["pullcheck"][0], "", f"floor: {slow_clients['floor'][0]}"),
        (
            f"  pullcheck, beside {STALLED} stalled clients",
            slow_clients["pullcheck"][1],
            "max <= 1 s more",
            f"floor: {slow_clients['floor'][1]}",
        ),
        (
            "  pullcheck, once they left",
            slow_clients["pullcheck"][2],
            "",
            f"floor: {slow_clients['floor'][2]}",
        ),
        ("registry requests, 1 cold image", f"{cold}", "", f"skopeo inspect: {skopeo}"),
        ("registry requests, same image again", f"{again}", "0 within the tag TTL", ""),
        ("token registry, cold image: registry / token requests", f"{token_costs.cold}", "", ""),
        ("  after the tag TTL, token cached", f"{token_costs.after_ttl}", "<= 1 per image", ""),
        (
            f"cold Pods of 1 / 10 new images, registry +{ms(args.registry_delay)}: median wall, ratio",
            "",
            "",
            f"medians of {args.cold} admissions each",
        ),
        *(blocks.row(f"  {label}") for label, blocks in cold_runs.items()),
        ("  replayed requests not recorded before", f"{not_recorded}", "0", ""),
    ]
    width = max(len(r[0]) for r in rows[1:]) + 2
    print(rows[0][0])
    print(f"{'measure':<{width}}{'result':<28}{'target':<22}beside")
    for name, value, target, beside in rows[1:]:
        print(f"{name:<{width}}{value:<28}{target:<22}{beside}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
