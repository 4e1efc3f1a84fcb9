"""The local control socket: one JSON object per line in each direction.

The daemon listens on a unix stream socket (``/run/edged/control.sock`` under
systemd) that only the service user and its group can open. A request is
``{"command": "...", ...}``; the reply is whatever the handler returns, or
``{"ok": false, "error": "..."}`` when the request could not be served. A
connection may carry several requests in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edged.actions.text import format_lines as format_actions
from edged.errors import ControlError
from edged.loadmgmt.view import format_circuits

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

# One request or reply line; large enough for the status of thousands of devices.
MAX_LINE = 16 * 1024 * 1024


class ControlServer:
    """Serves control requests on a unix socket."""

    def __init__(self, path: Path, handler: Handler, mode: int = 0o660) -> None:
        self.path = path
        self._handler = handler
        self._mode = mode
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind the socket (replacing a stale one) and start accepting requests."""
        await asyncio.to_thread(_clear_stale_socket, self.path)
        self._server = await asyncio.start_unix_server(
            self._serve_client, path=str(self.path), limit=MAX_LINE
        )
        os.chmod(self.path, self._mode)
        log.info("control socket listening path=%s mode=%o", self.path, self._mode)

    async def close(self) -> None:
        """Stop accepting, end open connections and remove the socket file."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:
                    await _send(writer, _error(f"request longer than {MAX_LINE} bytes"))
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                await _send(writer, await self._dispatch(line))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            body = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(f"request is not valid JSON: {exc}")
        if not isinstance(body, dict) or not isinstance(body.get("command"), str):
            return _error('request must be a JSON object with a string "command"')
        command = body["command"]
        started = time.monotonic()
        try:
            reply = await self._handler(body)
        except ControlError as exc:
            log.info("control command refused command=%s error=%s", command, exc)
            return _error(str(exc))
        except Exception as exc:
            log.exception("control command failed command=%s", command)
            return _error(f"internal error in {command!r}: {exc}")
        log.debug("control command command=%s took=%.3fs", command, time.monotonic() - started)
        return reply


# The timeout parameter is part of the public API the CLI calls; it wraps asyncio.timeout.
async def request(
    path: Path,
    body: dict[str, Any],
    timeout: float = 10.0,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Send one request to the daemon and return its reply; raise ControlError on failure.

    A reply of the form ``{"ok": false, "error": ...}`` raises ControlError with that message.
    """
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
            except FileNotFoundError:
                raise ControlError(
                    f"daemon not running? no socket at {path} (start it with "
                    "'systemctl start edged' or pass the right --config)"
                ) from None
            except ConnectionRefusedError:
                raise ControlError(
                    f"daemon not running? {path} exists but nothing is listening"
                ) from None
            except PermissionError:
                raise ControlError(
                    f"permission denied on {path}: run as root or as a member of the "
                    "service's group (edged)"
                ) from None
            try:
                writer.write(json.dumps(body).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    except TimeoutError:
        raise ControlError(f"no reply from the daemon at {path} within {timeout:g} s") from None
    except (ConnectionError, ValueError) as exc:
        raise ControlError(f"control connection to {path} failed: {exc}") from None
    if not line:
        raise ControlError(f"the daemon at {path} closed the connection without a reply")
    try:
        reply = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ControlError(f"unreadable reply from the daemon at {path}: {exc}") from None
    if not isinstance(reply, dict):
        raise ControlError(f"unexpected reply from the daemon at {path}: {reply!r}")
    if reply.get("ok") is False:
        command = body.get("command", "the command")
        raise ControlError(
            str(
                reply.get("error")
                or f"the daemon refused {command!r}; see its log (journalctl -u edged)"
            )
        )
    return reply


def format_status(status: Mapping[str, Any]) -> str:
    """Render a status reply as the human-readable text of ``edged status``."""
    out = [_headline(status)]
    licence = status.get("licence")
    if isinstance(licence, Mapping):
        total = _first(licence, "capacity", "total")
        line = f"licence  {licence.get('used', '-')}/{'-' if total is None else total} devices"
        if licence.get("unlicensed"):
            line += f", {licence['unlicensed']} unlicensed"
        if licence.get("maintenance_until"):
            line += f", maintenance until {licence['maintenance_until']}"
        out.append(line)
    tier = status.get("tier")
    if isinstance(tier, Mapping):
        line = f"tier     {_first(tier, 'name', 'account_tier') or '-'}"
        if isinstance(tier.get("interval"), int | float):
            line += f", one record per {_duration(float(tier['interval']))}"
        limited_by = tier.get("limited_by")
        if isinstance(limited_by, list) and limited_by:
            shown = ", ".join(str(x) for x in limited_by[:5])
            more = f" and {len(limited_by) - 5} more" if len(limited_by) > 5 else ""
            line += f" (limited by {shown}{more})"
        out.append(line)
    uplink = status.get("uplink")
    if isinstance(uplink, Mapping):
        line = "uplink   " + ("connected" if uplink.get("connected") else "disconnected")
        if uplink.get("broker"):
            line += f" to {uplink['broker']}"
        line += f", {uplink.get('published', 0)} published, {uplink.get('acked', 0)} acked"
        if uplink.get("reconnects"):
            line += f", {uplink['reconnects']} reconnects"
        error = _first(uplink, "last_error", "error")
        if error:
            line += f" (last error: {error})"
        out.append(line)
    outbox = status.get("outbox")
    if isinstance(outbox, Mapping):
        line = f"outbox   {outbox.get('depth', 0)} records"
        if isinstance(outbox.get("bytes"), int):
            line += f", {_size(outbox['bytes'])}"
        line += f", {outbox.get('dropped', 0)} dropped"
        if isinstance(outbox.get("oldest_age"), int | float):
            line += f", oldest {_duration(float(outbox['oldest_age']))}"
        if outbox.get("disk_error"):
            line += f" (disk error: {outbox['disk_error']})"
        out.append(line)

    modbus = status.get("modbus_server")
    if isinstance(modbus, Mapping) and modbus.get("line"):
        out.append(f"modbus   {modbus['line']}")

    devices = status.get("devices")
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        rows = [d for d in devices if isinstance(d, Mapping)]
        out.append("")
        out.extend(_device_table(rows))
        for dev in rows:
            if isinstance(dev.get("values"), Mapping):
                out.append("")
                out.extend(_value_lines(dev))
    rules = status.get("actions")
    if isinstance(rules, list) and rules:
        out.append("")
        out.extend(format_actions([r for r in rules if isinstance(r, Mapping)]))
    out.extend(format_circuits(status.get("circuits")))
    return "\n".join(out) + "\n"


def _value_lines(dev: Mapping[str, Any]) -> list[str]:
    """A device's last values: quantity, value with unit, and how old it is."""
    values = dev["values"]
    if not values:
        return [f"{dev.get('id')}: no values yet"]
    lines = [f"{dev.get('id')}:"]
    width = max(len(str(name)) for name in values)
    for name, v in values.items():
        if not isinstance(v, Mapping):
            continue
        unit = f" {v['unit']}" if v.get("unit") else ""
        age = v.get("age")
        when = f"  ({_duration(float(age))} ago)" if isinstance(age, int | float) else ""
        lines.append(f"  {str(name).ljust(width)}  {v.get('value')}{unit}{when}")
    return lines


def _headline(status: Mapping[str, Any]) -> str:
    head = f"gateway {status.get('gateway') or '-'}"
    if status.get("state"):
        head += f"  state {status['state']}"
    if status.get("version"):
        head += f"  version {status['version']}"
    if isinstance(status.get("uptime"), int | float):
        head += f"  up {_duration(float(status['uptime']))}"
    return head


# Title, keys accepted for it (first present wins), and whether the column is shown
# even when no device has a value for it.
_DEVICE_COLUMNS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("DEVICE", ("id",), True),
    ("DRIVER", ("driver",), True),
    ("CONNECTION", ("connection",), True),
    ("STATE", ("state",), True),
    ("LICENCE", ("cloud_licence",), False),
    ("INTERVAL", ("interval", "publish_interval"), False),
    ("LAST SAMPLE", ("last_sample_age", "last_sample"), True),
    ("ERROR", ("last_error", "error"), True),
    ("LABELS", ("labels",), False),
)


def _device_table(devices: Sequence[Mapping[str, Any]]) -> list[str]:
    if not devices:
        return ["no devices configured"]
    columns = [
        (title, keys)
        for title, keys, always in _DEVICE_COLUMNS
        if always or any(_first(d, *keys) not in (None, {}) for d in devices)
    ]
    rows = [[title for title, _ in columns]]
    for dev in devices:
        rows.append([_cell(title, _first(dev, *keys)) for title, keys in columns])
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if mapping.get(key) is not None:
            return mapping[key]
    return None


def _cell(title: str, value: Any) -> str:
    if value is None or value == "" or value == {}:
        return "-"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if title == "LAST SAMPLE":
            return f"{_duration(float(value))} ago"
        if title == "INTERVAL":
            return _duration(float(value))
    return str(value)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 or seconds == int(seconds) else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


async def _send(writer: asyncio.StreamWriter, reply: Mapping[str, Any]) -> None:
    writer.write(json.dumps(reply, default=str).encode() + b"\n")
    await writer.drain()


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file left by a crashed daemon; refuse if a live daemon owns it."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} exists and is not a socket; refusing to replace it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)
            log.info("removed stale control socket path=%s", path)
            return
    raise ControlError(f"another edged is already listening on {path}")
