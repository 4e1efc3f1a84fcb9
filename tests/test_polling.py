"""The polled-connection runner against a tiny fake link, and the tick grid it runs on."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import pytest

from edged.errors import ConnectionLost, DecodeError, DeviceTimeout
from edged.model import DeviceState
from edged.polling import PolledConnection, Retired
from edged.reconnect import Reconnect, ReconnectState
from edged.timing import next_tick, phase_of
from tests.fakes import FakeContext

# -- the tick grid ---------------------------------------------------------------------------


def test_grid_does_not_drift_and_skips_missed_ticks() -> None:
    assert next_tick(0.25, 1.0, 10.0) == 10.25
    assert next_tick(0.25, 1.0, 10.25) == 11.25  # strictly after now
    # A poll that overran by 3.4 intervals resumes on the grid, without a burst.
    assert next_tick(0.25, 1.0, 13.65) == 14.25
    ticks = []
    now = 0.0
    for _ in range(1000):
        now = next_tick(0.1, 0.5, now + 0.013)  # polls take 13 ms
        ticks.append(now)
    assert ticks[-1] == pytest.approx(0.1 + 0.5 * 999)  # the 1000th tick, on the grid


def test_phase_is_stable_and_within_the_interval() -> None:
    assert phase_of("meter-1", 2.0) == phase_of("meter-1", 2.0)
    assert all(0 <= phase_of(f"m{i}", 2.0) < 2.0 for i in range(100))
    assert len({phase_of(f"m{i}", 1.0) for i in range(100)}) > 90


# -- fakes -----------------------------------------------------------------------------------


class FakeLink:
    """A link that carries one exchange at a time (and says so if asked for two)."""

    def __init__(self) -> None:
        self.busy = False
        self.closed = False
        self.exchanges: list[str] = []

    async def exchange(self, device_id: str, seconds: float) -> None:
        assert not self.busy, "two exchanges at once on one link"
        self.busy = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self.busy = False
        if self.closed:
            raise ConnectionLost("link closed")
        self.exchanges.append(device_id)


class FakePoller:
    """A device: answers ``values`` after ``latency``, or raises what ``script`` / ``fail`` say."""

    def __init__(
        self,
        device_id: str,
        poll_interval: float = 0.05,
        *,
        latency: float = 0.001,
        values: Mapping[str, float] | None = None,
        fail: BaseException | None = None,
        script: Sequence[BaseException | None] = (),
        on_answer: Callable[[], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.poll_interval = poll_interval
        self.latency = latency
        self.values = dict(values) if values is not None else {"power_active": 1.0}
        self.fail = fail
        self.script: deque[BaseException | None] = deque(script)
        self.on_answer = on_answer
        self.reads: list[tuple[float, bool]] = []  # (loop time, offline)

    async def read(self, link: FakeLink, offline: bool) -> Mapping[str, float]:
        self.reads.append((asyncio.get_running_loop().time(), offline))
        await link.exchange(self.device_id, self.latency)
        error = self.script.popleft() if self.script else self.fail
        if error is not None:
            raise error
        if self.on_answer is not None:
            self.on_answer()
        return self.values


class Opener:
    """open()/close() for the runner: counts links, can refuse to open."""

    def __init__(self) -> None:
        self.links: list[FakeLink] = []
        self.refuse: str | None = None
        self.closed = 0

    async def open(self) -> FakeLink:
        if self.refuse is not None:
            raise ConnectionLost(self.refuse)
        link = FakeLink()
        self.links.append(link)
        return link

    async def close(self, link: FakeLink) -> None:
        link.closed = True
        self.closed += 1


def make(
    pollers: Sequence[FakePoller],
    ctx: FakeContext,
    opener: Opener | None = None,
    **kw: Any,
) -> PolledConnection[FakeLink]:
    op = opener or Opener()
    kw.setdefault("reconnect", Reconnect(0.01, 0.05))
    return PolledConnection("bus", "fake://bus", op.open, op.close, pollers, ctx, **kw)


@contextlib.asynccontextmanager
async def running(runner: PolledConnection[FakeLink]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(runner.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def on_grid(times: list[float], device_id: str, interval: float, slack: float) -> bool:
    phase = phase_of(device_id, interval)
    return all(((t - phase) % interval) < slack for t in times)


# -- schedule --------------------------------------------------------------------------------


async def test_each_device_polls_on_its_own_grid_in_due_order() -> None:
    a, b, c = FakePoller("a", 0.05), FakePoller("b", 0.08), FakePoller("c", 0.13)
    ctx = FakeContext()
    async with running(make([a, b, c], ctx)):
        await ctx.wait_for(lambda: len(ctx.samples_of("c")) >= 4)
    for p in (a, b, c):
        times = [t for t, _ in p.reads]
        assert on_grid(times, p.device_id, p.poll_interval, 0.03), (p.device_id, times)
        gaps = [y - x for x, y in itertools.pairwise(times)]
        assert all(g > p.poll_interval * 0.5 for g in gaps), (p.device_id, gaps)
    # Reads happened in the order their polls fell due, one after the other.
    everything = sorted((t, p.device_id) for p in (a, b, c) for t, _ in p.reads)
    # (a read still in flight when the runner was stopped has no sample yet)
    assert [d for _, d in everything][: len(ctx.samples)] == [s.device_id for s in ctx.samples]
    assert {(e, d) for (e, d) in ctx.counts} >= {("poll", "a"), ("poll", "b"), ("poll", "c")}
    assert all(e == "poll" and s >= 0 for e, s, _ in ctx.observed)


async def test_a_dead_device_does_not_delay_a_neighbour_beyond_its_own_deadline() -> None:
    deadline = 0.12
    dead = FakePoller("dead", 0.05, latency=deadline, fail=DeviceTimeout("no answer"))
    alive = FakePoller("alive", 0.05)
    ctx = FakeContext()
    runner = make([dead, alive], ctx, device_backoff=lambda: Reconnect(0.2, 0.2, jitter=0.0))
    async with running(runner):
        await ctx.wait_for(lambda: len(ctx.arrivals["alive"]) >= 20)
    gaps = [y - x for x, y in itertools.pairwise(ctx.arrivals["alive"])]
    assert max(gaps) <= 0.05 + deadline + 0.05, gaps
    # The dead device is retried with its own backoff (0.2 s), not on every 50 ms tick.
    tries = [t for t, _ in dead.reads]
    assert len(tries) >= 2
    assert all(y - x >= 0.2 for x, y in itertools.pairwise(tries)), tries
    # It is told it is offline from its second try on (a poller may then try less hard).
    assert [off for _, off in dead.reads][:2] == [False, True]
    assert ctx.last_state("dead") is DeviceState.OFFLINE
    assert ctx.counts[("poll_error", "dead")] == len(tries)
    assert ctx.samples_of("dead") == []
    assert runner.state_of("alive") is DeviceState.ONLINE
    assert runner.link_state is ReconnectState.CONNECTED


async def test_state_is_reported_only_when_it_changes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edged.polling")
    flaky = FakePoller(
        "m",
        0.02,
        script=[DeviceTimeout("t1"), DecodeError("d2"), DeviceTimeout("t3")],
    )
    ctx = FakeContext()
    runner = make([flaky], ctx, device_backoff=lambda: Reconnect(0.01, 0.01))
    async with running(runner):
        await ctx.wait_for(lambda: len(ctx.samples) >= 3)
    assert ctx.states == [("m", DeviceState.OFFLINE, "t1"), ("m", DeviceState.ONLINE, None)]
    assert ctx.counts[("poll_error", "m")] == 3
    assert ctx.counts[("poll", "m")] == len(ctx.samples)
    lines = [r.getMessage() for r in caplog.records]
    assert [x for x in lines if x.startswith("device ")] == [
        "device offline device=m bus=bus error=t1",
        "device online device=m bus=bus",
    ]
    assert "connected bus=bus endpoint=fake://bus" in lines


async def test_timestamp_is_taken_when_the_answer_arrived() -> None:
    wall = [1_000.0]

    def answer_arrives() -> None:  # the exchange took 5 s of wall-clock time
        wall[0] += 5.0

    p = FakePoller("m", 0.02, on_answer=answer_arrives)
    ctx = FakeContext()
    async with running(make([p], ctx, wall=lambda: wall[0])):
        await ctx.wait_for(lambda: len(ctx.samples) >= 2)
    assert [s.timestamp for s in ctx.samples[:2]] == [1_005.0, 1_010.0]


async def test_an_empty_answer_is_a_poll_without_a_sample() -> None:
    p = FakePoller("m", 0.02, values={})
    ctx = FakeContext()
    async with running(make([p], ctx)):
        await ctx.wait_for(lambda: ctx.counts[("poll", "m")] >= 2)
    assert ctx.samples == []
    assert ctx.last_state("m") is DeviceState.ONLINE


# -- the link --------------------------------------------------------------------------------


async def test_a_lost_link_takes_every_device_offline_and_is_reopened() -> None:
    a, b = FakePoller("a", 0.02), FakePoller("b", 0.02)
    opener = Opener()
    ctx = FakeContext()
    runner = make([a, b], ctx, opener)
    async with running(runner):
        await ctx.wait_for(lambda: len(ctx.samples_of("a")) >= 2 and len(ctx.samples_of("b")) >= 2)
        a.script.append(ConnectionLost("converter gone"))
        await ctx.wait_for(lambda: len(opener.links) >= 2)
        await ctx.wait_for(
            lambda: (
                ctx.last_state("a") is DeviceState.ONLINE
                and ctx.last_state("b") is DeviceState.ONLINE
            )
        )
    for d in ("a", "b"):
        assert [s for dev, s, _ in ctx.states if dev == d] == [
            DeviceState.ONLINE,
            DeviceState.OFFLINE,
            DeviceState.ONLINE,
        ]
    assert ("a", DeviceState.OFFLINE, "converter gone") in ctx.states
    assert ("b", DeviceState.OFFLINE, "converter gone") in ctx.states
    assert ctx.counts[("poll_error", "a")] == 1
    assert opener.closed >= 1
    assert opener.links[0].closed


async def test_a_link_that_cannot_be_opened_is_retried_with_backoff() -> None:
    opener = Opener()
    opener.refuse = "cannot connect"
    ctx = FakeContext()
    policy = Reconnect(0.02, 0.05)
    runner = make([FakePoller("m")], ctx, opener, reconnect=policy)
    async with running(runner):
        await ctx.wait_for(lambda: policy.failures >= 3)
        assert runner.link_state in (ReconnectState.WAITING, ReconnectState.CONNECTING)
        assert ctx.states == [("m", DeviceState.OFFLINE, "cannot connect")]
        opener.refuse = None
        await ctx.wait_for(lambda: len(ctx.samples) >= 1)
        # A good read proves the link: the next loss starts from the initial delay.
        assert policy.failures == 0
        assert runner.link_state is ReconnectState.CONNECTED


async def test_a_link_on_which_nobody_answers_is_reopened_when_asked() -> None:
    dead = [FakePoller(d, 0.02, fail=DeviceTimeout("silent")) for d in ("a", "b")]
    opener = Opener()
    ctx = FakeContext()
    async with running(make(dead, ctx, opener, reopen_when_all_silent=True)):
        await ctx.wait_for(lambda: len(opener.links) >= 3)
    assert ctx.last_state("a") is DeviceState.OFFLINE

    dead = [FakePoller(d, 0.02, fail=DeviceTimeout("silent")) for d in ("a", "b")]
    opener = Opener()
    ctx = FakeContext()
    async with running(make(dead, ctx, opener, device_backoff=lambda: Reconnect(0.01, 0.01))):
        await ctx.wait_for(lambda: ctx.counts[("poll_error", "a")] >= 3)
    assert len(opener.links) == 1  # the default: a serial bus with dead meters stays open


async def test_a_retired_device_is_offline_and_no_longer_polled() -> None:
    gone = FakePoller("gone", 0.02, fail=Retired("every point was refused"))
    other = FakePoller("other", 0.02)
    ctx = FakeContext()
    async with running(make([gone, other], ctx)):
        await ctx.wait_for(lambda: len(ctx.samples_of("other")) >= 5)
    assert len(gone.reads) == 1
    assert ctx.states[0] == ("gone", DeviceState.OFFLINE, "every point was refused")
    assert ctx.counts[("poll", "gone")] == 1
    assert ctx.counts[("poll_error", "gone")] == 0


class SwallowsCancel(FakePoller):
    """A read that loses a cancellation, as ``asyncio.wait_for`` does on Python 3.11 when
    the answer and the cancellation arrive in the same loop step."""

    def __init__(self, device_id: str) -> None:
        super().__init__(device_id, 0.01)
        self.inside = asyncio.Event()
        self.swallow = True

    async def read(self, link: FakeLink, offline: bool) -> Mapping[str, float]:
        self.inside.set()
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if not self.swallow:
                raise
        return self.values


async def test_a_cancellation_lost_inside_a_read_still_stops_the_runner() -> None:
    p = SwallowsCancel("m")
    opener = Opener()
    task = asyncio.create_task(make([p], FakeContext(), opener).run())
    await asyncio.wait_for(p.inside.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    try:
        assert done, "the runner went on polling after it was cancelled"
        assert task.cancelled()
        assert opener.links[0].closed
    finally:
        p.swallow = False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_no_devices_means_no_link() -> None:
    opener = Opener()
    task = asyncio.create_task(make([], FakeContext(), opener).run())
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert opener.links == []
