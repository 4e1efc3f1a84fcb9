"""The one reconnect policy: capped, jittered backoff with an explicit state."""

from __future__ import annotations

import asyncio

import pytest

from edged.reconnect import Reconnect, ReconnectState


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_is_capped_exponential_with_jitter() -> None:
    # rand=1 takes nothing off: the cap itself, initial * 2**failures, at most maximum.
    full = Reconnect(1.0, 60.0, rand=lambda: 1.0)
    assert [full.failed() for _ in range(8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    for _ in range(50):
        full.failed()
    assert full.failed() == 60.0
    # rand=0 takes off the whole jitter: half of the cap.
    half = Reconnect(1.0, 60.0, rand=lambda: 0.0)
    assert [half.failed() for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]


def test_backoff_grows_caps_and_jitters() -> None:
    b = Reconnect(initial=0.5, maximum=8.0, jitter=0.5, rand=lambda: 1.0)
    assert [b.failed() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.failed() == 0.5
    j = Reconnect(initial=1.0, maximum=8.0, jitter=0.5, rand=lambda: 0.0)
    assert j.failed() == 0.5  # jitter takes up to half off


def test_jitter_stays_within_half_and_all_of_the_cap() -> None:
    r = Reconnect(2.0, 30.0)  # the real random source
    delays = [r.failed() for _ in range(2)]
    assert 1.0 <= delays[0] <= 2.0
    assert 2.0 <= delays[1] <= 4.0
    no_jitter = Reconnect(2.0, 30.0, jitter=0.0, rand=lambda: 0.0)
    assert no_jitter.failed() == 2.0


def test_reset_starts_again_from_the_initial_delay() -> None:
    r = Reconnect(0.5, 30.0, rand=lambda: 1.0)
    for _ in range(5):
        r.failed()
    assert r.failures == 5
    r.reset()
    assert r.failures == 0
    assert r.failed() == 0.5


def test_state_is_explicit() -> None:
    clock = Clock()
    r = Reconnect(1.0, 60.0, rand=lambda: 1.0, clock=clock)
    assert r.state is ReconnectState.CONNECTING
    assert r.retry_at is None
    delay = r.failed("refused")
    assert r.state is ReconnectState.WAITING
    assert r.last_error == "refused"
    assert r.retry_at == clock.now + delay
    r.connecting()
    assert r.state is ReconnectState.CONNECTING
    assert r.retry_at is None
    clock.now += 5
    r.connected()
    assert r.state is ReconnectState.CONNECTED
    assert r.since == clock.now
    assert r.last_error is None
    assert r.failures == 1  # connected() alone does not reset: the caller decides when
    r.stopped()
    assert r.state is ReconnectState.STOPPED


def test_a_long_run_before_the_failure_starts_from_the_initial_delay() -> None:
    clock = Clock()
    r = Reconnect(1.0, 60.0, rand=lambda: 1.0, long_run=60.0, clock=clock)
    assert [r.failed() for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
    # A short run is the same failure looping: the backoff keeps growing.
    r.connected()
    clock.now += 10
    assert r.failed() == 16.0
    # A run of at least long_run seconds was a success: a new failure starts afresh.
    r.connected()
    clock.now += 60
    assert r.failed() == 1.0
    assert r.failures == 1
    # Only a run counts, not a long wait between attempts.
    clock.now += 600
    assert r.failed() == 2.0


def test_the_supervisor_loop_fits() -> None:
    """The supervisor's use: run a task, on each end wait; reset after a run of 60 s."""
    clock = Clock()
    r = Reconnect(initial=1.0, maximum=60.0, rand=lambda: 1.0, long_run=60.0, clock=clock)
    delays = []
    for ran in (0.1, 0.1, 0.1, 120.0, 0.1):
        r.connected()  # the driver task runs
        clock.now += ran
        delays.append(r.failed("boom"))
    assert delays == [1.0, 2.0, 4.0, 1.0, 2.0]


def test_bad_numbers_are_refused() -> None:
    with pytest.raises(ValueError):
        Reconnect(0.0, 1.0)
    with pytest.raises(ValueError):
        Reconnect(1.0, 2.0, factor=0.5)
    with pytest.raises(ValueError):
        Reconnect(1.0, 2.0, jitter=1.5)


async def test_wait_sleeps_the_delay_and_is_ready_for_the_next_attempt() -> None:
    r = Reconnect(0.05, 1.0, rand=lambda: 1.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await r.wait("down") == 0.05
    assert loop.time() - t0 >= 0.045
    assert r.state is ReconnectState.CONNECTING
    assert r.last_error == "down"
    assert r.failures == 1


async def test_wait_ends_early_when_stopped() -> None:
    r = Reconnect(30.0, 60.0, rand=lambda: 1.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, stop.set)
    t0 = loop.time()
    assert await r.wait(stop=stop) == 30.0
    assert loop.time() - t0 < 5
    assert r.state is ReconnectState.STOPPED
