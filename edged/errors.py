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

    tomllib keeps no positions, so this scans the text: it looks for the table headers of
    each prefix of the path (``[a.b]``, or the n-th ``[[a]]``) and then for the first
    remaining key inside the last table found; failing that it returns the table's line.
    """
    if not file or not key:
        return None
    try:
        lines = Path(file).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    stripped = [ln.split("#", 1)[0].strip() for ln in lines]
    parts = key.split(".")
    table: list[str] = []
    best: int | None = None
    start = 0
    found_depth = 0
    for depth, part in enumerate(parts):
        m = _INDEX.match(part)
        table.append(m.group("name") if m else part)
        header = ("[[{}]]" if m else "[{}]").format(".".join(table))
        want = int(m.group("idx")) if m else 0
        seen = -1
        for i in range(start, len(lines)):
            if stripped[i] == header:
                seen += 1
                if seen == want:
                    best, start, found_depth = i + 1, i + 1, depth + 1
                    break
    rest = parts[found_depth:]
    if rest and not _INDEX.match(rest[0]):
        pat = re.compile(r"^\s*" + re.escape(rest[0]) + r"\s*=")
        for i in range(start, len(lines)):
            if stripped[i].startswith("["):
                break
            if pat.match(lines[i]):
                return i + 1
    return best
