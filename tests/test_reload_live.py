"""The supervisor hands a changed device list to a running OCPP connection instead of
restarting it: device states survive for kept chargers, new ones start provisioned, and
samples of chargers no longer on the connection are rejected."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from drivers.ocpp.driver import REMOVED
from drivers.ocpp.simulator import SimCharger, SimConfig
from edged.app import Daemon
from edged.model import DeviceState, Sample
from edged.provisioning import with_admitted
from tests.conftest import free_port, wait_port
from tests.daemon import write_config
from tests.drivers.ocpp.ocpp_helpers import running, wait_until


def body(port: int, *chargers: str) -> str:
    text = f"""
[connections.chargers]
driver = "ocpp"
host = "127.0.0.1"
port = {port}
"""
    for n in chargers:
        text += f"""
[[devices]]
id = "ev{n}"
connection = "chargers"
address = "CP-{n}"
"""
    return text


def state(daemon: Daemon, device_id: str) -> DeviceState:
    return daemon.devices[device_id].state


def counter(daemon: Daemon, name: str, device_id: str) -> float | None:
    """A device's counter from the metrics page (None when the series does not exist)."""
    for line in daemon.metrics.render().decode().splitlines():
        if line.startswith(f"edged_{name}_total{{") and f'device="{device_id}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_device_list_changes_apply_to_the_running_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    cfg = write_config(tmp_path, body(port, "1", "2"), mqtt_port=free_port(), capacity=10)
    daemon = Daemon(cfg)
    await daemon.apply(daemon.load())
    try:
        task = daemon.supervisor.connections["chargers"].task
        await asyncio.to_thread(wait_port, port, 20.0)
        sim = SimCharger(
            SimConfig(url=f"ws://127.0.0.1:{port}", charge_point_id="CP-1", interval=0.2)
        )
        async with running(sim) as sim_task:
            await wait_until(lambda: state(daemon, "ev1") is DeviceState.ONLINE)
            await wait_until(lambda: daemon.devices["ev1"].last_sample is not None)
            ws = sim.connection
            last_sample = daemon.devices["ev1"].last_sample

            # ev2 leaves, ev3 joins: same task, ev1 keeps its state, ev3 starts provisioned.
            cfg.write_text(cfg.read_text().replace(body(port, "1", "2"), body(port, "1", "3")))
            plan = daemon.load()
            await daemon.apply(plan)
            run = daemon.supervisor.connections["chargers"]
            assert run.task is task and not task.done()
            assert run.devices == ("ev1", "ev3")
            assert state(daemon, "ev1") is DeviceState.ONLINE
            assert daemon.devices["ev1"].last_sample is not None
            assert daemon.devices["ev1"].last_sample >= (last_sample or 0.0)
            assert state(daemon, "ev3") is DeviceState.PROVISIONED
            assert "ev2" not in daemon.devices
            assert counter(daemon, "samples", "ev3") == 0.0
            assert sim.connection is ws

            # The licence watcher takes ev1 out of service: its charger is closed live.
            ev1 = next(d for d in plan.admitted if d.id == "ev1")
            await daemon.apply(
                with_admitted(
                    plan, tuple(d for d in plan.admitted if d.id != "ev1"), unlicensed=(ev1,)
                )
            )
            assert daemon.supervisor.connections["chargers"].task is task and not task.done()
            await wait_until(sim_task.done)
            assert ws is not None and ws.close_reason == REMOVED
            assert state(daemon, "ev1") is DeviceState.UNLICENSED
            assert run.context is not None
            before = counter(daemon, "samples_rejected", "ev1") or 0.0
            run.context.sample(Sample("ev1", 1.0, {"power_active": 1.0}))
            assert counter(daemon, "samples_rejected", "ev1") == before + 1
            assert daemon.devices["ev1"].last_sample != 1.0
    finally:
        await daemon.supervisor.stop()
