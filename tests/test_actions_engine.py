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


async def test_an_action_that_keeps_failing_is_reported() -> None:
    site = Site(failures=100)
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await settle(site)
    assert site.counts[("failed", "limit-ev")] == 1
    (status,) = site.engine.status()
    assert status["failed"] == 1
    assert "charger ev1 limit 6 A: charger is not connected" in status["last_error"]
    failed = [b for k, b in site.events if k == "action_failed"]
    assert failed and failed[0]["error"] == "charger is not connected"
    # The event action after the failed command still ran.
    assert any(b.get("event") == "grid_import_high" for k, b in site.events if k == "action")


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
    site.engine.set_rules([limit_rule(hold=1.0)])
    assert site.engine.states()["limit-ev"].value == "idle"


async def test_an_unexpected_driver_error_is_reported_not_raised() -> None:
    site = Site()

    async def broken(command: Command) -> dict[str, Any]:
        raise ValueError("driver bug")

    site.engine._command = broken
    site.engine.set_rules([limit_rule(hold=0.0)])
    site.value(7000)
    await settle(site)
    (status,) = site.engine.status()
    assert status["failed"] == 1 and "ValueError: driver bug" in status["last_error"]
