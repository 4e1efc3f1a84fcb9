"""The simulator on its own: the command line and the raw wire protocol."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus import frame, profile
from drivers.modbus.simulator import Meter, Simulator, serve_pdu

ROOT = Path(__file__).resolve().parents[3]


async def _ask(port: int, frame: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(frame)
    await writer.drain()
    head = await asyncio.wait_for(reader.readexactly(6), 2)
    body = await asyncio.wait_for(reader.readexactly(struct.unpack(">H", head[4:6])[0]), 2)
    writer.close()
    await writer.wait_closed()
    return head + body


async def test_wire_replies_and_exceptions() -> None:
    meter = Meter(profile.load(profile.shipped()["bench8"]), unit=5)
    meter.fixed["power_active"] = 1.0
    meter.faults.refuse("holding", [14], code=frame.ILLEGAL_DATA_ADDRESS)
    async with Simulator() as sim:
        port = await sim.add_tcp([meter])
        ok = await _ask(port, frame.mbap(0x1234, 5, bytes((3, 0, 2, 0, 2))))
        assert ok == frame.mbap(0x1234, 5, bytes((3, 4, 0x3F, 0x80, 0, 0)))
        refused = await _ask(port, frame.mbap(7, 5, bytes((3, 0, 10, 0, 6))))
        assert refused == frame.mbap(7, 5, bytes((0x83, 2)))
        # Diagnostics (8) is not served; writes (5, 6, 15, 16) are, see test_modbus_writes.
        bad_fc = await _ask(port, frame.mbap(8, 5, bytes((8, 0, 0, 0, 0))))
        assert bad_fc == frame.mbap(8, 5, bytes((0x88, 1)))
        too_many = await _ask(port, frame.mbap(9, 5, bytes((4, 0, 0, 0, 126))))
        assert too_many == frame.mbap(9, 5, bytes((0x84, 3)))
        no_unit = await _ask(port, frame.mbap(10, 6, bytes((3, 0, 0, 0, 1))))
        assert no_unit == frame.mbap(10, 6, bytes((0x83, 0x0B)))


def test_crc_matches_the_specification_example() -> None:
    # Read 2 holding registers at 0x0000 from unit 1: the well-known frame 01 03 00 00 00 02 C4 0B
    assert frame.with_crc(bytes.fromhex("010300000002")) == bytes.fromhex("010300000002c40b")


def test_command_line_serves_until_sigterm() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drivers.modbus.simulator",
            "--profile",
            "eastron_sdm630",
            "--count",
            "3",
            "--port",
            "0",
            "--rtu-pty",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "ready":
                break
        tcp = [ln for ln in lines if ln.startswith("tcp ")]
        rtu = [ln for ln in lines if ln.startswith("rtu ")]
        assert len(tcp) == 3 and len(rtu) == 1, lines
        port = int(tcp[0].split()[1].rsplit(":", 1)[1])
        reply = asyncio.run(_ask(port, frame.mbap(1, 1, bytes((4, 0, 0, 0, 2)))))
        assert reply[7:9] == bytes((4, 4))
        assert Path(rtu[0].split()[1]).exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_serve_pdu_never_raises_on_garbage(pdu: bytes) -> None:
    meter = Meter(profile.load(profile.shipped()["eastron_sdm630"]))
    reply = serve_pdu(meter, pdu)
    if reply is not None and pdu:
        assert reply[0] in (pdu[0], pdu[0] | 0x80)
        if reply[0] & 0x80:
            assert len(reply) == 2
        elif pdu[0] in (1, 2, 3, 4):  # reads: a byte count, then the bytes
            assert reply[1] == len(reply) - 2
        else:  # writes (5, 6, 15, 16): address and value or quantity echoed
            assert pdu[0] in (5, 6, 15, 16) and len(reply) == 5
