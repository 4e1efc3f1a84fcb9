"""Load management in a closed loop: overloads, reallocation time, fairness, profile rate.

    python bench/loadmgmt.py [--seconds 150] [--lease 60] [--profile-delay 2]

A real ``edged run`` (Professional licences, a real mosquitto) manages ten simulated
chargers (1.6J and 2.0.1, 1- and 3-phase, 16 or 32 A) on a 63 A 3-phase main circuit with
a nested 32 A garage circuit. Both circuits are measured by simulated Modbus meters whose
per-phase current is a base-load profile plus what the simulated chargers really draw
(tests/loadmgmt_harness.py). Cars arrive one by one, some leave and come back, the base
load steps up and down. Measured at the simulators, every 0.1 s:

- the worst overload above each circuit's limit (A, per phase) and how long it lasted;
- the time to reallocate after each event (until no charger's limit changes for 5 s);
- the fairness spread: per circuit, max - min current of the sessions below their own
  maximum, sampled just before each event (settled);
- profiles sent per minute (SetChargingProfile requests the chargers received), with
  how many were limit changes and how many lease renewals.

Target (issue 14): no overload longer than the chargers' response delay + 2 s, no profile
storm.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import Broker, free_port
from tests.loadmgmt_harness import TEN, Harness, Settings


@dataclass
class Overload:
    """Overload episodes of one circuit (any phase)."""

    worst: float = 0.0
    longest: float = 0.0
    episodes: int = 0
    since: float | None = None
    log: list[list[float]] = field(default_factory=list)
    """Each episode: start (monotonic), duration, worst (A)."""


@dataclass
class Watch:
    """What the observer collects every 0.1 s."""

    h: Harness
    limits: dict[str, float]
    overload: dict[str, Overload] = field(default_factory=dict)
    last_change: float = 0.0
    changes: int = 0
    previous: dict[str, float | None] = field(default_factory=dict)

    def __call__(self, now: float) -> None:
        for name, limit in self.limits.items():
            ov = self.overload.setdefault(name, Overload())
            over = max(self.h.total(name)) - limit
            if over > 0.05:
                ov.worst = max(ov.worst, over)
                if ov.since is None:
                    ov.since = now
                    ov.episodes += 1
                    ov.log.append([now, 0.0, 0.0])
                ov.longest = max(ov.longest, now - ov.since)
                ov.log[-1][1:] = [now - ov.since, max(ov.log[-1][2], over)]
            else:
                ov.since = None
        current = self.h.limits()
        if self.previous and current != self.previous:
            self.last_change = now
            self.changes += sum(1 for k, v in current.items() if self.previous.get(k) != v)
        self.previous = current

    def spread(self) -> dict[str, float]:
        """Max - min current of running sessions that compete for the same phases.

        Per circuit and phase set (3-phase, or 1-phase on L1 / L2 / L3), among sessions
        that draw something and are below their own maximum: fair sharing makes them equal
        up to the dead band and the smoothing.
        """
        groups: dict[str, list[float]] = {}
        for spec in self.h.chargers:
            drawn = max(self.h.sims[spec.id].drawn_current())
            if 0 < drawn < spec.takes - 0.5:
                key = f"{spec.circuit}/{'3ph' if spec.phases == 3 else f'L{spec.phase}'}"
                groups.setdefault(key, []).append(drawn)
        return {k: max(v) - min(v) for k, v in groups.items() if len(v) >= 2}


async def scenario(args: argparse.Namespace, workdir: Path) -> None:
    broker = Broker(free_port(), workdir)
    broker.start()
    settings = Settings(
        lease=args.lease,
        profile_delay=args.profile_delay,
        stale_after=5.0,
        min_interval=10.0,
        raise_delay=args.profile_delay + 1.5,
        meter_interval=1.0,
    )
    h = Harness(workdir, broker.port, TEN, settings=settings)
    h.base = {"main": [10.0, 8.0, 12.0], "garage": [3.0, 3.0, 3.0]}
    watch = Watch(h, {c.name: c.limit for c in h.circuits})
    realloc: list[tuple[str, float]] = []
    events: list[tuple[float, str]] = []
    spreads: dict[str, float] = {}
    try:
        await h.start()
        h.observers.append(watch)
        t0 = time.monotonic()
        span = args.seconds

        async def at(fraction: float) -> None:
            delay = t0 + fraction * span - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

        async def event(name: str, fraction: float, action: object) -> None:
            await at(fraction)
            for circuit, value in watch.spread().items():
                spreads[circuit] = max(spreads.get(circuit, 0.0), value)
            start = time.monotonic()
            events.append((start, name))
            if asyncio.iscoroutine(action):
                await action
            elif callable(action):
                action()
            # Settled when no limit changed for 5 s (or the next event comes).
            while time.monotonic() - max(watch.last_change, start) < 5.0:
                await asyncio.sleep(0.1)
                if time.monotonic() - start > 0.2 * span:
                    break
            realloc.append((name, max(0.0, watch.last_change - start)))

        def base(circuit: str, phases: list[float]) -> object:
            return lambda: h.base.__setitem__(circuit, phases)

        # Arrivals one by one over the first quarter.
        for i, spec in enumerate(TEN):
            await event(f"arrive {spec.id}", 0.025 * i, h.sims[spec.id].plug_in())
        await event("base main L1 +15 A", 0.35, base("main", [25.0, 8.0, 12.0]))
        await event(
            "leave cp03, cp07", 0.5, _both(h.sims["cp03"].unplug(), h.sims["cp07"].unplug())
        )
        await event(
            "base main L1 -15 A, garage +10 A",
            0.65,
            _both_sync(base("main", [10.0, 8.0, 12.0]), base("garage", [13.0, 13.0, 13.0])),
        )
        await event("arrive cp03 again", 0.8, h.sims["cp03"].plug_in())
        await at(1.0)
        elapsed = time.monotonic() - t0
        requests = h.profile_requests()
    finally:
        await h.stop()
        broker.stop()
    _report(args, h, watch, realloc, spreads, elapsed, requests)
    for name, ov in watch.overload.items():
        for start, duration, worst in ov.log:
            after = max((e for e in events if e[0] <= start), default=(start, "start"))
            print(
                f"  {name} overload {worst:5.2f} A for {duration:3.1f} s, "
                f"{start - after[0]:4.1f} s after: {after[1]}"
            )


async def _both(*coros: object) -> None:
    await asyncio.gather(*coros)  # type: ignore[arg-type]


def _both_sync(*actions: object) -> object:
    def run() -> None:
        for action in actions:
            action()  # type: ignore[operator]

    return run


def _report(
    args: argparse.Namespace,
    h: Harness,
    watch: Watch,
    realloc: list[tuple[str, float]],
    spreads: dict[str, float],
    elapsed: float,
    requests: int,
) -> None:
    minutes = elapsed / 60
    print(
        f"setup: 10 chargers (5x OCPP 1.6J, 5x 2.0.1; 5 three-phase, 5 one-phase; 2 cars take "
        f"10 and 12 A of 32 A), 63 A main "
        f"with a nested 32 A garage, both metered; car response delay {args.profile_delay:g} s,"
        f" meter values every 1 s, meters polled every 0.5 s, lease {args.lease:g} s; "
        f"{elapsed:.0f} s run, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    target = args.profile_delay + 2.0
    for name, ov in watch.overload.items():
        verdict = "ok" if ov.longest <= target else f"LONGER than {target:g} s"
        print(
            f"overload {name:<7} worst {ov.worst:5.2f} A above the limit, longest "
            f"{ov.longest:4.1f} s, {ov.episodes} episode(s)  [{verdict}]"
        )
    for what, seconds in realloc:
        print(f"reallocate after {what:<34} {seconds:5.1f} s")
    for name, value in spreads.items():
        print(f"fairness spread {name:<12} {value:5.2f} A (worst before an event; same phases)")
    print(
        f"profiles sent {requests} in {elapsed:.0f} s = {requests / minutes:.1f}/min for 10 "
        f"chargers; limit changes seen at the chargers {watch.changes} "
        f"({watch.changes / minutes:.1f}/min)"
    )
    log = (h.tmp / "edged.log").read_text(errors="replace")
    print(
        f"decision log lines: {log.count('loadmgmt limit ')} limit changes, "
        f"{log.count('mode=fail-safe')} fail-safe entries"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=150.0)
    ap.add_argument("--lease", type=float, default=60.0)
    ap.add_argument("--profile-delay", type=float, default=2.0)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="edged-loadmgmt-"))
    try:
        asyncio.run(scenario(args, workdir))
    finally:
        if args.keep:
            print(f"work directory: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
