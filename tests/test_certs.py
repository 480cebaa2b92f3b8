"""The self-signed CA and serving certificate: a TLS client that trusts the CA accepts the server."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from webhook import certs
from webhook.errors import ConfigError


def test_issue_writes_a_ca_a_certificate_and_a_private_key(tmp_path: Path) -> None:
    files = certs.issue(tmp_path / "pki", ["webhook.example.svc", "127.0.0.1"])
    assert stat.S_IMODE(files.key_file.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["webhook.example.svc"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_reissuing_replaces_the_files(tmp_path: Path) -> None:
    first = certs.issue(tmp_path)
    before = first.ca_file.read_bytes()
    second = certs.issue(tmp_path)
    assert second == first and second.ca_file.read_bytes() != before


def test_no_hosts_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        certs.issue(tmp_path, [])


def test_unwritable_directory_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot create the certificate directory"):
        certs.issue(blocker / "pki")


def test_a_planted_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    # The default directory is in the shared temporary directory: a file there may be a planted link.
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    folder = tmp_path / "pki"
    folder.mkdir(mode=0o700)
    (folder / "tls.key").symlink_to(victim)
    files = certs.issue(folder)
    assert victim.read_text() == "precious\n"
    assert not files.key_file.is_symlink() and stat.S_IMODE(files.key_file.stat().st_mode) == 0o600


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(ConfigError, match="others can write"):
        certs.issue(folder)


@pytest.mark.served
def test_a_client_trusting_the_ca_completes_a_handshake_for_localhost(tmp_path: Path) -> None:
    files = certs.issue(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(files.cert_file, files.key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    hosts = ("localhost", "127.0.0.1")

    def answer() -> None:
        for _ in hosts:
            connection, _ = listener.accept()
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.sendall(b"ok")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cafile=str(files.ca_file))
    try:
        for host in hosts:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with client_context.wrap_socket(raw, server_hostname=host) as tls:
                    assert tls.recv(2) == b"ok"
    finally:
        listener.close()
