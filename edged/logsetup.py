"""Logging to stderr: journald-friendly under systemd, timestamped elsewhere.

Under systemd, stderr is connected to journald, which stamps every line itself
and reads a ``<N>`` syslog priority prefix, so ``journalctl -p warning`` can
filter. systemd announces that connection in ``JOURNAL_STREAM`` (``dev:inode``
of the stream); it is honoured only when it matches our stderr, because the
variable is inherited by children whose stderr may go elsewhere.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import IO

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# The libraries' loggers: at WARNING unless ``[logging] libraries`` asks for more, so that
# ``level = "debug"`` shows edged's own decisions rather than every frame on the wire.
LIBRARIES = ("pymodbus", "websockets", "aiomqtt", "ocpp", "asyncio", "serial", "aiohttp")


class _NoRepeatMarker(logging.Filter):
    """Drop pymodbus's "Repeating...." lines: they say only that the line before repeats."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Repeating...."


_SYSLOG_PRIORITY = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)


def syslog_priority(levelno: int) -> int:
    """The syslog priority (0-7) that matches a logging level."""
    for threshold, priority in _SYSLOG_PRIORITY:
        if levelno >= threshold:
            return priority
    return 7


class JournalFormatter(logging.Formatter):
    """``<N>logger: message``; every traceback line carries the prefix too."""

    def format(self, record: logging.LogRecord) -> str:
        """Format one record for journald's stream parser."""
        prefix = f"<{syslog_priority(record.levelno)}>"
        text = super().format(record)
        return "\n".join(prefix + line for line in text.split("\n"))


class TimestampFormatter(logging.Formatter):
    """``2026-01-31T12:00:00.123Z WARNING logger: message`` (UTC)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 UTC time with milliseconds."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def journal_attached(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """True when ``JOURNAL_STREAM`` names exactly this stream."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


def _level(name: str) -> int:
    try:
        return LEVELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {name!r}; use one of {', '.join(LEVELS)}") from None


def setup(
    level: str,
    *,
    libraries: str = "warning",
    stream: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Send all logging to stderr, one line per event.

    ``level`` is edged's own (debug, info, warning, error); ``libraries`` that of the protocol
    libraries, which only ``[logging] libraries`` raises to debug.
    """
    levelno = _level(level)
    library_level = _level(libraries)
    out = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    if journal_attached(out, environ):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(TimestampFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    # Replace whatever was installed before (some libraries add root handlers on import).
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levelno)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(library_level)
    handler.addFilter(_NoRepeatMarker())
    logging.captureWarnings(True)
