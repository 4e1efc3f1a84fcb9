"""The actions engine on real live values with a test clock: firing, clearing, retries, status."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from typing import Any

import pytest

from edged.actions.config import Action, Condition, Rule
from edged.actions.engine import Engine
from edged.actions.text import format_lines
from edged.api import Command, SetChargingLimit, WriteRegister
from edged.errors import ConnectionLost
from edged.live import LiveValues
from edged.model import DeviceState, Sample, Source
from edged.reconnect import Reconnect

SRC = Source("edged.toml", "actions[0]")


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Site:
    """The engine's surroundings: commands and events it sent, device states, counters."""

    def __init__(self, failures: int = 0) -> None:
        self.clock = Clock()
        self.live = LiveValues()
        self.commands: list[Command] = []
        self.events: list[tuple[str, dict[str, object]]] = []
        self.failures = failures
        self.answers: list[str] = []
        """Statuses the charger answers with, one per command (then it answers nothing)."""
        self.states: dict[str, DeviceState] = {}
        self.counts: Counter[tuple[str, str]] = Counter()
        self.engine = Engine(
            self.live,
            self.command,
            self.publish,
            self.states.get,
            lambda event, rule, n: self.counts.update({(event, rule): n}),
            self.clock,
            backoff=lambda: Reconnect(0.01, 0.02),
            attempts=3,
        )

    async def command(self, command: Command) -> dict[str, Any]:
        if self.failures:
            self.failures -= 1
            raise ConnectionLost("charger is not connected")
        self.commands.append(command)
        if self.answers:
            return {"device": command.device_id, "result": {"status": self.answers.pop(0)}}
        return {}

    async def publish(self, kind: str, body: dict[str, object]) -> None:
        self.events.append((kind, body))

    def value(self, v: float, point: str = "grid", dt: float = 1.0) -> None:
        self.clock.t += dt
        sample = Sample(point, self.clock.t, {"power_active": v})
        self.live.update(sample)
        self.engine.observe(sample)

    def tick(self, dt: float) -> None:
        self.clock.t += dt
        self.engine.tick()


def limit_rule(**when: Any) -> Rule:
    args: dict[str, Any] = {"low": 5000.0, "clear_low": 4000.0, "hold": 5.0, **when}
    cond = Condition("above", "grid", "power_active", **args)
    return Rule(
        "limit-ev",
        cond,
        then=(
            Action("charger", SRC, "ev1", SetChargingLimit("ev1", 6.0)),
            Action("event", SRC, event="grid_import_high"),
        ),
        on_clear=(
            Action("charger", SRC, "ev1", SetChargingLimit("ev1", 16.0)),
            Action("event", SRC, event="grid_import_normal"),
        ),
        source=SRC,
    )


async def settle(site: Site) -> None:
    """Let the action tasks run to their end."""
    for _ in range(200):
        tasks = [st.task for st in site.engine.rules.values() if st.task and not st.task.done()]
        if not tasks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("actions still running")


async def test_fires_after_the_hold_and_clears_below_the_clear_threshold(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "edged.actions")
    site = Site()
    site.engine.set_rules([limit_rule()])
    site.value(6000)
    site.tick(4.0)
    await settle(site)
    assert site.commands == []
    site.value(6100, dt=1.0)  # 5 s above 5000 now
    await settle(site)
    assert site.commands == [SetChargingLimit("ev1", 6.0)]
    kind, body = site.events[0]
    assert (kind, body["rule"], body["transition"], body["event"]) == (
        "action",
        "limit-ev",
        "fired",
        "grid_import_high",
    )
    assert body["value"] == 6100 and body["above"] == 5000
    fired = [r.getMessage() for r in caplog.records if "action fired" in r.getMessage()]
    assert fired and "rule=limit-ev" in fired[0] and "value=6100" in fired[0]
    assert re.search(r"at=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fired[0])

    site.value(4500)  # inside the hysteresis band: stays fired
    await settle(site)
    assert len(site.commands) == 1
    site.value(3900)
    await settle(site)
    assert site.commands[-1] == SetChargingLimit("ev1", 16.0)
    assert site.events[-1][1]["transition"] == "cleared"
    assert site.events[-1][1]["event"] == "grid_import_normal"
    assert site.counts[("fired", "limit-ev")] == 1 and site.counts[("cleared", "limit-ev")] == 1

    (status,) = site.engine.status()
    assert status["state"] == "idle" and status["last_value"] == 3900
    assert status["fired"] == 1 and status["cleared"] == 1 and status["failed"] == 0
    assert status["since"].endswith("Z")
    text = "\n".join(format_lines([status]))
    assert "limit-ev  idle since" in text and "fired 1, cleared 1, failed 0" in text


async def test_a_lost_measurement_keeps_the_fired_state() -> None:
    site = Site()
    site.engine.set_rules([limit_rule(hold=0.0, max_age=10.0)])
    site.value(7000)
    await settle(site)
    assert site.engine.states()["limit-ev"].value == "active"
    site.tick(60.0)  # no value for a minute: unknown, not cleared
    await settle(site)
    assert site.engine.states()["limit-ev"].value == "active"
    assert site.commands == [SetChargingLimit("ev1", 6.0)]


async def test_a_failing_action_is_retried_with_backoff_then_works() -> None:
    site = Site(failures=2)
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await settle(site)
    assert site.commands == [SetChargingLimit("ev1", 6.0)]
    (status,) = site.engine.status()
    assert status["failed"] == 0 and status["last_error"] is None


async def test_a_charger_that_declines_is_retried_until_it_accepts() -> None:
    site = Site()
    site.answers = ["Rejected", "NotSupported", "Accepted"]
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await settle(site)
    assert site.commands == [SetChargingLimit("ev1", 6.0)] * 3
    (status,) = site.engine.status()
    assert status["failed"] == 0 and status["last_error"] is None


async def test_a_charger_that_keeps_declining_is_a_failed_action() -> None:
    site = Site()
    site.answers = ["Rejected"] * 100
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await until(lambda: site.counts[("failed", "limit-ev")] == 1, "the failure report")
    (status,) = site.engine.status()
    assert "charger ev1 limit 6 A: refused by the device: status Rejected" in status["last_error"]
    failed = [b for k, b in site.events if k == "action_failed"]
    assert failed and failed[0]["error"] == "refused by the device: status Rejected"


async def until(condition: Any, what: str) -> None:
    """Poll a condition of the running actions (generous: the machine is shared)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_an_action_that_keeps_failing_is_reported() -> None:
    site = Site(failures=100)
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await until(lambda: site.counts[("failed", "limit-ev")] == 1, "the failure report")
    (status,) = site.engine.status()
    assert status["failed"] == 1
    assert "charger ev1 limit 6 A: charger is not connected" in status["last_error"]
    failed = [b for k, b in site.events if k == "action_failed"]
    assert failed and failed[0]["error"] == "charger is not connected"
    # The event action after the failed command still ran.
    await until(
        lambda: any(b.get("event") == "grid_import_high" for k, b in site.events if k == "action"),
        "the event action",
    )


async def test_a_failed_action_is_retried_while_the_rule_stays_fired() -> None:
    site = Site(failures=100)
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await until(lambda: site.counts[("failed", "limit-ev")] == 1, "the failure report")
    # Long after the first attempts were used up, the charger takes commands again.
    await until(lambda: site.failures < 90, "more retries")
    assert site.commands == []
    site.failures = 0
    await until(lambda: site.commands == [SetChargingLimit("ev1", 6.0)], "the limit sent")
    await settle(site)
    (status,) = site.engine.status()
    assert status["state"] == "active" and status["last_error"] is None
    # Reported once, however many retries it took.
    assert status["failed"] == 1 and site.counts[("failed", "limit-ev")] == 1
    assert len([k for k, _ in site.events if k == "action_failed"]) == 1


async def test_a_clearing_ends_the_retries_of_the_firing() -> None:
    site = Site(failures=10_000)
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await until(lambda: site.counts[("failed", "limit-ev")] == 1, "the failure report")
    site.failures = 0
    site.value(3000)
    await settle(site)
    assert site.commands == [SetChargingLimit("ev1", 16.0)]
    await asyncio.sleep(0.1)
    assert site.commands == [SetChargingLimit("ev1", 16.0)]


async def test_a_charger_coming_back_gets_the_current_state_again() -> None:
    site = Site()
    site.states["ev1"] = DeviceState.ONLINE
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await settle(site)
    assert site.commands == [SetChargingLimit("ev1", 6.0)]
    events = len(site.events)
    # The charger reboots: offline, then online again; it lost its limit.
    site.states["ev1"] = DeviceState.OFFLINE
    site.tick(1.0)
    site.states["ev1"] = DeviceState.ONLINE
    site.tick(1.0)
    await settle(site)
    assert site.commands == [SetChargingLimit("ev1", 6.0)] * 2
    # Only the charger's action runs again, not the event.
    assert len(site.events) == events
    # A reconnection without an offline state in between: link_connects changes.
    for n in (1.0, 1.0, 2.0):
        site.clock.t += 1
        sample = Sample("ev1", site.clock.t, {"link_connects": n})
        site.live.update(sample)
        site.engine.observe(sample)
        await settle(site)
    assert site.commands == [SetChargingLimit("ev1", 6.0)] * 4
    # After the clearing, the state kept in force is the clear's.
    site.value(3000)
    await settle(site)
    site.states["ev1"] = DeviceState.OFFLINE
    site.tick(1.0)
    site.states["ev1"] = DeviceState.ONLINE
    site.tick(1.0)
    await settle(site)
    assert site.commands[-2:] == [SetChargingLimit("ev1", 16.0)] * 2


async def test_a_charger_coming_back_is_retried_at_once() -> None:
    site = Site(failures=10_000)
    site.engine = Engine(
        site.live,
        site.command,
        site.publish,
        site.states.get,
        lambda e, r, n: site.counts.update({(e, r): n}),
        site.clock,
        backoff=lambda: Reconnect(0.01, 3600.0, jitter=0.0),
        attempts=2,
    )
    site.states["ev1"] = DeviceState.OFFLINE
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await until(lambda: site.counts[("failed", "limit-ev")] == 1, "the failure report")
    site.failures = 0
    site.states["ev1"] = DeviceState.ONLINE  # the next retry would be an hour away
    site.tick(1.0)
    await until(lambda: site.commands == [SetChargingLimit("ev1", 6.0)], "the limit sent")


async def test_a_clearing_supersedes_a_firing_still_retrying() -> None:
    site = Site(failures=100)
    site.engine = Engine(
        site.live,
        site.command,
        site.publish,
        site.states.get,
        lambda e, r, n: None,
        site.clock,
        backoff=lambda: Reconnect(5.0, 5.0, jitter=0.0),
        attempts=5,
    )
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await asyncio.sleep(0.05)  # first attempt failed; waiting 5 s for the next
    site.failures = 0
    site.value(3000)
    await settle(site)
    # The limit of the firing was never sent after the clearing; only the clear's raise.
    assert site.commands == [SetChargingLimit("ev1", 16.0)]


async def test_on_stale_fire_goes_to_the_safe_state_and_clears_on_fresh_values() -> None:
    site = Site()
    site.engine.set_rules([limit_rule(max_age=10.0, on_stale="fire")])
    site.value(1000)  # fresh and low: idle
    site.tick(10.0)
    await settle(site)
    assert site.engine.states()["limit-ev"].value == "idle"
    site.tick(1.0)  # 11 s old: lost, counts as the condition ...
    site.tick(4.0)
    await settle(site)
    assert site.commands == []  # ... for 5 s (the rule's `for`) before it fires
    site.tick(1.0)
    await settle(site)
    assert site.engine.states()["limit-ev"].value == "active"
    assert site.commands == [SetChargingLimit("ev1", 6.0)]
    fired = next(b for k, b in site.events if k == "action")
    assert fired["lost"] == "value older than 10 s" and fired["on_stale"] == "fire"
    site.value(4500)  # fresh, inside the hysteresis band: stays fired
    await settle(site)
    assert site.engine.states()["limit-ev"].value == "active"
    site.value(3000)  # fresh and below the clear threshold: cleared
    await settle(site)
    assert site.engine.states()["limit-ev"].value == "idle"
    assert site.commands[-1] == SetChargingLimit("ev1", 16.0)

    # The point's device going offline loses the measurement at once, fresh value or not.
    site.states["grid"] = DeviceState.OFFLINE
    site.value(1000)
    site.tick(5.0)
    await settle(site)
    assert site.commands[-1] == SetChargingLimit("ev1", 6.0)
    site.states["grid"] = DeviceState.ONLINE
    site.value(1000)
    await settle(site)
    assert site.commands[-1] == SetChargingLimit("ev1", 16.0)


async def test_on_stale_fire_without_any_value_fires_after_max_age() -> None:
    site = Site()
    site.engine.set_rules([limit_rule(hold=0.0, max_age=10.0, on_stale="fire")])
    site.tick(5.0)  # just started: no value yet is not a lost one
    await settle(site)
    assert site.commands == []
    site.tick(6.0)
    await settle(site)
    assert site.commands == [SetChargingLimit("ev1", 6.0)]


async def test_on_stale_hold_and_clear() -> None:
    site = Site()
    site.engine.set_rules([limit_rule(hold=0.0, max_age=10.0)])  # default: hold
    site.tick(60.0)
    await settle(site)
    assert site.engine.states()["limit-ev"].value == "idle" and site.commands == []

    site = Site()
    site.engine.set_rules([limit_rule(hold=0.0, max_age=10.0, on_stale="clear")])
    site.value(7000)
    await settle(site)
    assert site.commands == [SetChargingLimit("ev1", 6.0)]
    site.tick(11.0)
    await settle(site)
    assert site.engine.states()["limit-ev"].value == "idle"
    assert site.commands[-1] == SetChargingLimit("ev1", 16.0)


async def test_stale_and_offline_conditions() -> None:
    site = Site()
    stale = Rule(
        "meter-lost",
        Condition("stale", "grid", "power_active", max_age=30.0),
        then=(Action("charger", SRC, "ev1", SetChargingLimit("ev1", 0.0)),),
        on_clear=(Action("charger", SRC, "ev1", SetChargingLimit("ev1", 16.0)),),
        source=SRC,
    )
    offline = Rule(
        "relay-offline",
        Condition("offline", "relay", hold=2.0),
        then=(Action("event", SRC, event="relay_offline"),),
        source=SRC,
    )
    site.engine.set_rules([stale, offline])
    site.value(1000)
    site.tick(29.0)
    await settle(site)
    assert site.commands == []
    site.tick(2.0)
    await settle(site)
    assert site.commands == [SetChargingLimit("ev1", 0.0)]
    site.value(1000)
    await settle(site)
    assert site.commands[-1] == SetChargingLimit("ev1", 16.0)

    site.states["relay"] = DeviceState.OFFLINE
    site.tick(1.0)
    site.tick(2.0)
    await settle(site)
    assert [b["event"] for k, b in site.events if k == "action"] == ["relay_offline"]
    assert site.events[-1][1]["device_state"] == "offline"


async def test_gateway_events_fire_event_rules_within_their_rate_limit() -> None:
    site = Site()
    rule = Rule(
        "licence-watch",
        Condition("event", event="licence_changed"),
        then=(Action("modbus_write", SRC, "relay", WriteRegister("relay", 0, (), True)),),
        min_interval=60.0,
        source=SRC,
    )
    site.engine.set_rules([rule])
    site.engine.on_event("licence_changed", {"used": 3})
    site.engine.on_event("maintenance", {})
    site.clock.t += 10
    site.engine.on_event("licence_changed", {"used": 4})
    await settle(site)
    assert site.commands == [WriteRegister("relay", 0, (), True)]


async def test_reload_keeps_the_state_of_an_unchanged_rule() -> None:
    site = Site()
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await settle(site)
    moved = Source("conf.d/10-actions.toml", "actions[3]")
    same = limit_rule(hold=0.0)
    same = Rule(same.name, same.when, same.then, same.on_clear, source=moved)
    site.engine.set_rules([same])
    assert site.engine.states()["limit-ev"].value == "active"
    assert site.commands == [SetChargingLimit("ev1", 6.0)]


async def test_reload_with_new_thresholds_keeps_the_state_and_applies_them() -> None:
    site = Site()
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await settle(site)
    # Same point, quantity and kind of condition: the fired state is kept ...
    site.engine.set_rules([limit_rule(hold=1.0, low=8000.0, clear_low=7500.0)])
    assert site.engine.states()["limit-ev"].value == "active"
    await settle(site)
    assert site.commands == [SetChargingLimit("ev1", 6.0)]
    # ... and the next evaluation uses the new clear threshold (7000 <= 7500).
    site.tick(0.5)
    await settle(site)
    assert site.engine.states()["limit-ev"].value == "idle"
    assert site.commands[-1] == SetChargingLimit("ev1", 16.0)


async def test_reload_with_new_actions_of_the_current_state_sends_them() -> None:
    site = Site()
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await settle(site)
    base = limit_rule(hold=0.0)
    eight = Action("charger", SRC, "ev1", SetChargingLimit("ev1", 8.0))
    site.engine.set_rules([Rule(base.name, base.when, (eight,), base.on_clear, source=SRC)])
    await settle(site)
    assert site.engine.states()["limit-ev"].value == "active"
    assert site.commands == [SetChargingLimit("ev1", 6.0), SetChargingLimit("ev1", 8.0)]
    # Cleared, then its on_clear edited: the new clear state is the one in force.
    site.value(3000)
    await settle(site)
    assert site.commands[-1] == SetChargingLimit("ev1", 16.0)
    twenty = Action("charger", SRC, "ev1", SetChargingLimit("ev1", 20.0))
    site.engine.set_rules([Rule(base.name, base.when, (eight,), (twenty,), source=SRC)])
    await settle(site)
    assert site.engine.states()["limit-ev"].value == "idle"
    assert site.commands[-1] == SetChargingLimit("ev1", 20.0) and len(site.commands) == 4
    # Only thresholds changed: nothing is sent.
    site.engine.set_rules(
        [Rule(base.name, limit_rule(low=9000.0).when, (eight,), (twenty,), source=SRC)]
    )
    await settle(site)
    assert len(site.commands) == 4


async def test_replacing_or_removing_a_fired_rule_runs_its_on_clear() -> None:
    site = Site()
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await settle(site)
    # Another quantity: a new rule, idle; the old one's limit is taken back.
    other = limit_rule(hold=0.0)
    other = Rule(
        other.name,
        Condition("above", "grid", "current", low=20.0, clear_low=16.0),
        other.then,
        other.on_clear,
        source=SRC,
    )
    site.engine.set_rules([other])
    await settle(site)
    assert site.engine.states()["limit-ev"].value == "idle"
    assert site.commands == [SetChargingLimit("ev1", 6.0), SetChargingLimit("ev1", 16.0)]
    cleared = [b for k, b in site.events if k == "action" and b["transition"] == "cleared"]
    assert cleared[-1]["reason"] == "rule changed"
    assert site.counts[("cleared", "limit-ev")] == 1

    site = Site()
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await settle(site)
    site.engine.set_rules([])
    await until(lambda: len(site.commands) == 2, "the on_clear of the removed rule")
    assert site.commands[-1] == SetChargingLimit("ev1", 16.0)
    assert [b["reason"] for k, b in site.events if b.get("transition") == "cleared"] == [
        "rule removed"
    ]
    await site.engine.close()

    # An idle rule replaced or removed runs nothing.
    site = Site()
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(1000)
    site.engine.set_rules([other])
    site.engine.set_rules([])
    await asyncio.sleep(0.05)
    assert site.commands == []


async def test_an_unexpected_driver_error_is_reported_not_raised() -> None:
    site = Site()

    async def broken(command: Command) -> dict[str, Any]:
        raise ValueError("driver bug")

    site.engine._command = broken
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await until(lambda: site.engine.status()[0]["failed"] == 1, "the failure report")
    (status,) = site.engine.status()
    assert "ValueError: driver bug" in status["last_error"]
    await site.engine.close()
