"""Capacity enforcement end to end: real daemon process, Modbus simulator, mosquitto.

The simulated meters run in this test process (on their own event loop in a thread, so
no blocking wait in a test can stall a poll) because only in-process meters expose
per-unit request counters: they show which meters the daemon really polls.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.modbus import profile as profiles
from drivers.modbus.simulator import Meter, Simulator
from edged.licensing.install_code import install_code
from edged.model import Record
from tests.conftest import Broker, Collector, subscribe
from tests.daemon import Proc, run_edged, start_daemon, write_config
from tests.licences import grant_trial
from tests.licensing.issuing import issue_test_licence
from tests.licensing.licence_helpers import TEST_KEY

pytestmark = pytest.mark.slow

GW = "edged/gw-test"


class MeterThread:
    """Simulated SDM630 meters served over loopback TCP from a private event loop."""

    def __init__(self) -> None:
        path = profiles.resolve("eastron_sdm630")
        assert path is not None
        self._profile = profiles.load(path)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._sim = Simulator()

    def serve(self, units: Sequence[int]) -> tuple[int, dict[int, Meter]]:
        """Serve one meter per unit id on a new port; returns the port and the meters."""
        meters = {u: Meter(self._profile, unit=u, seed=u) for u in units}
        fut = asyncio.run_coroutine_threadsafe(self._sim.add_tcp(list(meters.values())), self._loop)
        return fut.result(10), meters

    def close(self) -> None:
        """Stop serving and end the thread."""
        asyncio.run_coroutine_threadsafe(self._sim.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def meters() -> Iterator[MeterThread]:
    sim = MeterThread()
    yield sim
    sim.close()


def connection(name: str, port: int) -> str:
    return f"""
[connections.{name}]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = {port}
timeout = 0.5
"""


def device(dev_id: str, conn: str, unit: int) -> str:
    return f"""
[[devices]]
id = "{dev_id}"
connection = "{conn}"
address = {unit}
profile = "eastron_sdm630"
poll_interval = 0.5
cloud_licence = "professional"
"""


async def until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait (without blocking the loop) until predicate() is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_log(daemon: Proc, needle: str, timeout: float = 20.0) -> None:
    """Wait until the daemon's output contains needle; fail early if it exits."""

    def seen() -> bool:
        if daemon.proc.poll() is not None:
            raise AssertionError(f"daemon exited {daemon.proc.returncode}:\n{daemon.text()}")
        return needle in daemon.text()

    await until(seen, f"{needle!r} in the daemon log", timeout)


async def status(cfg: Path) -> dict[str, Any]:
    """`edged status --json` of the running daemon, through its control socket."""
    code, out, err = await run_edged("status", "-c", str(cfg), "--json")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def states(st: dict[str, Any]) -> dict[str, str]:
    return {d["id"]: d["state"] for d in st["devices"]}


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def lines_naming(text: str, dev_id: str) -> list[str]:
    word = re.compile(rf"(?<![\w-]){re.escape(dev_id)}(?![\w-])")
    return [line for line in text.splitlines() if word.search(line)]


def records(col: Collector, dev_id: str) -> list[Record]:
    return col.records(dev_id)


async def test_surplus_device_is_never_polled_until_a_licence_is_activated_and_sighup(
    tmp_path: Path, broker: Broker, meters: MeterThread
) -> None:
    panel_port, panel = meters.serve([1, 2])
    annex_port, annex = meters.serve([1])
    # Capacity 3 = gateway + 2 devices; config order admits m1 and a1, so m2 (unit 2 on
    # the same bus as the polled m1) is the one device over capacity.
    body = (
        connection("panel", panel_port)
        + connection("annex", annex_port)
        + device("m1", "panel", 1)
        + device("a1", "annex", 1)
        + device("m2", "panel", 2)
    )
    cfg = write_config(tmp_path, body, mqtt_port=broker.port, capacity=3)
    async with subscribe(broker.port, f"{GW}/#") as col:
        daemon = start_daemon(cfg, tmp_path / "daemon.log")
        try:
            await col.wait_for(
                lambda c: len(records(c, "m1")) >= 3 and len(records(c, "a1")) >= 3, timeout=20
            )
            st = await status(cfg)
            assert states(st) == {"m1": "online", "a1": "online", "m2": "unlicensed"}
            assert st["licence"] == {"used": 3, "total": 3}
            # Exactly one device is refused, named once in the log.
            named = lines_naming(daemon.text(), "m2")
            assert len(named) == 1, named
            assert "devices not licensed (never polled) used=3 capacity=3 devices=m2" in named[0]
            # The simulator of the unlicensed meter never saw a request; its bus neighbour did.
            assert panel[2].request_count == 0
            assert panel[1].request_count > 0 and annex[1].request_count > 0
            assert records(col, "m2") == []

            # One more device of capacity, activated the way an operator does it.
            lic = tmp_path / "plus1.lic"
            lic.write_bytes(
                issue_test_licence(
                    TEST_KEY,
                    install_code(tmp_path / "licences"),
                    "capacity",
                    capacity=1,
                    licence_id="L-E2E-PLUS1",
                )
            )
            code, out, err = await run_edged(
                "license", "activate", str(lic), "--dir", str(tmp_path / "licences")
            )
            assert code == 0, out + err
            pid = daemon.proc.pid
            annex_polls = annex[1].request_count
            daemon.signal(signal.SIGHUP)
            await wait_log(daemon, "reloaded config")
            await col.wait_for(lambda c: len(records(c, "m2")) >= 2, timeout=20)
            assert panel[2].request_count > 0
            assert daemon.proc.poll() is None and daemon.proc.pid == pid
            text = daemon.text()
            assert text.count("edged started") == 1
            # The connection whose devices did not change kept running through the reload.
            assert text.count("starting connection connection=annex") == 1
            assert "stopping connection connection=annex" not in text
            assert annex[1].request_count > annex_polls
            st = await status(cfg)
            assert states(st) == {"m1": "online", "a1": "online", "m2": "online"}
            assert st["licence"] == {"used": 4, "total": 4}
        finally:
            assert daemon.stop() == 0


async def test_trial_expiring_while_running_takes_the_surplus_out_and_publishes_an_event(
    tmp_path: Path, broker: Broker, meters: MeterThread
) -> None:
    port, panel = meters.serve([1, 2])
    body = connection("panel", port) + device("m1", "panel", 1) + device("m2", "panel", 2)
    # A permanent licence for gateway + 1 device, and a trial that ends 8 s from now.
    cfg = write_config(tmp_path, body, mqtt_port=broker.port, capacity=2)
    trial = grant_trial(tmp_path / "licences", expires_in=8)
    assert trial.valid_until is not None
    expiry = trial.valid_until

    def licence_events(c: Collector) -> list[dict[str, Any]]:
        return [e for e in c.json(f"{GW}/events") if e.get("kind") == "licence_changed"]

    async with subscribe(broker.port, f"{GW}/#") as col:
        daemon = start_daemon(cfg, tmp_path / "daemon.log")
        try:
            await col.wait_for(lambda c: bool(licence_events(c)), timeout=expiry - time.time() + 15)
            (event,) = licence_events(col)
            assert event["taken_out_of_service"] == ["m2"]
            assert event["admitted"] == []
            assert (event["used"], event["capacity"]) == (2, 2)
            assert expiry <= event["ts"] < expiry + 3.0  # at that moment, generously
            assert "licence capacity changed used=2 capacity=2 taken_out=m2 admitted=-" in (
                daemon.text()
            )
            # m2 was polled and published while the trial lasted.
            assert panel[2].request_count > 0
            assert any(r.window_start < expiry for r in records(col, "m2"))

            # After the event: m1 goes on, m2 gets no request and no record of a later window.
            m1_polls = panel[1].request_count
            await until(lambda: panel[1].request_count >= m1_polls + 2, "m1 polled again")
            m2_polls = panel[2].request_count
            n1 = len(records(col, "m1"))
            # Three more m1 windows: longer than the grace any open m2 window had left.
            await col.wait_for(lambda c: len(records(c, "m1")) >= n1 + 3, timeout=20)
            assert panel[2].request_count == m2_polls
            m2 = records(col, "m2")
            assert all(r.window_start < expiry + 1.0 for r in m2), [r.window_start for r in m2]
            last_read = max(r.values["energy_import"].ts for r in m2)
            assert last_read < expiry + 1.0
            st = await status(cfg)
            assert states(st) == {"m1": "online", "m2": "unlicensed"}
            assert st["licence"] == {"used": 2, "total": 2}
        finally:
            assert daemon.stop() == 0
