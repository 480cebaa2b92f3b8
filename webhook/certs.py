"""A self-signed CA and a serving certificate for the webhook, made with `cryptography`.

`pullcheck serve` without --cert/--key uses them so a fresh clone serves HTTPS at once; the CA file is
what a client (curl, or the webhook configuration's caBundle) trusts.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook.errors import ConfigError

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_VALIDITY_DAYS = 365
_BACKDATE = datetime.timedelta(minutes=5)  # tolerate clocks a little behind ours


@dataclass(frozen=True)
class ServingFiles:
    ca_file: Path  # ca.crt: what clients trust
    cert_file: Path  # tls.crt: the serving certificate
    key_file: Path  # tls.key: its private key, readable by the owner only


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _subject_alternative_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, mode: int) -> None:
    # A new file (created private, so a key is never readable by others, not even for a moment) put in
    # place by rename: a link planted under the final name is replaced, never written through.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _private_folder(folder: Path) -> None:
    """Create the folder, or accept an existing one only when it is ours and others cannot write to it
    (the default one is in the shared temporary directory, where anyone may have made it first)."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
    except OSError as exc:
        raise ConfigError(
            f"{folder}: cannot create the certificate directory: {exc.strerror or exc}"
        ) from None
    if info.st_uid != os.geteuid() or info.st_mode & stat.S_IWOTH:
        raise ConfigError(
            f"{folder}: the certificate directory belongs to another user or others can write to it"
        )


def issue(
    directory: str | Path, hosts: Sequence[str] = DEFAULT_HOSTS, *, days: int = DEFAULT_VALIDITY_DAYS
) -> ServingFiles:
    """Write a new CA (ca.crt) and a serving certificate for `hosts` (tls.crt, tls.key) in `directory`."""
    if not hosts:
        raise ConfigError("a serving certificate needs at least one host name or address")
    folder = Path(directory)
    _private_folder(folder)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("pullcheck CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_subject_alternative_names(hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = ServingFiles(folder / "ca.crt", folder / "tls.crt", folder / "tls.key")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        _write(files.key_file, key_pem, 0o600)
        _write(files.cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(files.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot write the certificate files: {exc.strerror or exc}") from None
    return files
