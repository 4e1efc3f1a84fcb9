"""The actions engine: evaluates rules on live values, fires and clears, runs the actions.

Rules are evaluated when a sample of their point arrives and on every tick (for held-for
times, staleness and device states). A firing or clearing is logged with the value that
caused it, counted (``fired``, ``cleared``, ``failed`` per rule) and its actions run in a
task of their own, one after the other: an event goes to the uplink's event queue, a
command through the driver that owns the device (``edged.api.Commandable``). A failing
action is retried under the shared reconnect policy (capped, jittered backoff) and, once
its first attempts are used up, reported once (log line, counter, ``edged status``, an
``action_failed`` event); it is then retried at the backoff maximum for as long as the
rule stays in that state, because giving up would leave a fired limit unsent while the
condition that asked for it still holds. When a device an action of the current state
commands comes back (its device state goes online again, or an OCPP charger's
``link_connects`` changes: it reconnected, and may have rebooted and lost its limits),
the current state's actions on that device run again at once. A newer transition of the
same rule supersedes the actions of the previous one still running, so a late retry never
undoes a clearing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edged.actions.config import Action, Rule
from edged.actions.machine import Machine, Reading, State, Transition
from edged.api import Command, refusal
from edged.errors import EdgedError
from edged.live import LiveValues
from edged.model import DeviceState, Sample, iso
from edged.reconnect import Reconnect

log = logging.getLogger("edged.actions")

RunCommand = Callable[[Command], Awaitable[Any]]
PublishEvent = Callable[[str, dict[str, object]], Awaitable[None]]
StateOf = Callable[[str], DeviceState | None]
Count = Callable[[str, str, int], None]
"""count(event, rule, n): add n to ``fired``, ``cleared`` or ``failed`` of a rule."""

ATTEMPTS = 5
"""Tries of one action before it is reported as failed (it is retried after that)."""
RETRY_INITIAL = 1.0
RETRY_MAX = 30.0
EVENT_KIND = "action"
FAILED_KIND = "action_failed"
LINK_CONNECTS = "link_connects"
"""Live value of an OCPP charger that counts its connections: a change is a reconnection."""


def _backoff() -> Reconnect:
    return Reconnect(RETRY_INITIAL, RETRY_MAX)


@dataclass
class RuleStatus:
    """What ``edged status`` shows of one rule."""

    rule: Rule
    machine: Machine
    last_value: float | None = None
    last_value_ts: float | None = None
    fired: int = 0
    cleared: int = 0
    failed: int = 0
    last_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    actions: tuple[Action, ...] = ()
    """The actions of the last transition: those the current state keeps in force."""
    fields: dict[str, object] = field(default_factory=dict, repr=False)
    """The last transition's log and event fields."""
    todo: list[int] = field(default_factory=list)
    """Indices into ``actions`` not done yet (in order)."""
    reported: set[int] = field(default_factory=set)
    """Indices into ``actions`` whose failure was reported (counted once per transition)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready status of the rule."""
        m = self.machine
        return {
            "name": self.rule.name,
            "state": m.state.value,
            "since": iso(m.since),
            "point": self.rule.when.point,
            "quantity": self.rule.when.quantity,
            "condition": self.rule.when.describe(),
            "last_value": self.last_value,
            "last_value_ts": None if self.last_value_ts is None else iso(self.last_value_ts),
            "last_fired": None if m.last_fired is None else iso(m.last_fired),
            "last_cleared": None if m.last_cleared is None else iso(m.last_cleared),
            "fired": self.fired,
            "cleared": self.cleared,
            "failed": self.failed,
            "last_error": self.last_error,
        }


class Engine:
    """Every configured rule, its state machine and its running actions."""

    def __init__(
        self,
        live: LiveValues,
        command: RunCommand,
        publish: PublishEvent,
        state_of: StateOf,
        count: Count,
        clock: Callable[[], float] = time.time,
        backoff: Callable[[], Reconnect] = _backoff,
        attempts: int = ATTEMPTS,
    ) -> None:
        self.live = live
        self._command = command
        self._publish = publish
        self._state_of = state_of
        self._count = count
        self.clock = clock
        self._backoff = backoff
        self._attempts = attempts
        self.rules: dict[str, RuleStatus] = {}
        self._by_point: dict[str, list[RuleStatus]] = {}
        self._seen: dict[str, tuple[DeviceState | None, float | None]] = {}
        """Device state and ``link_connects`` of every device an action commands."""
        self._started = clock()
        self._retired: set[asyncio.Task[None]] = set()
        """Tasks running the ``on_clear`` actions of removed rules."""

    # -- configuration ------------------------------------------------------------------------

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Take a (new) rule list (start, reload).

        A rule that still reads the same point and quantity with the same kind of condition
        keeps its state (new thresholds and times apply from the next evaluation; changed
        actions of its current state run). Any other change starts the rule idle,
        and a fired rule that is replaced or removed first runs its old ``on_clear``
        actions: nothing else would ever take its limit back.
        """
        now = self.clock()
        old = self.rules
        self.rules = {}
        for rule in rules:
            prev = old.pop(rule.name, None)
            if prev is not None and _same(prev.rule, rule):
                prev.rule = rule
                self.rules[rule.name] = prev
                continue
            if prev is not None and _same_reading(prev.rule, rule):
                self.rules[rule.name] = prev
                self._edit(prev, rule, now)
                continue
            for count in ("fired", "cleared", "failed"):
                self._count(count, rule.name, 0)  # the series exist at 0 from the start
            st = RuleStatus(
                rule, Machine(rule.when.hold, rule.when.clear_hold, rule.min_interval, now)
            )
            self.rules[rule.name] = st
            if prev is not None:
                self._retire(prev, "rule changed", now, into=st)
        for gone in old.values():
            self._retire(gone, "rule removed", now, into=None)
        self._by_point = {}
        for st in self.rules.values():
            if st.rule.when.point is not None:
                self._by_point.setdefault(st.rule.when.point, []).append(st)
        targets = {
            a.device
            for st in self.rules.values()
            for a in (*st.rule.then, *st.rule.on_clear)
            if a.device is not None
        }
        self._seen = {d: self._seen.get(d) or self._look(d) for d in sorted(targets)}

    def _edit(self, st: RuleStatus, rule: Rule, now: float) -> None:
        """A rule changed in thresholds, times or actions only: keep its state."""
        before = st.rule
        st.rule = rule
        m = st.machine
        m.hold, m.clear_hold, m.min_interval = (
            rule.when.hold,
            rule.when.clear_hold,
            rule.min_interval,
        )
        log.info("action rule changed rule=%s state=%s (state kept)", rule.name, m.state.value)
        if m.state in (State.ACTIVE, State.CLEARING):
            old_acts, new_acts = before.then, rule.then
        elif st.fields.get("transition") == Transition.CLEARED.value:
            old_acts, new_acts = before.on_clear, rule.on_clear
        else:
            return  # never fired, or an event rule: no state of actions to keep in force
        if _acts(old_acts) != _acts(new_acts):
            # The current state is the new rule's now: its actions must be the ones in force.
            fields = {**st.fields, "reason": "rule changed", "at": iso(now)}
            self._set_actions(st, new_acts, fields)

    def _retire(self, st: RuleStatus, reason: str, now: float, into: RuleStatus | None) -> None:
        """A rule replaced or removed: if it had fired, its ``on_clear`` actions run now."""
        _cancel(st)
        if st.machine.state not in (State.ACTIVE, State.CLEARING) or not st.rule.on_clear:
            return
        cond = st.rule.when
        fields: dict[str, object] = {
            "rule": st.rule.name,
            "transition": Transition.CLEARED.value,
            "point": cond.point,
            "quantity": cond.quantity,
            "reason": reason,
            "at": iso(now),
        }
        log.info(
            "action cleared %s",
            " ".join(f"{k}={_text(v)}" for k, v in fields.items() if v is not None),
        )
        st.cleared += 1
        self._count(Transition.CLEARED.value, st.rule.name, 1)
        # The replacing rule runs them, so its own next transition supersedes them; a
        # removed rule runs them alone (tried, reported, not retried without end).
        owner = into if into is not None else st
        self._set_actions(owner, st.rule.on_clear, fields)
        if into is None and st.task is not None:
            self._retired.add(st.task)
            st.task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        """Stop every action still running (shutdown)."""
        tasks = [st.task for st in self.rules.values() if st.task is not None]
        tasks.extend(self._retired)
        for st in self.rules.values():
            _cancel(st)
        for task in self._retired:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- evaluation ---------------------------------------------------------------------------

    def observe(self, sample: Sample) -> None:
        """A sample reached the live values: evaluate the rules on its point at once."""
        if sample.device_id in self._seen:
            self._watch(sample.device_id)
        rules = self._by_point.get(sample.device_id)
        if rules:
            now = self.clock()
            for st in rules:
                self._evaluate(st, now)

    def tick(self, now: float | None = None) -> None:
        """Evaluate every rule (held-for times run out, values go stale, devices go offline)."""
        now = self.clock() if now is None else now
        for device in self._seen:
            self._watch(device)
        for st in self.rules.values():
            if st.rule.when.kind != "event":
                self._evaluate(st, now)

    # -- devices commanded coming back --------------------------------------------------------

    def _look(self, device: str) -> tuple[DeviceState | None, float | None]:
        lv = self.live.get(device, LINK_CONNECTS)
        return self._state_of(device), None if lv is None else lv.value

    def _watch(self, device: str) -> None:
        """Run the current state's actions on a device again when it has come back."""
        before = self._seen.get(device)
        now = self._look(device)
        self._seen[device] = now
        if before is None:
            return
        online_again = now[0] is DeviceState.ONLINE and before[0] is not DeviceState.ONLINE
        reconnected = now[1] is not None and now[1] != before[1]
        if not (online_again or reconnected):
            return
        for st in self.rules.values():
            again = [i for i, a in enumerate(st.actions) if a.device == device]
            if not again:
                continue
            log.info(
                "action target back rule=%s transition=%s device=%s reason=%s actions=%d",
                st.rule.name,
                st.fields.get("transition"),
                device,
                "reconnected" if reconnected else "online",
                len(again),
            )
            st.todo = sorted({*st.todo, *again})
            self._start(st)

    def on_event(self, kind: str, body: Mapping[str, object]) -> None:
        """A gateway event (licence changed, maintenance ending, ...)."""
        now = self.clock()
        for st in self.rules.values():
            cond = st.rule.when
            if cond.kind == "event" and cond.event == kind and st.machine.pulse(now):
                self._transition(st, Transition.FIRED, now, {"event": kind, **body})

    def _evaluate(self, st: RuleStatus, now: float) -> None:
        reading, cause = self._read(st, now)
        transition = st.machine.step(now, reading)
        if transition is not None:
            self._transition(st, transition, now, cause)

    def _read(self, st: RuleStatus, now: float) -> tuple[Reading, dict[str, object]]:
        """What the present says about a rule's condition, and the values that say it."""
        cond = st.rule.when
        assert cond.point is not None
        if cond.kind == "offline":
            state = self._state_of(cond.point)
            offline = state is DeviceState.OFFLINE
            cause: dict[str, object] = {"device_state": None if state is None else state.value}
            return Reading(offline, not offline), cause
        if cond.kind == "stale":
            if cond.quantity is not None:
                lv = self.live.get(cond.point, cond.quantity)
                last = None if lv is None else lv.ts
            else:
                values = self.live.of(cond.point)
                last = max((v.ts for v in values.values()), default=None)
            # Never heard of: stale counts from the engine's start, not from 1970.
            age = now - (last if last is not None else self._started)
            stale = age > cond.max_age
            cause = {"age": round(age, 3), "last_value_ts": None if last is None else iso(last)}
            return Reading(stale, not stale), cause
        assert cond.quantity is not None
        lv = self.live.get(cond.point, cond.quantity)
        lost = self._lost(cond.point, lv.ts if lv is not None else None, cond.max_age, now)
        if lost is not None:
            return Reading.lost(cond.on_stale), {
                "value": None,
                "lost": lost,
                "on_stale": cond.on_stale,
            }
        if lv is None:
            return Reading.unknown(), {"value": None}  # none yet, not lost yet
        st.last_value, st.last_value_ts = lv.value, lv.ts
        return Reading(cond.active(lv.value), cond.cleared(lv.value)), {
            "value": lv.value,
            "value_ts": iso(lv.ts),
        }

    def _lost(self, point: str, ts: float | None, max_age: float, now: float) -> str | None:
        """Why a point's measurement is lost (None: it is not)."""
        state = self._state_of(point)
        if state is DeviceState.OFFLINE or state is DeviceState.STALE:
            return f"device {state.value}"
        if ts is None:
            # Never heard of: lost once max_age has passed since the engine's start.
            return "no value" if now - self._started > max_age else None
        if now - ts > max_age:
            return f"value older than {max_age:g} s"
        return None

    def _transition(
        self, st: RuleStatus, transition: Transition, now: float, cause: dict[str, object]
    ) -> None:
        rule = st.rule
        cond = rule.when
        fields: dict[str, object] = {
            "rule": rule.name,
            "transition": transition.value,
            "point": cond.point,
            "quantity": cond.quantity,
            **cause,
            **cond.describe(),
            "held": cond.hold if transition is Transition.FIRED else cond.clear_hold,
            "at": iso(now),
        }
        log.info(
            "action %s %s",
            transition.value,
            " ".join(f"{k}={_text(v)}" for k, v in fields.items() if v is not None),
        )
        if transition is Transition.FIRED:
            st.fired += 1
            actions = rule.then
        else:
            st.cleared += 1
            actions = rule.on_clear
        self._count(transition.value, rule.name, 1)
        # A newer transition supersedes what the previous one is still retrying.
        self._set_actions(st, actions, fields)

    def _set_actions(
        self, st: RuleStatus, actions: Sequence[Action], fields: dict[str, object]
    ) -> None:
        """Make these the actions in force for the rule's state and run them."""
        st.actions, st.fields = tuple(actions), fields
        st.todo, st.reported = list(range(len(actions))), set()
        self._start(st)

    def _start(self, st: RuleStatus) -> None:
        """(Re)start the task working through ``st.todo``; the one running is cancelled."""
        _cancel(st)
        if st.todo:
            st.task = asyncio.get_running_loop().create_task(
                self._run(st), name=f"action:{st.rule.name}"
            )

    # -- running actions ----------------------------------------------------------------------

    async def _run(self, st: RuleStatus) -> None:
        """Run the actions not done yet in order; keep retrying those that failed."""
        fields = st.fields
        for i in list(st.todo):
            action = st.actions[i]
            error = await self._attempt(st, action, fields)
            if error is None:
                st.todo.remove(i)
                continue
            st.last_error = f"{action.describe()}: {error}"
            if i not in st.reported:
                st.reported.add(i)
                await self._report(st, action, fields, error)
        # The rule still wants them: retry at the backoff maximum until they work or a
        # newer transition (or a device coming back) cancels this task.
        first = self._backoff()
        slow = Reconnect(first.maximum, first.maximum, jitter=first.jitter)
        while st.todo and self.rules.get(st.rule.name) is st:
            await asyncio.sleep(slow.failed())
            for i in list(st.todo):
                action = st.actions[i]
                error = await self._try(st, action, fields)
                if error is None:
                    st.todo.remove(i)
                    self._done(st, action, fields, "retry")
                    continue
                st.last_error = f"{action.describe()}: {error}"
                log.info(
                    "action still failing rule=%s transition=%s action=%r error=%s",
                    st.rule.name,
                    fields["transition"],
                    action.describe(),
                    error,
                )

    async def _report(
        self, st: RuleStatus, action: Action, fields: dict[str, object], error: str
    ) -> None:
        st.failed += 1
        self._count("failed", st.rule.name, 1)
        log.error(
            "action failed rule=%s transition=%s action=%r attempts=%d error=%s "
            "(retrying while the rule stays %s)",
            st.rule.name,
            fields["transition"],
            action.describe(),
            self._attempts,
            error,
            fields["transition"],
        )
        await self._publish(
            FAILED_KIND,
            {
                "rule": st.rule.name,
                "transition": fields["transition"],
                "action": action.describe(),
                "error": error,
            },
        )

    async def _try(self, st: RuleStatus, action: Action, fields: dict[str, object]) -> str | None:
        """Run one action once; None when it worked, else the error."""
        try:
            if action.kind == "event":
                await self._publish(EVENT_KIND, {**fields, "event": action.event})
            else:
                assert action.command is not None
                result = await self._command(action.command)
                declined = refusal(action.command, result)
                if declined is not None:
                    # The charger answered but did not do it: retried like any failure.
                    return f"refused by the device: {declined}"
        except EdgedError as exc:
            return str(exc)
        except (OSError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a driver bug must not end the rule's reporting
            log.error("action raised rule=%s", st.rule.name, exc_info=True)
            return f"{type(exc).__name__}: {exc}"
        return None

    def _done(
        self, st: RuleStatus, action: Action, fields: dict[str, object], attempt: object
    ) -> None:
        if st.last_error is not None and st.last_error.startswith(action.describe()):
            st.last_error = None
        log.info(
            "action done rule=%s transition=%s action=%r attempt=%s",
            st.rule.name,
            fields["transition"],
            action.describe(),
            attempt,
        )

    async def _attempt(
        self, st: RuleStatus, action: Action, fields: dict[str, object]
    ) -> str | None:
        """Run one action, retrying with backoff; None when it worked, else the last error."""
        policy = self._backoff()
        error = "not tried"
        for attempt in range(1, self._attempts + 1):
            policy.connecting()
            failure = await self._try(st, action, fields)
            if failure is None:
                policy.connected()
                self._done(st, action, fields, attempt)
                return None
            error = failure
            if attempt < self._attempts:
                delay = policy.failed(error)
                log.warning(
                    "action attempt failed rule=%s action=%r attempt=%d retry_in=%.1fs error=%s",
                    st.rule.name,
                    action.describe(),
                    attempt,
                    delay,
                    error,
                )
                st.last_error = f"{action.describe()}: {error} (retrying)"
                await asyncio.sleep(delay)
        return error

    # -- status -------------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Every rule's state for ``edged status``."""
        return [st.to_dict() for st in self.rules.values()]

    def states(self) -> dict[str, State]:
        """Each rule's state by name."""
        return {name: st.machine.state for name, st in self.rules.items()}


def _same(a: Rule, b: Rule) -> bool:
    """Equal rules apart from where they are written."""
    return _key(a) == _key(b)


def _same_reading(a: Rule, b: Rule) -> bool:
    """The same measurement read the same way: the state of one is the state of the other."""
    x, y = a.when, b.when
    return (x.kind, x.point, x.quantity, x.event) == (y.kind, y.point, y.quantity, y.event)


def _acts(actions: Sequence[Action]) -> tuple[object, ...]:
    return tuple((x.kind, x.device, x.command, x.event) for x in actions)


def _key(rule: Rule) -> tuple[object, ...]:
    return (rule.name, rule.when, _acts(rule.then), _acts(rule.on_clear), rule.min_interval)


def _cancel(st: RuleStatus) -> None:
    if st.task is not None and not st.task.done():
        st.task.cancel()
    st.task = None


def _text(v: object) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return ",".join(_text(x) for x in v)
    return str(v)
