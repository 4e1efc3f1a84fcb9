"""The charging-profile model of a simulated charger: what a real one does with profiles.

A profile is kept with the moment it arrived and its schedule's duration; the composite
limit is OCPP's: the station maximum caps the transaction's profile, or else the default.
Pure functions and values, so the model can be tested and reasoned about on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MIN_CURRENT = 6.0
"""Below this current per phase (IEC 61851) a car cannot charge: a lower limit pauses it."""
MAX_PURPOSES = ("ChargePointMaxProfile", "ChargingStationMaxProfile")


@dataclass(frozen=True)
class Profile:
    """A charging profile the simulated charger holds (the first period of its schedule)."""

    id: int
    purpose: str
    stack_level: int
    connector: int
    limit_a: float
    """The limit per phase in amperes (a W limit is converted with the charger's phases)."""
    received: float
    """``time.monotonic()`` when it was installed; its schedule starts then."""
    duration: float | None = None
    transaction_id: str | None = None

    def valid(self, at: float) -> bool:
        """Whether the profile is in force at a monotonic time."""
        return self.received <= at and (self.duration is None or at < self.received + self.duration)


def composite(profiles: Iterable[Profile], at: float, transaction_id: str | None) -> float | None:
    """The charger's limit per phase (A) from its profiles, as OCPP's composite schedule.

    The station maximum caps everything; below it, the TxProfile with the highest stack
    level of the running transaction wins, else the highest TxDefaultProfile. Expired
    profiles play no part. None when no profile limits the charger.
    """
    valid = [p for p in profiles if p.valid(at)]

    def top(candidates: list[Profile]) -> float | None:
        if not candidates:
            return None
        level = max(p.stack_level for p in candidates)
        return min(p.limit_a for p in candidates if p.stack_level == level)

    cap = top([p for p in valid if p.purpose in MAX_PURPOSES])
    tx = top(
        [
            p
            for p in valid
            if p.purpose == "TxProfile"
            and transaction_id is not None
            and p.transaction_id in (None, transaction_id)
        ]
    )
    if tx is None:
        tx = top([p for p in valid if p.purpose == "TxDefaultProfile"])
    limits = [x for x in (cap, tx) if x is not None]
    return min(limits) if limits else None
