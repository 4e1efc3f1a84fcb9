"""The load management loop against fakes: live values in, typed commands out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import pytest

from edged.api import ClearChargingLimit, Command, SetChargingLimit
from edged.live import LiveValues
from edged.loadmgmt.config import ChargerRef, Circuit, LoadManagementConfig, Settings
from edged.loadmgmt.controller import Controller
from edged.metrics import Metrics
from edged.model import DeviceState, Sample

THREE = frozenset({1, 2, 3})


class Site:
    """Fake chargers and a fake meter around one controller, on a fake clock."""

    def __init__(self, config: LoadManagementConfig) -> None:
        self.now = 1_000_000.0
        self.live = LiveValues()
        self.states: dict[str, DeviceState] = {}
        self.sent: list[Command] = []
        self.refuse: set[str] = set()
        self.fail: set[str] = set()
        self.metrics = Metrics()
        # Meters that read every step (a meter polled each second), until silenced.
        self.held: dict[str, tuple[float, float, float]] = {}
        self.ctl = Controller(
            config, self.live, self.states.get, self.send, self.metrics, clock=lambda: self.now
        )

    async def send(self, cmd: Command) -> dict[str, Any]:
        if cmd.device_id in self.fail:
            raise RuntimeError(f"charger {cmd.device_id!r} is not connected")
        self.sent.append(cmd)
        status = "Rejected" if cmd.device_id in self.refuse else "Accepted"
        return {"device": cmd.device_id, "result": {"status": status}}

    def meter(self, device: str, l1: float, l2: float, l3: float) -> None:
        self.states[device] = DeviceState.ONLINE
        values = {"current_l1": l1, "current_l2": l2, "current_l3": l3}
        self.live.update(Sample(device, self.now, values))

    def hold(self, device: str, l1: float, l2: float, l3: float) -> None:
        """The meter reads these currents at every step from now on."""
        self.held[device] = (l1, l2, l3)
        self.meter(device, l1, l2, l3)

    def session(self, device: str, active: bool) -> None:
        self.live.update(Sample(device, self.now, {"session_active": 1.0 if active else 0.0}))

    def draw(self, device: str, amps: float) -> None:
        values = {f"current_l{p}": amps for p in (1, 2, 3)}
        self.live.update(Sample(device, self.now, values))

    async def step(self, seconds: float = 0.25, times: int = 1) -> None:
        for _ in range(times):
            self.now += seconds
            for device, currents in self.held.items():
                self.meter(device, *currents)
            self.ctl.step()
            await self.ctl.idle()

    def limits(self, device: str) -> list[SetChargingLimit]:
        return [c for c in self.sent if isinstance(c, SetChargingLimit) and c.device_id == device]

    def last_limit(self, device: str) -> float:
        sent = [c for c in self.limits(device) if c.stack_level == 1]
        return sent[-1].limit


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {
        "min_current": 6.0,
        "safe_current": 6.0,
        "stale_after": 5.0,
        "min_interval": 10.0,
        "dead_band": 1.0,
        "lease": 60.0,
        "raise_delay": 2.0,
    }
    base.update(kw)
    return Settings(**base)


def site(
    chargers: Iterable[ChargerRef],
    *,
    meter: str | None = "grid",
    limit: float = 63.0,
    margin: float = 0.0,
    **kw: Any,
) -> Site:
    circuit = Circuit("main", limit, None, None, meter, margin, tuple(chargers))
    return Site(LoadManagementConfig(settings(**kw), (circuit,)))


def charger(device: str, max_current: float = 32.0, phases: frozenset[int] = THREE) -> ChargerRef:
    return ChargerRef(device, None, phases, max_current)


def connect(s: Site, *devices: str, session: bool = True) -> None:
    for d in devices:
        s.states[d] = DeviceState.ONLINE
        s.session(d, session)


async def test_default_profile_at_safe_current_goes_first_then_a_leased_limit() -> None:
    s = site([charger("cp1")])
    s.meter("grid", 0, 0, 0)
    connect(s, "cp1")
    await s.step(times=3)
    first, second = s.limits("cp1")[:2]
    assert (first.purpose, first.stack_level, first.limit, first.duration) == (
        "default",
        0,
        6.0,
        None,
    )
    assert first.phases == 3
    assert (second.stack_level, second.duration) == (1, 60.0)
    assert second.limit == 32.0  # alone on 63 A: its own maximum


async def test_fair_share_of_what_the_meter_leaves() -> None:
    s = site([charger("cp1"), charger("cp2"), charger("cp3")], margin=3.0)
    s.meter("grid", 20, 20, 20)  # nothing drawn by the chargers yet: all of it is base load
    connect(s, "cp1", "cp2", "cp3")
    await s.step(times=3)
    for d in ("cp1", "cp2", "cp3"):
        assert s.last_limit(d) == pytest.approx((63 - 20 - 3) / 3, abs=0.05)
    status = s.ctl.status()[0]
    assert status["mode"] == "normal"
    assert {c["state"] for c in status["chargers"]} == {"charging"}


async def test_charger_draw_is_not_counted_as_base_load() -> None:
    s = site([charger("cp1", 16), charger("cp2", 16)])
    connect(s, "cp1", "cp2")
    s.meter("grid", 10, 10, 10)
    await s.step(times=3)
    assert s.last_limit("cp1") == 16.0
    # The chargers now draw 16 A each; the meter shows base 10 + 32.
    s.now += 1
    s.draw("cp1", 16)
    s.draw("cp2", 16)
    s.meter("grid", 42, 42, 42)
    n = len(s.sent)
    await s.step(times=8)
    assert s.last_limit("cp1") == 16.0
    assert all(c.limit == 16.0 for c in s.sent[n:] if isinstance(c, SetChargingLimit))


async def test_idle_charger_held_at_zero_then_gets_its_share_when_a_session_starts() -> None:
    s = site([charger("cp1"), charger("cp2")], limit=40.0)
    s.meter("grid", 0, 0, 0)
    connect(s, "cp1")
    connect(s, "cp2", session=False)
    await s.step(times=3)
    assert s.last_limit("cp2") == 0.0
    assert s.last_limit("cp1") == 32.0
    s.session("cp2", True)
    await s.step(times=2)
    # cp1 goes down at once (a little lower still: half the dead band) ...
    assert s.last_limit("cp1") == pytest.approx(19.5)
    assert s.last_limit("cp2") == 0.0  # ... cp2 waits until cp1 acted (raise_delay)
    await s.step(1.0, times=3)
    assert s.last_limit("cp2") == 20.0
    statuses = {c["charger"]: c for c in s.ctl.status()[0]["chargers"]}
    assert statuses["cp2"]["allocated"] == 20.0 and statuses["cp2"]["state"] == "charging"


async def test_not_enough_current_pauses_the_latest_session() -> None:
    s = site([charger("cp1"), charger("cp2"), charger("cp3")], limit=16.0, safe_current=0.0)
    s.hold("grid", 0, 0, 0)
    connect(s, "cp1", "cp2")
    connect(s, "cp3", session=False)  # a charger that is not connected might draw anything
    await s.step(times=3)
    assert s.last_limit("cp1") == 8.0 and s.last_limit("cp3") == 0.0
    s.now += 5
    s.session("cp3", True)
    await s.step(times=3)
    assert s.last_limit("cp3") == 0.0
    assert s.last_limit("cp1") == 8.0 and s.last_limit("cp2") == 8.0
    states = {c["charger"]: c["state"] for c in s.ctl.status()[0]["chargers"]}
    assert states == {"cp1": "charging", "cp2": "charging", "cp3": "paused"}


async def test_stale_meter_sends_every_charger_to_the_safe_current(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = site([charger("cp1"), charger("cp2", phases=frozenset({2}))], limit=63.0)
    s.meter("grid", 0, 0, 0)
    connect(s, "cp1", "cp2")
    await s.step(times=3)
    assert s.last_limit("cp1") == 31.5  # cp1 and cp2 share L2
    caplog.set_level(logging.INFO, "edged.loadmgmt")
    await s.step(1.0, times=6)  # the meter stays silent for 6 s > stale_after 5 s
    assert s.last_limit("cp1") == 6.0 and s.last_limit("cp2") == 6.0
    assert s.ctl.status()[0]["mode"] == "fail-safe"
    assert "circuit=main mode=fail-safe reason=meter grid reading is" in caplog.text
    assert 'edged_loadmgmt_mode{circuit="main"} 1.0' in s.metrics.render().decode()
    # The meter speaks again: back to sharing (raises wait their interval).
    s.hold("grid", 0, 0, 0)
    await s.step(1.0, times=12)
    assert s.ctl.status()[0]["mode"] == "normal"
    assert s.last_limit("cp1") == 31.5
    assert "circuit=main mode=normal" in caplog.text


async def test_meter_reported_offline_is_fail_safe_at_once() -> None:
    s = site([charger("cp1")])
    s.meter("grid", 0, 0, 0)
    connect(s, "cp1")
    await s.step(times=3)
    s.meter("grid", 0, 0, 0)
    s.states["grid"] = DeviceState.OFFLINE
    await s.step()
    assert s.last_limit("cp1") == 6.0
    assert "meter grid is offline" in s.ctl.status()[0]["reason"]


async def test_no_meter_reading_yet_starts_in_fail_safe() -> None:
    s = site([charger("cp1")])
    connect(s, "cp1")
    await s.step(times=3)
    assert s.last_limit("cp1") == 6.0
    assert s.ctl.status()[0]["mode"] == "fail-safe"


async def test_nested_circuit_fails_safe_with_its_parent() -> None:
    main = Circuit("main", 63.0, None, None, "grid", 0.0, (charger("cp1"),))
    sub = Circuit("garage", 32.0, None, "main", "sub", 0.0, (charger("cp2"),))
    s = Site(LoadManagementConfig(settings(), (main, sub)))
    s.meter("grid", 0, 0, 0)
    s.meter("sub", 0, 0, 0)
    connect(s, "cp1", "cp2")
    await s.step(times=3)
    assert s.last_limit("cp2") == 31.5 or s.last_limit("cp2") == 32.0
    await s.step(1.0, times=3)
    s.meter("sub", 0, 0, 0)  # the sub meter keeps reading, the grid meter does not
    await s.step(1.0, times=3)
    modes = {c["name"]: (c["mode"], c["reason"]) for c in s.ctl.status()}
    assert modes["main"][0] == "fail-safe" and modes["garage"][0] == "fail-safe"
    assert "circuit main" in modes["garage"][1]
    assert s.last_limit("cp2") == 6.0


async def test_refusing_charger_is_reported_and_counted_at_its_maximum(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "edged.loadmgmt")
    s = site([charger("cp1", 32), charger("bad", 20)], limit=40.0)
    s.refuse.add("bad")
    s.meter("grid", 0, 0, 0)
    connect(s, "cp1", "bad")
    await s.step(times=3)
    # The refusing charger may draw its 20 A: cp1 gets what is left.
    assert s.last_limit("cp1") == 20.0
    states = {c["charger"]: c for c in s.ctl.status()[0]["chargers"]}
    assert states["bad"]["state"] == "rejected" and "Rejected" in states["bad"]["rejected"]
    assert "charger=bad does not accept charging profiles" in caplog.text
    assert not [c for c in s.limits("bad") if c.stack_level == 1]


async def test_failing_commands_count_as_refusal_after_three() -> None:
    s = site([charger("cp1")])
    s.fail.add("cp1")
    s.meter("grid", 0, 0, 0)
    connect(s, "cp1")
    for _ in range(4):
        await s.step(2.5, times=1)
    assert s.ctl.status()[0]["chargers"][0]["state"] == "rejected"


async def test_small_raise_waits_for_the_dead_band_and_lower_goes_at_once() -> None:
    s = site([charger("cp1", 32)], limit=40.0, min_interval=5.0)
    s.hold("grid", 10, 10, 10)
    connect(s, "cp1")
    await s.step(times=3)
    assert s.last_limit("cp1") == 30.0
    n = len(s.sent)
    s.hold("grid", 9.5, 9.5, 9.5)  # 0.5 A more room: inside the dead band
    await s.step(1.0, times=10)
    assert len(s.sent) == n
    s.hold("grid", 11, 11, 11)  # 1 A less room: lowered at once, half a dead band lower
    await s.step()
    assert s.last_limit("cp1") == 28.5
    s.hold("grid", 10.8, 10.8, 10.8)  # noise within half the dead band: nothing sent
    await s.step(1.0, times=3)
    assert s.last_limit("cp1") == 28.5
    assert len(s.sent) == n + 1


async def test_limit_renewed_before_its_lease_lapses() -> None:
    s = site([charger("cp1", 16)], lease=20.0)
    s.meter("grid", 0, 0, 0)
    connect(s, "cp1")
    await s.step(times=3)
    n = len(s.limits("cp1"))
    for _ in range(12):
        s.meter("grid", 0, 0, 0)
        await s.step(1.0)
    renewals = s.limits("cp1")[n:]
    assert renewals and all(c.limit == 16.0 and c.duration == 20.0 for c in renewals)
    assert len(renewals) == 1  # at half the lease, not every tick


async def test_reconnection_sends_the_default_profile_again_first() -> None:
    s = site([charger("cp1", 16)])
    s.meter("grid", 0, 0, 0)
    connect(s, "cp1")
    await s.step(times=3)
    s.states["cp1"] = DeviceState.OFFLINE
    await s.step()
    n = len(s.sent)
    s.states["cp1"] = DeviceState.ONLINE
    await s.step(times=3)
    again = s.limits("cp1")[-2:]
    assert len(s.sent) == n + 2
    assert (again[0].stack_level, again[0].limit) == (0, 6.0)
    assert (again[1].stack_level, again[1].limit) == (1, 16.0)


async def test_offline_charger_counted_at_its_lease_then_safe() -> None:
    s = site([charger("cp1", 32), charger("cp2", 32)], limit=50.0, safe_current=6.0)
    s.meter("grid", 0, 0, 0)
    connect(s, "cp1", "cp2")
    await s.step(times=3)
    assert s.last_limit("cp2") == 25.0
    s.states["cp2"] = DeviceState.OFFLINE
    await s.step()
    # cp2 may still draw its leased 25 A: cp1 gets no more than 25.
    assert s.ctl.status()[0]["available"][0] == pytest.approx(25.0)
    for _ in range(65):  # past the lease: cp2 is back on its default profile
        s.meter("grid", 0, 0, 0)
        await s.step(1.0)
    assert s.ctl.status()[0]["available"][0] == pytest.approx(44.0)
    assert s.last_limit("cp1") == 32.0


async def test_switched_off_clears_the_profiles() -> None:
    circuit = Circuit("main", 63.0, None, None, None, 0.0, (charger("cp1"),))
    s = Site(LoadManagementConfig(settings(enabled=False), (circuit,)))
    connect(s, "cp1")
    await s.step(times=3)
    assert [type(c) for c in s.sent] == [ClearChargingLimit]
    assert s.ctl.status()[0]["mode"] == "off"


async def test_gauges_per_circuit_session_and_phase() -> None:
    s = site([charger("cp1", 16), charger("cp2", 16, frozenset({3}))])
    s.meter("grid", 5, 6, 7)
    connect(s, "cp1", "cp2")
    await s.step(times=3)
    text = s.metrics.render().decode()
    assert 'edged_loadmgmt_allocated{charger="cp2",circuit="main",phase="L3"} 16.0' in text
    assert 'edged_loadmgmt_allocated{charger="cp2",circuit="main",phase="L1"} 0.0' in text
    assert 'edged_loadmgmt_circuit_measured{circuit="main",phase="L3"} 7.0' in text
    assert 'edged_loadmgmt_circuit_limit{circuit="main",phase="L1"} 63.0' in text
    assert 'edged_loadmgmt_mode{circuit="main"} 0.0' in text
    assert "edged_loadmgmt_profiles_total" in text


async def test_own_change_is_not_taken_for_other_load() -> None:
    """A car follows a raise before the charger reports it: no one is lowered for that."""
    s = site([charger("cp1"), charger("cp2")], limit=40.0)
    s.hold("grid", 10, 10, 10)
    connect(s, "cp1", "cp2")
    await s.step(times=3)
    assert s.last_limit("cp2") == 15.0
    s.draw("cp1", 15)
    s.draw("cp2", 15)
    s.hold("grid", 40, 40, 40)
    await s.step(1.0, times=3)
    # cp1's car leaves: cp2 may take its share once cp1 is down.
    s.session("cp1", False)
    s.draw("cp1", 0)
    s.hold("grid", 25, 25, 25)
    for _ in range(12):
        await s.step(1.0)
        if s.last_limit("cp2") == 30.0:
            break
    assert s.last_limit("cp2") == 30.0
    n = len(s.sent)
    # The car on cp2 follows: the meter sees 30 A, cp2's last report still says 15 A.
    s.hold("grid", 40, 40, 40)
    await s.step(0.5, times=3)
    assert len(s.sent) == n, [c for c in s.sent[n:]]
    # A real load on top of that is still seen at once.
    s.hold("grid", 50, 50, 50)
    await s.step()
    assert s.last_limit("cp2") < 30.0


async def test_apply_starts_reconfigures_and_stops_the_loop() -> None:
    """What the daemon does on start and reload: circuits start it, none stop it."""
    s = Site(LoadManagementConfig(settings(), ()))
    sent_before = len(s.sent)
    s.ctl.apply(LoadManagementConfig(settings(), ()))
    assert s.ctl._loop is None
    circuit = Circuit("main", 63.0, None, None, None, 0.0, (charger("cp1", 16),))
    connect(s, "cp1")
    s.ctl.clock = time.time
    s.ctl.apply(LoadManagementConfig(settings(), (circuit,)))
    assert s.ctl._loop is not None
    for _ in range(100):
        if len(s.limits("cp1")) >= 2:
            break
        await asyncio.sleep(0.05)
    assert [c.stack_level for c in s.limits("cp1")][:2] == [0, 1]
    assert len(s.sent) > sent_before
    # A reload that keeps the charger keeps its state: no default profile again.
    bigger = Circuit("main", 80.0, None, None, None, 0.0, (charger("cp1", 16),))
    s.ctl.apply(LoadManagementConfig(settings(), (bigger,)))
    assert s.ctl.chargers["cp1"].default_ok
    s.ctl.apply(LoadManagementConfig(settings(), ()))
    assert s.ctl._loop is None and s.ctl.status() == []
    await s.ctl.stop()


async def test_reconnection_seen_only_in_the_connection_count_gets_the_default_again() -> None:
    s = site([charger("cp1", 16)])
    s.meter("grid", 0, 0, 0)
    connect(s, "cp1")
    s.live.update(Sample("cp1", s.now, {"link_connects": 1.0}))
    await s.step(times=3)
    n = len(s.sent)
    s.live.update(Sample("cp1", s.now, {"link_connects": 2.0}))  # never seen offline
    await s.step(times=3)
    again = s.limits("cp1")[-2:]
    assert len(s.sent) == n + 2
    assert (again[0].stack_level, again[1].stack_level) == (0, 1)


async def test_a_car_that_takes_less_leaves_the_rest_to_the_others() -> None:
    s = site([charger("cp1", 32), charger("cp2", 32)], limit=40.0, raise_delay=1.0)
    s.hold("grid", 0, 0, 0)
    connect(s, "cp1", "cp2")
    await s.step(times=3)
    assert s.last_limit("cp1") == 20.0 and s.last_limit("cp2") == 20.0
    # cp1's car takes 8 A of its 20 A (reported after it had time to follow); cp2 all of it.
    for _ in range(4):
        await s.step(1.0)
        s.draw("cp1", 8)
        s.draw("cp2", 20)
        s.hold("grid", 28, 28, 28)
    for _ in range(15):
        await s.step(1.0)
        s.draw("cp1", 8)
        s.draw("cp2", min(s.last_limit("cp2"), 32))
        s.hold("grid", 8 + s.last_limit("cp2"), 8 + s.last_limit("cp2"), 8 + s.last_limit("cp2"))
    assert s.last_limit("cp1") == pytest.approx(8.5, abs=0.5)
    assert s.last_limit("cp2") >= 30.0
    # cp1's car wants more again: it draws its whole limit and gets its fair share back.
    for _ in range(25):
        await s.step(1.0)
        a, b = s.last_limit("cp1"), s.last_limit("cp2")
        s.draw("cp1", a)
        s.draw("cp2", b)
        s.hold("grid", a + b, a + b, a + b)
    assert s.last_limit("cp1") == pytest.approx(20.0, abs=1.0)


async def test_power_limit_holds_with_the_current_limit() -> None:
    """11,040 W at 230 V is 48 phase-amperes: two 3-phase sessions get 8 A each."""
    circuit = Circuit("main", 63.0, 11_040.0, None, None, 0.0, (charger("cp1"), charger("cp2")))
    s = Site(LoadManagementConfig(settings(safe_current=0.0), (circuit,)))
    connect(s, "cp1", "cp2")
    await s.step(times=3)
    assert s.last_limit("cp1") == 8.0 and s.last_limit("cp2") == 8.0
    assert s.ctl.status()[0]["mode"] == "normal"  # no meter: the limits alone


async def test_status_text_shows_circuits_and_why_fail_safe() -> None:
    from edged.loadmgmt.view import format_circuits

    s = site([charger("cp1"), charger("cp2", phases=frozenset({3}))])
    connect(s, "cp1", "cp2")
    s.meter("grid", 1, 2, 3)
    await s.step(times=3)
    lines = format_circuits(s.ctl.status())
    assert lines[1] == "circuits"
    assert lines[2].split()[:4] == ["main", "normal", "limit", "63"]
    assert "measured 1/2/3 A" in lines[2]
    assert any(ln.split()[:3] == ["cp2", "L3", "charging"] for ln in lines)
    await s.step(1.0, times=6)
    text = "\n".join(format_circuits(s.ctl.status()))
    assert "fail-safe: meter grid reading is" in text
    assert any(
        ln.split()[:5] == ["cp1", "L1L2L3", "fail-safe", "6.0", "A"] for ln in text.split("\n")
    )
