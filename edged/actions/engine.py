"""The actions engine: evaluates rules on live values, fires and clears, runs the actions.

Rules are evaluated when a sample of their point arrives and on every tick (for held-for
times, staleness and device states). A firing or clearing is logged with the value that
caused it, counted (``fired``, ``cleared``, ``failed`` per rule) and its actions run in a
task of their own, one after the other: an event goes to the uplink's event queue, a
command through the driver that owns the device (``edged.api.Commandable``). A failing
action is retried under the shared reconnect policy (capped, jittered backoff) and, once
its attempts are used up, reported (log line, counter, ``edged status``, an
``action_failed`` event). A newer transition of the same rule supersedes the actions of
the previous one still running, so a late retry never undoes a clearing.
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
from edged.api import Command
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
"""Tries of one action before it is reported as failed."""
RETRY_INITIAL = 1.0
RETRY_MAX = 30.0
EVENT_KIND = "action"
FAILED_KIND = "action_failed"


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
        self._started = clock()

    # -- configuration ------------------------------------------------------------------------

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Take a (new) rule list; an unchanged rule keeps its state, a changed one starts idle."""
        now = self.clock()
        old = self.rules
        self.rules = {}
        for rule in rules:
            prev = old.pop(rule.name, None)
            if prev is not None and _same(prev.rule, rule):
                prev.rule = rule
                self.rules[rule.name] = prev
                continue
            if prev is not None:
                _cancel(prev)
            for count in ("fired", "cleared", "failed"):
                self._count(count, rule.name, 0)  # the series exist at 0 from the start
            self.rules[rule.name] = RuleStatus(
                rule, Machine(rule.when.hold, rule.when.clear_hold, rule.min_interval, now)
            )
        for gone in old.values():
            _cancel(gone)
        self._by_point = {}
        for st in self.rules.values():
            if st.rule.when.point is not None:
                self._by_point.setdefault(st.rule.when.point, []).append(st)

    async def close(self) -> None:
        """Stop every action still running (shutdown)."""
        tasks = [st.task for st in self.rules.values() if st.task is not None]
        for st in self.rules.values():
            _cancel(st)
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- evaluation ---------------------------------------------------------------------------

    def observe(self, sample: Sample) -> None:
        """A sample reached the live values: evaluate the rules on its point at once."""
        rules = self._by_point.get(sample.device_id)
        if rules:
            now = self.clock()
            for st in rules:
                self._evaluate(st, now)

    def tick(self, now: float | None = None) -> None:
        """Evaluate every rule (held-for times run out, values go stale, devices go offline)."""
        now = self.clock() if now is None else now
        for st in self.rules.values():
            if st.rule.when.kind != "event":
                self._evaluate(st, now)

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
        if lv is None or now - lv.ts > cond.max_age:
            return Reading.unknown(), {"value": None}
        st.last_value, st.last_value_ts = lv.value, lv.ts
        return Reading(cond.active(lv.value), cond.cleared(lv.value)), {
            "value": lv.value,
            "value_ts": iso(lv.ts),
        }

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
        _cancel(st)
        if actions:
            st.task = asyncio.get_running_loop().create_task(
                self._run(st, actions, fields), name=f"action:{rule.name}"
            )

    # -- running actions ----------------------------------------------------------------------

    async def _run(
        self, st: RuleStatus, actions: Sequence[Action], fields: dict[str, object]
    ) -> None:
        for action in actions:
            error = await self._attempt(st, action, fields)
            if error is None:
                continue
            st.failed += 1
            st.last_error = f"{action.describe()}: {error}"
            self._count("failed", st.rule.name, 1)
            log.error(
                "action failed rule=%s transition=%s action=%r attempts=%d error=%s",
                st.rule.name,
                fields["transition"],
                action.describe(),
                self._attempts,
                error,
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

    async def _attempt(
        self, st: RuleStatus, action: Action, fields: dict[str, object]
    ) -> str | None:
        """Run one action, retrying with backoff; None when it worked, else the last error."""
        policy = self._backoff()
        error = "not tried"
        for attempt in range(1, self._attempts + 1):
            policy.connecting()
            try:
                if action.kind == "event":
                    await self._publish(EVENT_KIND, {**fields, "event": action.event})
                else:
                    assert action.command is not None
                    await self._command(action.command)
            except EdgedError as exc:
                error = str(exc)
            except (OSError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a driver bug must not end the rule's reporting
                log.error("action raised rule=%s", st.rule.name, exc_info=True)
                error = f"{type(exc).__name__}: {exc}"
            else:
                policy.connected()
                if st.last_error is not None and st.last_error.startswith(action.describe()):
                    st.last_error = None
                log.info(
                    "action done rule=%s transition=%s action=%r attempt=%d",
                    st.rule.name,
                    fields["transition"],
                    action.describe(),
                    attempt,
                )
                return None
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


def _key(rule: Rule) -> tuple[object, ...]:
    def acts(actions: Sequence[Action]) -> tuple[object, ...]:
        return tuple((x.kind, x.device, x.command, x.event) for x in actions)

    return (rule.name, rule.when, acts(rule.then), acts(rule.on_clear), rule.min_interval)


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
