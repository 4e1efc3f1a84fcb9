"""The control socket over a real unix stream socket, and the status table."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.control import ControlServer, format_status, request
from edged.errors import ControlError


async def echo_handler(body: dict[str, Any]) -> dict[str, Any]:
    """Answers ``ping`` and ``echo``; refuses everything else like a real handler would."""
    if body["command"] == "ping":
        return {"ok": True, "pong": True}
    if body["command"] == "echo":
        return {"ok": True, "args": body.get("args")}
    if body["command"] == "boom":
        raise RuntimeError("kaput")
    raise ControlError(f"unknown command {body['command']!r}")


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be long.
    short = Path(f"/tmp/edged-ctl-{os.getpid()}-{abs(hash(tmp_path)) % 10**6}")
    short.mkdir(exist_ok=True)
    yield short / "control.sock"
    for p in short.iterdir():
        p.unlink()
    short.rmdir()


async def test_request_reply_roundtrip(sock_path: Path) -> None:
    server = ControlServer(sock_path, echo_handler)
    await server.start()
    try:
        assert await request(sock_path, {"command": "ping"}) == {"ok": True, "pong": True}
        reply = await request(sock_path, {"command": "echo", "args": {"n": [1, 2]}})
        assert reply == {"ok": True, "args": {"n": [1, 2]}}
    finally:
        await server.close()
    assert not sock_path.exists()  # noqa: ASYNC240


async def test_socket_mode_is_set(sock_path: Path) -> None:
    server = ControlServer(sock_path, echo_handler, mode=0o600)
    await server.start()
    try:
        st = sock_path.stat()  # noqa: ASYNC240
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
    finally:
        await server.close()


async def test_refused_and_failing_commands_become_control_errors(sock_path: Path) -> None:
    server = ControlServer(sock_path, echo_handler)
    await server.start()
    try:
        with pytest.raises(ControlError, match="unknown command 'nope'"):
            await request(sock_path, {"command": "nope"})
        with pytest.raises(ControlError, match="internal error in 'boom': kaput"):
            await request(sock_path, {"command": "boom"})
        # The server survives both.
        assert (await request(sock_path, {"command": "ping"}))["pong"] is True
    finally:
        await server.close()


async def test_several_requests_on_one_connection_and_bad_lines(sock_path: Path) -> None:
    server = ControlServer(sock_path, echo_handler)
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock_path))
        writer.write(b'{"command": "ping"}\nnot json\n[1]\n{"command": "echo", "args": 3}\n')
        await writer.drain()
        replies = [json.loads(await reader.readline()) for _ in range(4)]
        writer.close()
        await writer.wait_closed()
    finally:
        await server.close()
    assert replies[0] == {"ok": True, "pong": True}
    assert replies[1]["ok"] is False and "not valid JSON" in replies[1]["error"]
    assert replies[2]["ok"] is False and '"command"' in replies[2]["error"]
    assert replies[3] == {"ok": True, "args": 3}


async def test_no_daemon_gives_a_clear_message(sock_path: Path) -> None:
    with pytest.raises(ControlError, match=r"daemon not running\? no socket at .*control.sock"):
        await request(sock_path, {"command": "status"})


async def test_stale_socket_file_is_replaced(sock_path: Path) -> None:
    # A socket file left behind by a daemon that died: bound, then closed.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()
    assert sock_path.exists()  # noqa: ASYNC240
    with pytest.raises(ControlError, match="nothing is listening"):
        await request(sock_path, {"command": "ping"})
    server = ControlServer(sock_path, echo_handler)
    await server.start()
    try:
        assert (await request(sock_path, {"command": "ping"}))["pong"] is True
    finally:
        await server.close()


async def test_live_socket_is_not_stolen(sock_path: Path) -> None:
    first = ControlServer(sock_path, echo_handler)
    await first.start()
    try:
        with pytest.raises(ControlError, match="already listening"):
            await ControlServer(sock_path, echo_handler).start()
        assert (await request(sock_path, {"command": "ping"}))["pong"] is True
    finally:
        await first.close()


async def test_regular_file_is_not_replaced(sock_path: Path) -> None:
    sock_path.write_text("important")  # noqa: ASYNC240
    with pytest.raises(ControlError, match="not a socket"):
        await ControlServer(sock_path, echo_handler).start()
    assert sock_path.read_text() == "important"  # noqa: ASYNC240


async def test_request_times_out(sock_path: Path) -> None:
    async def slow(body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    server = ControlServer(sock_path, slow)
    await server.start()
    try:
        with pytest.raises(ControlError, match="no reply from the daemon"):
            await request(sock_path, {"command": "status"}, timeout=0.2)
    finally:
        await server.close()


def test_format_status_renders_summary_and_device_table() -> None:
    status = {
        "gateway": "gw-7",
        "state": "running",
        "version": "0.1.0",
        "uptime": 3723,
        "licence": {"used": 3, "capacity": 5, "unlicensed": 1},
        "tier": {"name": "limited", "interval": 60},
        "uplink": {"connected": True, "broker": "mqtt.example:8883", "published": 10, "acked": 9},
        "outbox": {"depth": 12, "bytes": 2048, "dropped": 0},
        "devices": [
            {
                "id": "meter-1",
                "driver": "modbus",
                "connection": "lan",
                "state": "online",
                "last_sample": 0.4,
            },
            {
                "id": "heat-12",
                "driver": "mbus",
                "connection": "bus0",
                "state": "offline",
                "last_sample": None,
                "error": "no answer",
            },
        ],
    }
    text = format_status(status)
    lines = text.splitlines()
    assert lines[0] == "gateway gw-7  state running  version 0.1.0  up 1h02m"
    assert "licence  3/5 devices, 1 unlicensed" in lines
    assert "tier     limited, one record per 1m00s" in lines
    assert "uplink   connected to mqtt.example:8883, 10 published, 9 acked" in lines
    assert "outbox   12 records, 2.0 KiB, 0 dropped" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("DEVICE"))
    assert lines[header].split() == [
        "DEVICE",
        "DRIVER",
        "CONNECTION",
        "STATE",
        "LAST",
        "SAMPLE",
        "ERROR",
    ]
    assert lines[header + 1].split() == ["meter-1", "modbus", "lan", "online", "0.4s", "ago", "-"]
    assert lines[header + 2].split() == ["heat-12", "mbus", "bus0", "offline", "-", "no", "answer"]
    # Columns line up: every device id starts where the header starts, states align.
    col = lines[header].index("STATE")
    assert lines[header + 1][col:].startswith("online")
    assert lines[header + 2][col:].startswith("offline")


def test_format_status_tolerates_missing_sections() -> None:
    assert format_status({}) == "gateway -  state -\n"
    text = format_status({"gateway": "g", "state": "starting", "devices": []})
    assert text.endswith("no devices configured\n")
    assert "uplink   disconnected" in format_status({"uplink": {"connected": False}})
