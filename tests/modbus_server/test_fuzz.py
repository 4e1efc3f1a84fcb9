"""Fuzzing the running daemon's Modbus TCP server over raw sockets.

Random function codes, lengths, addresses, unit ids, broken and truncated MBAP headers, in
pipelined bursts. Every example is checked against what the server must do: a complete,
well-framed request gets exactly its reply (data or the right exception) in order; a frame
that breaks the framing closes the connection after the replies before it; a truncated
frame gets nothing. Afterwards a normal client still reads and polling went on.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient

from edged.modbus_server import plainmap, sunspec
from tests.conftest import Broker, free_port, wait_port
from tests.daemon import TRUST, Proc, edged, modbus_sim_cmd, start_daemon, write_config

pytestmark = pytest.mark.slow

UNITS = {1: True, 2: False}  # unit id → has the SunSpec map (electricity)


@dataclass(frozen=True)
class Frame:
    """Bytes to send and what they are."""

    data: bytes
    kind: str  # "ok", "broken" or "truncated"
    tid: int = 0
    unit: int = 0
    pdu: bytes = b""


def mbap(tid: int, unit: int, pdu: bytes, pid: int = 0, length: int | None = None) -> bytes:
    n = len(pdu) + 1 if length is None else length
    return struct.pack(">HHHB", tid, pid, n, unit) + pdu


read_pdu = st.builds(
    lambda fc, addr, count: struct.pack(">BHH", fc, addr, count),
    st.sampled_from([3, 4]),
    st.one_of(
        st.integers(0, 0xFFFF),
        st.sampled_from([0, 1, 100, 113, 114, 39999, 40000, 40070, 40150, 40178, 40179]),
    ),
    st.one_of(st.integers(0, 0xFFFF), st.integers(0, 130)),
)
any_pdu = st.one_of(
    read_pdu,
    st.binary(min_size=1, max_size=253),
    st.builds(lambda fc, rest: bytes([fc]) + rest, st.integers(0, 255), st.binary(max_size=12)),
)
unit_ids = st.one_of(st.sampled_from([0, 1, 2, 3, 255]), st.integers(0, 255))


@st.composite
def frames(draw: st.DrawFn) -> list[Frame]:
    out: list[Frame] = []
    for _ in range(draw(st.integers(1, 6))):
        tid, unit, pdu = draw(st.integers(0, 0xFFFF)), draw(unit_ids), draw(any_pdu)
        out.append(Frame(mbap(tid, unit, pdu), "ok", tid, unit, pdu))
    ending = draw(st.sampled_from(["none", "broken", "truncated"]))
    if ending == "broken":
        tid, unit, pdu = draw(st.integers(0, 0xFFFF)), draw(unit_ids), draw(any_pdu)
        if draw(st.booleans()):
            data = mbap(tid, unit, pdu, pid=draw(st.integers(1, 0xFFFF)))
        else:
            bad = draw(st.one_of(st.integers(0, 1), st.integers(255, 0xFFFF)))
            data = mbap(tid, unit, pdu, length=bad)
        out.append(Frame(data, "broken"))
    elif ending == "truncated":
        whole = mbap(draw(st.integers(0, 0xFFFF)), draw(unit_ids), draw(any_pdu))
        out.append(Frame(whole[: draw(st.integers(1, len(whole) - 1))], "truncated"))
    return out


def expected(unit: int, pdu: bytes) -> tuple[int, int | None]:
    """(function byte of the reply, exception code or None for data)."""
    fc = pdu[0]
    if fc not in (3, 4):
        return fc | 0x80, 1
    if len(pdu) != 5:
        return fc | 0x80, 3
    address, count = struct.unpack(">HH", pdu[1:])
    if not 1 <= count <= 125:
        return fc | 0x80, 3
    if unit not in UNITS:
        return fc | 0x80, 0x0B
    end = address + count
    if end <= plainmap.SIZE:
        return fc, None
    base = sunspec.BASE_ADDRESS
    if UNITS[unit] and address >= base and end - base <= sunspec.map_size(203):
        return fc, None
    return fc | 0x80, 2


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}, expected {n} bytes")
        data += chunk
    return data


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def status(cfg: Path) -> dict[str, object]:
    out = subprocess.run(
        edged("status", "-c", str(cfg), "--json", "--values"),
        capture_output=True,
        text=True,
        timeout=30,
        env={**__import__("os").environ, **TRUST},
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_fuzzed_requests_never_crash_the_server_or_disturb_polling(
    tmp_path: Path, broker: Broker
) -> None:
    sim_port, mb_port = free_port(), free_port()
    sim = Proc(modbus_sim_cmd(sim_port, meters=2), tmp_path / "sim.log")
    body = f"""
[features]
modbus_server = true

[modbus_server]
port = {mb_port}
max_connections = 64

[connections.panel]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = {sim_port}
timeout = 0.5
"""
    for unit, medium in ((1, "electricity"), (2, "heat")):
        body += f"""
[[devices]]
id = "m{unit}"
connection = "panel"
address = {unit}
profile = "eastron_sdm630"
poll_interval = 0.25
cloud_licence = "professional"
medium = "{medium}"
"""
    cfg = write_config(tmp_path, body, mqtt_port=broker.port, capacity=10)
    wait_port(sim_port)
    daemon = start_daemon(cfg, tmp_path / "daemon.log")
    try:
        daemon.wait_for("modbus server listening", timeout=30)
        wait_port(mb_port)
        daemon.wait_for(lambda t: "device state device=m2 state=online" in t, timeout=30)

        examples = 0

        @settings(
            max_examples=250,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(burst=frames(), split=st.integers(0, 40))
        def fuzz(burst: list[Frame], split: int) -> None:
            nonlocal examples
            examples += 1
            data = b"".join(f.data for f in burst)
            with socket.create_connection(("127.0.0.1", mb_port), timeout=10) as sock:
                # Sometimes in two segments, cut anywhere (headers included).
                cut = min(split, len(data))
                sock.sendall(data[:cut])
                if cut < len(data):
                    time.sleep(0.002)
                    sock.sendall(data[cut:])
                for f in burst:
                    if f.kind == "broken":
                        assert closed(sock), "a broken frame must close the connection"
                        return
                    if f.kind == "truncated":
                        sock.settimeout(0.05)
                        with pytest.raises(TimeoutError):
                            sock.recv(1)  # nothing for half a frame
                        return
                    head = recv_exactly(sock, 7)
                    tid, pid, length, unit = struct.unpack(">HHHB", head)
                    body = recv_exactly(sock, length - 1)
                    assert (tid, pid, unit) == (f.tid, 0, f.unit)
                    function, code = expected(f.unit, f.pdu)
                    assert body[0] == function, (f, body)
                    if code is None:
                        count = struct.unpack(">H", f.pdu[3:5])[0]
                        assert body[1] == 2 * count and len(body) == 2 + 2 * count
                    else:
                        assert body[1:] == bytes([code]), (f, body)

        before = status(cfg)
        fuzz()
        assert examples >= 100

        # a normal client still reads
        c = ModbusTcpClient("127.0.0.1", port=mb_port, timeout=5, retries=0)
        assert c.connect()
        rr = c.read_holding_registers(40000, count=2, device_id=1)
        assert rr.registers == [0x5375, 0x6E53]
        rr = c.read_holding_registers(0, count=plainmap.SIZE, device_id=1)
        assert rr.registers[1] == plainmap.STATUS_FRESH
        c.close()

        # polling went on: newer samples, both devices online
        after = status(cfg)
        for i, dev in enumerate(after["devices"]):  # type: ignore[arg-type]
            assert dev["state"] == "online", dev
            old = before["devices"][i]["values"]["power_active"]["ts"]  # type: ignore[index]
            assert dev["values"]["power_active"]["ts"] > old, dev
            assert dev["last_sample_age"] < 5, dev
        server = after["modbus_server"]
        assert server["malformed"] > 0 and server["exceptions"] > 0  # type: ignore[index]
    finally:
        assert daemon.stop() == 0
        sim.stop()
    log = daemon.text()
    assert "Traceback" not in log and "modbus request failed" not in log
