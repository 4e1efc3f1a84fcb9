"""The control socket over a real unix stream socket, and the status table."""

from __future__ import annotations

import asyncio
import json
import os
import re
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
    if body["command"] == "reload":
        return {"ok": False}  # refused without a reason, like a failed reload
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
        with pytest.raises(ControlError, match=r"refused 'reload'; see its log"):
            await request(sock_path, {"command": "reload"})
        # The server survives all of them.
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
    # The shape the supervisor's status command returns.
    status = {
        "gateway": "gw-7",
        "licence": {"used": 3, "total": 5},
        "tier": {"name": "limited", "interval": 60, "limited_by": ["heat-12"]},
        "uplink": {"connected": True, "published": 10, "acked": 9, "reconnects": 2,
                   "last_error": None},
        "outbox": {"depth": 12, "bytes": 2048, "dropped": 0, "oldest_age": 75.0,
                   "disk_error": None},
        "devices": [
            {"id": "meter-1", "driver": "modbus", "connection": "lan", "state": "online",
             "cloud_licence": "professional", "interval": 60, "last_sample_age": 0.4,
             "last_error": None},
            {"id": "heat-12", "driver": "mbus", "connection": "bus0", "state": "offline",
             "cloud_licence": "limited", "interval": 900, "last_sample_age": None,
             "last_error": "no answer"},
        ],
    }  # fmt: skip
    lines = format_status(status).splitlines()
    assert lines[:5] == [
        "gateway gw-7",
        "licence  3/5 devices",
        "tier     limited, one record per 1m00s (limited by heat-12)",
        "uplink   connected, 10 published, 9 acked, 2 reconnects",
        "outbox   12 records, 2.0 KiB, 0 dropped, oldest 1m15s",
    ]
    header = lines.index(next(line for line in lines if line.startswith("DEVICE")))
    assert re.split(r"\s{2,}", lines[header]) == [
        "DEVICE", "DRIVER", "CONNECTION", "STATE", "LICENCE", "INTERVAL", "LAST SAMPLE", "ERROR",
    ]  # fmt: skip
    assert lines[header + 1].split() == [
        "meter-1", "modbus", "lan", "online", "professional", "1m00s", "0.4s", "ago", "-",
    ]  # fmt: skip
    assert lines[header + 2].split() == [
        "heat-12", "mbus", "bus0", "offline", "limited", "15m00s", "-", "no", "answer",
    ]  # fmt: skip
    # Columns line up.
    col = lines[header].index("STATE")
    assert lines[header + 1][col:].startswith("online")
    assert lines[header + 2][col:].startswith("offline")


def test_format_status_alternative_keys_and_problems() -> None:
    text = format_status(
        {
            "gateway": "gw-1",
            "state": "running",
            "version": "0.1.0",
            "uptime": 3723,
            "licence": {"used": 6, "capacity": 5, "unlicensed": 1},
            "uplink": {"connected": False, "broker": "mqtt.example:8883", "error": "refused"},
            "outbox": {"depth": 0, "dropped": 4, "disk_error": "disk full"},
            "devices": [{"id": "m", "state": "stale", "last_sample": 7200}],
        }
    )
    lines = text.splitlines()
    assert lines[0] == "gateway gw-1  state running  version 0.1.0  up 1h02m"
    assert "licence  6/5 devices, 1 unlicensed" in lines
    assert (
        "uplink   disconnected to mqtt.example:8883, 0 published, 0 acked (last error: refused)"
        in lines
    )
    assert "outbox   0 records, 4 dropped (disk error: disk full)" in lines
    # Optional columns appear only when some device has them.
    assert "LICENCE" not in text and "INTERVAL" not in text
    assert lines[-1].split() == ["m", "-", "-", "stale", "2h00m", "ago", "-"]


def test_format_status_tolerates_missing_sections() -> None:
    assert format_status({}) == "gateway -\n"
    text = format_status({"gateway": "g", "devices": []})
    assert text.endswith("no devices configured\n")
