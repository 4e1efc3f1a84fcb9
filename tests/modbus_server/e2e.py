"""Shared parts of the end-to-end tests: a daemon serving simulated meters over Modbus TCP,
and a SunSpec scanner that knows nothing of edged's code (it decodes with the SunSpec
Alliance's model files)."""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from drivers.modbus import profile
from drivers.modbus.simulator import Meter, Simulator
from tests.conftest import free_port
from tests.daemon import Proc, start_daemon, write_config

MODELS = Path(__file__).parent / "sunspec_models"


def meter(unit: int, seed: int) -> Meter:
    """A simulated SDM630 whose values stand still (so a read can be compared exactly)."""
    m = Meter(profile.load(profile.shipped()["eastron_sdm630"]), unit=unit, seed=seed)
    m.fixed = dict(m.values())
    return m


async def start(
    tmp: Path, broker_port: int, *, extra: str = ""
) -> tuple[Proc, Simulator, Simulator, dict[str, Meter], int]:
    """Two simulators (grid on one, pv on the other), a virtual meter and the daemon."""
    grid_sim, pv_sim = Simulator(), Simulator()
    meters = {"grid": meter(1, 11), "pv": meter(1, 22)}
    grid_port = await grid_sim.add_tcp([meters["grid"]])
    pv_port = await pv_sim.add_tcp([meters["pv"]])
    mb_port = free_port()
    body = f"""
[features]
modbus_server = true

[modbus_server]
port = {mb_port}
units = {{ pv = 5 }}
{extra}

[connections.grid]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = {grid_port}
timeout = 0.5

[connections.pv]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = {pv_port}
timeout = 0.5

[[devices]]
id = "grid"
connection = "grid"
address = 1
profile = "eastron_sdm630"
poll_interval = 0.5
cloud_licence = "professional"

[[devices]]
id = "pv"
connection = "pv"
address = 1
profile = "eastron_sdm630"
poll_interval = 0.5
cloud_licence = "professional"

[[virtual_meters]]
id = "site"
sources = ["grid", "pv"]
cloud_licence = "professional"
"""
    cfg = write_config(tmp, body, mqtt_port=broker_port, capacity=10)
    daemon = start_daemon(cfg, tmp / "daemon.log")
    return daemon, grid_sim, pv_sim, meters, mb_port


async def until(
    check: Callable[[], Awaitable[bool]], what: str, daemon: Proc, timeout: float = 30.0
) -> None:
    """Poll an async condition (never blocking the loop that runs the simulators)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if daemon.proc.poll() is not None:
            raise AssertionError(f"daemon exited {daemon.proc.returncode}:\n{daemon.text()}")
        try:
            if await check():
                return
        except (OSError, AssertionError, AttributeError):
            pass
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{daemon.text()[-3000:]}")
        await asyncio.sleep(0.2)


async def client(port: int) -> AsyncModbusTcpClient:
    c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
    if not await c.connect():
        raise OSError(f"cannot connect to 127.0.0.1:{port}")
    return c


async def read(c: AsyncModbusTcpClient, address: int, count: int, unit: int) -> list[int]:
    rr = await c.read_holding_registers(address, count=count, device_id=unit)
    assert not rr.isError(), rr
    return list(rr.registers)


# -- a SunSpec client ---------------------------------------------------------------------


def definition(model: int) -> list[dict[str, Any]]:
    doc = json.loads((MODELS / f"model_{model}.json").read_text())
    return list(doc["group"]["points"])


async def scan(c: AsyncModbusTcpClient, unit: int) -> dict[int, list[int]]:
    """Find the marker at 40000, then follow model ids and lengths to the end model."""
    assert await read(c, 40000, 2, unit) == [0x5375, 0x6E53], "no SunS marker at 40000"
    models: dict[int, list[int]] = {}
    address = 40002
    while True:
        model_id, length = await read(c, address, 2, unit)
        if model_id == 0xFFFF:
            assert length == 0
            return models
        body: list[int] = []
        while len(body) < length:  # a long model takes several requests
            n = min(125, length - len(body))
            body += await read(c, address + 2 + len(body), n, unit)
        models[model_id] = [model_id, length, *body]
        address += 2 + length


def decode(model: int, regs: list[int]) -> dict[str, Any]:
    """Every point of a model as a SunSpec client sees it (None: not implemented)."""
    points = definition(model)
    raw: dict[str, Any] = {}
    offset = 0
    for p in points:
        words = regs[offset : offset + p["size"]]
        offset += p["size"]
        t = p["type"]
        if t == "string":
            raw[p["name"]] = b"".join(struct.pack(">H", w) for w in words).rstrip(b"\0").decode()
        elif t in ("uint16", "pad"):
            raw[p["name"]] = None if words[0] == 0xFFFF else words[0]
        elif t in ("int16", "sunssf"):
            v = words[0] - 0x10000 if words[0] & 0x8000 else words[0]
            raw[p["name"]] = None if v == -32768 else v
        elif t in ("acc32", "bitfield32"):
            v = (words[0] << 16) | words[1]
            none = 0 if t == "acc32" else 0xFFFFFFFF
            raw[p["name"]] = None if v == none else v
        elif t == "float32":
            (f,) = struct.unpack(">f", struct.pack(">2H", *words))
            raw[p["name"]] = None if math.isnan(f) else f
    out: dict[str, Any] = {}
    for p in points:
        v = raw[p["name"]]
        sf = p.get("sf")
        if sf and v is not None:
            s = raw[sf]
            v = None if s is None else v * 10.0**s
        out[p["name"]] = v
    out["_sf"] = {p["name"]: raw[p["sf"]] for p in points if p.get("sf")}
    return out
