"""The load management loop: live values in, charging limits out, fail-safe when blind.

Every tick (a quarter second) the controller reads what it needs and nothing else:

- each circuit meter's ``current_l1..3`` from the live values (a reading older than
  ``stale_after`` seconds, or a meter the supervisor does not see online, puts that circuit
  and every circuit below it in **fail-safe**);
- each charger's state (online or not), ``session_active`` and per-phase draw.

It works out each circuit's budget (limit - what is not a controlled charger - margin),
shares it with ``allocate`` and sends the result as charging limits through the typed
``SetChargingLimit`` command (``edged.api``), one charger at a time per charger:

1. on every (re)connection **first** a default profile at the safe current (stack level
   0, no end): the charger falls back to it on its own whenever nothing above it holds;
2. then its share as a stack level 1 profile with a ``lease`` (duration), renewed at half
   the lease. A gateway that dies stops renewing: the charger drops back to the safe
   current by itself after the lease, never to an unlimited one.

Smoothing: a lower limit goes out at once (a little lower still, by half the dead band, so
noise does not make it go out again); a higher one only when it is at least ``dead_band``
higher, ``min_interval`` after that charger's last change and ``raise_delay`` after any
charger was lowered (lowered chargers act first). Idle chargers are held at 0 A, so a car
that arrives draws nothing until it has its share.

Chargers the controller cannot steer are counted as load it cannot change: a charger that
refused a profile (or failed three times in a row) at its maximum current, and is reported;
a charger that is not connected at its maximum, or — when it carries our default profile —
at the safe current or its last leased limit while that lease runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edged.api import ClearChargingLimit, Command, SetChargingLimit, refusal
from edged.live import LiveValues
from edged.loadmgmt.allocate import (
    PHASES,
    Budget,
    CircuitLoad,
    Demand,
    allocate,
    budgets,
)
from edged.loadmgmt.config import ChargerRef, Circuit, LoadManagementConfig
from edged.model import DeviceState

log = logging.getLogger("edged.loadmgmt")

TICK = 0.25
"""Seconds between two looks at the live values."""
FAILURES_BEFORE_REJECTED = 3
"""Failed profile commands in a row after which a charger counts as not accepting them."""
RETRY_REJECTED = 60.0
"""Seconds between two tries to give a refusing charger its default profile again."""
RETRY_FAILED = 2.0
"""Seconds before a failed command is tried again."""
TAKES_SLACK = 2.0
"""A car drawing this much (A) less than its limit takes less than offered; it is then
counted at what it takes plus half of this."""
AT_LIMIT = 0.25
"""A car drawing within this (A) of its limit is held back by it: it may want more."""
DRAW_FRESH = 30.0
"""A charger's reported draw older than this is not trusted (taken as 0: conservative)."""

Send = Callable[[Command], Awaitable[Any]]
StateOf = Callable[[str], DeviceState | None]


class Gauges(Protocol):
    """Where the controller puts its gauges and counters (``edged.metrics.Metrics``)."""

    def set_gauge(self, name: str, value: float, /, **labels: str) -> None:
        """Set a labelled gauge."""

    def clear_gauge(self, name: str) -> None:
        """Drop every series of a gauge."""

    def count(self, event: str, driver: str, device_id: str | None = None, n: int = 1) -> None:
        """Count an event."""


@dataclass
class _ChargerState:
    ref: ChargerRef
    circuit: str
    connected: bool = False
    default_ok: bool = False
    """Our default profile is on the charger (for this connection)."""
    rejected: str | None = None
    failures: int = 0
    retry_at: float = 0.0
    sent: float | None = None
    """The stack level 1 limit the charger accepted last."""
    before: float | None = None
    """The limit before the last change (the car may still draw it for a while)."""
    sent_at: float = -math.inf
    changed_at: float = -math.inf
    changed_for: str = ""
    """Why the limit changed last (``idle``: a session may start at once)."""
    session: bool = False
    session_since: float = 0.0
    target: float = 0.0
    share: float = 0.0
    reason: str = ""
    busy: bool = False
    cleared: bool = False
    links: float | None = None
    takes: float | None = None
    """What the car takes when it takes clearly less than offered (None: up to the max)."""
    """The driver's count of this charger's connections, when it reports one."""


@dataclass
class _CircuitState:
    circuit: Circuit
    mode: str = "fail-safe"
    why: str = "starting"
    measured: tuple[float, float, float] | None = None
    measured_at: float | None = None
    base: tuple[float, float, float] | None = None
    """The estimate of what is not a charger (kept while chargers follow a change)."""
    available: tuple[float, float, float] | None = None
    available_power: float | None = None


class Controller:
    """Shares circuit capacity among charging sessions through OCPP charging limits."""

    def __init__(
        self,
        config: LoadManagementConfig,
        live: LiveValues,
        state_of: StateOf,
        send: Send,
        metrics: Gauges | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.live = live
        self.state_of = state_of
        self.send = send
        self.metrics = metrics
        self.clock = clock
        self.config = config
        self.chargers: dict[str, _ChargerState] = {}
        self.circuits: dict[str, _CircuitState] = {}
        self.profiles_sent = 0
        self.last_lowered = -math.inf
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self.reconfigure(config)

    # -- in the daemon ---------------------------------------------------------------------

    def apply(self, config: LoadManagementConfig) -> None:
        """Start (with circuits), reconfigure or stop (without) the loop; call on the loop."""
        self.reconfigure(config)
        if config.circuits and self._loop is None:
            self._loop = asyncio.create_task(self.run(), name="loadmgmt")
        elif not config.circuits and self._loop is not None:
            self._loop.cancel()
            self._loop = None
            log.info("load management stopped: no circuits configured")

    async def stop(self) -> None:
        """Stop the loop (the chargers fall back to their default profile after the lease)."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None

    # -- configuration ---------------------------------------------------------------------

    def reconfigure(self, config: LoadManagementConfig) -> None:
        """Take a new configuration (reload); chargers and circuits that stay keep their state."""
        self.config = config
        old_chargers, old_circuits = self.chargers, self.circuits
        self.circuits = {}
        for c in config.circuits:
            kept = old_circuits.get(c.name)
            self.circuits[c.name] = _CircuitState(c) if kept is None else _keep_circuit(kept, c)
        self.chargers = {}
        for c, ref in config.chargers():
            prev = old_chargers.get(ref.key)
            st = _ChargerState(ref, c.name) if prev is None else prev
            st.ref, st.circuit = ref, c.name
            self.chargers[ref.key] = st
        if self.metrics is not None:
            for name in (
                "loadmgmt_allocated",
                "loadmgmt_circuit_limit",
                "loadmgmt_circuit_measured",
                "loadmgmt_mode",
            ):
                self.metrics.clear_gauge(name)

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Decide and send every tick until cancelled."""
        log.info(
            "load management started circuits=%d chargers=%d enabled=%s",
            len(self.circuits),
            len(self.chargers),
            self.config.settings.enabled,
        )
        try:
            while True:
                try:
                    self.step()
                except Exception:  # a bug must not leave the chargers unwatched for good
                    log.exception("load management step failed")
                await asyncio.sleep(TICK)
        finally:
            await self.close()

    async def close(self) -> None:
        """Cancel commands in flight."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until no command is in flight (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def step(self) -> None:
        """One decision: read, share, send what changed."""
        now = self.clock()
        self._read_chargers(now)
        if not self.config.settings.enabled:
            self._switch_off()
            return
        self._read_circuits(now)
        self._share(now)
        for st in self.chargers.values():
            self._drive(st, now)
        self._gauges()

    # -- reading ---------------------------------------------------------------------------

    def _read_chargers(self, now: float) -> None:
        for st in self.chargers.values():
            online = self.state_of(st.ref.device) is DeviceState.ONLINE
            # A charger that rebooted may be back before its old link was seen to drop: the
            # driver's connection counter tells (its profiles may be gone with the reboot).
            links = self.live.get(st.ref.device, "link_connects")
            count = None if links is None else links.value
            relinked = st.connected and None not in (count, st.links) and count != st.links
            st.links = count
            if online and (not st.connected or relinked):
                log.info("loadmgmt charger connected charger=%s: default profile first", st.ref.key)
                st.default_ok, st.sent, st.failures, st.retry_at = False, None, 0, 0.0
                st.rejected, st.cleared = None, False
            elif st.connected and not online:
                log.info("loadmgmt charger disconnected charger=%s", st.ref.key)
            st.connected = online
            active = self.live.get(st.ref.device, "session_active")
            # No session information at all: assume a session (it is then counted).
            session = active is None or active.value >= 0.5
            if session and not st.session:
                st.session_since = now if active is not None else 0.0
                if active is not None:
                    log.info("loadmgmt session started charger=%s", st.ref.key)
            elif st.session and not session:
                if st.session_since:  # not the session assumed before the charger said
                    log.info("loadmgmt session ended charger=%s", st.ref.key)
                st.takes = None
            st.session = session

    def _read_circuits(self, now: float) -> None:
        s = self.config.settings
        own: dict[str, tuple[str, str]] = {}
        for cs in self.circuits.values():
            c = cs.circuit
            mode, why = "normal", ""
            if c.meter is not None:
                values = [self.live.get(c.meter, f"current_l{p}") for p in PHASES]
                state = self.state_of(c.meter)
                present = [v for v in values if v is not None]
                if len(present) < 3:
                    cs.measured, cs.measured_at, cs.base = None, None, None
                    mode, why = "fail-safe", f"meter {c.meter} has no current_l1..3 reading"
                else:
                    cs.measured = (
                        abs(present[0].value),
                        abs(present[1].value),
                        abs(present[2].value),
                    )
                    cs.measured_at = min(v.ts for v in present)
                    age = now - cs.measured_at
                    if age > s.stale_after:
                        mode, why = "fail-safe", f"meter {c.meter} reading is {age:.1f} s old"
                    elif state is not DeviceState.ONLINE:
                        state_name = state.value if state is not None else "unknown"
                        mode, why = "fail-safe", f"meter {c.meter} is {state_name}"
            own[c.name] = (mode, why)
        # A circuit is blind when its own meter or any meter above it is.
        for cs in self.circuits.values():
            mode, why = own[cs.circuit.name]
            parent = cs.circuit.parent
            while mode == "normal" and parent is not None and parent in self.circuits:
                pmode, pwhy = own[parent]
                if pmode != "normal":
                    mode, why = pmode, f"circuit {parent}: {pwhy}"
                parent = self.circuits[parent].circuit.parent
            if mode != cs.mode:
                if mode == "normal":
                    meter = cs.circuit.meter
                    log.warning(
                        "loadmgmt circuit=%s mode=normal (%s)",
                        cs.circuit.name,
                        f"meter {meter} reads" if meter else "no meter: its limit alone",
                    )
                else:
                    log.warning(
                        "loadmgmt circuit=%s mode=fail-safe reason=%s: chargers to the safe "
                        "current %g A",
                        cs.circuit.name,
                        why,
                        s.safe_current,
                    )
            cs.mode, cs.why = mode, why

    def _draw_bounds(self, st: _ChargerState, now: float) -> tuple[list[float], list[float]]:
        """Lowest and highest a charger may draw now, per phase.

        Outside a change both are the point estimate of ``_draw``. After its limit changed,
        until the charger reports a reading taken ``raise_delay`` seconds later (at most
        twice ``raise_delay``), the car may draw anything between the old and the new
        limit while the report says otherwise: the bounds widen to both limits (unless the
        car draws clearly less than either, or left: then the change does not move it).
        The window is short on purpose: while it lasts, other loads that come up by less
        than the change are seen only when it ends.
        """
        low = list(self._draw(st, now))
        high = list(low)
        old, new = st.before, st.sent
        followed = st.changed_at + self.config.settings.raise_delay
        reports = [self.live.get(st.ref.device, f"current_l{p}") for p in PHASES]
        reported = max((lv.ts for lv in reports if lv is not None), default=-math.inf)
        settling = (
            st.session
            and reported < followed
            and now - st.changed_at < 2 * self.config.settings.raise_delay
        )
        if settling and old is not None and new is not None:
            for p in st.ref.phases:
                if low[p - 1] >= min(old, new) - 1.0:
                    low[p - 1] = min(low[p - 1], old, new)
                    high[p - 1] = max(high[p - 1], old, new)
        return low, high

    def _draw(self, st: _ChargerState, now: float) -> tuple[float, float, float]:
        """What a charger draws per phase, as low as it may be (conservative for the base)."""
        active = self.live.get(st.ref.device, "session_active")
        if active is not None and active.value < 0.5:
            return (0.0, 0.0, 0.0)  # no session, no car drawing: whatever the last report said
        values = []
        for p in PHASES:
            lv = self.live.get(st.ref.device, f"current_l{p}")
            fresh = lv is not None and now - lv.ts <= DRAW_FRESH
            values.append(abs(lv.value) if lv is not None and fresh else 0.0)
        if len(st.ref.phases) == 1:
            # A 1-phase charger's meter may call its phase L1 whatever it is wired to.
            (phase,) = st.ref.phases
            total = sum(values)
            values = [total if p == phase else 0.0 for p in PHASES]
        if st.connected and st.default_ok and st.sent is not None and not st.rejected:
            # A limit just lowered: the draw reported before it is more than will be.
            values = [min(v, st.sent) for v in values]
        return (values[0], values[1], values[2])

    # -- deciding --------------------------------------------------------------------------

    def _controllable(self, st: _ChargerState) -> bool:
        return st.connected and st.default_ok and st.rejected is None

    def _reserved(self, st: _ChargerState, now: float) -> float:
        """Current a charger may draw that the controller cannot change (0: controllable)."""
        s = self.config.settings
        if st.rejected is not None:
            return st.ref.max_current
        if not st.connected:
            if not st.default_ok:
                return st.ref.max_current  # not ours: whatever it was told before
            leased = st.sent if st.sent is not None and now < st.sent_at + s.lease else 0.0
            return max(s.safe_current, leased)
        if not st.default_ok:
            # Connected, default profile not yet confirmed: it may still draw anything.
            return st.ref.max_current
        return 0.0

    def _share(self, now: float) -> None:
        s = self.config.settings
        reserved: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in self.circuits}
        # What the chargers below each circuit draw: at least / at most, per phase.
        draws_low: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in self.circuits}
        draws_high: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in self.circuits}
        demands: list[Demand] = []
        for st in self.chargers.values():
            cs = self.circuits[st.circuit]
            low, high = self._draw_bounds(st, now)
            # Every circuit above counts the draw (the meters measure it all).
            name: str | None = st.circuit
            while name is not None and name in draws_low:
                draws_low[name] = [a + b for a, b in zip(draws_low[name], low, strict=True)]
                draws_high[name] = [a + b for a, b in zip(draws_high[name], high, strict=True)]
                name = self.circuits[name].circuit.parent
            fixed = self._reserved(st, now)
            if fixed == 0.0 and cs.mode != "normal":
                fixed = s.safe_current
                st.target, st.share, st.reason = s.safe_current, 0.0, "fail-safe"
            elif fixed == 0.0 and st.session:
                self._update_demand(st, now)
                wants = st.ref.max_current if st.takes is None else st.takes
                demands.append(
                    Demand(st.ref.key, st.circuit, st.ref.phases, wants, st.session_since)
                )
                continue
            elif fixed == 0.0:
                st.target, st.share, st.reason = 0.0, 0.0, "idle"
                continue
            else:
                st.target, st.share = s.safe_current, 0.0
                st.reason = "rejected" if st.rejected else "not controlled"
            for p in st.ref.phases:
                reserved[st.circuit][p - 1] += fixed
        loads = []
        for name, cs in self.circuits.items():
            c = cs.circuit
            base = None
            if c.meter is not None and cs.measured is not None:
                base = self._base(cs, draws_low[name], draws_high[name])
            loads.append(
                CircuitLoad(
                    name,
                    c.parent,
                    c.max_current,
                    c.max_power,
                    c.margin,
                    base,
                    (reserved[name][0], reserved[name][1], reserved[name][2]),
                )
            )
        result: list[Budget] = budgets(loads, s.voltage)
        for b in result:
            cs = self.circuits[b.name]
            cs.available, cs.available_power = b.available, b.available_power
        # Sessions under a fail-safe circuit were not made demands; the rest share.
        alloc = allocate(result, demands, s.min_current)
        for d in demands:
            st = self.chargers[d.id]
            share = alloc.current[d.id]
            st.share = share
            st.target = share
            st.reason = "paused" if d.id in alloc.paused else "share"

    def _update_demand(self, st: _ChargerState, now: float) -> None:
        """Hand a car's unused share to the others; give it back when it wants more.

        A car that, in a report taken after it had time to follow its limit, draws clearly
        less than that limit (a full battery, a small on-board charger) is counted at what
        it takes plus a little; one that draws its whole limit again may have its full
        share back. The limit sent is always what it may draw, so this is never unsafe.
        """
        s = self.config.settings
        if st.sent is None or st.sent <= 0:
            return
        reports = [self.live.get(st.ref.device, f"current_l{p}") for p in PHASES]
        fresh = [lv for lv in reports if lv is not None and now - lv.ts <= DRAW_FRESH]
        if not fresh or max(lv.ts for lv in fresh) < st.changed_at + s.raise_delay:
            return  # no report since the car could have followed its limit
        drawn = max(abs(lv.value) for lv in fresh)
        if len(st.ref.phases) == 1:
            drawn = sum(abs(lv.value) for lv in fresh)
        if drawn >= st.sent - AT_LIMIT:
            if st.takes is not None:
                log.info("loadmgmt charger=%s takes its whole limit again", st.ref.key)
            st.takes = None
        elif drawn < st.sent - TAKES_SLACK and st.sent >= s.min_current:
            takes = max(s.min_current, min(st.ref.max_current, drawn + TAKES_SLACK / 2))
            if st.takes is None or abs(takes - st.takes) >= s.dead_band:
                log.info(
                    "loadmgmt charger=%s car takes %.1f A of %g A: the rest goes to others",
                    st.ref.key,
                    drawn,
                    st.sent,
                )
                st.takes = takes

    def _base(
        self, cs: _CircuitState, low: list[float], high: list[float]
    ) -> tuple[float, float, float]:
        """The load on a measured circuit that is not a charger, per phase.

        The meter reading less what the chargers draw lies between ``measured - high`` and
        ``measured - low``. Outside a change of our own both are the same; while chargers
        follow a new limit the estimate stays where it was as long as the reading allows
        it, so our own changes are not mistaken for other loads coming and going (which
        would make every other charger follow them).
        """
        assert cs.measured is not None
        out = []
        for p in range(3):
            least = max(0.0, cs.measured[p] - high[p])
            most = max(0.0, cs.measured[p] - low[p])
            prev = cs.base[p] if cs.base is not None else most
            out.append(min(max(prev, least), most))
        cs.base = (out[0], out[1], out[2])
        return cs.base

    # -- sending ---------------------------------------------------------------------------

    def _drive(self, st: _ChargerState, now: float) -> None:
        """Start the one command this charger needs next, if any."""
        if st.busy or not st.connected or now < st.retry_at:
            return
        s = self.config.settings
        if not st.default_ok:
            cmd: Command = SetChargingLimit(
                st.ref.device,
                s.safe_current,
                connector=st.ref.connector,
                purpose="default",
                stack_level=0,
                phases=len(st.ref.phases),
            )
            self._spawn(st, cmd, "default", s.safe_current)
            return
        if st.rejected is not None:
            return
        target = st.target
        mode_safe = st.reason == "fail-safe"
        sent = st.sent
        if sent is None:
            self._spawn_limit(st, target, "first", now)
        elif target < sent - 1e-6:
            lower = target
            if target >= s.min_current + s.dead_band / 2 and not mode_safe:
                lower = target - s.dead_band / 2
            self._spawn_limit(st, lower, "lower", now)
        elif target > sent + 1e-6 and (mode_safe or self._may_raise(st, target, now)):
            self._spawn_limit(st, target, "raise", now)
        elif now - st.sent_at >= s.lease / 2:
            self._spawn_limit(st, sent, "renew", now)

    def _may_raise(self, st: _ChargerState, target: float, now: float) -> bool:
        s = self.config.settings
        assert st.sent is not None
        # A session that starts on an idle charger is no flapping: no interval to wait.
        interval = 0.0 if st.sent == 0.0 and st.changed_for == "idle" else s.min_interval
        return (
            (target >= st.sent + s.dead_band or st.sent == 0.0)
            and now - st.changed_at >= interval
            and now - self.last_lowered >= s.raise_delay
        )

    def _spawn_limit(self, st: _ChargerState, limit: float, why: str, now: float) -> None:
        s = self.config.settings
        # Limits go out with one decimal (the OCPP schemas): rounded down, never above a share.
        limit = math.floor(limit * 10 + 1e-6) / 10
        cmd = SetChargingLimit(
            st.ref.device,
            limit,
            connector=st.ref.connector,
            purpose="default",
            stack_level=1,
            duration=s.lease,
            phases=len(st.ref.phases),
        )
        if why == "lower":
            self.last_lowered = now
        self._spawn(st, cmd, why, limit)

    def _spawn(self, st: _ChargerState, cmd: Command, why: str, limit: float) -> None:
        st.busy = True
        task = asyncio.create_task(self._send(st, cmd, why, limit), name=f"loadmgmt:{st.ref.key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, st: _ChargerState, cmd: Command, why: str, limit: float) -> None:
        reason = st.reason  # what the limit was decided for (it may change meanwhile)
        available = self.circuits[st.circuit].available
        left = "-" if available is None else "/".join(f"{v:.1f}" for v in available)
        try:
            declined: str | None
            try:
                result = await self.send(cmd)
                declined = refusal(cmd, result)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the driver says why: not connected, timeout, error
                self._failed(st, cmd, str(exc))
                return
            if declined is not None:
                self._refused(st, declined)
                return
            self.profiles_sent += 1
            if self.metrics is not None:
                self.metrics.count("loadmgmt_profiles", "loadmgmt", st.ref.device)
            now = self.clock()
            st.failures = 0
            if isinstance(cmd, SetChargingLimit) and cmd.stack_level == 0:
                st.default_ok = True
                log.info(
                    "loadmgmt default profile charger=%s limit=%g A (fallback)",
                    st.ref.key,
                    limit,
                )
                return
            if isinstance(cmd, ClearChargingLimit):
                st.cleared = True
                return
            if why != "renew":
                log.info(
                    "loadmgmt limit charger=%s limit=%g A was=%s reason=%s circuit=%s "
                    "left=%s A lease=%g s",
                    st.ref.key,
                    limit,
                    "-" if st.sent is None else f"{st.sent:g}",
                    reason,
                    st.circuit,
                    left,
                    self.config.settings.lease,
                )
                st.changed_at, st.changed_for, st.before = now, reason, st.sent
            st.sent, st.sent_at = limit, now
        finally:
            st.busy = False

    def _failed(self, st: _ChargerState, cmd: Command, error: str) -> None:
        st.failures += 1
        st.retry_at = self.clock() + RETRY_FAILED
        if st.failures >= FAILURES_BEFORE_REJECTED and st.connected and st.rejected is None:
            self._refused(st, f"{st.failures} failures in a row, last: {error}")
        else:
            log.info("loadmgmt command failed charger=%s error=%s", st.ref.key, error)

    def _refused(self, st: _ChargerState, why: str) -> None:
        if st.rejected is None:
            log.warning(
                "loadmgmt charger=%s does not accept charging profiles (%s): counted at its "
                "maximum %g A as load that cannot be steered",
                st.ref.key,
                why,
                st.ref.max_current,
            )
        st.rejected = why
        st.default_ok = False
        st.retry_at = self.clock() + RETRY_REJECTED

    def _switch_off(self) -> None:
        """Management switched off: remove the profiles edged set, once per connection."""
        for st in self.chargers.values():
            if st.connected and not st.cleared and not st.busy:
                cmd = ClearChargingLimit(st.ref.device, connector=st.ref.connector)
                self._spawn(st, cmd, "clear", 0.0)

    # -- visibility ------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Each circuit: limits, measurement, mode and what its chargers are given."""
        now = self.clock()
        out = []
        for name, cs in self.circuits.items():
            c = cs.circuit
            chargers = []
            for st in self.chargers.values():
                if st.circuit != name:
                    continue
                chargers.append(
                    {
                        "charger": st.ref.key,
                        "phases": "".join(f"L{p}" for p in sorted(st.ref.phases)),
                        "connected": st.connected,
                        "session": st.session,
                        "state": self._charger_state(st),
                        "allocated": round(st.target, 1),
                        "limit_sent": st.sent,
                        "per_phase": [
                            round(st.target, 1) if p in st.ref.phases else 0.0 for p in PHASES
                        ],
                        "max_current": st.ref.max_current,
                        "rejected": st.rejected,
                    }
                )
            out.append(
                {
                    "name": name,
                    "parent": c.parent,
                    "mode": cs.mode if self.config.settings.enabled else "off",
                    "reason": cs.why or None,
                    "max_current": c.max_current,
                    "max_power": c.max_power,
                    "meter": c.meter,
                    "measured": None if cs.measured is None else [round(v, 1) for v in cs.measured],
                    "measured_age": None
                    if cs.measured_at is None
                    else round(now - cs.measured_at, 1),
                    "available": None
                    if cs.available is None
                    else [round(v, 1) for v in cs.available],
                    "chargers": chargers,
                }
            )
        return out

    def _charger_state(self, st: _ChargerState) -> str:
        if not st.connected:
            return "offline"
        if st.rejected is not None:
            return "rejected"
        if st.reason == "fail-safe":
            return "fail-safe"
        if not st.session:
            return "idle"
        return "paused" if st.target == 0 else "charging"

    def _gauges(self) -> None:
        m = self.metrics
        if m is None:
            return
        for name, cs in self.circuits.items():
            m.set_gauge("loadmgmt_mode", 1.0 if cs.mode == "fail-safe" else 0.0, circuit=name)
            for p in PHASES:
                phase = f"L{p}"
                limit = cs.circuit.max_current
                m.set_gauge(
                    "loadmgmt_circuit_limit",
                    math.nan if limit is None else limit,
                    circuit=name,
                    phase=phase,
                )
                measured = cs.measured[p - 1] if cs.measured is not None else math.nan
                m.set_gauge("loadmgmt_circuit_measured", measured, circuit=name, phase=phase)
        for st in self.chargers.values():
            for p in PHASES:
                m.set_gauge(
                    "loadmgmt_allocated",
                    st.target if p in st.ref.phases else 0.0,
                    circuit=st.circuit,
                    charger=st.ref.key,
                    phase=f"L{p}",
                )


def _keep_circuit(st: _CircuitState, c: Circuit) -> _CircuitState:
    st.circuit = c
    return st
