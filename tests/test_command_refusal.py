"""Reading a device's answer to a command: carried out, or declined and why."""

from __future__ import annotations

from edged.api import ClearChargingLimit, SetChargingLimit, StartCharging, WriteRegister, refusal


def answer(status: str) -> dict[str, object]:
    return {"device": "ev1", "command": "x", "result": {"status": status}}


def test_accepted_or_no_status_is_done() -> None:
    assert refusal(SetChargingLimit("ev1", 6.0), answer("Accepted")) is None
    assert refusal(WriteRegister("heat", 10, (1,)), {"device": "heat", "register": 10}) is None
    assert refusal(StartCharging("ev1"), {}) is None


def test_any_other_status_is_a_refusal() -> None:
    assert refusal(SetChargingLimit("ev1", 6.0), answer("Rejected")) == "status Rejected"
    assert refusal(SetChargingLimit("ev1", 6.0), answer("NotSupported")) == "status NotSupported"
    assert refusal(StartCharging("ev1"), answer("Rejected")) == "status Rejected"
    # Unknown means "no profile matched" only to a clear; to a limit it is a refusal.
    assert refusal(SetChargingLimit("ev1", 6.0), answer("Unknown")) == "status Unknown"


def test_a_clear_that_finds_nothing_to_clear_is_done() -> None:
    assert refusal(ClearChargingLimit("ev1"), answer("Unknown")) is None
    assert refusal(ClearChargingLimit("ev1"), answer("Accepted")) is None
