"""The supervisor end to end: real daemon process, Modbus simulator, mosquitto."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edged.model import unit_of
from tests.conftest import Broker, free_port, subscribe, wait_port
from tests.daemon import (
    TRUST,
    Proc,
    edged,
    modbus_body,
    modbus_sim_cmd,
    start_daemon,
    write_config,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def modbus_sim(tmp_path: Path):
    port = free_port()
    sim = Proc(
        modbus_sim_cmd(port),
        tmp_path / "sim.log",
    )
    wait_port(port)
    yield port
    sim.stop()


async def test_records_reach_broker_with_documented_payload(
    tmp_path: Path, broker: Broker, modbus_sim: int
) -> None:
    cfg = write_config(tmp_path, modbus_body(modbus_sim), mqtt_port=broker.port, capacity=10)
    async with subscribe(broker.port, "edged/gw-test/#") as col:
        daemon = start_daemon(cfg, tmp_path / "daemon.log")
        try:
            await col.wait_for(lambda c: len(c.records("m1")) >= 4 and len(c.records("m2")) >= 4)
        finally:
            assert daemon.stop() == 0
    status = [p for t, p, retain in col.messages if t == "edged/gw-test/status"]
    assert status and status[0] == b"online"
    for dev in ("m1", "m2"):
        recs = col.records(dev)
        seqs = [r.seq for r in recs]
        assert seqs == sorted(set(seqs)), seqs  # strictly increasing
        r = recs[-1]
        assert r.device_id == dev
        assert r.window_length == 1.0 and r.window_start == int(r.window_start)
        energy = r.values["energy_import"]
        assert unit_of("energy_import") == "Wh" and energy.last > 0 and energy.mean is None
        assert r.window_start <= energy.ts < r.window_start + 1.0
        power = r.values["power_active"]
        assert unit_of("power_active") == "W" and power.mean is not None
        assert power.min is not None and power.max is not None
        assert power.min <= power.mean <= power.max


async def test_sigterm_keeps_queued_records_and_sends_them_after_restart(
    tmp_path: Path, broker: Broker, modbus_sim: int
) -> None:
    cfg = write_config(
        tmp_path, modbus_body(modbus_sim, count=1), mqtt_port=broker.port, capacity=10
    )
    broker.stop()  # uplink down: everything stays in the outbox
    daemon = start_daemon(cfg, tmp_path / "d1.log")
    daemon.wait_for("starting connection")
    await asyncio.sleep(3)
    t0 = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - t0 < 5.0
    import sqlite3

    db = sqlite3.connect(tmp_path / "data" / "outbox.sqlite")
    (queued,) = db.execute("select count(*) from records").fetchone()
    db.close()
    assert queued >= 3
    broker.start()
    async with subscribe(broker.port, "edged/gw-test/m1") as col:
        daemon2 = start_daemon(cfg, tmp_path / "d2.log")
        try:
            await col.wait_for(lambda c: len(c.records()) >= queued + 1)
        finally:
            assert daemon2.stop() == 0
    seqs = [r.seq for r in col.records()]
    assert seqs[:queued] == list(range(1, queued + 1))
    assert seqs == sorted(set(seqs))


async def test_sighup_with_broken_config_keeps_running_old(
    tmp_path: Path, broker: Broker, modbus_sim: int
) -> None:
    cfg = write_config(
        tmp_path, modbus_body(modbus_sim, count=1), mqtt_port=broker.port, capacity=10
    )
    good = cfg.read_text()
    async with subscribe(broker.port, "edged/gw-test/m1") as col:
        daemon = start_daemon(cfg, tmp_path / "daemon.log")
        try:
            await col.wait_for(lambda c: len(c.records()) >= 2)
            cfg.write_text(good.replace("poll_interval = 0.5", "poll_interval = 'fast'"))
            daemon.signal(signal.SIGHUP)
            daemon.wait_for("reload refused")
            n = len(col.records())
            await col.wait_for(lambda c: len(c.records()) >= n + 3)
            assert daemon.proc.poll() is None
            assert "devices[0].poll_interval" in daemon.text()
            # the operator can still reach the daemon while the file on disk is broken
            st = subprocess.run(
                edged("status", "-c", str(cfg), "--json"), capture_output=True, text=True
            )
            assert st.returncode == 0, st.stderr
            assert json.loads(st.stdout)["devices"][0]["state"] == "online"
            refused = subprocess.run(
                edged("reload", "-c", str(cfg)), capture_output=True, text=True
            )
            assert refused.returncode == 1
            assert "reload refused" in refused.stderr and "poll_interval" in refused.stderr
            # a good config is then taken without restarting the unchanged connection, and
            # the CLI says what a reload cannot change
            cfg.write_text(
                good.replace("backoff_max = 1.0", "backoff_max = 2.0")
                + "\n[features]\nactions = false\n"
            )
            ok = subprocess.run(edged("reload", "-c", str(cfg)), capture_output=True, text=True)
            assert ok.returncode == 0, ok.stderr
            assert "[mqtt] changed: takes effect at the next restart" in ok.stderr
            daemon.wait_for("reloaded config")
            assert daemon.text().count("starting connection connection=panel") == 1
        finally:
            assert daemon.stop() == 0


async def test_systemd_notifications_over_real_socket(
    tmp_path: Path, broker: Broker, modbus_sim: int
) -> None:
    cfg = write_config(
        tmp_path, modbus_body(modbus_sim, count=1), mqtt_port=broker.port, capacity=10
    )
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    got: list[str] = []

    def drain(until: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got.extend(sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                continue
            if until in got:
                return
        raise AssertionError(f"no {until} in {got}")

    daemon = start_daemon(
        cfg,
        tmp_path / "daemon.log",
        env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"},
    )
    try:
        drain("READY=1")
        drain("WATCHDOG=1")
        daemon.signal(signal.SIGHUP)
        drain("RELOADING=1")
        assert any(m.startswith("MONOTONIC_USEC=") for m in got)
    finally:
        assert daemon.stop() == 0
    drain("STOPPING=1")
    sock.close()


async def test_status_and_metrics_show_online_offline_and_unlicensed(
    tmp_path: Path, broker: Broker, modbus_sim: int
) -> None:
    dead_port = free_port()  # nothing listens here: that meter is offline
    metrics_port = free_port()
    body = f"""
[connections.attic]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = {dead_port}
timeout = 0.3

[[devices]]
id = "dead"
connection = "attic"
address = 1
profile = "eastron_sdm630"
cloud_licence = "limited"
labels = {{ room = "attic" }}
""" + modbus_body(modbus_sim, count=2)
    # gateway + 2 devices: "dead" and m1 are admitted, m2 (last in config order) is not
    cfg = write_config(tmp_path, body, mqtt_port=broker.port, capacity=3)
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "50-metrics.toml").write_text(
        f"[metrics]\nenabled = true\nport = {metrics_port}\n"
    )
    daemon = start_daemon(cfg, tmp_path / "daemon.log")
    try:
        daemon.wait_for("starting connection connection=panel")
        await asyncio.sleep(2.0)
        out = subprocess.run(
            edged("status", "-c", str(cfg), "--json"), capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        status = json.loads(out.stdout)
        states = {d["id"]: d["state"] for d in status["devices"]}
        assert states == {"dead": "offline", "m1": "online", "m2": "unlicensed"}
        dead = next(d for d in status["devices"] if d["id"] == "dead")
        assert dead["last_error"]
        assert status["licence"] == {"used": 3, "total": 3}
        assert status["tier"]["account_tier"] == "limited"
        assert status["uplink"]["connected"] is True
        assert status["outbox"]["dropped"] == 0
        labels = {d["id"]: d["labels"] for d in status["devices"]}
        assert labels == {"dead": {"room": "attic"}, "m1": {}, "m2": {}}
        human = subprocess.run(
            edged("status", "-c", str(cfg)), capture_output=True, text=True, timeout=30
        )
        assert human.returncode == 0 and "unlicensed" in human.stdout and "offline" in human.stdout
        assert "LABELS" in human.stdout and "room=attic" in human.stdout
        assert "values" not in status["devices"][0]

        # Last values come from the live-values stage: one device, or all with --values.
        one = subprocess.run(
            edged("status", "-c", str(cfg), "--json", "m1"), capture_output=True, text=True
        )
        assert one.returncode == 0, one.stderr
        (m1,) = json.loads(one.stdout)["devices"]
        assert m1["id"] == "m1" and m1["values"]["energy_import"]["unit"] == "Wh"
        assert m1["values"]["voltage_l1"]["value"] > 0 and m1["values"]["voltage_l1"]["age"] < 5
        every = subprocess.run(
            edged("status", "-c", str(cfg), "--values"), capture_output=True, text=True
        )
        assert every.returncode == 0 and "m1:" in every.stdout and "energy_import" in every.stdout
        assert "dead: no values yet" in every.stdout
        nobody = subprocess.run(
            edged("status", "-c", str(cfg), "nobody"), capture_output=True, text=True
        )
        assert nobody.returncode == 1 and "no device 'nobody'" in nobody.stderr

        def fetch() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
                return r.read().decode()

        text = await asyncio.to_thread(fetch)
        for state, n in (("online", 1), ("offline", 1), ("unlicensed", 1)):
            assert f'edged_devices{{state="{state}"}} {n}.0' in text, text
        assert "edged_licence_used 3.0" in text and "edged_licence_capacity 3.0" in text
        assert 'edged_account_tier{tier="limited"} 1.0' in text
        assert "edged_account_tier_interval 60.0" in text
        assert 'edged_device_cloud_licence{device="m1",tier="professional"} 1.0' in text
        assert "edged_uplink_connected 1.0" in text
        assert 'edged_samples_total{device="m1",driver="modbus"}' in text
        # error series exist from the start, so alerts on their rate see 0, not nothing
        assert 'edged_poll_error_total{device="m1",driver="modbus"} 0.0' in text
        assert "edged_outbox_oldest_age" in text
        # Running totals are counters (rate() works on them); per-device series are bounded.
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name in ("outbox_dropped", "uplink_published", "uplink_acked", "throttle_dropped"):
            assert families[f"edged_{name}"].type == "counter", name
        published = [s for s in families["edged_uplink_published"].samples]
        assert published[0].name == "edged_uplink_published_total" and published[0].value > 0
        up = {s.labels["device"]: s.value for s in families["edged_device_up"].samples}
        assert up == {"dead": 0.0, "m1": 1.0, "m2": 0.0}
        ages = {
            s.labels["device"]: s.value for s in families["edged_device_last_sample_age"].samples
        }
        assert set(ages) == {"m1"} and ages["m1"] < 10
        label_series = [s.labels for s in families["edged_device_label"].samples]
        assert label_series == [{"device": "dead", "key": "room", "value": "attic"}]
    finally:
        assert daemon.stop() == 0


async def test_second_daemon_on_the_same_outbox_is_refused(
    tmp_path: Path, broker: Broker, modbus_sim: int
) -> None:
    cfg = write_config(
        tmp_path, modbus_body(modbus_sim, count=1), mqtt_port=broker.port, capacity=10
    )
    # same data_dir, other control socket: only the outbox lock can tell them apart
    other = tmp_path / "other.toml"
    other.write_text(cfg.read_text().replace("control.sock", "control2.sock"))
    first = start_daemon(cfg, tmp_path / "first.log")
    try:
        first.wait_for("edged started")
        res = subprocess.run(
            edged("run", "-c", str(other)),
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **TRUST},
        )
        assert res.returncode == 1
        errors = [ln for ln in res.stderr.splitlines() if "ERROR" in ln]
        assert len(errors) == 1, res.stderr
        assert f"another edged (pid {first.proc.pid}) is running on the outbox" in errors[0]
        assert "Traceback" not in res.stderr
        assert first.proc.poll() is None
    finally:
        assert first.stop() == 0


async def test_debug_level_shows_edged_decisions_not_library_frames(
    tmp_path: Path, broker: Broker, modbus_sim: int
) -> None:
    cfg = write_config(
        tmp_path, modbus_body(modbus_sim, count=1), mqtt_port=broker.port, capacity=10
    )
    log = tmp_path / "daemon.log"
    daemon = Proc(edged("run", "-c", str(cfg), "--level", "debug"), log, env=TRUST)
    try:
        daemon.wait_for("window closed device=m1", timeout=30)
        text = daemon.text()
        assert "device admitted device=m1" in text
        # Libraries log at debug (asyncio names its selector, pymodbus every RTU frame);
        # those stay out unless [logging] libraries asks for them.
        assert " DEBUG asyncio" not in text, text[-2000:]
    finally:
        assert daemon.stop() == 0
    (tmp_path / "conf.d").mkdir(exist_ok=True)
    (tmp_path / "conf.d" / "90-libs.toml").write_text('[logging]\nlibraries = "debug"\n')
    chatty = Proc(edged("run", "-c", str(cfg)), tmp_path / "chatty.log", env=TRUST)
    try:
        chatty.wait_for("edged started", timeout=30)
        assert " DEBUG asyncio" in chatty.text()
        assert "window closed" not in chatty.text()  # edged itself stays at info
    finally:
        assert chatty.stop() == 0


async def test_labels_reach_the_cloud_in_each_devices_retained_info(
    tmp_path: Path, broker: Broker, modbus_sim: int
) -> None:
    body = modbus_body(modbus_sim, count=2).replace(
        'id = "m1"', 'id = "m1"\nlabels = { flat = "3a", floor = "2" }'
    )
    cfg = write_config(tmp_path, body, mqtt_port=broker.port, capacity=10)
    daemon = start_daemon(cfg, tmp_path / "daemon.log")
    try:
        daemon.wait_for("mqtt connected")

        async def infos() -> dict[str, dict[str, object]]:
            # A new subscriber gets what the broker retains: what the cloud would see.
            async with subscribe(broker.port, "edged/gw-test/+/info") as col:
                await asyncio.sleep(1.0)
            return {t.split("/")[2]: json.loads(p) for t, p, retained in col.messages if p}

        got = await infos()
        assert got["m1"] == {
            "v": 1,
            "device": "m1",
            "driver": "modbus",
            "medium": "electricity",
            "cloud_licence": "professional",
            "labels": {"flat": "3a", "floor": "2"},
        }
        assert got["m2"]["labels"] == {}
        # Records stay compact: they carry no labels.
        async with subscribe(broker.port, "edged/gw-test/#") as col:
            await col.wait_for(lambda c: len(c.records("m1")) >= 1, timeout=20)
        assert all(b"flat" not in p for t, p, _ in col.messages if not t.endswith("/info"))

        # A reload that changes the labels and drops m2 updates and clears the retained info.
        changed = modbus_body(modbus_sim, count=1).replace(
            'id = "m1"', 'id = "m1"\nlabels = { flat = "3b", floor = "2" }'
        )
        write_config(tmp_path, changed, mqtt_port=broker.port, capacity=None)
        res = subprocess.run(edged("reload", "-c", str(cfg)), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        deadline = time.monotonic() + 20
        while True:
            got = await infos()
            if set(got) == {"m1"} and got["m1"]["labels"] == {"flat": "3b", "floor": "2"}:
                break
            assert time.monotonic() < deadline, got
    finally:
        assert daemon.stop() == 0
