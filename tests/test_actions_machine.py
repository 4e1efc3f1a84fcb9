"""The rule state machine, one test per transition (clock given by the test)."""

from __future__ import annotations

from edged.actions.machine import Machine, Reading, State, Transition

TRUE = Reading(active=True, cleared=False)
BETWEEN = Reading(active=False, cleared=False)  # inside the hysteresis band
CLEAR = Reading(active=False, cleared=True)
UNKNOWN = Reading.unknown()


def machine(hold: float = 5.0, clear_hold: float = 0.0, min_interval: float = 0.0) -> Machine:
    return Machine(hold, clear_hold, min_interval, now=0.0)


def active(m: Machine, t: float = 100.0) -> Machine:
    first = m.step(t, TRUE)
    if m.hold:
        assert first is None
        assert m.step(t + m.hold, TRUE) is Transition.FIRED
    else:
        assert first is Transition.FIRED
    return m


def test_idle_to_pending_when_the_condition_becomes_true() -> None:
    m = machine()
    assert m.step(10.0, TRUE) is None
    assert (m.state, m.since) == (State.PENDING, 10.0)


def test_idle_stays_idle_while_false_or_unknown() -> None:
    m = machine()
    assert m.step(1.0, CLEAR) is None
    assert m.step(2.0, UNKNOWN) is None
    assert m.state is State.IDLE


def test_pending_fires_once_the_condition_held_long_enough() -> None:
    m = machine(hold=5.0)
    m.step(10.0, TRUE)
    assert m.step(14.9, TRUE) is None
    assert m.state is State.PENDING
    assert m.step(15.0, TRUE) is Transition.FIRED
    assert (m.state, m.since, m.last_fired) == (State.ACTIVE, 15.0, 15.0)


def test_zero_hold_fires_on_the_first_true_reading() -> None:
    m = machine(hold=0.0)
    assert m.step(3.0, TRUE) is Transition.FIRED
    assert m.state is State.ACTIVE


def test_pending_back_to_idle_when_the_condition_ends_before_the_hold() -> None:
    m = machine(hold=5.0)
    m.step(10.0, TRUE)
    assert m.step(12.0, BETWEEN) is None
    assert m.state is State.IDLE
    # The hold starts again from the next true reading.
    m.step(13.0, TRUE)
    assert m.step(17.0, TRUE) is None
    assert m.step(18.0, TRUE) is Transition.FIRED


def test_pending_back_to_idle_when_the_value_is_lost() -> None:
    m = machine(hold=5.0)
    m.step(10.0, TRUE)
    assert m.step(20.0, UNKNOWN) is None
    assert m.state is State.IDLE


def test_active_stays_active_inside_the_hysteresis_band_and_without_values() -> None:
    m = active(machine())
    assert m.step(200.0, BETWEEN) is None
    assert m.step(300.0, UNKNOWN) is None
    assert m.state is State.ACTIVE


def test_active_clears_at_once_without_clear_hold() -> None:
    m = active(machine(clear_hold=0.0))
    assert m.step(200.0, CLEAR) is Transition.CLEARED
    assert (m.state, m.last_cleared) == (State.IDLE, 200.0)


def test_active_to_clearing_then_cleared_after_clear_hold() -> None:
    m = active(machine(clear_hold=3.0))
    assert m.step(200.0, CLEAR) is None
    assert m.state is State.CLEARING
    assert m.step(202.9, CLEAR) is None
    assert m.step(203.0, CLEAR) is Transition.CLEARED
    assert m.state is State.IDLE


def test_clearing_back_to_active_when_the_clear_condition_ends() -> None:
    m = active(machine(clear_hold=3.0))
    m.step(200.0, CLEAR)
    assert m.step(201.0, BETWEEN) is None
    assert m.state is State.ACTIVE
    m.step(202.0, CLEAR)
    assert m.step(204.0, CLEAR) is None  # the clear hold started again at 202
    assert m.step(205.0, CLEAR) is Transition.CLEARED


def test_clearing_back_to_active_when_the_value_is_lost() -> None:
    m = active(machine(clear_hold=3.0))
    m.step(200.0, CLEAR)
    assert m.step(201.0, UNKNOWN) is None
    assert m.state is State.ACTIVE


def test_min_interval_holds_a_second_firing_until_it_has_passed() -> None:
    m = active(machine(hold=0.0, min_interval=60.0), t=100.0)
    assert m.step(110.0, CLEAR) is Transition.CLEARED
    assert m.step(120.0, TRUE) is None
    assert m.state is State.PENDING
    assert m.step(159.0, TRUE) is None
    assert m.step(160.0, TRUE) is Transition.FIRED


def test_pulse_fires_each_event_but_within_the_rate_limit_only_once() -> None:
    m = machine(min_interval=30.0)
    assert m.pulse(10.0) is Transition.FIRED
    assert m.pulse(20.0) is None
    assert m.pulse(40.0) is Transition.FIRED
    assert m.state is State.IDLE
