"""`pullcheck serve` as it ships: gunicorn, TLS, on 127.0.0.1, against the real local registry."""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness.corpus import CorpusImage
from tests.harness.pki import CertificateAuthority
from tests.harness.registry import Registry, free_port

pytestmark = pytest.mark.registry

_START_SECONDS = 30.0
_CHANGE_SECONDS = 20.0  # the policy file is looked at every 2 s
_WEBHOOK_TIMEOUT = 10.0  # the apiserver's default timeoutSeconds


def review(
    *images: str, kind: str = "Pod", uid: str = "4f6e1c3a-0000-4000-8000-000000000001"
) -> dict[str, Any]:
    spec = {"containers": [{"name": f"c{n}", "image": image} for n, image in enumerate(images)]}
    if kind == "Pod":
        obj: dict[str, Any] = {"metadata": {"name": "p"}, "spec": spec}
    elif kind == "CronJob":
        obj = {"metadata": {"name": "w"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}
    else:
        obj = {"metadata": {"name": "w"}, "spec": {"template": {"spec": spec}}}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "apps", "version": "v1", "kind": kind},
            "operation": "CREATE",
            "namespace": "default",
            "object": obj,
        },
    }


def trust(ca_file: str | Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def write_policy(path: Path, hosts: list[str], **values: Any) -> Path:
    registries = [{"host": host, "insecure": True, "allowPrivateNetwork": True} for host in hosts]
    path.write_text(yaml.safe_dump({"registries": registries, **values}))
    return path


class Webhook:
    """A `pullcheck serve` process; stderr (the JSON logs) goes to a file."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log = workdir / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "webhook", "serve", "--port", str(self.port), *args]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ca_file(self) -> Path:
        match = re.search(r"CA at (\S+)", self.output())
        assert match, self.output()
        return Path(match.group(1))

    def wait_ready(self, ca_file: str | Path) -> None:
        deadline = time.monotonic() + _START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"pullcheck serve exited {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", verify=trust(ca_file), timeout=2).status_code == 200:
                    return
            except (httpx.TransportError, OSError):  # the CA file may not be written yet
                pass
            time.sleep(0.2)
        raise AssertionError(f"pullcheck serve did not become ready:\n{self.output()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Webhook]]:
    started: list[Webhook] = []

    def launch(*args: str) -> Webhook:
        webhook = Webhook(tmp_path, *args)
        started.append(webhook)
        return webhook

    yield launch
    for webhook in started:
        webhook.stop()


def post(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/validate", json=body, timeout=_WEBHOOK_TIMEOUT)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()["response"]
    return answer


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _CHANGE_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen")
        time.sleep(0.3)


def test_zero_configuration_serves_https_with_a_printed_ca(
    tmp_path: Path, start: Callable[..., Webhook]
) -> None:
    webhook = start("--cert-dir", str(tmp_path / "pki"))
    webhook.wait_ready(str(tmp_path / "pki" / "ca.crt"))
    ca = webhook.ca_file()
    assert ca == tmp_path / "pki" / "ca.crt"
    with httpx.Client(base_url=webhook.url, verify=trust(ca)) as client:
        assert client.get("/healthz").text == "ok\n"
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "pullcheck_admission_duration_seconds" in metrics.text
        assert client.post("/validate", content=b"nope").status_code == 400


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_below_1_2_is_refused(tmp_path: Path, start: Callable[..., Webhook]) -> None:
    webhook = start("--cert-dir", str(tmp_path / "pki"))
    ca = str(tmp_path / "pki" / "ca.crt")
    webhook.wait_ready(ca)
    old = ssl.create_default_context(cafile=ca)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", webhook.port), timeout=10) as raw:
        # The client can speak TLS 1.1; the server's alert is what refuses it.
        with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
            old.wrap_socket(raw, server_hostname="127.0.0.1")


def test_bad_policy_and_half_a_key_pair_exit_2_with_one_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("mode: loud\n")
    bad_policy = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--config", str(policy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_policy.returncode == 2
    assert "mode" in bad_policy.stderr and "Traceback" not in bad_policy.stderr
    half = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--cert", str(policy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert half.returncode == 2 and "--cert and --key" in half.stderr


def test_modes_kinds_and_policy_reload_against_the_registry(
    tmp_path: Path, start: Callable[..., Webhook], registry: Registry, corpus: dict[str, CorpusImage]
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", [registry.host], mode="enforce")
    webhook = start("--config", str(policy), "--cert-dir", str(tmp_path / "pki"))
    ca = str(tmp_path / "pki" / "ca.crt")
    webhook.wait_ready(ca)
    schema1, healthy = corpus["schema1_signed"].ref, corpus["oci_index"].ref
    with httpx.Client(base_url=webhook.url, verify=trust(ca)) as client:
        for kind in ("Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"):
            denied = post(client, review(schema1, healthy, kind=kind))
            assert denied["allowed"] is False, kind
            assert denied["status"]["code"] == 403
            assert f"{schema1}: SCHEMA1 fails on containerd 2.1" in denied["status"]["message"]
        assert post(client, review(healthy)) == {"uid": review()["request"]["uid"], "allowed": True}

        write_policy(policy, [registry.host], mode="warn")
        wait_for(lambda: post(client, review(schema1))["allowed"], "the switch to warn mode")
        warned = post(client, review(schema1))
        assert any(w.startswith(f"{schema1}: SCHEMA1 fails") for w in warned["warnings"])

        write_policy(policy, [registry.host], mode="audit")
        wait_for(lambda: "warnings" not in post(client, review(schema1)), "the switch to audit mode")
        audited = post(client, review(schema1))
        assert audited["allowed"] is True and audited["auditAnnotations"]["verdict"] == "deny"

        write_policy(policy, [registry.host], mode="shout")  # a bad change keeps the last good policy
        time.sleep(2.5)
        assert post(client, review(schema1))["auditAnnotations"]["verdict"] == "deny"
        assert webhook.process.poll() is None

    lines = [json.loads(line) for line in webhook.output().splitlines() if line.startswith("{")]
    admissions = [line for line in lines if line.get("message") == "admission"]
    assert (
        admissions
        and {"uid", "namespace", "kind", "images", "verdicts", "durationMs"} <= admissions[0].keys()
    )
    assert any("policy change ignored" in line.get("message", "") for line in lines)


def test_rotated_certificate_files_are_served_to_new_connections(
    tmp_path: Path, start: Callable[..., Webhook], test_ca: CertificateAuthority
) -> None:
    pair = test_ca.server_pair("webhook")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pair.cert_file, cert)
    shutil.copy(pair.key_file, key)
    webhook = start("--cert", str(cert), "--key", str(key))
    webhook.wait_ready(str(test_ca.ca_file))

    other_ca = CertificateAuthority(tmp_path / "other-ca", name="rotated CA")
    rotated = other_ca.server_pair("webhook")
    with httpx.Client(base_url=webhook.url, verify=trust(test_ca.ca_file)) as kept_alive:
        assert kept_alive.get("/healthz").status_code == 200
        shutil.copy(rotated.key_file, key)
        shutil.copy(rotated.cert_file, cert)

        def served_by_new_ca() -> bool:
            try:
                return httpx.get(f"{webhook.url}/healthz", verify=trust(other_ca.ca_file)).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(served_by_new_ca, "serving the rotated certificate")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{webhook.url}/healthz", verify=trust(test_ca.ca_file))
        # A connection opened before the rotation keeps its session.
        assert kept_alive.get("/healthz").status_code == 200


class HangingRegistry:
    """Accepts connections on 127.0.0.1 and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.mark.parametrize(("outcome", "allowed"), [("deny", False), ("warn", True)])
def test_a_hanging_registry_yields_the_configured_outcome_in_time(
    tmp_path: Path, start: Callable[..., Webhook], outcome: str, allowed: bool
) -> None:
    hanging = HangingRegistry()
    try:
        policy = write_policy(
            tmp_path / "policy.yaml",
            [hanging.host],
            mode="enforce",
            onResolutionError=outcome,
            resolutionTimeoutSeconds=2,
        )
        webhook = start("--config", str(policy), "--cert-dir", str(tmp_path / "pki"))
        ca = str(tmp_path / "pki" / "ca.crt")
        webhook.wait_ready(ca)
        with httpx.Client(base_url=webhook.url, verify=trust(ca)) as client:
            answer = post(client, review(f"{hanging.host}/stuck/app:1"))
        assert answer["allowed"] is allowed
        text = answer["status"]["message"] if not allowed else " ".join(answer["warnings"])
        assert "REGISTRY_UNREACHABLE" in text
    finally:
        hanging.close()
