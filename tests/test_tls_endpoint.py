"""The webhook's TLS endpoint: TLS 1.0 and 1.1 are refused; a rotated certificate is served to new
connections while admissions keep being answered, none failing during the change."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import hostile
from tests.harness.hostile import LoudServe
from tests.harness.pki import CertificateAuthority
from tests.harness.serving import write_policy

ROTATION_SECONDS = 20.0


def _serve(tmp_path: Path, ca: CertificateAuthority) -> tuple[LoudServe, Path, Path]:
    pair = ca.server_pair("webhook")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pair.cert_file, cert)
    shutil.copy(pair.key_file, key)
    policy = write_policy(tmp_path / "policy.yaml", [])
    webhook = LoudServe(tmp_path, policy, "--cert", str(cert), "--key", str(key), ca_file=ca.ca_file)
    return webhook.wait_ready(), cert, key


@pytest.mark.served
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1(_1)? is deprecated:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["1.0", "1.1"])
def test_tls_below_1_2_is_refused(
    tmp_path: Path, test_ca: CertificateAuthority, version: ssl.TLSVersion
) -> None:
    webhook, _, _ = _serve(tmp_path, test_ca)
    try:
        old = ssl.create_default_context(cafile=str(test_ca.ca_file))
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = version
        old.set_ciphers("ALL:@SECLEVEL=0")
        with socket.create_connection(("127.0.0.1", webhook.port), timeout=10) as raw:
            # The client can speak the old version; the server's alert is what refuses it.
            with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
                old.wrap_socket(raw, server_hostname="127.0.0.1")
        with webhook.client(5) as client:  # and TLS 1.2+ is served
            assert client.get("/healthz").status_code == 200
    finally:
        webhook.stop()


@pytest.mark.served
def test_rotation_is_served_to_new_connections_while_admissions_keep_being_answered(
    tmp_path: Path, test_ca: CertificateAuthority
) -> None:
    webhook, cert, key = _serve(tmp_path, test_ca)
    rotated_ca = CertificateAuthority(tmp_path / "rotated-ca", name="rotated CA")
    rotated = rotated_ca.server_pair("webhook")
    # Clients trust both CAs, as the apiserver does while a caBundle rotates.
    both = ssl.create_default_context(cafile=str(test_ca.ca_file))
    both.load_verify_locations(cafile=str(rotated_ca.ca_file))
    stop = threading.Event()
    answers: list[int] = []
    failures: list[str] = []

    def load(fresh_connections: bool) -> None:
        client = httpx.Client(base_url=webhook.url, verify=both, timeout=5)
        while not stop.is_set():
            if fresh_connections:
                client.close()
                client = httpx.Client(base_url=webhook.url, verify=both, timeout=5)
            try:
                answer = client.post("/validate", json=hostile.review())
                answers.append(answer.status_code)
            except httpx.HTTPError as error:
                failures.append(repr(error))
        client.close()

    threads = [threading.Thread(target=load, args=(fresh,)) for fresh in (False, True, True)]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(
            base_url=webhook.url, verify=ssl.create_default_context(cafile=str(test_ca.ca_file))
        ) as kept:
            assert kept.get("/healthz").status_code == 200
            shutil.copy(rotated.key_file, key)
            shutil.copy(rotated.cert_file, cert)

            def served_by_rotated_ca() -> bool:
                context = ssl.create_default_context(cafile=str(rotated_ca.ca_file))
                try:
                    return httpx.get(f"{webhook.url}/healthz", verify=context).status_code == 200
                except httpx.TransportError:
                    return False

            deadline = time.monotonic() + ROTATION_SECONDS
            while not served_by_rotated_ca():
                assert time.monotonic() < deadline, "the rotated certificate was never served"
                time.sleep(0.2)
            answered_before = len(answers)
            while len(answers) < answered_before + 20:  # and answers go on after it
                assert time.monotonic() < deadline + ROTATION_SECONDS
                time.sleep(0.05)
            with pytest.raises(httpx.ConnectError):  # a new connection no longer gets the old certificate
                httpx.get(
                    f"{webhook.url}/healthz", verify=ssl.create_default_context(cafile=str(test_ca.ca_file))
                )
            assert kept.get("/healthz").status_code == 200  # an open connection keeps its session
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        webhook.stop()
    assert failures == [] and answers and set(answers) == {200}
