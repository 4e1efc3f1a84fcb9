"""`edged reconnect DEVICE`: the running daemon retries a device's connection at once."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from edged.control import request
from tests.conftest import Broker, free_port, wait_port
from tests.daemon import (
    Proc,
    modbus_body,
    modbus_sim_cmd,
    run_edged,
    start_daemon,
    write_config,
)

pytestmark = pytest.mark.slow

# The link's backoff must have grown at least this far before the simulator comes back.
LONG_BACKOFF = 8.0


async def state_of(sock: Path, device: str) -> str:
    reply: dict[str, Any] = await request(sock, {"command": "status", "device": device})
    devices = reply["status"]["devices"]
    return str(next(d for d in devices if d["id"] == device)["state"])


async def wait_state(sock: Path, device: str, state: str, timeout: float) -> float:
    """Seconds until the device reached the state; fails after timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await state_of(sock, device) == state:
            return time.monotonic() - t0
        await asyncio.sleep(0.1)
    raise AssertionError(f"{device} not {state} within {timeout} s")


def long_backoff(text: str) -> bool:
    return any(
        float(d) >= LONG_BACKOFF for d in re.findall(r"reconnecting bus=panel in=([\d.]+)s", text)
    )


async def test_reconnect_brings_a_restarted_simulator_back_at_once(
    tmp_path: Path, broker: Broker
) -> None:
    port = free_port()
    sim = Proc(modbus_sim_cmd(port, meters=1), tmp_path / "sim.log")
    wait_port(port)
    cfg = write_config(tmp_path, modbus_body(port, count=1), mqtt_port=broker.port, capacity=10)
    sock = tmp_path / "control.sock"
    daemon = start_daemon(cfg, tmp_path / "daemon.log")
    sim2: Proc | None = None
    try:
        daemon.wait_for("edged started")
        await wait_state(sock, "m1", "online", 20)
        sim.stop()
        await wait_state(sock, "m1", "offline", 20)
        # Let the link's backoff grow well beyond what the test then waits for.
        daemon.wait_for(long_backoff, timeout=60)
        sim2 = Proc(modbus_sim_cmd(port, meters=1), tmp_path / "sim2.log")
        wait_port(port)
        code, out, err = await run_edged("reconnect", "-c", str(cfg), "m1")
        print(out, err)
        assert code == 0, err
        assert out.strip() == "reconnecting connection panel (device m1)"
        took = await wait_state(sock, "m1", "online", 3.0)
        print(f"online again {took:.2f} s after `edged reconnect`")
        assert "reconnecting connection=panel device=m1 (requested)" in daemon.text()
    finally:
        assert daemon.stop() == 0
        if sim2 is not None:
            sim2.stop()


async def test_reconnect_refuses_unknown_device(tmp_path: Path, broker: Broker) -> None:
    port = free_port()
    cfg = write_config(tmp_path, modbus_body(port, count=1), mqtt_port=broker.port, capacity=10)
    daemon = start_daemon(cfg, tmp_path / "daemon.log")
    try:
        daemon.wait_for("edged started")
        code, _, err = await run_edged("reconnect", "-c", str(cfg), "nope")
        assert code == 1
        assert err.strip() == "edged: no device 'nope'"
    finally:
        assert daemon.stop() == 0
