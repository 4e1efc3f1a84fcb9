"""The one reconnect policy: an explicit state and capped, jittered exponential backoff.

Everything in edged that reconnects uses it: the MQTT uplink, the supervisor restarting a
connection task, the polled-connection runner reopening a bus and retrying an offline
device. The policy says how long to wait; the caller owns the connection itself::

    policy = Reconnect(initial=1.0, maximum=60.0)
    while True:
        policy.connecting()
        try:
            conn = await open_connection()
        except OSError as exc:
            await policy.wait(str(exc))          # 1 s, 2 s, 4 s ... 60 s, each jittered
            continue
        policy.connected()
        policy.reset()                           # or only once the first exchange worked
        ...

The n-th consecutive failure waits ``min(maximum, initial * factor**(n-1))`` less a random
part of up to ``jitter`` of it (default: between half and all of it), so many gateways that
lost the same broker do not all come back in the same instant. With ``long_run`` set, a
connection that was up for at least that long before it failed starts again from
``initial``: it is a new failure, not a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import time
from collections.abc import Callable


class ReconnectState(enum.Enum):
    """Where a reconnecting thing stands (shown by status)."""

    __slots__ = (
        "_clock",
        "_failures",
        "_rand",
        "_retry_at",
        "_since",
        "_state",
        "factor",
        "initial",
        "jitter",
        "last_error",
        "long_run",
        "maximum",
    )

    CONNECTING = "connecting"
    """An attempt is under way."""
    CONNECTED = "connected"
    """Up (for the supervisor: the connection task is running)."""
    WAITING = "waiting"
    """It failed; waiting for the backoff delay before the next attempt."""
    STOPPED = "stopped"
    """Given up on purpose (shutdown); no further attempts."""


class Reconnect:
    """Capped, jittered exponential backoff with an explicit state.

    ``failed()`` (or ``wait()``, which also sleeps) gives the delay before the next
    attempt and grows it; ``reset()`` after a success starts again from ``initial``.
    ``rand`` (uniform in [0, 1)) and ``clock`` (monotonic seconds) are injectable.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        rand: Callable[[], float] = random.random,
        *,
        long_run: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if initial <= 0 or maximum <= 0:
            raise ValueError(f"need initial > 0 and maximum > 0, got {initial} and {maximum}")
        if factor < 1 or not 0 <= jitter <= 1:
            raise ValueError(f"need factor >= 1 and 0 <= jitter <= 1, got {factor}, {jitter}")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self.long_run = long_run
        self._rand = rand
        self._clock = clock
        self._state = ReconnectState.CONNECTING
        self._failures = 0
        self._since = clock()
        self._retry_at: float | None = None
        self.last_error: str | None = None

    # -- what status shows ------------------------------------------------------------------

    @property
    def state(self) -> ReconnectState:
        """The current state."""
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures since the last ``reset()``."""
        return self._failures

    @property
    def since(self) -> float:
        """Clock time at which the current state was entered."""
        return self._since

    @property
    def retry_at(self) -> float | None:
        """Clock time of the next attempt while WAITING, else None."""
        return self._retry_at if self._state is ReconnectState.WAITING else None

    # -- transitions ------------------------------------------------------------------------

    def connecting(self) -> None:
        """An attempt starts."""
        self._enter(ReconnectState.CONNECTING)

    def connected(self) -> None:
        """The attempt worked; the connection (or task) is up from now on.

        This does not reset the backoff: call ``reset()`` once the connection has proven
        itself (at once, or after its first successful exchange), or set ``long_run``.
        """
        self._enter(ReconnectState.CONNECTED)
        self.last_error = None

    def reset(self) -> None:
        """A success: the next failure waits ``initial`` again."""
        self._failures = 0

    def stopped(self) -> None:
        """No further attempts (shutdown)."""
        self._enter(ReconnectState.STOPPED)

    def failed(self, error: str | None = None) -> float:
        """An attempt failed or the connection was lost: the delay before the next attempt.

        Enters WAITING. A connection that was CONNECTED for at least ``long_run`` seconds
        starts again from ``initial``.
        """
        if (
            self.long_run is not None
            and self._state is ReconnectState.CONNECTED
            and self._clock() - self._since >= self.long_run
        ):
            self.reset()
        cap = min(self.maximum, self.initial * self.factor ** min(self._failures, 64))
        delay = cap * (1.0 - self.jitter + self.jitter * self._rand())
        self._failures += 1
        if error is not None:
            self.last_error = error
        self._enter(ReconnectState.WAITING)
        self._retry_at = self._since + delay
        return delay

    async def wait(self, error: str | None = None, *, stop: asyncio.Event | None = None) -> float:
        """``failed(error)``, then sleep that long (or until ``stop`` is set); the delay.

        Returns in CONNECTING, ready for the next attempt, or STOPPED when ``stop`` was set.
        """
        delay = self.failed(error)
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        if stop is not None and stop.is_set():
            self.stopped()
        else:
            self.connecting()
        return delay

    def _enter(self, state: ReconnectState) -> None:
        self._state = state
        self._since = self._clock()

    def __repr__(self) -> str:
        return (
            f"Reconnect(state={self._state.value}, failures={self._failures}, "
            f"initial={self.initial}, maximum={self.maximum})"
        )
