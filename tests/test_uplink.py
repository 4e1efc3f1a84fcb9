"""The MQTT uplink against a real mosquitto: order, outages, bounds, status, events, drain."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from edged import payload
from edged.config import MqttConfig
from edged.outbox import MIGRATIONS, Outbox
from edged.reconnect import ReconnectState
from edged.uplink import Uplink, describe_error
from tests.conftest import Broker, subscribe
from tests.uplink_helpers import (
    KEEP_USER,
    durable_subscriber,
    mqtt_config,
    persistent_broker_conf,
    record,
    wait_until,
)


@contextlib.asynccontextmanager
async def pipeline(
    cfg: MqttConfig, path: Path, *, start: bool = True, max_records: int = 100_000
) -> AsyncIterator[tuple[Outbox, Uplink]]:
    box = Outbox(path, max_records=max_records, max_bytes=100_000_000)
    await box.open()
    up = Uplink(cfg, "gw1", box)
    task = asyncio.create_task(up.run()) if start else None
    try:
        yield box, up
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await box.close()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_records_arrive_in_order_with_status_and_events(
    broker: Broker, tmp_path: Path, protocol: str
) -> None:
    cfg = mqtt_config(broker.port, protocol=protocol)
    async with (
        subscribe(broker.port, "edged/#") as col,
        pipeline(cfg, tmp_path / "o") as (
            box,
            up,
        ),
    ):
        assert up.topic("m1") == "edged/gw1/m1"
        for i in range(300):
            box.put(record(f"m{i % 3}", i))
        await up.publish_event("licence_expiring", {"days": 7})
        await col.wait_for(lambda c: len(c.records("m0")) == 100 and len(c.json("/events")) == 1)
        for dev in ("m0", "m1", "m2"):
            assert [r.seq for r in col.records(dev)] == list(range(1, 101))
        event = col.json("/events")[0]
        assert event["kind"] == "licence_expiring" and event["days"] == 7
        assert ("edged/gw1/status", b"online", False) in [
            (t, p, r) for t, p, r in col.messages if t.endswith("/status")
        ]
        await wait_until(lambda: box.stats().depth == 0, 10, "acks to empty the outbox")
        st = up.stats()
        assert st.connected and st.acked == 300 and st.published >= 301
    # Retained status is visible to a late subscriber.
    async with subscribe(broker.port, "edged/gw1/status") as late:
        await late.wait_for(lambda c: len(c.messages) == 1)
        assert late.messages[0][1:] == (b"online", True)


@pytest.mark.parametrize("batch", [1, 50])
async def test_batch_bounds_records_per_message_and_picks_the_topic(
    broker: Broker, tmp_path: Path, batch: int
) -> None:
    cfg = dataclasses.replace(mqtt_config(broker.port), batch=batch)
    broker.stop()
    async with pipeline(cfg, tmp_path / "o", start=False) as (box, up):
        for i in range(200):
            box.put(record(f"m{i % 4}", i))
        box.put(record("solo", 1.0))
        await box.flush()
        broker.start()
        async with subscribe(broker.port, "edged/gw1/+") as col:
            await up.drain(10.0)
            await col.wait_for(lambda c: len(c.records()) == 201)
    data = [(t, payload.decode(p)) for t, p, _ in col.messages if payload.is_record_message(t, p)]
    # Every message holds at most `batch` records; one device's records go to its own topic,
    # several devices' to <prefix>/<gw>/records; each record keeps its own seq.
    assert max(len(recs) for _, recs in data) == batch
    for topic, recs in data:
        devices = {r.device_id for r in recs}
        expected = f"edged/gw1/{devices.pop()}" if len(devices) == 1 else "edged/gw1/records"
        assert topic == expected
    for dev in ("m0", "m1", "m2", "m3"):
        assert [r.seq for r in col.records(dev)] == list(range(1, 51))
        assert [r.values["energy_import"].last for r in col.records(dev)] == [
            float(i) for i in range(200) if i % 4 == int(dev[1])
        ]
    assert [r.seq for r in col.records("solo")] == [1]


async def test_drain_sends_the_backlog_then_goes_offline(broker: Broker, tmp_path: Path) -> None:
    cfg = mqtt_config(broker.port)
    broker.stop()
    async with pipeline(cfg, tmp_path / "o", start=False) as (box, up):
        for i in range(500):
            box.put(record("m", i))
        await box.flush()
        await up.publish_event("shutdown", {})
        broker.start()
        async with subscribe(broker.port, "edged/#") as col:
            await up.drain(10.0)
            assert box.stats().depth == 0
            await col.wait_for(lambda c: any(p == b"offline" for _, p, _ in c.messages))
            assert [r.seq for r in col.records("m")] == list(range(1, 501))
            assert len(col.json("/events")) == 1
    async with subscribe(broker.port, "edged/gw1/status") as late:
        await late.wait_for(lambda c: len(c.messages) == 1)
        assert late.messages[0][1:] == (b"offline", True)


async def test_last_will_marks_the_gateway_offline(broker: Broker, tmp_path: Path) -> None:
    cfg = mqtt_config(broker.port)
    async with pipeline(cfg, tmp_path / "o") as (_, up):
        await wait_until(lambda: up.stats().connected, 10, "connect")
        assert up.reconnect.state is ReconnectState.CONNECTED
        assert up.reconnect.failures == 0
        async with subscribe(broker.port, "edged/gw1/status") as col:
            await col.wait_for(lambda c: c.messages and c.messages[-1][1] == b"online")
            # Kill the TCP connection from the broker side: a restart of mosquitto does not
            # publish wills, so drop the session by taking over its client id instead.
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier=cfg.client_id):
                await col.wait_for(lambda c: any(p == b"offline" for _, p, _ in c.messages))
        await wait_until(lambda: up.stats().reconnects >= 1, 10, "reconnect")


async def test_broker_outage_under_steady_flow_loses_nothing(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edged.uplink")
    broker.extra_conf = persistent_broker_conf(tmp_path)
    broker.stop()
    broker.start()
    cfg = mqtt_config(broker.port, max_inflight=8)
    devices = [f"d{n}" for n in range(5)]
    put = 0
    async with durable_subscriber(broker.port) as got, pipeline(cfg, tmp_path / "o") as (box, up):

        async def flow(seconds: float) -> None:
            nonlocal put
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            while loop.time() < end:
                for d in devices:
                    box.put(record(d, put))
                    put += 1
                await asyncio.sleep(0.01)

        await flow(1.0)
        broker.stop()  # the subscriber's session and queued messages are saved
        await flow(1.5)
        assert not up.stats().connected
        assert box.stats().depth > 0
        broker.start()
        await flow(1.0)
        await box.flush()
        await wait_until(lambda: box.stats().depth == 0, 20, "the backlog to drain")
        await wait_until(lambda: got.count_unique() == put, 20, "every record at the subscriber")
        per_device = got.unique()
        for d in devices:
            assert per_device[d] == list(range(1, len(per_device[d]) + 1)), d
        assert sum(len(v) for v in per_device.values()) == put
        assert up.stats().reconnects >= 1
    assert any(
        "mqtt session lost" in r.getMessage() or "connect failed" in r.getMessage()
        for r in caplog.records
    )


async def test_outbox_limit_during_outage_drops_exactly_the_oldest(
    broker: Broker, tmp_path: Path
) -> None:
    # The subscriber's session outlives the outage, so what the uplink sends the moment the
    # broker is back is queued for it rather than racing its subscription.
    broker.extra_conf = persistent_broker_conf(tmp_path)
    broker.stop()
    broker.start()
    cfg = mqtt_config(broker.port)
    async with durable_subscriber(broker.port, "edged/gw1/m") as got:
        broker.stop()
        async with pipeline(cfg, tmp_path / "o", max_records=200) as (box, up):
            for i in range(350):
                box.put(record("m", i))
                if i % 50 == 0:
                    await box.flush()
            await box.flush()
            assert box.stats().dropped == 150
            assert box.stats().depth == 200
            broker.start()
            await wait_until(lambda: box.stats().depth == 0, 20, "drain")
            await wait_until(lambda: got.count_unique() == 200, 20, "200 records at the subscriber")
            assert sorted(got.unique()["m"]) == list(range(151, 351))
            assert up.stats().acked == 200


async def test_connect_failure_is_one_clear_line_and_keeps_retrying(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import free_port

    caplog.set_level(logging.INFO, logger="edged.uplink")
    cfg = mqtt_config(free_port())
    async with pipeline(cfg, tmp_path / "o") as (_, up):
        await wait_until(lambda: up.stats().reconnects >= 3, 10, "retries")
        assert up.stats().last_error is not None
        # The reconnect policy's explicit state: failing, not yet given up.
        assert up.reconnect.state in (ReconnectState.WAITING, ReconnectState.CONNECTING)
        assert up.reconnect.failures >= 3
        assert up.reconnect.last_error is not None
    assert up.reconnect.state is ReconnectState.STOPPED
    lines = [r.getMessage() for r in caplog.records if "connect failed" in r.getMessage()]
    assert len(lines) >= 3
    assert all("\n" not in line and "error=" in line for line in lines)
    assert not any(r.exc_info for r in caplog.records)


def test_describe_error_explains_tls_failures() -> None:
    import ssl

    exc = ssl.SSLCertVerificationError(
        1,
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify"
        " failed: unable to get local issuer certificate",
    )
    text = describe_error(exc)
    assert "certificate verification failed" in text and "ca_file" in text


def _cert_pair(
    tmp: Path,
    name: str,
    issuer: tuple[object, object] | None,
    *,
    ca: bool,
    hosts: tuple[str, ...] = (),
) -> tuple[object, object]:
    """Write NAME.pem / NAME.key; returns (certificate, key) for signing others."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)  # type: ignore[attr-defined]
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if hosts:
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts if h[0].isalpha()]
        sans += [x509.IPAddress(ipaddress.ip_address(h)) for h in hosts if h[0].isdigit()]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    (tmp / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@pytest.fixture
def tls_broker(broker: Broker, tmp_path: Path) -> tuple[Broker, int, Path]:
    """The broker with an extra TLS listener that requires client certificates."""
    from tests.conftest import free_port, wait_port

    pki = tmp_path / "pki"
    pki.mkdir()
    ca = _cert_pair(pki, "ca", None, ca=True)
    _cert_pair(pki, "server", ca, ca=False, hosts=("localhost", "127.0.0.1"))
    _cert_pair(pki, "client", ca, ca=False)
    _cert_pair(pki, "other-ca", None, ca=True)
    port = free_port()
    broker.extra_conf = (
        f"listener {port} 127.0.0.1\ncafile {pki}/ca.pem\ncertfile {pki}/server.pem\n"
        f"keyfile {pki}/server.key\nrequire_certificate true\n{KEEP_USER}"
    )
    broker.stop()
    broker.start()
    wait_port(port)
    return broker, port, pki


async def test_tls_with_client_certificate(
    tls_broker: tuple[Broker, int, Path], tmp_path: Path
) -> None:
    from edged.config import TlsConfig

    broker, port, pki = tls_broker
    tls = TlsConfig(pki / "ca.pem", pki / "client.pem", pki / "client.key", insecure=False)
    cfg = mqtt_config(port, tls=tls)
    async with (
        subscribe(broker.port, "edged/#") as col,
        pipeline(cfg, tmp_path / "o") as (
            box,
            up,
        ),
    ):
        box.put(record("secure", 1.0))
        await col.wait_for(lambda c: len(c.json("/secure")) == 1)
        assert up.stats().connected


async def test_tls_wrong_ca_is_refused_with_a_clear_error(
    tls_broker: tuple[Broker, int, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edged.config import TlsConfig

    caplog.set_level(logging.INFO, logger="edged.uplink")
    _, port, pki = tls_broker
    tls = TlsConfig(pki / "other-ca.pem", pki / "client.pem", pki / "client.key", False)
    async with pipeline(mqtt_config(port, tls=tls), tmp_path / "o") as (_, up):
        await wait_until(lambda: up.stats().reconnects >= 2, 10, "retries")
        assert not up.stats().connected
        err = up.stats().last_error
        assert err is not None and "certificate verification failed" in err
    lines = [r.getMessage() for r in caplog.records if "connect failed" in r.getMessage()]
    assert lines and all("certificate verification failed" in x and "\n" not in x for x in lines)


@pytest.fixture
def auth_broker(broker: Broker, tmp_path: Path) -> Broker:
    """The broker with anonymous access off and one user gw1 / s3cret."""
    import subprocess

    pwfile = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), "gw1", "s3cret"], check=True)
    pwfile.chmod(0o600)
    broker.extra_conf = f"allow_anonymous false\npassword_file {pwfile}\n{KEEP_USER}"
    broker.stop()
    broker.start()
    return broker


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_username_password(
    auth_broker: Broker, tmp_path: Path, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    import dataclasses

    caplog.set_level(logging.INFO, logger="edged.uplink")
    good = dataclasses.replace(
        mqtt_config(auth_broker.port, protocol=protocol), username="gw1", password="s3cret"
    )
    async with pipeline(good, tmp_path / "a") as (box, up):
        box.put(record("m", 1.0))
        await wait_until(lambda: up.stats().acked == 1, 10, "publish with a login")
    bad = dataclasses.replace(good, password="wrong")
    async with pipeline(bad, tmp_path / "b") as (_, up):
        await wait_until(lambda: up.stats().reconnects >= 2, 10, "retries")
        err = up.stats().last_error
        assert err is not None and "username and password" in err


async def test_drain_gives_up_in_time_when_the_broker_is_away(
    broker: Broker, tmp_path: Path
) -> None:
    broker.stop()
    async with pipeline(mqtt_config(broker.port), tmp_path / "o") as (box, up):
        box.put(record("m", 1.0))
        await box.flush()
        await asyncio.wait_for(up.drain(0.5), 5)
        assert box.stats().depth == 1  # kept for the next start


async def test_records_stored_by_an_older_edged_are_sent_as_they_were(
    broker: Broker, tmp_path: Path
) -> None:
    # An outbox of schema 1 (record format 1) with one record left in it at the upgrade.
    path = tmp_path / "o" / "outbox.sqlite"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    v1 = (
        b'{"device":"old","seq":7,"ts":"2023-11-14T22:13:00.000Z","window":60,"values":'
        b'{"energy_import":{"value":5.0,"unit":"Wh","ts":"2023-11-14T22:13:20.000Z"}}}'
    )
    db.execute(
        "INSERT INTO records (device_id, seq, payload, created) VALUES ('old', 7, ?, 0)", (v1,)
    )
    db.execute("INSERT INTO sequences (device_id, seq) VALUES ('old', 7)")
    db.commit()
    db.close()
    async with (
        subscribe(broker.port, "edged/#") as col,
        pipeline(mqtt_config(broker.port), path) as (box, _),
    ):
        box.put(record("old", 6.0))
        box.put(record("new", 1.0))
        await col.wait_for(lambda c: len(c.records()) == 3)
    # The old record alone on its device topic, byte for byte; the new ones in format 2.
    assert next(p for t, p, _ in col.messages if t == "edged/gw1/old") == v1
    assert [(r.device_id, r.seq) for r in col.records()] == [("old", 7), ("old", 8), ("new", 1)]
