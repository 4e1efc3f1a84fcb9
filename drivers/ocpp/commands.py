"""Charger-bound commands: building the OCPP request per version, and a JSON-ready result.

Arguments arrive as a JSON object (from the control socket); every mistake is a
``CommandError`` that says which argument is wrong.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable, Mapping
from typing import Any

from drivers.ocpp._lib import call16, call201
from drivers.ocpp.errors import CommandError
from drivers.ocpp.state import ChargerStatus
from edged.model import iso

NOMINAL_VOLTAGE = 230.0

PURPOSES_16 = {"tx_default": "TxDefaultProfile", "max": "ChargePointMaxProfile"}
PURPOSES_201 = {"tx_default": "TxDefaultProfile", "max": "ChargingStationMaxProfile"}
_PURPOSE_ALIASES = {
    "tx_default": "tx_default",
    "default": "tx_default",
    "txdefaultprofile": "tx_default",
    "max": "max",
    "chargepointmaxprofile": "max",
    "chargingstationmaxprofile": "max",
}
TRIGGERS = ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification")


class Args:
    """Typed access to a command's arguments."""

    def __init__(self, command: str, args: Mapping[str, object]):
        self.command = command
        self.args = args

    def _bad(self, key: str, message: str) -> CommandError:
        return CommandError(f"{self.command}: argument {key!r} {message}")

    def integer(self, key: str, default: int | None = None, *, min: int = 0) -> int:
        """An integer argument."""
        v = self.args.get(key, default)
        if v is None:
            raise self._bad(key, "is required")
        if isinstance(v, bool) or not isinstance(v, int) or not min <= v <= 2**31 - 1:
            raise self._bad(key, f"must be an integer >= {min}, got {v!r}")
        return v

    def optional_int(self, key: str) -> int | None:
        """An optional integer argument."""
        return self.integer(key) if self.args.get(key) is not None else None

    def number(self, key: str) -> float:
        """A required non-negative number."""
        v = self.args.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1e9:
            raise self._bad(key, f"must be a non-negative number, got {v!r}")
        return float(v)

    def text(self, key: str, default: str | None = None) -> str:
        """A string argument."""
        v = self.args.get(key, default)
        if not isinstance(v, str) or not v:
            raise self._bad(key, "must be a non-empty string")
        return v

    def choice(self, key: str, choices: Mapping[str, str], default: str) -> str:
        """A string argument from a fixed set (case-insensitive)."""
        v = self.text(key, default)
        found = choices.get(v.lower())
        if found is None:
            raise self._bad(key, f"must be one of {', '.join(sorted(set(choices)))}, got {v!r}")
        return found

    def strings(self, key: str) -> list[str]:
        """A list of strings (empty when absent)."""
        v = self.args.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self._bad(key, "must be a list of strings")
        return list(v)

    def mapping(self, key: str) -> dict[str, str]:
        """An object of string values."""
        v = self.args.get(key)
        if not isinstance(v, Mapping) or not v:
            raise self._bad(key, "must be a non-empty object of name: value")
        out: dict[str, str] = {}
        for k, val in v.items():
            if not isinstance(val, str | int | float) or isinstance(val, bool):
                raise self._bad(key, f"value of {k!r} must be a string or number")
            out[str(k)] = str(val)
        return out


def _component_variable(name: str, args: Args) -> dict[str, Any]:
    component, sep, variable = name.partition(".")
    if not sep or not component or not variable:
        raise args._bad("variables", f"expects Component.Variable, got {name!r}")
    return {"component": {"name": component}, "variable": {"name": variable}}


def _profile_16(a: Args) -> Any:
    purpose = PURPOSES_16[a.choice("purpose", _PURPOSE_ALIASES, "tx_default")]
    unit = a.choice("unit", {"w": "W", "a": "A"}, "W")
    limit = a.number("limit")
    connector = a.integer("connector", 0)
    if purpose == "ChargePointMaxProfile" and connector != 0:
        raise a._bad("connector", "must be 0 for a ChargePointMaxProfile")
    profile = {
        "charging_profile_id": a.integer(
            "profile_id", 1 if purpose == "ChargePointMaxProfile" else 2
        ),
        "stack_level": a.integer("stack_level", 0),
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Absolute",
        "charging_schedule": {
            "start_schedule": iso(time.time()),
            "charging_rate_unit": unit,
            # The 1.6 schema allows one decimal on limits.
            "charging_schedule_period": [{"start_period": 0, "limit": round(limit, 1)}],
        },
    }
    return call16.SetChargingProfile(connector_id=connector, cs_charging_profiles=profile)


def _profile_201(a: Args) -> Any:
    purpose = PURPOSES_201[a.choice("purpose", _PURPOSE_ALIASES, "tx_default")]
    unit = a.choice("unit", {"w": "W", "a": "A"}, "W")
    limit = a.number("limit")
    evse = a.integer("evse", a.integer("connector", 0))
    if purpose == "ChargingStationMaxProfile" and evse != 0:
        raise a._bad("evse", "must be 0 for a ChargingStationMaxProfile")
    profile = {
        "id": a.integer("profile_id", 1 if purpose == "ChargingStationMaxProfile" else 2),
        "stack_level": a.integer("stack_level", 0),
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Absolute",
        "charging_schedule": [
            {
                "id": 1,
                "start_schedule": iso(time.time()),
                "charging_rate_unit": unit,
                "charging_schedule_period": [{"start_period": 0, "limit": limit}],
            }
        ],
    }
    return call201.SetChargingProfile(evse_id=evse, charging_profile=profile)


def _remote_stop_id(a: Args, st: ChargerStatus) -> str:
    if a.args.get("transaction_id") is not None:
        return str(a.args["transaction_id"])
    tx = st.transaction_on(a.optional_int("connector") or a.optional_int("evse"))
    if tx is None:
        raise CommandError("remote_stop: the charger has no active transaction")
    return tx.id


def _build_16(name: str, a: Args, st: ChargerStatus) -> Any:
    if name == "remote_start":
        return call16.RemoteStartTransaction(
            id_tag=a.text("id_tag", "edged"), connector_id=a.integer("connector", 1, min=1)
        )
    if name == "remote_stop":
        tx = _remote_stop_id(a, st)
        if not tx.isdigit():
            raise a._bad("transaction_id", "must be an integer in OCPP 1.6")
        return call16.RemoteStopTransaction(transaction_id=int(tx))
    if name == "set_charging_profile":
        return _profile_16(a)
    if name == "get_configuration":
        keys = a.strings("keys")
        return call16.GetConfiguration(key=keys or None)
    if name == "change_configuration":
        return call16.ChangeConfiguration(key=a.text("key"), value=a.text("value"))
    if name == "reset":
        kind = a.choice(
            "type", {"soft": "Soft", "hard": "Hard", "onidle": "Soft", "immediate": "Hard"}, "soft"
        )
        return call16.Reset(type=kind)
    if name == "trigger_message":
        message = a.choice("message", {t.lower(): t for t in TRIGGERS}, "StatusNotification")
        return call16.TriggerMessage(
            requested_message=message, connector_id=a.optional_int("connector")
        )
    raise CommandError(f"{name}: not available in OCPP 1.6")


def _build_201(name: str, a: Args, st: ChargerStatus) -> Any:
    if name == "remote_start":
        return call201.RequestStartTransaction(
            id_token={"id_token": a.text("id_tag", "edged"), "type": "Central"},
            remote_start_id=a.integer("remote_start_id", int(time.time()) % 2**31),
            evse_id=a.integer("evse", a.integer("connector", 1, min=1), min=1),
        )
    if name == "remote_stop":
        return call201.RequestStopTransaction(transaction_id=_remote_stop_id(a, st))
    if name == "set_charging_profile":
        return _profile_201(a)
    if name == "get_variables":
        names = a.strings("variables")
        if not names:
            raise a._bad("variables", "needs at least one Component.Variable")
        return call201.GetVariables(get_variable_data=[_component_variable(n, a) for n in names])
    if name == "set_variables":
        data = [
            {"attribute_value": value, **_component_variable(n, a)}
            for n, value in a.mapping("values").items()
        ]
        return call201.SetVariables(set_variable_data=data)
    if name == "reset":
        kind = a.choice(
            "type",
            {"soft": "OnIdle", "hard": "Immediate", "onidle": "OnIdle", "immediate": "Immediate"},
            "onidle",
        )
        return call201.Reset(type=kind, evse_id=a.optional_int("evse"))
    if name == "trigger_message":
        message = a.choice("message", {t.lower(): t for t in TRIGGERS}, "StatusNotification")
        evse = a.optional_int("evse")
        return call201.TriggerMessage(
            requested_message=message, evse={"id": evse} if evse is not None else None
        )
    raise CommandError(f"{name}: not available in OCPP 2.0.1")


COMMANDS_16 = (
    "remote_start",
    "remote_stop",
    "set_charging_profile",
    "get_configuration",
    "change_configuration",
    "reset",
    "trigger_message",
)
COMMANDS_201 = (
    "remote_start",
    "remote_stop",
    "set_charging_profile",
    "get_variables",
    "set_variables",
    "reset",
    "trigger_message",
)
COMMANDS = tuple(dict.fromkeys(COMMANDS_16 + COMMANDS_201))

_BUILDERS: Mapping[str, Callable[[str, Args, ChargerStatus], Any]] = {
    "1.6": _build_16,
    "2.0.1": _build_201,
}


def build(version: str, name: str, args: Mapping[str, object], status: ChargerStatus) -> Any:
    """The OCPP request for a command in the given version."""
    if name not in COMMANDS:
        raise CommandError(f"unknown command {name!r} (known: {', '.join(COMMANDS)})")
    return _BUILDERS[version](name, Args(name, args), status)


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of a call result (dataclasses, enums and nested lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
