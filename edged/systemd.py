"""sd_notify and the systemd watchdog, without libsystemd.

The notification protocol is one datagram of newline-separated ``KEY=VALUE``
assignments sent to the unix socket named by ``$NOTIFY_SOCKET`` (a leading
``@`` means the Linux abstract namespace). Outside systemd there is no socket
and every call is a no-op, so the daemon runs the same in a terminal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends state notifications to the service manager."""

    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
    ) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._sock: socket.socket | None = None
        self._failing = False
        if self._address is None and address:
            log.warning("unsupported notify socket address=%s notifications disabled", address)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Build a notifier from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("NOTIFY_SOCKET") or None,
            _positive_int(env.get("WATCHDOG_USEC")),
            _positive_int(env.get("WATCHDOG_PID")),
        )

    @property
    def enabled(self) -> bool:
        """True when notifications go somewhere."""
        return self._address is not None

    def notify(self, *states: str) -> None:
        """Send ``KEY=VALUE`` states in one datagram; a reload also gets ``MONOTONIC_USEC``."""
        if self._address is None or not states:
            return
        lines = list(states)
        # Type=notify-reload (systemd >= 253) ignores RELOADING=1 without the
        # monotonic timestamp; older managers ignore the extra key.
        if "RELOADING=1" in lines and not any(s.startswith("MONOTONIC_USEC=") for s in lines):
            lines.append(f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        payload = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # A datagram to a unix socket never waits for the network; non-blocking
                # only guards against a full receive queue stalling the event loop.
                self._sock.setblocking(False)
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            # Once per episode: a stalled manager would otherwise get a line per ping.
            if not self._failing:
                log.warning("sd_notify failed states=%s error=%s", ",".join(states), exc)
            self._failing = True
        else:
            if self._failing:
                log.info("sd_notify works again")
            self._failing = False

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None if not asked."""
        if self._address is None or self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2_000_000

    def close(self) -> None:
        """Release the sending socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Watchdog:
    """Pings ``WATCHDOG=1`` while the event loop turns and the pipeline reports healthy."""

    def __init__(self, notifier: Notifier, healthy: Callable[[], bool]) -> None:
        self._notifier = notifier
        self._healthy = healthy

    async def run(self) -> None:
        """Ping every interval until cancelled; returns at once when no watchdog is configured.

        The ping is sent from a coroutine on the event loop itself, never from a
        thread: a loop blocked by a stuck call sends nothing and systemd restarts us.
        """
        interval = self._notifier.watchdog_interval()
        if interval is None:
            return
        log.info("watchdog enabled interval=%.3fs", interval)
        unhealthy = False
        while True:
            if self._healthy():
                if unhealthy:
                    log.info("watchdog pings resumed")
                    unhealthy = False
                self._notifier.notify("WATCHDOG=1")
            elif not unhealthy:
                log.error("pipeline unhealthy, withholding watchdog pings")
                unhealthy = True
            await asyncio.sleep(interval)


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def _positive_int(value: str | None) -> int | None:
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number > 0 else None
