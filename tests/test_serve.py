"""`pullcheck serve` as it ships: gunicorn, TLS, on 127.0.0.1, against the real local registry."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness.corpus import CorpusImage
from tests.harness.loopback import LoopbackServer
from tests.harness.pki import CertificateAuthority
from tests.harness.registry import Registry
from tests.harness.serving import Webhook, local_registries, post, review, trust, wait_for, write_policy

pytestmark = pytest.mark.registry


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


@pytest.mark.parametrize("port", ["0", "70000", "-1"])
def test_a_port_out_of_range_exits_2_with_one_line(tmp_path: Path, port: str) -> None:
    served = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--port", port, "--cert-dir", str(tmp_path / "pki")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 2 and "Traceback" not in served.stderr
    assert served.stderr.strip().splitlines() == ["pullcheck: --port must be between 1 and 65535"]


@pytest.mark.parametrize("seconds", ["0", "0.5", "301", "nan"])
def test_a_request_timeout_out_of_range_exits_2_with_one_line(tmp_path: Path, seconds: str) -> None:
    served = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--request-timeout", seconds, "--cert-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 2 and "Traceback" not in served.stderr
    assert served.stderr.strip().splitlines() == [
        "pullcheck: --request-timeout must be between 1 and 300 seconds"
    ]


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "SO_REUSEPORT"])
def test_a_port_taken_exits_2_with_one_line(tmp_path: Path, reuse_port: bool) -> None:
    # Another server on the port, even one that lets others share it, is a port taken: the workers
    # would otherwise be restarted for ever, or silently share the port with it.
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        served = subprocess.run(
            [sys.executable, "-m", "webhook", "serve", "--port", str(port), "--cert-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert served.returncode == 2 and "Traceback" not in served.stderr
    assert served.stderr.strip().splitlines()[-1].startswith(f"pullcheck: cannot listen on 127.0.0.1:{port}")


def test_an_infinite_audit_interval_exits_2_with_one_line(tmp_path: Path) -> None:
    served = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--audit-interval", "inf", "--cert-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 2 and "Traceback" not in served.stderr
    assert "--audit-interval must be" in served.stderr


def test_modes_kinds_and_policy_reload_against_the_registry(
    tmp_path: Path, start: Callable[..., Webhook], registry: Registry, corpus: dict[str, CorpusImage]
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", local_registries([registry.host]), mode="enforce")
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

        write_policy(policy, local_registries([registry.host]), mode="warn")
        wait_for(lambda: post(client, review(schema1))["allowed"], "the switch to warn mode")
        warned = post(client, review(schema1))
        assert any(w.startswith(f"{schema1}: SCHEMA1 fails") for w in warned["warnings"])

        write_policy(policy, local_registries([registry.host]), mode="audit")
        wait_for(lambda: "warnings" not in post(client, review(schema1)), "the switch to audit mode")
        audited = post(client, review(schema1))
        assert audited["allowed"] is True and audited["auditAnnotations"]["verdict"] == "deny"

        # A bad change keeps the last good policy.
        write_policy(policy, local_registries([registry.host]), mode="shout")
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


@pytest.mark.parametrize(("outcome", "allowed"), [("deny", False), ("warn", True)])
def test_a_hanging_registry_yields_the_configured_outcome_in_time(
    tmp_path: Path, start: Callable[..., Webhook], outcome: str, allowed: bool
) -> None:
    hanging = LoopbackServer()  # a registry that accepts connections and never answers
    try:
        policy = write_policy(
            tmp_path / "policy.yaml",
            local_registries([hanging.host]),
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
