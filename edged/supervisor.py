"""The connection supervisor: one task per connection, device states, restarts.

Each configured connection with admitted devices runs as one task: the driver polls
or serves the devices behind it. A task that fails is restarted under the shared
reconnect policy; a reload keeps a task whose connection and devices are unchanged,
hands a changed device list to a driver that can take it live (``api.LiveUpdate``),
and restarts the rest. Device states (provisioned, online, offline, stale,
unlicensed) live here; samples go on to the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edged import api
from edged.errors import EdgedError
from edged.metrics import Metrics
from edged.model import ConnectionSpec, DeviceSpec, DeviceState, Sample, Source, Tier
from edged.provisioning import Provisioning
from edged.reconnect import Reconnect

log = logging.getLogger("edged.app")

# Slack on top of the poll interval before a silent polled device is reported stale (s).
STALE_GRACE = 2.0
# A connection that ran this long before it failed starts its backoff afresh.
LONG_RUN = 60.0
_NO_SOURCE = Source(None, "")


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What a connection task depends on; an equal fingerprint means no restart on reload."""

    connection: ConnectionSpec
    devices: tuple[DeviceSpec, ...]


def fingerprint(conn: ConnectionSpec, devices: Sequence[DeviceSpec]) -> Fingerprint:
    """The connection spec and the driver's view of its devices, without source locations."""
    # Tier, publish interval, labels and licence group matter to the pipeline, not to the
    # driver: changing them must not drop a bus or disconnect chargers.
    return Fingerprint(
        dataclasses.replace(conn, source=_NO_SOURCE),
        tuple(
            dataclasses.replace(
                d,
                source=_NO_SOURCE,
                cloud_licence=Tier.BASIC,
                publish_interval=None,
                labels={},
                licence_group=None,
            )
            for d in devices
        ),
    )


async def cancel_and_wait(tasks: Sequence[asyncio.Task[None]], patience: float = 3.0) -> None:
    """Cancel tasks and wait until they have ended.

    Cancels again while waiting: on Python 3.11 ``asyncio.wait_for`` can swallow a
    cancellation that races with the completion of what it waits for (pymodbus nests
    it in connect), and a task that survived its cancel would go on polling the bus.
    """
    pending = {t for t in tasks if not t.done()}
    deadline = time.monotonic() + patience
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.2)
        if pending and time.monotonic() > deadline:
            log.error("tasks did not stop tasks=%s", ",".join(t.get_name() for t in pending))
            return


def _tasks(runs: Iterable[Running]) -> list[asyncio.Task[None]]:
    return [r.task for r in runs if r.task is not None]


@dataclass(slots=True)
class DeviceStatus:
    """Live state of one device, for status and metrics."""

    spec: DeviceSpec
    state: DeviceState = DeviceState.PROVISIONED
    last_sample: float | None = None
    last_error: str | None = None


@dataclass(slots=True)
class Running:
    """One connection task and what it was started with."""

    fingerprint: Fingerprint
    task: asyncio.Task[None] | None
    driver: api.AnyDriver
    devices: tuple[str, ...] = field(default_factory=tuple)
    context: ConnectionContext | None = None
    settings: Any = None
    """What the driver runs with (replaced when it takes a device list live)."""


class ConnectionContext:
    """The ``api.DriverContext`` handed to one connection."""

    __slots__ = ("_devices", "_driver", "_metrics", "_supervisor")

    def __init__(self, supervisor: Supervisor, driver: str, devices: Sequence[DeviceSpec]):
        self._supervisor = supervisor
        self._metrics = supervisor.metrics
        self._driver = driver
        self.replace(devices)

    def replace(self, devices: Sequence[DeviceSpec]) -> None:
        """Serve a new device list: samples of devices no longer on it are rejected."""
        self._devices = frozenset(d.id for d in devices)

    def sample(self, sample: Sample) -> None:
        """A driver produced a sample."""
        if sample.device_id not in self._devices:
            self._metrics.count("samples_rejected", self._driver, sample.device_id)
            return
        self._supervisor.on_sample(self._driver, sample)

    def state(self, device_id: str, state: DeviceState, error: str | None = None) -> None:
        """A driver reported a device state."""
        if device_id in self._devices:
            self._supervisor.on_state(device_id, state, error)

    def count(self, event: str, device_id: str | None = None, n: int = 1) -> None:
        """Count a driver event."""
        self._metrics.count(event, self._driver, device_id, n)

    def observe(self, event: str, seconds: float, device_id: str | None = None) -> None:
        """Record a driver latency."""
        self._metrics.observe(event, self._driver, seconds)


class Supervisor:
    """Connection tasks and device states."""

    def __init__(self, metrics: Metrics, on_sample: Callable[[Sample], None]) -> None:
        self.metrics = metrics
        self._sink = on_sample
        self.devices: dict[str, DeviceStatus] = {}
        self.connections: dict[str, Running] = {}
        # Reloads, licence changes and reconnects change the same tasks: one at a time.
        self._lock = asyncio.Lock()
        self._closing = False
        # Connections whose bus something else uses for a while (a scan): no task runs.
        self._paused: set[str] = set()

    # -- what drivers report ------------------------------------------------------------

    def on_sample(self, driver: str, sample: Sample) -> None:
        """Account for a sample and hand it to the pipeline."""
        st = self.devices.get(sample.device_id)
        if st is not None:
            st.last_sample = sample.timestamp
            if st.state is not DeviceState.ONLINE:
                st.state = DeviceState.ONLINE
                st.last_error = None
        self.metrics.count("samples", driver, sample.device_id)
        self._sink(sample)

    def on_state(self, device_id: str, state: DeviceState, error: str | None) -> None:
        """A driver reported a device state change."""
        st = self.devices.get(device_id)
        if st is None:
            return
        if state is not st.state:
            log.info(
                "device state device=%s state=%s%s",
                device_id,
                state.value,
                f" error={error}" if error else "",
            )
        st.state = state
        if error:
            st.last_error = error
        elif state is DeviceState.ONLINE:
            st.last_error = None

    def mark_stale(self, device_ids: Sequence[str], now: float) -> None:
        """Online devices among these that missed a poll they should have answered go stale."""
        for dev_id in device_ids:
            st = self.devices.get(dev_id)
            if st is not None and st.state is DeviceState.ONLINE and self.overdue(st, now):
                log.info("device state device=%s state=stale", dev_id)
                st.state = DeviceState.STALE

    def overdue(self, st: DeviceStatus, now: float) -> bool:
        """True when a polled device has missed a poll it should have answered.

        A window without a sample is not enough: a meter polled every minute on a
        per-second tier has empty windows by design. Served devices (chargers) send
        when they have something to say, so silence there is not staleness.
        """
        run = self.connections.get(st.spec.connection)
        if run is None or not run.driver.polled:
            return False
        if st.last_sample is None:
            return True
        return now - st.last_sample > 1.5 * st.spec.poll_interval + STALE_GRACE

    # -- commands -----------------------------------------------------------------------

    async def command(self, command: api.Command) -> Any:
        """Hand a command to the driver of the device's connection."""
        st = self.devices.get(command.device_id)
        if st is None:
            raise EdgedError(f"no device {command.device_id!r}")
        run = self.connections.get(st.spec.connection)
        if run is None or not isinstance(run.driver, api.Commandable):
            raise EdgedError(
                f"device {command.device_id!r} takes no commands (state {st.state.value})"
            )
        return await run.driver.command(command)

    async def reconnect(self, device_id: str) -> str:
        """Retry the connection of a device now: restart its task; return the connection's name.

        The restarted task opens its bus or endpoint at once, with its backoffs (the link's
        and every device's) fresh, instead of waiting out a backoff grown while the device
        was away. The other devices on the same connection are polled again right after.
        """
        st = self.devices.get(device_id)
        if st is None:
            raise EdgedError(f"no device {device_id!r}")
        name = st.spec.connection
        run = self.connections.get(name)
        if run is None or run.context is None or device_id not in run.devices:
            raise EdgedError(
                f"device {device_id!r} is not served by a running connection "
                f"(state {st.state.value})"
            )
        if name in self._paused:
            raise EdgedError(f"connection {name!r} is being scanned; it resumes after the scan")
        if not run.driver.polled:
            raise EdgedError(
                f"device {device_id!r} connects to edged itself (connection {name!r}); "
                "there is nothing to retry from this side"
            )
        log.info("reconnecting connection=%s device=%s (requested)", name, device_id)
        async with self._lock:
            await cancel_and_wait(_tasks([run]))
            if self.connections.get(name) is run and not self._closing:
                run.task = asyncio.create_task(
                    self._supervise(name, run), name=f"connection:{name}"
                )
        return name

    @contextlib.asynccontextmanager
    async def paused(self, name: str) -> AsyncIterator[None]:
        """Stop a connection's task for the time of the block (a bus scan), then restart it.

        One bus carries one exchange at a time: the scan must not talk across the polls. A
        reload meanwhile may replace the connection; the replacement starts after the block.
        """
        async with self._lock:
            if name in self._paused:
                raise EdgedError(f"connection {name!r} is already being scanned")
            self._paused.add(name)
            run = self.connections.get(name)
            if run is not None:
                log.info("pausing connection connection=%s (scan)", name)
                await cancel_and_wait(_tasks([run]))
                run.task = None
        try:
            yield
        finally:
            async with self._lock:
                self._paused.discard(name)
                run = self.connections.get(name)
                if run is not None and run.task is None and not self._closing:
                    log.info("resuming connection connection=%s", name)
                    run.task = asyncio.create_task(
                        self._supervise(name, run), name=f"connection:{name}"
                    )

    # -- connections --------------------------------------------------------------------

    async def _supervise(self, name: str, run: Running) -> None:
        """Run one connection; restart it with capped, jittered backoff if it fails."""
        # A connection that ran for a while before it failed starts its backoff afresh.
        policy = Reconnect(initial=1.0, maximum=60.0, long_run=LONG_RUN)
        while True:
            policy.connected()  # the task runs; the driver reconnects its own bus inside
            try:
                # The settings in force now: a driver may have taken a new device list live.
                assert run.context is not None
                await run.driver.run(run.settings, run.context)
                log.warning("connection ended connection=%s; restarting", name)
                error = "connection ended"
            except asyncio.CancelledError:
                policy.stopped()
                raise
            except Exception as exc:  # a driver bug must not take the daemon down
                log.error(
                    "connection failed connection=%s error=%s",
                    name,
                    exc,
                    exc_info=not isinstance(exc, EdgedError),
                )
                for dev_id in run.devices:
                    self.on_state(dev_id, DeviceState.OFFLINE, str(exc))
                error = str(exc)
            await policy.wait(error)

    async def apply(self, prov: Provisioning) -> None:
        """Start, keep or restart connection tasks so they match the provisioning."""
        async with self._lock:
            if not self._closing:
                await self._apply(prov)

    async def _apply(self, prov: Provisioning) -> None:
        by_conn: dict[str, list[DeviceSpec]] = {n: [] for n in prov.config.connections}
        for dev in prov.admitted:
            by_conn[dev.connection].append(dev)
        wanted = {
            name: fingerprint(conn, by_conn[name])
            for name, conn in prov.config.connections.items()
            if by_conn[name]
        }
        served = {dev_id for run in self.connections.values() for dev_id in run.devices}
        stopping = []
        for name in list(self.connections):
            run = self.connections[name]
            fp = wanted.get(name)
            if fp == run.fingerprint:
                continue
            if fp is not None and self._update_live(prov, name, by_conn[name], run, fp):
                continue
            log.info("stopping connection connection=%s", name)
            stopping.append(run)
            del self.connections[name]
        # The old task must be gone before a new one opens the same bus.
        await cancel_and_wait(_tasks(stopping))
        old = self.devices
        self.devices = {}
        for dev in prov.config.devices:
            prev = old.get(dev.id)
            st = DeviceStatus(dev)
            # Only a device its still running connection served before keeps its state; one
            # that joined a running connection live starts as provisioned like any new one.
            if (
                prev is not None
                and dev.id in served
                and dev.connection in self.connections
                and prev.spec.connection == dev.connection
            ):
                st.state, st.last_sample, st.last_error = (
                    prev.state,
                    prev.last_sample,
                    prev.last_error,
                )
            self.devices[dev.id] = st
        for dev in prov.unlicensed:
            self.devices[dev.id].state = DeviceState.UNLICENSED
        for name in wanted:
            if name in self.connections:
                continue
            devs = tuple(by_conn[name])
            drv = prov.connections[name].driver
            kind = prov.config.connections[name].driver
            log.info(
                "starting connection connection=%s driver=%s devices=%d", name, kind, len(devs)
            )
            self._zero_series(kind, drv, devs)
            run = Running(
                wanted[name],
                None,
                drv,
                tuple(d.id for d in devs),
                ConnectionContext(self, kind, devs),
                prov.connections[name].settings,
            )
            if name not in self._paused:
                run.task = asyncio.create_task(
                    self._supervise(name, run), name=f"connection:{name}"
                )
            self.connections[name] = run
        if prov.unlicensed:
            log.warning(
                "devices not licensed (never polled) used=%d capacity=%d devices=%s",
                prov.licence_used,
                prov.licence_total,
                ",".join(d.id for d in prov.unlicensed),
            )

    async def stop(self) -> None:
        """Stop every connection task; later applies and reconnects do nothing."""
        async with self._lock:
            self._closing = True
            await cancel_and_wait(_tasks(self.connections.values()))
            self.connections.clear()

    def _zero_series(self, kind: str, drv: api.AnyDriver, devices: Sequence[DeviceSpec]) -> None:
        """Create the device's series at 0, so rate() alerts see 0 rather than nothing."""
        for dev in devices:
            events: tuple[str, ...] = ("samples", "records")
            if drv.polled:
                events += ("poll", "poll_error")
            for event in events:
                self.metrics.count(event, kind, dev.id, 0)

    def _update_live(
        self,
        prov: Provisioning,
        name: str,
        devices: Sequence[DeviceSpec],
        run: Running,
        fp: Fingerprint,
    ) -> bool:
        """Hand a changed device list to a running connection whose own spec is unchanged.

        True when the driver took it and the task keeps running; False means restart.
        """
        if (
            run.context is None
            or not isinstance(run.driver, api.LiveUpdate)
            or fp.connection != run.fingerprint.connection
        ):
            return False
        settings = prov.connections[name].settings
        try:
            applied = bool(run.driver.update(settings))
        except Exception as exc:  # a driver bug costs a restart, not the reload
            log.error("live update failed connection=%s error=%s", name, exc, exc_info=True)
            return False
        if not applied:
            return False
        self._zero_series(
            prov.config.connections[name].driver,
            run.driver,
            [d for d in devices if d.id not in run.devices],
        )
        run.context.replace(devices)
        run.settings = settings
        run.fingerprint = fp
        run.devices = tuple(d.id for d in devices)
        log.info("updated connection connection=%s devices=%d", name, len(devices))
        return True
