"""The OCPP driver: a local central system (OCPP 1.6J and 2.0.1) that chargers connect to.

The connection is the listening WebSocket server; each configured device is a
charger identified by its charge point id (the last segment of the URL path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from drivers.ocpp import commands, settings
from drivers.ocpp.errors import (
    ChargerNotConnected,
    CommandError,
    CommandTimeout,
    UnknownCharger,
)
from drivers.ocpp.handshake import Gate, charge_point_id, version_of
from drivers.ocpp.hub import Hub
from drivers.ocpp.passwords import hash_password
from drivers.ocpp.session import Session, make_session
from drivers.ocpp.state import ChargerStatus
from edged.api import (
    ClearChargingLimit,
    CliCommand,
    Command,
    DeviceInfo,
    DriverCommand,
    DriverContext,
    SetChargingLimit,
    SimulatorCommand,
    StartCharging,
    StopCharging,
)
from edged.model import ConnectionSpec, DeviceSpec

log = logging.getLogger("edged.ocpp")

# WebSocket pings find dead TCP connections; OCPP heartbeats are too slow for that.
PING_INTERVAL = 60.0
CLOSE_TIMEOUT = 5.0
REMOVED = "removed from configuration"

__all__ = ["OcppDriver", "hash_password"]

# The typed commands a charger takes (``_request_of``).
CHARGER_COMMANDS: frozenset[type[Command]] = frozenset(
    {SetChargingLimit, StartCharging, StopCharging, DriverCommand}
)


class OcppDriver:
    """Local OCPP central system; implements ``edged.api.Driver`` and its capabilities."""

    name = "ocpp"
    # Chargers send when they have something to report; the daemon does not poll them.
    polled = False

    def __init__(self) -> None:
        self._statuses: dict[str, ChargerStatus] = {}
        self._sessions: dict[str, Session] = {}
        self._hubs: dict[str, Hub] = {}
        # The hub and gate of each listening connection, so update() can swap their settings.
        self._servers: dict[str, tuple[Hub, Gate]] = {}
        # Close handshakes in flight; held so the tasks are not collected before they end.
        self._closing: set[asyncio.Task[None]] = set()
        self.bound_port: int | None = None
        """The port actually listened on (useful when configured as 0)."""

    def configure(
        self, connection: ConnectionSpec, devices: Sequence[DeviceSpec]
    ) -> settings.OcppSettings:
        """Validate the server and charger settings."""
        return settings.parse(connection, devices)

    def cli(self) -> CliCommand:
        """``edged ocpp``: command a connected charger through the running daemon."""
        from drivers.ocpp import cli

        return CliCommand("command a charger through the running daemon", cli.main)

    def simulator(self) -> SimulatorCommand:
        """``edged sim ocpp``: simulated OCPP 1.6J / 2.0.1 chargers."""
        from drivers.ocpp import simulator

        return SimulatorCommand("simulated OCPP 1.6J / 2.0.1 chargers", simulator.main)

    async def run(self, cfg: settings.OcppSettings, ctx: DriverContext) -> None:
        """Serve chargers until cancelled."""
        hub = Hub(cfg, ctx, self._statuses)
        for charger in cfg.chargers.values():
            self._hubs[charger.device_id] = hub
        gate = Gate(cfg)
        self._servers[cfg.name] = (hub, gate)
        try:
            await self._listen(hub, gate)
        finally:
            del self._servers[cfg.name]

    async def _listen(self, hub: Hub, gate: Gate) -> None:
        cfg = hub.settings
        tls = await asyncio.to_thread(_tls_context, cfg) if cfg.tls else None

        async def handler(ws: ServerConnection) -> None:
            await self._serve(hub, ws)

        server = await serve(
            handler,
            cfg.host,
            cfg.port,
            ssl=tls,
            subprotocols=[Subprotocol(p) for p in settings.SUBPROTOCOLS.values()],
            select_subprotocol=gate.select_subprotocol,
            process_request=gate.process_request,
            max_size=cfg.max_message_size,
            ping_interval=PING_INTERVAL,
            # permessage-deflate costs ~50 KiB and CPU per charger; on a local network
            # the bandwidth it saves does not matter.
            compression=None,
            close_timeout=CLOSE_TIMEOUT,
        )
        sockets = list(server.sockets)
        self.bound_port = sockets[0].getsockname()[1] if sockets else cfg.port
        log.info(
            "ocpp listening host=%s port=%s tls=%s auth=%s chargers=%d",
            cfg.host,
            self.bound_port,
            cfg.tls,
            cfg.auth,
            len(cfg.chargers),
        )
        try:
            await server.serve_forever()
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
            # The charger list in force now, which update() may have changed since the start.
            for charger in hub.settings.chargers.values():
                self._sessions.pop(charger.device_id, None)
                if hub.status(charger.device_id).connected:
                    hub.offline(charger.device_id, "server stopped")

    def update(self, cfg: settings.OcppSettings) -> bool:
        """Apply a new charger list to the running server; False when it cannot."""
        server = self._servers.get(cfg.name)
        if server is None:
            # Between two runs (restarting after a failure): the next run gets the new list
            # from the supervisor; only forget the chargers that are gone.
            wanted = {(c.device_id, c.charge_point_id) for c in cfg.chargers.values()}
            for device_id, st in list(self._statuses.items()):
                if (device_id, st.charge_point_id) not in wanted:
                    del self._statuses[device_id]
                    self._hubs.pop(device_id, None)
            return True
        hub, gate = server
        old = hub.settings
        if _listening(old) != _listening(cfg):
            return False
        before = {c.device_id: c.charge_point_id for c in old.chargers.values()}
        after = {c.device_id: c.charge_point_id for c in cfg.chargers.values()}
        # A charger whose charge point id changed is a different charger on the wire.
        removed = [dev for dev, cp in before.items() if after.get(dev) != cp]
        added = [dev for dev, cp in after.items() if before.get(dev) != cp]
        for device_id in removed:
            self._drop(hub, device_id)
        # Password and version changes need no action: the gate checks them at the next
        # connection, and a charger's running session never looks at them again.
        hub.replace_settings(cfg, removed)
        gate.settings = cfg
        for device_id in added:
            self._hubs[device_id] = hub
        log.info(
            "ocpp chargers updated connection=%s chargers=%d added=%s removed=%s",
            cfg.name,
            len(cfg.chargers),
            ",".join(added) or "-",
            ",".join(removed) or "-",
        )
        return True

    def _drop(self, hub: Hub, device_id: str) -> None:
        """Close a removed charger's session and report it offline."""
        self._hubs.pop(device_id, None)
        session = self._sessions.pop(device_id, None)
        if session is not None:
            log.info("charger disconnected device=%s %s", device_id, REMOVED)
            self._close_later(session._connection, REMOVED)
        if hub.status(device_id).connected:
            hub.offline(device_id, REMOVED)

    def _close_later(self, ws: ServerConnection, reason: str) -> None:
        # Closing may wait for a dead peer; nothing else should wait for that.
        task = asyncio.create_task(ws.close(1000, reason))
        self._closing.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        _ignore_result(task)

    async def _serve(self, hub: Hub, ws: ServerConnection) -> None:
        assert ws.request is not None
        cp = charge_point_id(ws.request.path)
        charger = hub.settings.chargers.get(cp)
        if charger is None:
            # Removed from the configuration after its handshake was accepted.
            await ws.close(1000, REMOVED)
            return
        device_id = charger.device_id
        version = version_of(ws.subprotocol)
        session = make_session(hub, device_id, version, ws)
        old = self._sessions.get(device_id)
        self._sessions[device_id] = session
        if old is not None:
            log.info("charger reconnected, old session replaced device=%s", device_id)
            self._close_later(old._connection, "replaced by a new connection")
            # The old link is gone: say so, so that the core sees a new connection.
            hub.offline(device_id, "replaced by a new connection")
        remote = _remote(ws)
        log.info("charger connected device=%s version=%s remote=%s", device_id, version, remote)
        hub.online(device_id, version, remote)
        reason: str | None = None
        try:
            await session.serve()
        except ConnectionClosed as e:
            reason = str(e)
        finally:
            closed = _closed_by(ws)
            if closed is not None:
                reason = closed
            if self._sessions.get(device_id) is session:
                del self._sessions[device_id]
                log.info("charger disconnected device=%s %s", device_id, reason or "")
                hub.offline(device_id, reason)

    def describe(self, cfg: settings.OcppSettings, device_id: str) -> DeviceInfo | None:
        """A charger takes limits, starts and stops; its measurands are known once it sends."""
        if not any(c.device_id == device_id for c in cfg.chargers.values()):
            return None
        return DeviceInfo(quantities=None, commands=CHARGER_COMMANDS)

    def status(self) -> dict[str, dict[str, Any]]:
        """JSON-ready state of every charger, by device id."""
        return {dev: st.to_dict() for dev, st in sorted(self._statuses.items())}

    async def command(self, command: Command) -> dict[str, Any]:
        """Send one command to a connected charger; return its answer as JSON-ready data."""
        name, args = _request_of(command)
        device_id = command.device_id
        if device_id not in self._statuses:
            raise UnknownCharger(f"{device_id!r} is not an OCPP charger of this gateway")
        session = self._sessions.get(device_id)
        if session is None:
            raise ChargerNotConnected(f"charger {device_id!r} is not connected")
        request = commands.build(session.version, name, args, self._statuses[device_id])
        log.info("command device=%s command=%s", device_id, name)
        try:
            response = await session.call(request, suppress=False)
        except TimeoutError as e:
            raise CommandTimeout(f"charger {device_id!r} did not answer {name} in time") from e
        except ConnectionClosed as e:
            raise ChargerNotConnected(f"charger {device_id!r} disconnected during {name}") from e
        except Exception as e:
            # A CALLERROR from the charger, or a reply that fails the schema.
            raise CommandError(f"{name} failed on charger {device_id!r}: {e}") from e
        return {
            "device": device_id,
            "command": name,
            "ocpp_version": session.version,
            "result": commands.jsonable(response),
        }


def _request_of(command: Command) -> tuple[str, Mapping[str, object]]:
    """The OCPP command name and arguments that carry out a typed command."""
    match command:
        case DriverCommand(name=name, args=args):
            return name, args
        case SetChargingLimit() as limit:
            return "set_charging_profile", _limit_args(limit)
        case ClearChargingLimit(connector=connector, purpose=purpose, stack_level=stack_level):
            clear_args: dict[str, object] = {}
            if connector is not None:
                clear_args["connector"] = connector
            if purpose is not None:
                clear_args["purpose"] = _PURPOSE_KEYS[purpose]
            if stack_level is not None:
                clear_args["stack_level"] = stack_level
            return "clear_charging_profile", clear_args
        case StartCharging(id_tag=id_tag, connector=connector):
            start_args: dict[str, object] = {"id_tag": id_tag}
            if connector is not None:
                start_args["connector"] = connector
            return "remote_start", start_args
        case StopCharging():
            return "remote_stop", {}
    raise CommandError(f"{type(command).__name__} is not a command an OCPP charger takes")


# edged.api's purposes → the keys of drivers.ocpp.commands.PURPOSES_16 / PURPOSES_201.
_PURPOSE_KEYS = {"default": "tx_default", "tx": "tx", "station_max": "max"}


def _limit_args(limit: SetChargingLimit) -> dict[str, object]:
    """The set_charging_profile arguments of a typed charging limit."""
    args: dict[str, object] = {
        "limit": limit.limit,
        "unit": limit.unit,
        "purpose": _PURPOSE_KEYS[limit.purpose],
        "stack_level": limit.stack_level,
    }
    if limit.connector is not None:
        args["connector"] = limit.connector
    if limit.duration is not None:
        args["duration"] = limit.duration
    if limit.phases is not None:
        args["phases"] = limit.phases
    return args


def _tls_context(cfg: settings.OcppSettings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert cfg.tls_cert is not None
    ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return ctx


def _listening(cfg: settings.OcppSettings) -> tuple[object, ...]:
    """The settings the listening socket was opened with (a change needs a new socket)."""
    return (cfg.host, cfg.port, cfg.tls_cert, cfg.tls_key, cfg.max_message_size)


def _closed_by(ws: ServerConnection) -> str | None:
    """How a session closed: the close frame the server sent when it closed first (a charger
    that drops the line without answering would otherwise show as 1006), else the charger's."""
    sent, rcvd = ws.protocol.close_sent, ws.protocol.close_rcvd
    if sent is not None and (rcvd is None or ws.protocol.close_rcvd_then_sent is False):
        return f"closed by=server code={sent.code} reason={sent.reason or '-'}"
    if ws.close_code is None:
        return None
    return f"closed by=charger code={ws.close_code} reason={ws.close_reason or '-'}"


def _remote(ws: ServerConnection) -> str | None:
    addr = ws.remote_address
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return None


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
