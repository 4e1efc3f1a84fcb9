"""The simulated charger's composite limit, as OCPP defines it."""

from __future__ import annotations

from drivers.ocpp.sim_profiles import Profile, composite


def _p(
    purpose: str,
    level: int,
    limit: float,
    *,
    at: float = 0.0,
    duration: float | None = None,
    tx: str | None = None,
) -> Profile:
    return Profile(
        id=hash((purpose, level, limit)) % 10_000,
        purpose=purpose,
        stack_level=level,
        connector=0,
        limit_a=limit,
        received=at,
        duration=duration,
        transaction_id=tx,
    )


def test_no_profile_no_limit() -> None:
    assert composite([], 10.0, "1") is None


def test_highest_stack_level_wins_within_a_purpose() -> None:
    profiles = [_p("TxDefaultProfile", 0, 6), _p("TxDefaultProfile", 2, 20)]
    assert composite(profiles, 1.0, None) == 20


def test_tx_profile_beats_the_default_but_only_for_its_transaction() -> None:
    profiles = [_p("TxDefaultProfile", 5, 10), _p("TxProfile", 0, 14, tx="7")]
    assert composite(profiles, 1.0, "7") == 14
    assert composite(profiles, 1.0, "8") == 10
    assert composite(profiles, 1.0, None) == 10


def test_the_station_maximum_caps_everything() -> None:
    for cap in ("ChargePointMaxProfile", "ChargingStationMaxProfile"):
        profiles = [_p(cap, 0, 12), _p("TxProfile", 1, 20, tx="7")]
        assert composite(profiles, 1.0, "7") == 12
        assert composite([_p(cap, 0, 12)], 1.0, None) == 12


def test_a_lapsed_profile_gives_way_to_the_one_below() -> None:
    profiles = [_p("TxDefaultProfile", 0, 6), _p("TxDefaultProfile", 1, 16, at=100, duration=30)]
    assert composite(profiles, 50.0, None) == 6  # not started yet
    assert composite(profiles, 129.9, None) == 16
    assert composite(profiles, 130.0, None) == 6
