"""The state machine of one rule: held-for, hysteresis and the rate limit, nothing else.

Pure: it is told the time and what the present value says, and answers whether the rule
fires or clears now. The engine (``edged.actions.engine``) feeds it and runs the actions.

    IDLE ──condition true──► PENDING ──held ``hold`` s (and ``min_interval`` passed)──► ACTIVE
      ▲                         │ condition false or unknown                              │
      │◄────────────────────────┘                                     clear condition true
      │                                                                                   ▼
      └───────────────────────held ``clear_hold`` s─────────────────────────────── CLEARING
                                                   clear condition false or unknown ──► ACTIVE

An unknown present (no value, or one older than the rule's ``max_age``) never fires and
never clears a rule: a fired rule keeps its actions in force until a fresh value clears
it, because the fired state (a limited charger, an open relay) is the one chosen for a
condition nobody can rule out any more.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    """Where a rule stands."""

    IDLE = "idle"
    PENDING = "pending"
    """The condition is true; waiting until it has held long enough."""
    ACTIVE = "active"
    """Fired: its actions are in force."""
    CLEARING = "clearing"
    """Fired, and the clear condition is true; waiting until it has held long enough."""


class Transition(enum.Enum):
    """What a step did that the engine must act on."""

    FIRED = "fired"
    CLEARED = "cleared"


@dataclass(frozen=True)
class Reading:
    """What the present says: the condition holds / the clear condition holds (None: unknown)."""

    active: bool | None
    cleared: bool | None

    @classmethod
    def unknown(cls) -> Reading:
        """No usable present value."""
        return cls(None, None)


class Machine:
    """Held-for and hysteresis of one rule, with a minimum interval between firings."""

    def __init__(self, hold: float, clear_hold: float, min_interval: float, now: float) -> None:
        self.hold = hold
        self.clear_hold = clear_hold
        self.min_interval = min_interval
        self.state = State.IDLE
        self.since = now
        """When the current state was entered."""
        self.last_fired: float | None = None
        self.last_cleared: float | None = None

    def step(self, now: float, reading: Reading) -> Transition | None:
        """Advance to ``now`` with what the present value says; the transition made, if any."""
        if self.state is State.IDLE and reading.active:
            self._enter(State.PENDING, now)
        elif self.state is State.PENDING and not reading.active:
            self._enter(State.IDLE, now)
            return None
        elif self.state is State.ACTIVE and reading.cleared:
            self._enter(State.CLEARING, now)
        elif self.state is State.CLEARING and not reading.cleared:
            self._enter(State.ACTIVE, now)
            return None
        if self.state is State.PENDING and now - self.since >= self.hold and self._may_fire(now):
            self._enter(State.ACTIVE, now)
            self.last_fired = now
            return Transition.FIRED
        if self.state is State.CLEARING and now - self.since >= self.clear_hold:
            self._enter(State.IDLE, now)
            self.last_cleared = now
            return Transition.CLEARED
        return None

    def pulse(self, now: float) -> Transition | None:
        """A one-off condition (a gateway event): fire unless the rate limit forbids it."""
        if not self._may_fire(now):
            return None
        self.last_fired = now
        self.since = now
        return Transition.FIRED

    def _may_fire(self, now: float) -> bool:
        return self.last_fired is None or now - self.last_fired >= self.min_interval

    def _enter(self, state: State, now: float) -> None:
        self.state = state
        self.since = now
