"""Bus scans started from the console: one background job per scan, its state polled as JSON.

A scan runs the driver's ``Scannable`` capability with the connection's configured
settings while the connection's own polling is paused (one bus, one exchange at a time).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from edged import api
from edged.errors import EdgedError

log = logging.getLogger("edged.web")

KEEP = 20
"""Finished jobs kept for the page to show."""

Targets = Callable[[], Mapping[str, tuple[Any, Any]]]
"""Configured connections by name: (driver, settings), whatever their devices' licences."""
Pause = Callable[[str], AbstractAsyncContextManager[None]]


@dataclass
class ScanJob:
    """One scan: how far it got and what it found."""

    id: str
    connection: str
    first: int
    last: int
    state: str = "running"
    done: int = 0
    total: int = 0
    found: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    started: float = field(default_factory=time.time)
    ended: float | None = None

    def json(self) -> dict[str, Any]:
        """The job as the REST API shows it."""
        return {
            "id": self.id,
            "connection": self.connection,
            "first": self.first,
            "last": self.last,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "found": list(self.found),
            "error": self.error,
            "started": self.started,
            "ended": self.ended,
        }


class ScanJobs:
    """Scans of configured buses, started by the console and run in the background."""

    def __init__(self, targets: Targets, pause: Pause) -> None:
        self._targets = targets
        self._pause = pause
        self._jobs: dict[str, ScanJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._ids = itertools.count(1)

    def scannable(self) -> list[str]:
        """Names of the configured connections whose driver can scan its bus."""
        return sorted(
            name for name, (drv, _) in self._targets().items() if isinstance(drv, api.Scannable)
        )

    def jobs(self) -> list[ScanJob]:
        """Every kept job, newest first."""
        return sorted(self._jobs.values(), key=lambda j: j.started, reverse=True)

    def get(self, job_id: str) -> ScanJob | None:
        """One job by id."""
        return self._jobs.get(job_id)

    def start(self, connection: str, first: int, last: int) -> ScanJob:
        """Start scanning a configured bus; raise EdgedError when it cannot be scanned."""
        target = self._targets().get(connection)
        if target is None or not isinstance(target[0], api.Scannable):
            known = ", ".join(self.scannable()) or "none configured"
            raise EdgedError(f"no bus {connection!r} that can be scanned (known: {known})")
        if any(j.connection == connection and j.state == "running" for j in self._jobs.values()):
            raise EdgedError(f"bus {connection!r} is already being scanned")
        job = ScanJob(f"scan-{next(self._ids)}", connection, first, last)
        job.total = last - first + 1
        self._jobs[job.id] = job
        for old in self.jobs()[KEEP:]:
            if old.state != "running":
                del self._jobs[old.id]
        task = asyncio.create_task(self._run(job, target[0], target[1]), name=job.id)
        self._tasks.add(task)
        self._running[job.id] = task
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._running.pop(job.id, None))
        return job

    async def _run(self, job: ScanJob, driver: api.Scannable[Any], settings: Any) -> None:
        log.info("scan started connection=%s first=%d last=%d", job.connection, job.first, job.last)
        try:
            async with self._pause(job.connection):
                async for event in driver.scan(settings, api.ScanRequest(job.first, job.last)):
                    job.done, job.total = event.done, event.total
                    if event.found is not None:
                        job.found.append({"address": event.found.address, **event.found.details})
                        log.info(
                            "scan found connection=%s address=%s",
                            job.connection,
                            event.found.address,
                        )
            job.state = "done"
        except asyncio.CancelledError:
            job.state, job.error = "stopped", "stopped before the end"
            raise
        except (EdgedError, ValueError, OSError) as exc:
            job.state, job.error = "failed", str(exc)
        except Exception as exc:  # a driver bug ends the scan, not the console
            log.error("scan failed connection=%s error=%s", job.connection, exc, exc_info=True)
            job.state, job.error = "failed", f"internal error: {exc}"
        finally:
            job.ended = time.time()
            log.info(
                "scan ended connection=%s state=%s found=%d",
                job.connection,
                job.state,
                len(job.found),
            )

    async def stop(self, job_id: str) -> ScanJob:
        """Stop a running scan (its bus resumes polling); EdgedError when there is none."""
        job, task = self._jobs.get(job_id), self._running.get(job_id)
        if job is None or task is None:
            raise EdgedError(f"no running scan {job_id!r}")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return job

    async def close(self) -> None:
        """Stop running scans (their connections resume)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
