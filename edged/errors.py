"""The one error hierarchy of edged.

Errors are classified by what the caller should do: a ``ConfigError`` stops
start-up (exit 78), a ``TransientError`` is retried with backoff, a
``PointError`` disables one data point and keeps the device, a ``DecodeError``
rejects one frame and is counted.
"""

from __future__ import annotations

import re
from pathlib import Path


class EdgedError(Exception):
    """Base of every error edged raises on purpose."""


class ConfigError(EdgedError):
    """A configuration problem, located by file, key path and (if known) line."""

    def __init__(self, file: str | Path | None, key: str, message: str, line: int | None = None):
        self.file = str(file) if file is not None else None
        self.key = key
        self.message = message
        self.line = line if line is not None else _find_line(self.file, key)
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        if self.key:
            return f"{where}: {self.key}: {self.message}"
        return f"{where}: {self.message}"


class DriverError(EdgedError):
    """Base of errors raised by protocol drivers."""


class TransientError(DriverError):
    """The device or bus did not answer or the link dropped: retry with backoff."""


class DeviceTimeout(TransientError):
    """No (complete) answer within the deadline."""


class ConnectionLost(TransientError):
    """The connection to the bus or device could not be opened or was closed."""


class PointError(DriverError):
    """The device refused one data point (e.g. illegal address): disable that point."""


class DecodeError(DriverError):
    """A frame or message was malformed and was rejected."""


class LicenceError(EdgedError):
    """A licence file was rejected; the message says why."""


class OutboxError(EdgedError):
    """The durable outbox could not store or read records."""


class UplinkError(EdgedError):
    """The MQTT uplink failed (connect, TLS, publish)."""


class ControlError(EdgedError):
    """The control socket could not be reached or refused a command."""


_INDEX = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<idx>\d+)\]$")


def _find_line(file: str | None, key: str) -> int | None:
    """Best-effort line number of a dotted key path such as ``devices[2].port`` in a TOML file.

    tomllib keeps no positions, so this scans the text: it walks table headers
    (``[a.b]`` and ``[[a]]``, counting array-of-tables occurrences) and returns the
    line of the last path element it can find, or of the enclosing table.
    """
    if not file or not key:
        return None
    try:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    parts = key.split(".")
    table: list[str] = []
    best: int | None = None
    start = 0
    consumed = 0
    for depth in range(len(parts)):
        part = parts[depth]
        m = _INDEX.match(part)
        if m:
            name, idx = m.group("name"), int(m.group("idx"))
            header = "[[" + ".".join([*table, name]) + "]]"
            seen = -1
            for i in range(start, len(lines)):
                if lines[i].strip().split("#", 1)[0].strip() == header:
                    seen += 1
                    if seen == idx:
                        best, start = i + 1, i + 1
                        break
            else:
                return best
            table.append(name)
            consumed = depth + 1
            continue
        header = "[" + ".".join([*table, part]) + "]"
        found = None
        for i in range(start, len(lines)):
            if lines[i].strip().split("#", 1)[0].strip() == header:
                found = i
                break
        if found is not None:
            best, start = found + 1, found + 1
            table.append(part)
            consumed = depth + 1
            continue
        break
    rest = parts[consumed:]
    if rest:
        pat = re.compile(r"^\s*" + re.escape(rest[0]) + r"\s*=")
        for i in range(start, len(lines)):
            s = lines[i].strip()
            if s.startswith("["):
                break
            if pat.match(lines[i]):
                return i + 1
    return best
