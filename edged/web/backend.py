"""What the console reads and asks of the daemon: narrow callables, handed over by the app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edged.live import LiveValues
from edged.web.events import EventLog
from edged.web.history import History
from edged.web.licences import LicenceDesk
from edged.web.scans import ScanJobs


@dataclass(frozen=True)
class Backend:
    """The daemon as the console sees it."""

    status: Callable[..., dict[str, Any]]
    """``StatusService.status(values=…, device=…)``: what ``edged status --json`` prints."""
    live: LiveValues
    reconnect: Callable[[str], Awaitable[str]]
    """``Supervisor.reconnect(device)``: the connection's name, or EdgedError."""
    reload: Callable[[], Awaitable[tuple[bool, list[str]]]]
    licences: LicenceDesk
    scans: ScanJobs
    events: EventLog
    history: History
    circuits: Callable[[], list[dict[str, Any]]] = lambda: []
    """Load management's circuits as in ``edged status --json`` (empty: none configured)."""
