"""HTTPS for the sandbox: a throw-away CA and a server certificate for 127.0.0.1/localhost.

Official clients (nrp-cmd refuses anything but ``https://``) and ferry must be tested
with TLS verification on, so the sandbox makes its own CA at start-up and writes it into
its work dir; clients trust it through ``SSL_CERT_FILE`` (OpenSSL, aiohttp, urllib),
``REQUESTS_CA_BUNDLE`` (requests) or ferry's ``targets.X.ca_file``.

    tls = ensure_tls(workdir / "tls")      # ca.pem, server.pem, server-key.pem
    context = server_context(tls)          # for aiohttp's TCPSite(ssl_context=...)

The files are reused when they exist and are still valid, so a restarted server keeps
the CA its clients already trust.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server-key.pem"
# Short-lived on purpose: nothing should trust this CA beyond one sandbox's life.
VALID_DAYS = 30
HOSTS = ("localhost",)
ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path  # give this to clients
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dataferry sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _still_valid(files: TlsFiles) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
        x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    except (OSError, ValueError):
        return False
    if not files.key_file.is_file():
        return False
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=1)


def ensure_tls(directory: Path) -> TlsFiles:
    """The CA and server certificate in `directory`, made if missing or about to expire."""
    files = TlsFiles(directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE)
    if _still_valid(files):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate small clock skew
    until = now + dt.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("dataferry sandbox CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
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
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in HOSTS]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ADDRESSES]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    # The CA's key is not kept: nothing else is ever signed with it.
    files.key_file.write_bytes(b"")
    os.chmod(files.key_file, 0o600)
    files.key_file.write_bytes(_pem_key(key))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return files


def server_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert_file, files.key_file)
    return context


def client_context(files: TlsFiles | Path) -> ssl.SSLContext:
    """A verifying client context that trusts only the sandbox CA."""
    ca = files.ca_file if isinstance(files, TlsFiles) else files
    return ssl.create_default_context(cafile=str(ca))
