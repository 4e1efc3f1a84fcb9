"""The server over TLS with a password, as configured for a non-loopback address."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edged.metrics import Metrics
from edged.passwords import hash_password
from edged.web.server import WebServer
from edged.web.settings import WebConfig


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "web.crt", tmp / "web.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_https_with_password_serves_metrics_to_basic_auth_only(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = WebConfig(
        True, "127.0.0.1", 0, hash_password("scrape me please"), cert, key, insecure=False
    )
    metrics = Metrics()
    metrics.set_gauge("outbox_depth", 3)
    server = WebServer(metrics, config)
    await server.start()
    trust = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{server.port}/metrics"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url, ssl=trust) as r:
                assert r.status == 401
            auth = {"Authorization": aiohttp.encode_basic_auth("prom", "scrape me please")}
            async with http.get(url, ssl=trust, headers=auth) as r:
                assert r.status == 200 and "edged_outbox_depth 3.0" in await r.text()
                assert r.headers["X-Frame-Options"] == "DENY"
            plain = url.replace("https://", "http://")
            with pytest.raises(aiohttp.ClientError):  # nothing is served in clear
                async with http.get(plain) as r:
                    await r.read()
    finally:
        await server.close()
