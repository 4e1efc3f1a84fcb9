"""The supervisor: builds the pipeline from config and keeps it running.

One task per connection (a TCP endpoint, a serial port, a listening socket);
the driver polls or serves the devices behind it. Samples go through the
throttle into the durable outbox; the uplink drains the outbox to MQTT. SIGHUP
reloads all-or-nothing; SIGTERM/SIGINT stop polling, flush and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import drivers
from edged import config as configmod
from edged import tiers
from edged.config import Config
from edged.control import ControlServer
from edged.errors import EdgedError
from edged.licensing import enforcement
from edged.metrics import Metrics
from edged.model import ConnectionSpec, DeviceSpec, DeviceState, Record, Sample, Source, Tier
from edged.outbox import Outbox
from edged.systemd import Notifier, Watchdog
from edged.throttle import Throttle
from edged.timing import Backoff
from edged.uplink import Uplink

log = logging.getLogger("edged.app")

Clock = Callable[[], float]
# Slack on top of the poll interval before a silent polled device is reported stale (s).
STALE_GRACE = 2.0
_NO_SOURCE = Source(None, "")


@dataclass(frozen=True)
class Plan:
    """A validated configuration and everything derived from it."""

    config: Config
    drivers: Mapping[str, drivers.Driver]
    admitted: tuple[DeviceSpec, ...]
    unlicensed: tuple[DeviceSpec, ...]
    intervals: Mapping[str, float]
    warnings: tuple[str, ...]
    licence_used: int
    licence_total: int


def check(config: Config, *, licence_dir: Path | None = None, now: float | None = None) -> Plan:
    """Validate everything a start needs; raise ConfigError naming file and key."""
    instances: dict[str, drivers.Driver] = {}
    endpoints: dict[str, str] = {}
    by_conn: dict[str, list[DeviceSpec]] = {name: [] for name in config.connections}
    for dev in config.devices:
        by_conn[dev.connection].append(dev)
    for name, conn in config.connections.items():
        drv = drivers.get(conn.driver, Source(conn.source.file, f"{conn.source.key}.driver"))
        drv.check(conn, by_conn[name])
        ep = drv.endpoint(conn)
        if ep in endpoints:
            raise conn.source.error(
                "",
                f"uses the same bus {ep} as connection {endpoints[ep]!r}: one bus, one "
                "connection (put all its devices on that connection)",
            )
        endpoints[ep] = name
        instances[name] = drv
    tiers.check_features(config)
    intervals, warnings = tiers.publish_intervals(config)
    admitted, unlicensed, used, total = _admit(config, licence_dir, now)
    return Plan(config, instances, admitted, unlicensed, intervals, tuple(warnings), used, total)


def _admit(
    config: Config, licence_dir: Path | None, now: float | None
) -> tuple[tuple[DeviceSpec, ...], tuple[DeviceSpec, ...], int, int]:
    result = enforcement.admit(
        config, licence_dir or config.licensing.directory, now if now is not None else time.time()
    )
    if result.clock_warning:
        log.warning("licence clock: %s", result.clock_warning)
    return result.admitted, result.unlicensed, result.used, result.total


@dataclass(frozen=True)
class _Fingerprint:
    """What a connection task depends on; an equal fingerprint means no restart on reload."""

    connection: ConnectionSpec
    devices: tuple[DeviceSpec, ...]


def _fingerprint(conn: ConnectionSpec, devices: Sequence[DeviceSpec]) -> _Fingerprint:
    """The connection spec and the driver's view of its devices, without source locations."""
    # Tier, publish interval, labels and licence group matter to the pipeline, not to the
    # driver: changing them must not drop a bus or disconnect chargers.
    return _Fingerprint(
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


def _lock_outbox(outbox: Path) -> int:
    """Hold an exclusive lock beside the outbox for the life of the process."""
    lock = outbox.with_name(outbox.name + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        raise EdgedError(f"cannot create lock file {lock}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise EdgedError(
            f"another edged (pid {holder}) is running on the outbox {outbox}; stop it first "
            "or give this one its own [gateway] data_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


async def _cancel_and_wait(tasks: Sequence[asyncio.Task[None]], patience: float = 3.0) -> None:
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


@dataclass
class DeviceStatus:
    """Live state of one device, for status and metrics."""

    spec: DeviceSpec
    state: DeviceState = DeviceState.PROVISIONED
    last_sample: float | None = None
    last_error: str | None = None


@dataclass
class _Running:
    fingerprint: _Fingerprint
    task: asyncio.Task[None]
    driver: drivers.Driver
    devices: tuple[str, ...] = field(default_factory=tuple)
    context: _Context | None = None


class _Context:
    """The DriverContext handed to one connection."""

    def __init__(self, daemon: Daemon, driver: str, devices: Sequence[DeviceSpec]):
        self._daemon = daemon
        self._driver = driver
        self.replace(devices)

    def replace(self, devices: Sequence[DeviceSpec]) -> None:
        """Serve a new device list: samples of devices no longer on it are rejected."""
        self.specs = tuple(devices)
        self._devices = frozenset(d.id for d in devices)

    def sample(self, sample: Sample) -> None:
        if sample.device_id not in self._devices:
            self._daemon.metrics.count("samples_rejected", self._driver, sample.device_id)
            return
        self._daemon.on_sample(self._driver, sample)

    def state(self, device_id: str, state: DeviceState, error: str | None = None) -> None:
        if device_id in self._devices:
            self._daemon.on_state(device_id, state, error)

    def count(self, event: str, device_id: str | None = None, n: int = 1) -> None:
        self._daemon.metrics.count(event, self._driver, device_id, n)

    def observe(self, event: str, seconds: float, device_id: str | None = None) -> None:
        self._daemon.metrics.observe(event, self._driver, seconds)


class Daemon:
    """The running edged process."""

    def __init__(
        self, config_path: Path, *, clock: Clock = time.time, licence_dir: Path | None = None
    ):
        self.config_path = config_path
        self.clock = clock
        self.licence_dir = licence_dir
        self.metrics = Metrics()
        self.notifier = Notifier.from_env()
        self.plan: Plan | None = None
        self.devices: dict[str, DeviceStatus] = {}
        self.connections: dict[str, _Running] = {}
        self.outbox: Outbox | None = None
        self.uplink: Uplink | None = None
        self.throttle: Throttle | None = None
        self._uplink_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._control: ControlServer | None = None
        self._last_tick = time.monotonic()
        self._lock_fd: int | None = None
        self._licence_poke = asyncio.Event()
        self._tier_gauges_for: Plan | None = None

    # -- pipeline -----------------------------------------------------------------

    def on_sample(self, driver: str, sample: Sample) -> None:
        """A driver produced a sample: account for it and hand it to the throttle.

        The throttle drops (and counts) non-finite values and late samples itself.
        """
        st = self.devices.get(sample.device_id)
        if st is not None:
            st.last_sample = sample.timestamp
            if st.state is not DeviceState.ONLINE:
                st.state = DeviceState.ONLINE
                st.last_error = None
        self.metrics.count("samples", driver, sample.device_id)
        if self.throttle is not None:
            self.throttle.add(sample)

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

    def _emit(self, records: Sequence[Record]) -> None:
        assert self.outbox is not None
        for rec in records:
            self.outbox.put(rec)
            self.metrics.count(
                "records",
                self.devices[rec.device_id].spec.driver
                if rec.device_id in self.devices
                else "unknown",
                rec.device_id,
            )

    async def _tick(self) -> None:
        """Close due throttle windows, refresh gauges and stale marks."""
        ticks = 0
        while True:
            await asyncio.sleep(0.2)
            self._last_tick = time.monotonic()
            ticks += 1
            now = self.clock()
            if self.throttle is not None:
                self._emit(self.throttle.due(now))
                for dev_id in self.throttle.stale_devices(now):
                    st = self.devices.get(dev_id)
                    if st is not None and st.state is DeviceState.ONLINE and self._overdue(st, now):
                        log.info("device state device=%s state=stale", dev_id)
                        st.state = DeviceState.STALE
            # Gauges walk every device: once a second is plenty for a scraper.
            if ticks % 5 == 1:
                self._refresh_gauges()

    def _overdue(self, st: DeviceStatus, now: float) -> bool:
        """True when a polled device has missed a poll it should have answered.

        A window without a sample is not enough: a meter polled every minute on a
        per-second tier has empty windows by design. Served devices (chargers) send
        when they have something to say, so silence there is not staleness.
        """
        run = self.connections.get(st.spec.connection)
        if run is None or not getattr(run.driver, "polled", True):
            return False
        if st.last_sample is None:
            return True
        return now - st.last_sample > 1.5 * st.spec.poll_interval + STALE_GRACE

    def _refresh_gauges(self) -> None:
        """Copy the pipeline's state into the metrics gauges."""
        if self.throttle is not None:
            dropped = self.throttle.counts()
            for what in ("late", "nonfinite", "unknown"):
                self.metrics.set_gauge("throttle_dropped", dropped[what], reason=what)
        if self.outbox is not None:
            s = self.outbox.stats()
            self.metrics.set_gauge("outbox_depth", s.depth)
            self.metrics.set_gauge("outbox_bytes", s.bytes)
            self.metrics.set_gauge("outbox_dropped", s.dropped)
            self.metrics.set_gauge(
                "outbox_oldest_age", 0.0 if s.oldest is None else max(0.0, self.clock() - s.oldest)
            )
        if self.uplink is not None:
            u = self.uplink.stats()
            self.metrics.set_gauge("uplink_connected", 1.0 if u.connected else 0.0)
            self.metrics.set_gauge("uplink_published", u.published)
            self.metrics.set_gauge("uplink_acked", u.acked)
        if self.plan is not None:
            self.metrics.set_gauge("licence_capacity", self.plan.licence_total)
            self.metrics.set_gauge("licence_used", self.plan.licence_used)
            if self._tier_gauges_for is not self.plan:
                self._set_tier_gauges(self.plan)
        counts = {s: 0 for s in DeviceState}
        for st in self.devices.values():
            counts[st.state] += 1
        for state, n in counts.items():
            self.metrics.set_gauge("devices", n, state=state.value)

    def _set_tier_gauges(self, plan: Plan) -> None:
        """Account tier, interval in force and each device's cloud licence (1 = the current)."""
        status = tiers.tier_status(plan.config)
        for tier in Tier:
            self.metrics.set_gauge(
                "account_tier",
                1.0 if tier.value == status["account_tier"] else 0.0,
                tier=tier.value,
            )
        self.metrics.set_gauge("account_tier_interval", float(status["interval"]))
        # One series per device (its current tier): a gateway may carry a thousand meters.
        self.metrics.clear_gauge("device_cloud_licence")
        for dev in plan.config.devices:
            self.metrics.set_gauge(
                "device_cloud_licence", 1.0, device=dev.id, tier=dev.cloud_licence.value
            )
        self._tier_gauges_for = plan

    def healthy(self) -> bool:
        """True while the loop ticks and the uplink task is alive (watchdog condition)."""
        if time.monotonic() - self._last_tick > 5.0:
            return False
        return self._uplink_task is None or not self._uplink_task.done()

    # -- connections --------------------------------------------------------------

    async def _supervise(self, conn: ConnectionSpec, drv: drivers.Driver, ctx: _Context) -> None:
        """Run one connection; restart it with capped, jittered backoff if it fails."""
        backoff = Backoff(initial=1.0, maximum=60.0)
        while True:
            started = time.monotonic()
            # The device list in force now: a driver may have taken a new one live.
            devices = ctx.specs
            try:
                await drv.run(conn, devices, ctx)
                log.warning("connection ended connection=%s; restarting", conn.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a driver bug must not take the daemon down
                log.error(
                    "connection failed connection=%s error=%s",
                    conn.name,
                    exc,
                    exc_info=not isinstance(exc, EdgedError),
                )
                for d in devices:
                    self.on_state(d.id, DeviceState.OFFLINE, str(exc))
            if time.monotonic() - started > 60:
                backoff.reset()  # it ran for a while: this is a new failure, not a loop
            await asyncio.sleep(backoff.next())

    async def _apply(self, plan: Plan) -> None:
        """Start, keep or restart connection tasks so they match the plan."""
        by_conn: dict[str, list[DeviceSpec]] = {n: [] for n in plan.config.connections}
        for dev in plan.admitted:
            by_conn[dev.connection].append(dev)
        wanted = {
            name: _fingerprint(conn, by_conn[name])
            for name, conn in plan.config.connections.items()
            if by_conn[name]
        }
        served = {dev_id for run in self.connections.values() for dev_id in run.devices}
        stopping = []
        for name in list(self.connections):
            run = self.connections[name]
            fp = wanted.get(name)
            if fp == run.fingerprint:
                continue
            conn = plan.config.connections.get(name)
            if (
                fp is not None
                and conn is not None
                and self._update_live(conn, by_conn[name], run, fp)
            ):
                continue
            log.info("stopping connection connection=%s", name)
            stopping.append(run.task)
            del self.connections[name]
        # The old task must be gone before a new one opens the same bus.
        await _cancel_and_wait(stopping)
        old = self.devices
        self.devices = {}
        for dev in plan.config.devices:
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
        for dev in plan.unlicensed:
            self.devices[dev.id].state = DeviceState.UNLICENSED
        for name, fp in wanted.items():
            if name in self.connections:
                continue
            conn = plan.config.connections[name]
            devs = tuple(by_conn[name])
            drv = plan.drivers[name]
            log.info(
                "starting connection connection=%s driver=%s devices=%d",
                name,
                conn.driver,
                len(devs),
            )
            self._zero_series(conn, drv, devs)
            ctx = _Context(self, conn.driver, devs)
            task = asyncio.create_task(self._supervise(conn, drv, ctx), name=f"connection:{name}")
            self.connections[name] = _Running(fp, task, drv, tuple(d.id for d in devs), ctx)
        if plan.unlicensed:
            log.warning(
                "devices not licensed (never polled) used=%d capacity=%d devices=%s",
                plan.licence_used,
                plan.licence_total,
                ",".join(d.id for d in plan.unlicensed),
            )
        if self.throttle is not None:
            self.throttle.set_intervals(dict(plan.intervals))
        self.plan = plan

    def _zero_series(
        self, conn: ConnectionSpec, drv: drivers.Driver, devices: Sequence[DeviceSpec]
    ) -> None:
        """Create the device's series at 0, so rate() alerts see 0 rather than nothing."""
        for dev in devices:
            events: tuple[str, ...] = ("samples", "records")
            if getattr(drv, "polled", True):
                events += ("poll", "poll_error")
            for event in events:
                self.metrics.count(event, conn.driver, dev.id, 0)

    def _update_live(
        self, conn: ConnectionSpec, devices: Sequence[DeviceSpec], run: _Running, fp: _Fingerprint
    ) -> bool:
        """Hand a changed device list to a running connection whose own spec is unchanged.

        True when the driver took it and the task keeps running; False means restart.
        """
        update = getattr(run.driver, "update", None)
        if run.context is None or update is None or fp.connection != run.fingerprint.connection:
            return False
        try:
            applied = bool(update(conn, devices))
        except Exception as exc:  # a driver bug costs a restart, not the reload
            log.error("live update failed connection=%s error=%s", conn.name, exc, exc_info=True)
            return False
        if not applied:
            return False
        self._zero_series(conn, run.driver, [d for d in devices if d.id not in run.devices])
        run.context.replace(devices)
        run.fingerprint = fp
        run.devices = tuple(d.id for d in devices)
        log.info("updated connection connection=%s devices=%d", conn.name, len(devices))
        return True

    # -- licences -----------------------------------------------------------------

    def _licence_dir(self) -> Path:
        assert self.plan is not None
        return self.licence_dir or self.plan.config.licensing.directory

    async def _licence_watch(self) -> None:
        """Re-check licences when one expires (and hourly): take the surplus out of service."""
        announced: set[tuple[float, int | None]] = set()
        while True:
            try:
                await self._licence_check(announced)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep watching: a bad licence dir must not stop the daemon
                log.error("licence check failed error=%s", exc, exc_info=True)
                await asyncio.sleep(60)

    async def _licence_check(self, announced: set[tuple[float, int | None]]) -> None:
        """One licence check, then wait until the next moment anything can change."""
        plan = self.plan
        assert plan is not None
        now = self.clock()
        result = await asyncio.to_thread(enforcement.admit, plan.config, self._licence_dir(), now)
        if {d.id for d in result.admitted} != {d.id for d in plan.admitted}:
            dropped = sorted({d.id for d in plan.admitted} - {d.id for d in result.admitted})
            added = sorted({d.id for d in result.admitted} - {d.id for d in plan.admitted})
            log.warning(
                "licence capacity changed used=%d capacity=%d taken_out=%s admitted=%s",
                result.used,
                result.total,
                ",".join(dropped) or "-",
                ",".join(added) or "-",
            )
            await self._apply(
                dataclasses.replace(
                    plan,
                    admitted=result.admitted,
                    unlicensed=result.unlicensed,
                    licence_used=result.used,
                    licence_total=result.total,
                )
            )
            if self.uplink is not None:
                await self.uplink.publish_event(
                    "licence_changed",
                    {
                        "used": result.used,
                        "capacity": result.total,
                        "taken_out_of_service": dropped,
                        "admitted": added,
                    },
                )
        maint = await asyncio.to_thread(
            enforcement.maintenance, plan.config, self._licence_dir(), now
        )
        if maint.end is not None and (maint.warning_days is not None or maint.ended):
            key = (maint.end, -1 if maint.ended else maint.warning_days)
            if key not in announced:
                announced.add(key)
                days = maint.days_left(now)
                log.warning(
                    "maintenance licence %s end=%s days_left=%s",
                    "has ended" if maint.ended else "ends soon",
                    time.strftime("%Y-%m-%d", time.gmtime(maint.end)),
                    days,
                )
                if self.uplink is not None:
                    await self.uplink.publish_event(
                        "maintenance", {"end": maint.end, "days_left": days, "ended": maint.ended}
                    )
        wake = [now + 3600.0]
        if result.next_change is not None:
            wake.append(result.next_change + 0.01)
        if maint.next_warning is not None:
            wake.append(maint.next_warning)
        delay = max(0.05, min(wake) - self.clock())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._licence_poke.wait(), delay)
        self._licence_poke.clear()

    # -- lifecycle ----------------------------------------------------------------

    def _load(self, cfg: Config | None = None) -> Plan:
        """Validate ``cfg`` (read from the config path when not given) into a plan."""
        cfg = cfg if cfg is not None else configmod.load(self.config_path)
        plan = check(cfg, licence_dir=self.licence_dir, now=self.clock())
        for w in plan.warnings:
            log.warning("%s", w)
        return plan

    async def run(self, config: Config | None = None) -> int:
        """Run until SIGTERM/SIGINT; return the exit code (``config``: already loaded)."""
        plan = self._load(config)
        cfg = plan.config
        # Two daemons on one outbox would hand out the same sequence numbers twice, and the
        # cloud would drop real records as duplicates: refuse before touching anything.
        self._lock_fd = _lock_outbox(cfg.outbox.path)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)

        self.outbox = Outbox(
            cfg.outbox.path,
            max_records=cfg.outbox.max_records,
            max_bytes=cfg.outbox.max_bytes,
            synchronous=cfg.outbox.synchronous,
        )
        await self.outbox.open()
        self.throttle = Throttle(clock=self.clock)
        self.uplink = Uplink(cfg.mqtt, cfg.gateway.id, self.outbox)
        self._uplink_task = asyncio.create_task(self.uplink.run(), name="uplink")
        if cfg.metrics.enabled:
            self._tasks.append(
                asyncio.create_task(
                    self.metrics.serve(cfg.metrics.host, cfg.metrics.port), name="metrics"
                )
            )
        self._control = ControlServer(cfg.control.socket, self.handle_control)
        try:
            await self._control.start()
        except OSError as exc:
            log.error("control socket unavailable path=%s error=%s", cfg.control.socket, exc)
            self._control = None
        await self._apply(plan)
        self._tasks.append(asyncio.create_task(self._tick(), name="tick"))
        self._tasks.append(asyncio.create_task(self._licence_watch(), name="licences"))
        self._tasks.append(
            asyncio.create_task(Watchdog(self.notifier, self.healthy).run(), name="watchdog")
        )
        log.info(
            "edged started gateway=%s devices=%d unlicensed=%d connections=%d",
            cfg.gateway.id,
            len(plan.admitted),
            len(plan.unlicensed),
            len(self.connections),
        )
        self.notifier.notify("READY=1", f"STATUS=running {len(plan.admitted)} devices")

        while not self._stop.is_set():
            stop = asyncio.create_task(self._stop.wait())
            reload = asyncio.create_task(self._reload.wait())
            await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            reload.cancel()
            if self._reload.is_set() and not self._stop.is_set():
                self._reload.clear()
                await self.reload()
        await self.shutdown()
        return 0

    def stop(self) -> None:
        """Ask the daemon to stop (what SIGTERM does)."""
        self._stop.set()

    async def reload(self) -> bool:
        """Validate the config anew and apply it; keep the old one if anything is wrong."""
        ok, _ = await self.reload_with_notes()
        return ok

    async def reload_with_notes(self) -> tuple[bool, list[str]]:
        """Reload; return whether it was applied and what the operator should know."""
        notes: list[str] = []
        mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={mono}")
        try:
            plan = await asyncio.to_thread(self._load)
            old = self.plan
            assert old is not None
            for section, new_value, old_value in (
                ("mqtt", plan.config.mqtt, old.config.mqtt),
                ("outbox", plan.config.outbox, old.config.outbox),
                ("control", plan.config.control, old.config.control),
                ("metrics", plan.config.metrics, old.config.metrics),
            ):
                if new_value != old_value:
                    notes.append(
                        f"[{section}] changed: takes effect at the next restart "
                        "(systemctl restart edged)"
                    )
            notes.extend(plan.warnings)
            if plan.unlicensed:
                notes.append(
                    f"not licensed (never polled): {', '.join(d.id for d in plan.unlicensed)}"
                )
            for note in notes:
                log.warning("reload: %s", note)
            await self._apply(plan)
            self._licence_poke.set()
            log.info(
                "reloaded config=%s devices=%d unlicensed=%d",
                self.config_path,
                len(plan.admitted),
                len(plan.unlicensed),
            )
            return True, notes
        except EdgedError as exc:
            log.error("reload refused, still running the previous config: %s", exc)
            return False, [str(exc)]
        finally:
            self.notifier.notify("READY=1")

    async def shutdown(self) -> None:
        """Stop polling, flush everything durable, give the uplink a moment, exit."""
        self.notifier.notify("STOPPING=1")
        log.info("stopping")
        await _cancel_and_wait([r.task for r in self.connections.values()])
        self.connections.clear()
        if self.throttle is not None and self.outbox is not None:
            self._emit(self.throttle.flush())
        if self.outbox is not None:
            await self.outbox.flush()
        if self.uplink is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.uplink.drain(2.0), 2.5)
        if self._uplink_task is not None:
            self._uplink_task.cancel()
            await asyncio.gather(self._uplink_task, return_exceptions=True)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._control is not None:
            await self._control.close()
        if self.outbox is not None:
            await self.outbox.close()
        log.info("stopped")

    # -- control ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A JSON-ready picture of the daemon for `edged status`."""
        plan = self.plan
        now = self.clock()
        devices = []
        for dev_id, st in self.devices.items():
            devices.append(
                {
                    "id": dev_id,
                    "driver": st.spec.driver,
                    "connection": st.spec.connection,
                    "state": st.state.value,
                    "cloud_licence": st.spec.cloud_licence.value,
                    "interval": plan.intervals.get(dev_id)
                    if plan and st.state is not DeviceState.UNLICENSED
                    else None,
                    "last_sample_age": None
                    if st.last_sample is None
                    else round(now - st.last_sample, 1),
                    "last_error": st.last_error,
                }
            )
        out: dict[str, Any] = {
            "gateway": plan.config.gateway.id if plan else None,
            "devices": devices,
        }
        if plan is not None:
            out["licence"] = {"used": plan.licence_used, "total": plan.licence_total}
            out["tier"] = tiers.tier_status(plan.config)
        if self.outbox is not None:
            s = self.outbox.stats()
            out["outbox"] = {
                "depth": s.depth,
                "bytes": s.bytes,
                "dropped": s.dropped,
                "oldest_age": None if s.oldest is None else round(now - s.oldest, 1),
                "disk_error": s.disk_error,
            }
        if self.uplink is not None:
            u = self.uplink.stats()
            out["uplink"] = {
                "connected": u.connected,
                "published": u.published,
                "acked": u.acked,
                "reconnects": u.reconnects,
                "last_error": u.last_error,
            }
        return out

    async def handle_control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Serve one control-socket request."""
        cmd = request.get("command")
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "reload":
            ok, notes = await self.reload_with_notes()
            if not ok:
                return {"ok": False, "error": f"reload refused: {notes[0]}"}
            return {"ok": True, "notes": notes}
        if cmd == "device":
            dev_id = str(request.get("device"))
            st = self.devices.get(dev_id)
            if st is None:
                return {"ok": False, "error": f"no device {dev_id!r}"}
            run = self.connections.get(st.spec.connection)
            handler = getattr(run.driver, "command", None) if run else None
            if handler is None:
                return {
                    "ok": False,
                    "error": f"device {dev_id!r} takes no commands (state {st.state.value})",
                }
            try:
                result = await handler(
                    dev_id, str(request.get("name")), dict(request.get("args") or {})
                )
            except EdgedError as exc:
                return {"ok": False, "error": str(exc)}
            return {"ok": True, "result": result}
        return {"ok": False, "error": f"unknown command {cmd!r}"}
