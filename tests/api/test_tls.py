"""`upcoach serve` over TLS with a self-signed certificate, and the TLS 1.3 floor when asked for."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import start_server, stop_server


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_serves_https_and_enforces_the_floor(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = start_server(
        tmp_path,
        {"UPCOACH_LOAD_MODEL": "false", "UPCOACH_TLS_CERTFILE": str(cert), "UPCOACH_TLS_KEYFILE": str(key)},
        wait_for="/healthz",
        scheme="https",
        extra_args=["--tls-min-version", "1.3"],
    )
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        trusting.check_hostname = False
        response = httpx.get(server.base_url + "/healthz", verify=trusting)
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        old_client = ssl.create_default_context(cafile=str(cert))
        old_client.check_hostname = False
        old_client.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.base_url + "/healthz", verify=old_client)
    finally:
        stop_server(server)
