"""Recent events for the console: licence and maintenance changes, actions taken in it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edged.model import iso

KEEP = 200


class EventLog:
    """The last events, newest last (kept in memory only)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self._clock = clock

    def add(self, kind: str, body: dict[str, Any]) -> None:
        """Remember one event."""
        self._events.append({"time": iso(self._clock()), "kind": kind, "details": dict(body)})

    def recent(self) -> list[dict[str, Any]]:
        """The kept events, newest first."""
        return list(reversed(self._events))
