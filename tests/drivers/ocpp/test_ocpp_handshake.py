"""Who may connect: charge point id, Basic auth, subprotocol, TLS; decided before the upgrade."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from drivers.ocpp.driver import hash_password
from drivers.ocpp.passwords import verify_password
from edged.errors import ConfigError
from edged.model import ConnectionSpec, DeviceState
from tests.drivers.ocpp.ocpp_helpers import central, charger, running, wait_until

# One hash for the whole module: scrypt is slow on purpose.
SECRET = "correct horse battery"
SECRET_HASH = hash_password(SECRET)


def test_password_hash_is_salted_scrypt_and_verifies() -> None:
    other = hash_password(SECRET)
    assert SECRET_HASH.startswith("scrypt$") and SECRET not in SECRET_HASH
    assert other != SECRET_HASH  # a fresh salt every time
    assert verify_password(SECRET, SECRET_HASH)
    assert verify_password(SECRET, SECRET_HASH)  # the remembered path agrees
    assert not verify_password("wrong", SECRET_HASH)
    assert not verify_password(SECRET, "scrypt$garbage")


def test_clear_text_password_in_config_is_refused() -> None:
    from drivers.ocpp.driver import OcppDriver

    conn = ConnectionSpec(name="cs", driver="ocpp", settings={"port": 9000})
    with pytest.raises(ConfigError, match="password_hash"):
        OcppDriver().configure(conn, [charger("ev1", password_hash="hunter2")])


def test_basic_auth_needs_a_hash_on_every_charger() -> None:
    from drivers.ocpp.driver import OcppDriver

    conn = ConnectionSpec(name="cs", driver="ocpp", settings={"auth": "basic"})
    with pytest.raises(ConfigError, match="password_hash"):
        OcppDriver().configure(conn, [charger("ev1")])


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_unknown_charge_point_is_refused_before_the_upgrade() -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        with pytest.raises(InvalidStatus) as e:
            async with connect(cs.url + "/ocpp/NOPE", subprotocols=[Subprotocol("ocpp1.6")]):
                pass
        assert e.value.response.status_code == 404
        assert cs.ctx.states == []


@pytest.mark.parametrize(
    "headers",
    [{}, _basic("CP1", "wrong"), _basic("OTHER", SECRET), {"Authorization": "Basic !!!"}],
    ids=["missing", "wrong-password", "wrong-user", "garbled"],
)
async def test_bad_credentials_get_401(headers: dict[str, str]) -> None:
    async with central([charger("ev1", "CP1", password_hash=SECRET_HASH)]) as cs:
        with pytest.raises(InvalidStatus) as e:
            async with connect(
                cs.url + "/CP1", subprotocols=[Subprotocol("ocpp1.6")], additional_headers=headers
            ):
                pass
        assert e.value.response.status_code == 401
        assert "Basic" in e.value.response.headers["WWW-Authenticate"]
        assert cs.ctx.states == []


async def test_right_password_connects() -> None:
    async with central([charger("ev1", "CP1", password_hash=SECRET_HASH)]) as cs:
        sim = cs.sim("CP1", "2.0.1", interval=0.05, password=SECRET)
        async with running(sim):
            await wait_until(lambda: cs.ctx.last_value("ev1", "energy_import") is not None)
        assert cs.driver.status()["ev1"]["boot"]["vendor"] == "edged"


@pytest.mark.parametrize("offered", [[], ["ocpp1.5"], ["ocpp2.1", "chat"]])
async def test_no_supported_subprotocol_is_refused(offered: list[str]) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        with pytest.raises(InvalidStatus) as e:
            async with connect(cs.url + "/CP1", subprotocols=[Subprotocol(p) for p in offered]):
                pass
        assert e.value.response.status_code == 400
        assert cs.ctx.states == []


async def test_preferred_version_is_negotiated_within_the_chargers_restriction() -> None:
    both = [Subprotocol("ocpp1.6"), Subprotocol("ocpp2.0.1")]
    async with central([charger("a", "A"), charger("b", "B", ocpp_version="1.6")]) as cs:
        async with connect(cs.url + "/A", subprotocols=both) as ws:
            assert ws.subprotocol == "ocpp2.0.1"
        async with connect(cs.url + "/B", subprotocols=both) as ws:
            assert ws.subprotocol == "ocpp1.6"
        with pytest.raises(InvalidStatus) as e:
            async with connect(cs.url + "/B", subprotocols=[Subprotocol("ocpp2.0.1")]):
                pass
        assert e.value.response.status_code == 400


def _make_ca_and_server_cert(tmp: Path) -> tuple[Path, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edged test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


async def test_tls_with_basic_auth_security_profile_2(tmp_path: Path) -> None:
    ca, cert, key = _make_ca_and_server_cert(tmp_path)
    trusting = ssl.create_default_context(cafile=str(ca))
    devices = [charger("ev1", "CP1", password_hash=SECRET_HASH)]
    async with central(devices, scheme="wss", tls_cert=str(cert), tls_key=str(key)) as cs:
        sim = cs.sim("CP1", "1.6", interval=0.05, password=SECRET, ssl=trusting)
        async with running(sim):
            await wait_until(lambda: cs.ctx.last_value("ev1", "energy_import") is not None)
            assert cs.ctx.last_state("ev1") is DeviceState.ONLINE
        # A client that does not trust the test CA cannot complete the TLS handshake.
        with pytest.raises((ssl.SSLError, InvalidHandshake, OSError)):
            async with connect(
                cs.url + "/CP1",
                subprotocols=[Subprotocol("ocpp1.6")],
                ssl=ssl.create_default_context(),
                additional_headers=_basic("CP1", SECRET),
            ):
                pass
