"""A throw-away certificate authority for the tests' HTTPS servers, made with `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_VALIDITY = datetime.timedelta(days=2)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both as PEM files on disk."""

    cert_file: Path
    key_file: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer_name: x509.Name | None,
    *,
    is_ca: bool,
    ip_addresses: tuple[str, ...] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if ip_addresses:
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        names.append(x509.DNSName("localhost"))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> KeyPair:
    cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(_key_pem(key))
    key_file.chmod(0o600)
    return KeyPair(cert_file, key_file, key, cert)


class CertificateAuthority:
    """A self-signed CA that issues server certificates for 127.0.0.1."""

    def __init__(self, directory: Path, name: str = "pullcheck test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        self.pair = _write(directory, "ca", key, _issue(name, key, key, None, is_ca=True))

    @property
    def ca_file(self) -> Path:
        return self.pair.cert_file

    def server_pair(self, stem: str, ip_addresses: tuple[str, ...] = ("127.0.0.1",)) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(
            stem, key, self.pair.key, self.pair.cert.subject, is_ca=False, ip_addresses=ip_addresses
        )
        return _write(self.directory, stem, key, cert)


def self_signed_pair(directory: Path, stem: str, common_name: str) -> KeyPair:
    """A lone self-signed certificate (the token signer: its own root in `rootcertbundle`)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    return _write(directory, stem, key, _issue(common_name, key, key, None, is_ca=False))
