"""The ``[[actions]]`` rules: read into frozen rules, then checked against the devices.

A rule names a condition (``[actions.when]``), what to do when it has held for a while
(``[[actions.then]]``) and, optionally, what to do when it clears (``[[actions.on_clear]]``)::

    [[actions]]
    name = "limit-wallbox"
    min_interval = 60               # s between two firings of this rule (default 0)

    [actions.when]
    point = "grid"                  # a device or virtual meter id
    quantity = "power_active"       # a canonical quantity the point serves
    above = 5000                    # or below = ..., between = [lo, hi]
    for = 5                         # s the condition must hold (default 0)
    clear = 4000                    # hysteresis: clears at or below 4000 W
    clear_for = 0                   # s the clear condition must hold (default 0)

    [[actions.then]]
    charger = "wallbox"
    limit = 6                       # A per phase (unit = "W" for watts); or stop / start

Other conditions: ``state = "stale"`` (no new value of ``quantity``, or of any quantity,
for ``max_age`` seconds), ``state = "offline"`` (the device is offline) and
``event = "licence_changed"`` (a gateway event; fires once per event). Other actions:
``event = "name"`` (published on ``<prefix>/<gateway>/events``) and ``modbus_write =
"device"`` with ``coil`` or ``register`` and ``value`` (or ``values``).

``parse`` checks everything that needs no driver (``edged.config`` calls it while
loading); ``check`` checks quantities and commands against what each device's driver
says it serves and takes (``edged.provisioning`` calls it once drivers are configured).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from edged.api import (
    Command,
    DeviceInfo,
    Options,
    SetChargingLimit,
    StartCharging,
    StopCharging,
    WriteRegister,
)
from edged.model import QUANTITIES, Source

ConditionKind = Literal["above", "below", "between", "stale", "offline", "event"]
ActionKind = Literal["event", "charger", "modbus_write"]

# Gateway events a rule may react to (edged.licence_watch publishes them).
EVENTS = ("licence_changed", "maintenance", "release_not_covered")
DEFAULT_MAX_AGE = 60.0
"""Seconds after which a value no longer counts as the present (and ``stale`` holds)."""

_VALUE_KINDS = ("above", "below", "between")
_CONDITION_KEYS = ("above", "below", "between", "state", "event")
# Quantities whose values cannot leave a range: a threshold outside it never triggers.
_RANGES = {"state_of_charge": (0.0, 100.0), "power_factor": (-1.0, 1.0)}
_RANGES.update({f"power_factor_l{n}": (-1.0, 1.0) for n in (1, 2, 3)})


@dataclass(frozen=True)
class Condition:
    """When a rule fires and when it clears.

    Value conditions: ``above`` fires when value > ``low`` and clears when value <=
    ``clear_low``; ``below`` fires when value < ``high`` and clears when value >=
    ``clear_high``; ``between`` fires when ``low`` <= value <= ``high`` and clears when the
    value leaves [``clear_low``, ``clear_high``]. Without a clear threshold the rule
    clears as soon as the condition is false.
    """

    kind: ConditionKind
    point: str | None = None
    quantity: str | None = None
    low: float | None = None
    high: float | None = None
    clear_low: float | None = None
    clear_high: float | None = None
    hold: float = 0.0
    clear_hold: float = 0.0
    max_age: float = DEFAULT_MAX_AGE
    event: str | None = None

    def active(self, value: float) -> bool:
        """True when a value meets the condition."""
        if self.kind == "above":
            assert self.low is not None
            return value > self.low
        if self.kind == "below":
            assert self.high is not None
            return value < self.high
        assert self.low is not None and self.high is not None
        return self.low <= value <= self.high

    def cleared(self, value: float) -> bool:
        """True when a value clears a fired rule (the hysteresis threshold is passed)."""
        if self.kind == "above":
            assert self.clear_low is not None
            return value <= self.clear_low
        if self.kind == "below":
            assert self.clear_high is not None
            return value >= self.clear_high
        assert self.clear_low is not None and self.clear_high is not None
        return value < self.clear_low or value > self.clear_high

    def describe(self) -> dict[str, object]:
        """The thresholds as key=value fields for log lines and events."""
        if self.kind == "above":
            return {"above": self.low, "clear": self.clear_low}
        if self.kind == "below":
            return {"below": self.high, "clear": self.clear_high}
        if self.kind == "between":
            return {
                "between": [self.low, self.high],
                "clear_below": self.clear_low,
                "clear_above": self.clear_high,
            }
        if self.kind == "stale":
            return {"state": "stale", "max_age": self.max_age}
        if self.kind == "offline":
            return {"state": "offline"}
        return {"event": self.event}


@dataclass(frozen=True)
class Action:
    """One thing a rule does: publish an event or send a command to a device."""

    kind: ActionKind
    source: Source
    device: str | None = None
    command: Command | None = None
    event: str | None = None

    def describe(self) -> str:
        """A short human-readable form for logs and status."""
        if self.kind == "event":
            return f"event {self.event}"
        c = self.command
        if isinstance(c, SetChargingLimit):
            return f"charger {self.device} limit {c.limit:g} {c.unit}"
        if isinstance(c, StopCharging):
            return f"charger {self.device} stop"
        if isinstance(c, StartCharging):
            return f"charger {self.device} start"
        if isinstance(c, WriteRegister):
            if c.coil is not None:
                return f"modbus {self.device} coil {c.address} = {str(c.coil).lower()}"
            vals = ",".join(str(v) for v in c.values)
            return f"modbus {self.device} register {c.address} = {vals}"
        return f"{self.kind} {self.device}"


@dataclass(frozen=True)
class Rule:
    """One ``[[actions]]`` table."""

    name: str
    when: Condition
    then: tuple[Action, ...]
    on_clear: tuple[Action, ...] = ()
    min_interval: float = 0.0
    source: Source = field(default_factory=lambda: Source(None, ""))

    @property
    def devices(self) -> frozenset[str]:
        """The devices the rule reads or commands."""
        ids = {a.device for a in (*self.then, *self.on_clear) if a.device is not None}
        if self.when.point is not None:
            ids.add(self.when.point)
        return frozenset(ids)


# -- structure -----------------------------------------------------------------------------


def parse(
    tables: Sequence[tuple[Mapping[str, Any], Source]], points: Iterable[str]
) -> tuple[Rule, ...]:
    """Read ``[[actions]]`` tables (with where each came from); ``points``: the metering points.

    Checks everything that needs no driver: keys, types, names, thresholds that can
    never be true, clear thresholds on the wrong side, unknown points and quantities.
    """
    known = tuple(points)
    rules: list[Rule] = []
    names: dict[str, Source] = {}
    for table, src in tables:
        rule = _rule(table, src, known)
        if rule.name in names:
            first = names[rule.name]
            raise src.error(
                "name", f"rule {rule.name!r} is defined twice (first in {first.file}, {first.key})"
            )
        names[rule.name] = src
        rules.append(rule)
    return tuple(rules)


def _rule(table: Mapping[str, Any], src: Source, points: Sequence[str]) -> Rule:
    o = Options(table, src)
    name = o.str("name")
    if not name or len(name) > 64 or not all(ch.isalnum() or ch in "_.-" for ch in name):
        raise o.error("name", "must be 1-64 letters, digits, '.', '_' or '-'")
    min_interval = o.float("min_interval", 0.0, min=0, max=86400 * 7)
    when_raw = o.raw("when")
    if not isinstance(when_raw, dict):
        raise o.error("when", "expected a table [actions.when] (point, quantity, above, ...)")
    when = _condition(Options(when_raw, Source(src.file, f"{src.key}.when")), points)
    then = _actions(o, src, "then", required=True)
    on_clear = _actions(o, src, "on_clear", required=False)
    if when.kind == "event" and on_clear:
        raise o.error("on_clear", "an event condition fires once per event and never clears")
    o.finish()
    return Rule(name, when, then, on_clear, min_interval, src)


def _condition(o: Options, points: Sequence[str]) -> Condition:
    given = [k for k in _CONDITION_KEYS if o.has(k)]
    if len(given) != 1:
        what = "none" if not given else ", ".join(given)
        raise o.error(
            given[1] if len(given) > 1 else "",
            f"needs exactly one of {', '.join(_CONDITION_KEYS)} (got {what})",
        )
    key = given[0]
    hold = o.float("for", 0.0, min=0, max=86400)
    if key == "event":
        event = o.choice("event", EVENTS)
        for k in (
            "point",
            "quantity",
            "for",
            "clear",
            "clear_below",
            "clear_above",
            "clear_for",
            "max_age",
        ):
            if o.has(k):
                raise o.error(k, "an event condition takes no point, quantity or thresholds")
        o.finish()
        return Condition("event", event=event, hold=0.0)
    point = o.str("point")
    if point not in points:
        near = difflib.get_close_matches(point, points, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise o.error(
            "point",
            f"no device or virtual meter {point!r} ({hint}known: {', '.join(points) or 'none'})",
        )
    if key == "state":
        state = o.choice("state", ("stale", "offline"))
        quantity = o.str("quantity", None) if state == "stale" else None
        if state == "offline" and o.has("quantity"):
            raise o.error("quantity", "an offline condition is about the device, not a quantity")
        if quantity is not None:
            _canonical(o, quantity)
        max_age = o.float("max_age", DEFAULT_MAX_AGE, min=0.1, max=86400 * 7)
        if state == "offline" and o.has("max_age"):
            raise o.error("max_age", "only a stale condition takes max_age")
        clear_hold = o.float("clear_for", 0.0, min=0, max=86400)
        _no_thresholds(o)
        o.finish()
        return Condition(state, point, quantity, hold=hold, clear_hold=clear_hold, max_age=max_age)
    quantity = o.str("quantity")
    _canonical(o, quantity)
    clear_hold = o.float("clear_for", 0.0, min=0, max=86400)
    max_age = o.float("max_age", DEFAULT_MAX_AGE, min=0.1, max=86400 * 7)
    lo_range, hi_range = _RANGES.get(quantity, (-math.inf, math.inf))
    if key == "above":
        above = o.float("above")
        if above >= hi_range:
            raise o.error(
                "above", f"{quantity} never exceeds {hi_range:g}: the condition can never be true"
            )
        for k in ("clear_below", "clear_above"):
            if o.has(k):
                raise o.error(
                    k, "an 'above' condition takes 'clear' (the value at or below which it clears)"
                )
        clear = o.float("clear", above)
        if clear > above:
            raise o.error(
                "clear",
                f"must be at most the 'above' threshold {above:g} (the rule clears when the "
                "value falls to it)",
            )
        o.finish()
        return Condition(
            "above",
            point,
            quantity,
            low=above,
            clear_low=clear,
            hold=hold,
            clear_hold=clear_hold,
            max_age=max_age,
        )
    if key == "below":
        below = o.float("below")
        if below <= lo_range:
            raise o.error(
                "below",
                f"{quantity} never falls below {lo_range:g}: the condition can never be true",
            )
        for k in ("clear_below", "clear_above"):
            if o.has(k):
                raise o.error(
                    k, "a 'below' condition takes 'clear' (the value at or above which it clears)"
                )
        clear = o.float("clear", below)
        if clear < below:
            raise o.error(
                "clear",
                f"must be at least the 'below' threshold {below:g} (the rule clears when the "
                "value rises to it)",
            )
        o.finish()
        return Condition(
            "below",
            point,
            quantity,
            high=below,
            clear_high=clear,
            hold=hold,
            clear_hold=clear_hold,
            max_age=max_age,
        )
    band = o.raw("between")
    if (
        not isinstance(band, list)
        or len(band) != 2
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in band
        )
    ):
        raise o.error("between", "expected two numbers [low, high]")
    low, high = float(band[0]), float(band[1])
    if low >= high:
        raise o.error(
            "between",
            f"[{low:g}, {high:g}] is empty: the condition can never be true (the low bound "
            "must be below the high one)",
        )
    if high < lo_range or low > hi_range:
        raise o.error(
            "between",
            f"{quantity} never lies in [{low:g}, {high:g}]: the condition can never be true",
        )
    if o.has("clear"):
        raise o.error("clear", "a 'between' condition takes clear_below and clear_above")
    clear_low = o.float("clear_below", low)
    clear_high = o.float("clear_above", high)
    if clear_low > low:
        raise o.error(
            "clear_below",
            f"must be at most the low bound {low:g}: the rule clears when the value falls below it",
        )
    if clear_high < high:
        raise o.error(
            "clear_above",
            f"must be at least the high bound {high:g} (the rule clears when the value "
            "rises above it)",
        )
    o.finish()
    return Condition(
        "between",
        point,
        quantity,
        low=low,
        high=high,
        clear_low=clear_low,
        clear_high=clear_high,
        hold=hold,
        clear_hold=clear_hold,
        max_age=max_age,
    )


def _no_thresholds(o: Options) -> None:
    for k in ("clear", "clear_below", "clear_above"):
        if o.has(k):
            raise o.error(k, "a state condition clears when the state ends; it takes no threshold")


def _canonical(o: Options, quantity: str) -> None:
    if quantity not in QUANTITIES:
        near = difflib.get_close_matches(quantity, list(QUANTITIES), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise o.error(
            "quantity",
            f"unknown quantity {quantity!r}: not a canonical quantity "
            f"(see edged.model.QUANTITIES){hint}",
        )


def _actions(o: Options, src: Source, key: str, *, required: bool) -> tuple[Action, ...]:
    raw = o.raw(key, None)
    if raw is None:
        if required:
            raise o.error(
                key,
                f"required: at least one [[actions.{key}]] table (event, charger or modbus_write)",
            )
        return ()
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise o.error(key, f"expected an array of tables [[actions.{key}]]")
    if required and not raw:
        raise o.error(key, "needs at least one action")
    return tuple(
        _action(Options(t, Source(src.file, f"{src.key}.{key}[{i}]"))) for i, t in enumerate(raw)
    )


def _action(o: Options) -> Action:
    kinds = [k for k in ("event", "charger", "modbus_write") if o.has(k)]
    if len(kinds) != 1:
        raise o.error(
            kinds[1] if len(kinds) > 1 else "",
            "needs exactly one of event, charger, modbus_write",
        )
    kind = kinds[0]
    if kind == "event":
        name = o.str("event")
        if not name or len(name) > 64:
            raise o.error("event", "must be a name of 1-64 characters")
        o.finish()
        return Action("event", o.source, event=name)
    if kind == "charger":
        device = o.str("charger")
        verbs = [k for k in ("limit", "stop", "start") if o.has(k)]
        if len(verbs) != 1:
            raise o.error(
                verbs[1] if len(verbs) > 1 else "charger", "needs exactly one of limit, stop, start"
            )
        command: Command
        if verbs[0] == "limit":
            unit = o.choice("unit", ("A", "W"), "A")
            limit = o.float("limit", min=0, max=1000 if unit == "A" else 1_000_000)
            connector = o.int("connector", None, min=1, max=64)
            command = SetChargingLimit(device, limit, unit, connector)
        elif verbs[0] == "stop":
            if o.bool("stop") is not True:
                raise o.error("stop", "write stop = true")
            command = StopCharging(device)
        else:
            if o.bool("start") is not True:
                raise o.error("start", "write start = true")
            connector = o.int("connector", None, min=1, max=64)
            command = StartCharging(device, o.str("id_tag", "edged"), connector)
        o.finish()
        return Action("charger", o.source, device, command)
    device = o.str("modbus_write")
    if o.has("coil") == o.has("register"):
        raise o.error(
            "register" if o.has("register") else "modbus_write",
            "needs exactly one of coil, register",
        )
    if o.has("coil"):
        address = o.int("coil", min=0, max=0xFFFF)
        state = o.bool("value")
        o.finish()
        return Action("modbus_write", o.source, device, WriteRegister(device, address, (), state))
    address = o.int("register", min=0, max=0xFFFF)
    if o.has("value") == o.has("values"):
        raise o.error("value", "needs exactly one of value (one register) or values (several)")
    if o.has("value"):
        words = [o.int("value", min=-0x8000, max=0xFFFF)]
    else:
        raw = o.raw("values")
        if (
            not isinstance(raw, list)
            or not 1 <= len(raw) <= 123
            or not all(
                isinstance(v, int) and not isinstance(v, bool) and -0x8000 <= v <= 0xFFFF
                for v in raw
            )
        ):
            raise o.error("values", "expected 1-123 integers (16-bit words, -32768..65535)")
        words = list(raw)
    if address + len(words) > 0x10000:
        raise o.error("register", f"{len(words)} registers from {address} run past 65535")
    o.finish()
    # Negative values are signed 16-bit words: send their two's complement.
    values = tuple(w & 0xFFFF for w in words)
    return Action("modbus_write", o.source, device, WriteRegister(device, address, values))


# -- against the devices -------------------------------------------------------------------

Describe = Callable[[str], tuple[str, DeviceInfo | None] | None]
"""device id -> (its driver's name, what the driver says about it), or None if not a device."""


def check(rules: Sequence[Rule], describe: Describe) -> None:
    """Check quantities and commands against what each device's driver serves and takes."""
    for rule in rules:
        cond = rule.when
        if cond.point is not None and cond.quantity is not None:
            found = describe(cond.point)
            info = found[1] if found is not None else None
            if (
                info is not None
                and info.quantities is not None
                and cond.quantity not in info.quantities
            ):
                src = Source(rule.source.file, f"{rule.source.key}.when")
                served = ", ".join(sorted(info.quantities)) or "none"
                raise src.error(
                    "quantity",
                    f"device {cond.point!r} does not serve {cond.quantity!r} "
                    f"(its profile serves: {served})",
                )
        if cond.kind == "offline" and cond.point is not None and describe(cond.point) is None:
            src = Source(rule.source.file, f"{rule.source.key}.when")
            raise src.error(
                "point", f"{cond.point!r} is a virtual meter: it has no device state to be offline"
            )
        for action in (*rule.then, *rule.on_clear):
            if action.kind != "event":
                _check_action(action, describe)


def _check_action(action: Action, describe: Describe) -> None:
    assert action.device is not None and action.command is not None
    key = action.kind
    found = describe(action.device)
    if found is None:
        raise action.source.error(key, f"no device {action.device!r}")
    driver, info = found
    takes = info.commands if info is not None else frozenset()
    command = action.command
    if type(command) not in takes:
        what = "charger commands" if action.kind == "charger" else "Modbus writes"
        raise action.source.error(
            key, f"device {action.device!r} (driver {driver}) cannot take {what}"
        )
    if isinstance(command, WriteRegister):
        assert info is not None
        if command.coil is not None:
            if command.address not in info.writable_coils:
                declared = _listing(info.writable_coils)
                raise action.source.error(
                    "coil",
                    f"coil {command.address} of device {action.device!r} is not declared "
                    f"writable (writable_coils: {declared})",
                )
        else:
            span = range(command.address, command.address + len(command.values))
            missing = [r for r in span if r not in info.writable_registers]
            if missing:
                declared = _listing(info.writable_registers)
                raise action.source.error(
                    "register",
                    f"register {missing[0]} of device {action.device!r} is not declared "
                    f"writable (writable_registers: {declared})",
                )


def _listing(addresses: frozenset[int]) -> str:
    return ", ".join(str(a) for a in sorted(addresses)) or "none"
