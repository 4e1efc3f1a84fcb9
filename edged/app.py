"""The daemon: builds the parts from the configuration, starts and stops them, reloads.

Wiring only. The parts and their jobs:

- ``provisioning``: configuration → configured drivers, admitted devices, intervals;
- ``supervisor``: one task per connection, device states; samples go to
- ``pipeline``: live values and windows; records go to the outbox;
- ``outbox`` → ``uplink``: durable queue, MQTT session;
- ``licence_watch``: licences that end or change while running;
- ``status``: `edged status` and the metrics gauges; ``control``: the control socket.

SIGHUP reloads all-or-nothing; SIGTERM/SIGINT stop polling, flush and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged import __version__, api, payload, tiers
from edged import config as configmod
from edged import outbox_sizing as sizing
from edged.actions.engine import Engine
from edged.config import Config
from edged.control import ControlServer
from edged.energy import Energy
from edged.errors import EdgedError
from edged.licence_watch import LicenceWatcher
from edged.live import LiveValues
from edged.loadmgmt.config import LoadManagementConfig
from edged.loadmgmt.controller import Controller as LoadManagement
from edged.metrics import Metrics
from edged.model import DeviceState, Record, Sample
from edged.outbox import Outbox
from edged.pipeline import Pipeline
from edged.provisioning import Provisioning, provision
from edged.status import StatusService
from edged.supervisor import Supervisor
from edged.systemd import Notifier, Watchdog
from edged.uplink import Uplink
from edged.web.events import EventLog
from edged.windows import Windows

if TYPE_CHECKING:
    # Imported where a [modbus_server] is started: pymodbus' server side pulls in aiohttp,
    # a few MB and tens of ms that a gateway without the server does not need.
    from edged.modbus_server.server import ModbusServer, ServedPoint
    from edged.web.server import WebServer

log = logging.getLogger("edged.app")

Clock = Callable[[], float]
TICK = 0.2
"""Seconds between two closings of due windows."""


def info_messages(prov: Provisioning) -> dict[str, bytes]:
    """The retained info message of every admitted device and virtual meter (their labels
    among it), by topic."""
    cfg = prov.config
    prefix, gw = cfg.mqtt.topic_prefix, cfg.gateway.id
    out: dict[str, bytes] = {}
    for dev in prov.admitted:
        out[payload.info_topic(prefix, gw, dev.id)] = payload.device_info(
            dev.id,
            driver=dev.driver,
            medium=dev.medium,
            cloud_licence=dev.cloud_licence.value,
            labels=dev.labels,
        )
    for vm in cfg.virtual_meters:
        out[payload.info_topic(prefix, gw, vm.id)] = payload.device_info(
            vm.id,
            driver="virtual",
            medium=vm.medium,
            cloud_licence=vm.cloud_licence.value,
            labels={},
        )
    return out


def outbox_size(cfg: Config, intervals: Iterable[float]) -> sizing.OutboxSize:
    """The outbox limits for this site: configured, or derived from ``outage_hours``."""
    return sizing.size_for(
        rate=sizing.site_rate(intervals),
        record_bytes=sizing.typical_record_bytes(payload.encode),
        outage_hours=cfg.outbox.outage_hours,
        max_records=cfg.outbox.max_records,
        max_mb=cfg.outbox.max_mb,
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


def modbus_points(prov: Provisioning) -> list[ServedPoint]:
    """The metering points the Modbus server serves, with their unit ids and age limits:
    admitted devices and virtual meters (an unlicensed device is never fresh; it keeps its
    unit id unserved, so no other point's id moves when it is licensed)."""
    from edged.modbus_server.server import served_points

    cfg = prov.config
    return served_points(
        cfg.modbus_server,
        prov.admitted,
        [(v.id, v.medium) for v in cfg.virtual_meters],
        lambda dev: prov.connections[dev.connection].driver.polled,
    )


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
        self.provisioning: Provisioning | None = None
        self.live = LiveValues()
        self.windows = Windows(clock=clock)
        self.pipeline = Pipeline(self.windows, self.live, self._emit)
        self.supervisor = Supervisor(self.metrics, self._sample)
        self.energy = Energy(self.pipeline, self.supervisor, self.metrics, clock)
        self.actions = Engine(
            self.live,
            self.supervisor.command,
            self._publish_event,
            self._device_state,
            lambda event, rule, n: self.metrics.count(f"action_{event}", "actions", rule, n),
            clock,
        )
        self.status_service = StatusService(
            self.supervisor, self.live, self.windows, self.metrics, clock
        )
        self.status_service.actions = self.actions
        self.status_service.virtual = self.energy.virtual
        self.loadmgmt = LoadManagement(
            LoadManagementConfig(),
            self.live,
            self._device_state,
            self.supervisor.command,
            self.metrics,
        )
        self.status_service.circuits = self.loadmgmt.status
        self.licences = LicenceWatcher(
            self._current, self.apply, self._publish_event, self._licence_dir, clock
        )
        self.outbox: Outbox | None = None
        self.uplink: Uplink | None = None
        self.last_tick = time.monotonic()
        self._uplink_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._control: ControlServer | None = None
        self._lock_fd: int | None = None
        self.modbus_server: ModbusServer | None = None
        self.events = EventLog()
        self.web: WebServer | None = None

    @property
    def devices(self) -> dict[str, Any]:
        """Device states by id (the supervisor's)."""
        return self.supervisor.devices

    # -- wiring -----------------------------------------------------------------------

    def _emit(self, records: Sequence[Record]) -> None:
        assert self.outbox is not None
        devices = self.supervisor.devices
        self.outbox.put_many(records)
        for rec in records:
            st = devices.get(rec.device_id)
            self.metrics.count("records", st.spec.driver if st else "unknown", rec.device_id)

    def _current(self) -> Provisioning:
        assert self.provisioning is not None
        return self.provisioning

    def _licence_dir(self) -> Path:
        return self.licence_dir or self._current().config.licensing.directory

    async def _publish_event(self, kind: str, body: dict[str, object]) -> None:
        self.events.add(kind, body)
        if self.uplink is not None:
            await self.uplink.publish_event(kind, body)
        self.actions.on_event(kind, body)

    def _sample(self, sample: Sample) -> None:
        self.pipeline.add(sample)
        self.actions.observe(sample)

    def _device_state(self, device_id: str) -> DeviceState | None:
        """A metering point's state: the supervisor's for a device, stale or online for a
        virtual meter (so no consumer serves a stale virtual meter as fresh)."""
        st = self.supervisor.devices.get(device_id)
        if st is not None:
            return st.state
        stale = self.energy.virtual.is_stale(device_id)
        if stale is None:
            return None
        return DeviceState.STALE if stale else DeviceState.ONLINE

    async def apply(self, prov: Provisioning) -> None:
        """Bring connections, windows and status in line with a provisioning."""
        # Intervals first: a device added live may send its first sample at once.
        account = tiers.tier_interval(tiers.account_tier(prov.config))
        virtual = {v.id: account for v in prov.config.virtual_meters}
        self.windows.set_intervals(dict(prov.intervals) | virtual)
        self.energy.apply(prov)
        await self.supervisor.apply(prov)
        self.live.keep_only([*(d.id for d in prov.admitted), *virtual])
        self.actions.set_rules(prov.config.actions)
        self.loadmgmt.apply(prov.config.load_management)
        self.provisioning = prov
        self.status_service.provisioning = prov
        if self.uplink is not None:
            self.uplink.set_retained(info_messages(prov))
        if self.modbus_server is not None:
            self.modbus_server.set_points(modbus_points(prov))

    async def _tick(self) -> None:
        """Close due windows, mark stale devices, refresh gauges."""
        ticks = 0
        while True:
            await asyncio.sleep(TICK)
            self.last_tick = time.monotonic()
            ticks += 1
            now = self.clock()
            self.pipeline.tick(now)
            # Staleness is decided per window (1 s at the shortest) and walks every device:
            # once a second is soon enough.
            if ticks % 5 == 0:
                self.supervisor.mark_stale(self.windows.stale_devices(now), now)
            self.actions.tick(now)
            self.energy.tick(now, ticks)
            # Gauges walk every device: once a second is plenty for a scraper.
            if ticks % 5 == 1:
                self.status_service.refresh_gauges()

    async def _start_modbus_server(self, prov: Provisioning) -> ModbusServer | None:
        """The Modbus TCP server on the live values; None (logged) when it cannot listen."""
        from edged.modbus_server.server import LiveRegisters, ModbusServer

        cfg = prov.config
        registers = LiveRegisters(
            self.live,
            self._device_state,
            gateway_id=cfg.gateway.id,
            models=cfg.modbus_server.models,
            version=__version__,
            clock=self.clock,
        )
        server = ModbusServer(
            cfg.modbus_server,
            registers,
            lambda event: self.metrics.count(f"modbus_server_{event}", "modbus_server"),
        )
        server.set_points(modbus_points(prov))
        try:
            await server.start()
        except (OSError, RuntimeError) as exc:
            log.error("modbus server unavailable port=%s error=%s", cfg.modbus_server.port, exc)
            return None
        self.status_service.modbus_server = server
        return server

    def healthy(self) -> bool:
        """True while the loop ticks and the uplink task is alive (watchdog condition)."""
        if time.monotonic() - self.last_tick > 5.0:
            return False
        return self._uplink_task is None or not self._uplink_task.done()

    # -- lifecycle ----------------------------------------------------------------------

    def load(self, cfg: Config | None = None) -> Provisioning:
        """Validate ``cfg`` (read from the config path when not given) into a provisioning."""
        cfg = cfg if cfg is not None else configmod.load(self.config_path)
        prov = provision(cfg, licence_dir=self.licence_dir, now=self.clock())
        for w in prov.warnings:
            log.warning("%s", w)
        return prov

    async def run(self, config: Config | None = None) -> int:
        """Run until SIGTERM/SIGINT; return the exit code (``config``: already loaded)."""
        prov = await asyncio.to_thread(self.load, config)
        cfg = prov.config
        # Two daemons on one outbox would hand out the same sequence numbers twice, and the
        # cloud would drop real records as duplicates: refuse before touching anything.
        self._lock_fd = _lock_outbox(cfg.outbox.path)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)

        size = outbox_size(cfg, prov.intervals.values())
        log.info(
            "outbox limits max_records=%d max_mb=%d derived=%s keeps_hours=%.1f",
            size.max_records,
            size.max_bytes // (1024 * 1024),
            size.derived,
            size.lasts_seconds / 3600,
        )
        self.outbox = Outbox(
            cfg.outbox.path,
            max_records=size.max_records,
            max_bytes=size.max_bytes,
            synchronous=cfg.outbox.synchronous,
        )
        await self.outbox.open()
        await self.energy.open(cfg)
        self.uplink = Uplink(cfg.mqtt, cfg.gateway.id, self.outbox)
        self.status_service.attach_outbox(self.outbox)
        self.status_service.uplink = self.uplink
        self._uplink_task = asyncio.create_task(self.uplink.run(), name="uplink")
        # /metrics is served by the web server only: with it off, counting would cost CPU
        # and memory for series nobody can read.
        self.metrics.enabled = cfg.web.enabled
        if cfg.web.enabled:
            # One HTTP server: console, REST API and /metrics (edged/web).
            # aiohttp loads only when the server is on (see tests/test_lazy_imports.py).
            from edged.console import console_backend
            from edged.web.server import WebServer

            self.web = WebServer(self.metrics, cfg.web, console_backend(self))
            self._tasks.append(asyncio.create_task(self.web.serve(), name="web"))
        self._control = ControlServer(cfg.control.socket, self.handle_control)
        try:
            await self._control.start()
        except OSError as exc:
            log.error("control socket unavailable path=%s error=%s", cfg.control.socket, exc)
            self._control = None
        if cfg.cloud.features["modbus_server"]:
            self.modbus_server = await self._start_modbus_server(prov)
        await self.apply(prov)
        self._tasks.append(asyncio.create_task(self._tick(), name="tick"))
        self._tasks.append(asyncio.create_task(self.licences.run(), name="licences"))
        self._tasks.append(
            asyncio.create_task(Watchdog(self.notifier, self.healthy).run(), name="watchdog")
        )
        log.info(
            "edged started gateway=%s devices=%d unlicensed=%d connections=%d",
            cfg.gateway.id,
            len(prov.admitted),
            len(prov.unlicensed),
            len(self.supervisor.connections),
        )
        self.notifier.notify("READY=1", f"STATUS=running {len(prov.admitted)} devices")

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
            prov = await asyncio.to_thread(self.load)
            old = self.provisioning
            assert old is not None
            for section, new_value, old_value in (
                ("mqtt", prov.config.mqtt, old.config.mqtt),
                ("outbox", prov.config.outbox, old.config.outbox),
                ("control", prov.config.control, old.config.control),
                ("metrics", prov.config.metrics, old.config.metrics),
                (
                    "modbus_server",
                    (
                        prov.config.cloud.features["modbus_server"],
                        prov.config.modbus_server.listener,
                    ),
                    (old.config.cloud.features["modbus_server"], old.config.modbus_server.listener),
                ),
                ("web", prov.config.web, old.config.web),
            ):
                if new_value != old_value:
                    notes.append(
                        f"[{section}] changed: takes effect at the next restart "
                        "(systemctl restart edged)"
                    )
            notes.extend(prov.warnings)
            if prov.unlicensed:
                notes.append(
                    f"not licensed (never polled): {', '.join(d.id for d in prov.unlicensed)}"
                )
            for note in notes:
                log.warning("reload: %s", note)
            await self.apply(prov)
            self.licences.poke()
            log.info(
                "reloaded config=%s devices=%d unlicensed=%d",
                self.config_path,
                len(prov.admitted),
                len(prov.unlicensed),
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
        await self.actions.close()
        await self.loadmgmt.stop()
        await self.supervisor.stop()
        if self.outbox is not None:
            if self.uplink is not None:
                # A clean stop drops nothing: the last windows' records must not push the
                # oldest out of a full outbox while the broker could still take them.
                await self.uplink.make_room(len(self.supervisor.devices), 2.0)
            self.pipeline.flush()
            await self.outbox.flush()
        await self.energy.close()
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
        if self.modbus_server is not None:
            await self.modbus_server.close()
        if self.outbox is not None:
            await self.outbox.close()
        log.info("stopped")

    # -- control ----------------------------------------------------------------------

    def status(self, *, values: bool = False, device: str | None = None) -> dict[str, Any]:
        """A JSON-ready picture of the daemon for `edged status`."""
        return self.status_service.status(values=values, device=device)

    async def handle_control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Serve one control-socket request."""
        cmd = request.get("command")
        if cmd == "status":
            device = request.get("device")
            known = (*self.supervisor.devices, *self.energy.virtual.ids)
            if device is not None and str(device) not in known:
                return {"ok": False, "error": f"no device {device!r}"}
            return {
                "ok": True,
                "status": self.status(
                    values=bool(request.get("values")),
                    device=None if device is None else str(device),
                ),
            }
        if cmd == "reload":
            ok, notes = await self.reload_with_notes()
            if not ok:
                return {"ok": False, "error": f"reload refused: {notes[0]}"}
            return {"ok": True, "notes": notes}
        if cmd == "device":
            command = api.DriverCommand(
                str(request.get("device")),
                str(request.get("name")),
                dict(request.get("args") or {}),
            )
            try:
                result = await self.supervisor.command(command)
            except EdgedError as exc:
                return {"ok": False, "error": str(exc)}
            return {"ok": True, "result": result}
        if cmd == "reconnect":
            try:
                connection = await self.supervisor.reconnect(str(request.get("device")))
            except EdgedError as exc:
                return {"ok": False, "error": str(exc)}
            return {"ok": True, "connection": connection}
        return {"ok": False, "error": f"unknown command {cmd!r}"}
