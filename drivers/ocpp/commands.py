"""Charger-bound commands: building the OCPP request per version, and a JSON-ready result.

Arguments arrive as a JSON object (from the control socket); every mistake is a
``CommandError`` that says which argument is wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import enum
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from drivers.ocpp._lib import call16, call201
from drivers.ocpp.errors import CommandError
from drivers.ocpp.settings import DEFAULT_ID_TOKEN_TYPE, ID_TOKEN_TYPES
from drivers.ocpp.state import ChargerStatus
from edged.model import iso

NOMINAL_VOLTAGE = 230.0

PURPOSES_16 = {
    "tx_default": "TxDefaultProfile",
    "tx": "TxProfile",
    "max": "ChargePointMaxProfile",
}
PURPOSES_201 = {
    "tx_default": "TxDefaultProfile",
    "tx": "TxProfile",
    "max": "ChargingStationMaxProfile",
}
_PURPOSE_ALIASES = {
    "tx_default": "tx_default",
    "default": "tx_default",
    "txdefaultprofile": "tx_default",
    "tx": "tx",
    "txprofile": "tx",
    "max": "max",
    "station_max": "max",
    "chargepointmaxprofile": "max",
    "chargingstationmaxprofile": "max",
}
# A profile's id is derived from what it is for, so that a new limit for the same purpose,
# stack level and connector replaces the old profile instead of piling up next to it.
_PURPOSE_NUMBER = {"max": 1, "tx_default": 2, "tx": 3}
MAX_STACK_LEVEL = 99
MAX_CONNECTOR = 999


def profile_id(purpose: str, stack_level: int, connector: int) -> int:
    """The stable charging profile id edged uses for a purpose, stack level and connector."""
    return _PURPOSE_NUMBER[purpose] * 100_000 + stack_level * 1000 + connector


TRIGGERS = ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification")
REPORT_BASES = ("ConfigurationInventory", "FullInventory", "SummaryInventory")
AUTH_STATUSES_16 = ("Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx")
_AVAILABILITY = {"operative": "Operative", "inoperative": "Inoperative"}
_UPDATE_TYPES = {"full": "Full", "differential": "Differential"}
_RATE_UNITS = {"w": "W", "a": "A"}


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

    def optional_number(self, key: str) -> float | None:
        """An optional non-negative number."""
        return self.number(key) if self.args.get(key) is not None else None

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


@dataclass(frozen=True)
class ProfileRequest:
    """A charging limit's arguments, checked and resolved against the charger's state."""

    purpose: str
    """Key of ``PURPOSES_16`` / ``PURPOSES_201``."""
    unit: str
    limit: float
    connector: int
    """Connector (1.6) or EVSE (2.0.1); 0 for the whole charger."""
    stack_level: int
    profile_id: int
    duration: int | None
    phases: int | None
    transaction_id: str | None
    """The running transaction a TxProfile belongs to."""


def _profile_request(a: Args, st: ChargerStatus) -> ProfileRequest:
    purpose = a.choice("purpose", _PURPOSE_ALIASES, "tx_default")
    unit = a.choice("unit", {"w": "W", "a": "A"}, "W")
    # Both schemas allow one decimal on limits; rounding down never lets a charger draw more
    # than it was given (the epsilon keeps 8.2 from becoming 8.1 through binary fractions).
    limit = math.floor(a.number("limit") * 10 + 1e-6) / 10
    stack_level = a.integer("stack_level", 0)
    if stack_level > MAX_STACK_LEVEL:
        raise a._bad("stack_level", f"must be at most {MAX_STACK_LEVEL}, got {stack_level}")
    given = a.optional_int("evse")
    if given is None:
        given = a.optional_int("connector")
    if given is not None and given > MAX_CONNECTOR:
        raise a._bad("connector", f"must be at most {MAX_CONNECTOR}, got {given}")
    transaction_id: str | None = None
    if purpose == "max":
        if given not in (None, 0):
            raise a._bad("connector", "must be 0 for the station maximum profile")
        connector = 0
    elif purpose == "tx":
        tx_arg = a.args.get("transaction_id")
        if tx_arg is not None:
            transaction_id = str(tx_arg)
            known = st.transactions.get(transaction_id)
            connector = given or (known.connector if known else 1)
        else:
            tx = st.transaction_on(given or None)
            if tx is None:
                where = f" on connector {given}" if given else ""
                raise CommandError(
                    f"set_charging_profile: a TxProfile needs a running transaction, "
                    f"and charger {st.device_id!r} has none{where}"
                )
            transaction_id, connector = tx.id, tx.connector
    else:
        connector = given or 0
    duration = a.optional_number("duration")
    if duration is not None and duration <= 0:
        raise a._bad("duration", f"must be more than 0 seconds, got {duration!r}")
    phases = a.optional_int("phases")
    if phases is not None and phases not in (1, 2, 3):
        raise a._bad("phases", f"must be 1, 2 or 3, got {phases}")
    return ProfileRequest(
        purpose=purpose,
        unit=unit,
        limit=limit,
        connector=connector,
        stack_level=stack_level,
        profile_id=a.integer("profile_id", profile_id(purpose, stack_level, connector)),
        # The schemas take whole seconds; rounding up never ends a limit early.
        duration=math.ceil(duration) if duration is not None else None,
        phases=phases,
        transaction_id=transaction_id,
    )


def _schedule(p: ProfileRequest) -> dict[str, Any]:
    period: dict[str, Any] = {"start_period": 0, "limit": p.limit}
    if p.phases is not None:
        period["number_phases"] = p.phases
    schedule: dict[str, Any] = {
        "start_schedule": iso(time.time()),
        "charging_rate_unit": p.unit,
        "charging_schedule_period": [period],
    }
    if p.duration is not None:
        # Past the duration the charger falls back to the profile with the next lower
        # stack level: a limit nobody renews lapses on its own.
        schedule["duration"] = p.duration
    return schedule


def _profile_16(a: Args, st: ChargerStatus) -> Any:
    p = _profile_request(a, st)
    profile: dict[str, Any] = {
        "charging_profile_id": p.profile_id,
        "stack_level": p.stack_level,
        "charging_profile_purpose": PURPOSES_16[p.purpose],
        "charging_profile_kind": "Absolute",
        "charging_schedule": _schedule(p),
    }
    if p.transaction_id is not None:
        if not p.transaction_id.isdigit():
            raise a._bad("transaction_id", "must be an integer in OCPP 1.6")
        profile["transaction_id"] = int(p.transaction_id)
    return call16.SetChargingProfile(connector_id=p.connector, cs_charging_profiles=profile)


def _profile_201(a: Args, st: ChargerStatus) -> Any:
    p = _profile_request(a, st)
    profile: dict[str, Any] = {
        "id": p.profile_id,
        "stack_level": p.stack_level,
        "charging_profile_purpose": PURPOSES_201[p.purpose],
        "charging_profile_kind": "Absolute",
        "charging_schedule": [{"id": 1, **_schedule(p)}],
    }
    if p.transaction_id is not None:
        profile["transaction_id"] = p.transaction_id
    return call201.SetChargingProfile(evse_id=p.connector, charging_profile=profile)


def _clear_criteria(a: Args) -> tuple[int | None, str | None, int | None, int | None]:
    """Connector, purpose key, stack level and profile id of a clear_charging_profile."""
    purpose = (
        a.choice("purpose", _PURPOSE_ALIASES, "tx_default")
        if a.args.get("purpose") is not None
        else None
    )
    connector = a.optional_int("evse")
    if connector is None:
        connector = a.optional_int("connector")
    if purpose == "max":
        connector = 0
    return connector, purpose, a.optional_int("stack_level"), a.optional_int("profile_id")


def _clear_16(a: Args) -> Any:
    connector, purpose, stack_level, pid = _clear_criteria(a)
    return call16.ClearChargingProfile(
        id=pid,
        connector_id=connector,
        charging_profile_purpose=PURPOSES_16[purpose] if purpose else None,
        stack_level=stack_level,
    )


def _clear_201(a: Args) -> Any:
    connector, purpose, stack_level, pid = _clear_criteria(a)
    criteria: dict[str, Any] = {}
    if connector is not None:
        criteria["evse_id"] = connector
    if purpose is not None:
        criteria["charging_profile_purpose"] = PURPOSES_201[purpose]
    if stack_level is not None:
        criteria["stack_level"] = stack_level
    # Neither an id nor criteria: every profile goes, as in 1.6.
    return call201.ClearChargingProfile(
        charging_profile_id=pid, charging_profile_criteria=criteria or None
    )


def _evse(a: Args) -> int | None:
    """The EVSE of a 2.0.1 command: ``evse``, or ``connector`` as the command line names it."""
    evse = a.optional_int("evse")
    return evse if evse is not None else a.optional_int("connector")


def _id_token_type(a: Args, st: ChargerStatus, id_tag: str) -> str:
    """An id token's type: as given, else as the charger last presented it, else the default."""
    given = a.args.get("id_token_type")
    if given is not None:
        return a.choice("id_token_type", {t.lower(): t for t in ID_TOKEN_TYPES}, "ISO14443")
    return st.token_types.get(id_tag, st.default_id_token_type)


def _local_list(a: Args, version: str) -> list[dict[str, Any]]:
    """``tags`` (TAG, TAG:STATUS; 2.0.1 also TAG:STATUS:TYPE) and ``remove`` (differential)."""
    entries: list[dict[str, Any]] = []
    for item in a.strings("tags"):
        tag, _, rest = item.partition(":")
        status, _, kind = rest.partition(":")
        status = status or "Accepted"
        if not tag or len(tag) > (20 if version == "1.6" else 36):
            raise a._bad("tags", f"has an empty or too long id tag in {item!r}")
        if status not in AUTH_STATUSES_16:
            raise a._bad("tags", f"status must be one of {', '.join(AUTH_STATUSES_16)}: {item!r}")
        if version == "1.6":
            if kind:
                raise a._bad("tags", f"takes no token type in OCPP 1.6: {item!r}")
            entries.append({"id_tag": tag, "id_tag_info": {"status": status}})
            continue
        kind = kind or DEFAULT_ID_TOKEN_TYPE
        if kind not in ID_TOKEN_TYPES:
            raise a._bad("tags", f"token type must be one of {', '.join(ID_TOKEN_TYPES)}: {item!r}")
        entries.append(
            {"id_token": {"id_token": tag, "type": kind}, "id_token_info": {"status": status}}
        )
    for tag in a.strings("remove"):
        # An entry without its info removes the tag (differential updates only).
        if version == "1.6":
            entries.append({"id_tag": tag})
        else:
            entries.append({"id_token": {"id_token": tag, "type": DEFAULT_ID_TOKEN_TYPE}})
    return entries


def _send_local_list(a: Args, version: str) -> Any:
    update = a.choice("update_type", _UPDATE_TYPES, "full")
    entries = _local_list(a, version)
    if update == "Full" and a.strings("remove"):
        raise a._bad("remove", "only applies to a differential update")
    list_version = a.integer("list_version", min=1)
    if version == "1.6":
        return call16.SendLocalList(
            list_version=list_version,
            update_type=update,
            local_authorization_list=entries or None,
        )
    return call201.SendLocalList(
        version_number=list_version,
        update_type=update,
        local_authorization_list=entries or None,
    )


def _data_transfer(a: Args, version: str) -> Any:
    vendor = a.text("vendor_id")
    if len(vendor) > 255:
        raise a._bad("vendor_id", "is longer than 255 characters")
    message = a.args.get("message_id")
    if message is not None:
        message = a.text("message_id")
    data = a.args.get("data")
    if version == "1.6" and data is not None and not isinstance(data, str):
        # 1.6 carries data as text; structured data goes as its JSON.
        data = json.dumps(data, separators=(",", ":"))
    elif version == "2.0.1" and isinstance(data, str) and data.lstrip()[:1] in ("{", "["):
        # 2.0.1 data may be any JSON: an object or array given as text goes as itself.
        with contextlib.suppress(ValueError):
            data = json.loads(data)
    lib = call16 if version == "1.6" else call201
    return lib.DataTransfer(vendor_id=vendor, message_id=message, data=data)


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
        return _profile_16(a, st)
    if name == "clear_charging_profile":
        return _clear_16(a)
    if name == "get_composite_schedule":
        return call16.GetCompositeSchedule(
            connector_id=a.integer("connector", 0),
            duration=a.integer("duration", 3600, min=1),
            charging_rate_unit=a.choice("unit", _RATE_UNITS, "A")
            if a.args.get("unit") is not None
            else None,
        )
    if name == "change_availability":
        return call16.ChangeAvailability(
            connector_id=a.integer("connector", 0),
            type=a.choice("type", _AVAILABILITY, "operative"),
        )
    if name == "unlock_connector":
        return call16.UnlockConnector(connector_id=a.integer("connector", 1, min=1))
    if name == "clear_cache":
        return call16.ClearCache()
    if name == "data_transfer":
        return _data_transfer(a, "1.6")
    if name == "send_local_list":
        return _send_local_list(a, "1.6")
    if name == "get_local_list_version":
        return call16.GetLocalListVersion()
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
        tag = a.text("id_tag", "edged")
        return call201.RequestStartTransaction(
            id_token={"id_token": tag, "type": _id_token_type(a, st, tag)},
            remote_start_id=a.integer("remote_start_id", st.new_remote_start_id()),
            evse_id=a.integer("evse", a.integer("connector", 1, min=1), min=1),
        )
    if name == "remote_stop":
        return call201.RequestStopTransaction(transaction_id=_remote_stop_id(a, st))
    if name == "set_charging_profile":
        return _profile_201(a, st)
    if name == "clear_charging_profile":
        return _clear_201(a)
    if name == "get_composite_schedule":
        evse = _evse(a)
        return call201.GetCompositeSchedule(
            duration=a.integer("duration", 3600, min=1),
            evse_id=evse if evse is not None else 0,
            charging_rate_unit=a.choice("unit", _RATE_UNITS, "A")
            if a.args.get("unit") is not None
            else None,
        )
    if name == "change_availability":
        evse = _evse(a)
        return call201.ChangeAvailability(
            operational_status=a.choice("type", _AVAILABILITY, "operative"),
            # No EVSE, or EVSE 0: the whole charging station.
            evse={"id": evse} if evse else None,
        )
    if name == "unlock_connector":
        evse = _evse(a)
        return call201.UnlockConnector(
            evse_id=evse if evse is not None else 1,
            connector_id=a.integer("connector_id", 1, min=1),
        )
    if name == "clear_cache":
        return call201.ClearCache()
    if name == "data_transfer":
        return _data_transfer(a, "2.0.1")
    if name == "get_base_report":
        return call201.GetBaseReport(
            request_id=a.integer("request_id", st.new_request_id()),
            report_base=a.choice(
                "report_base", {b.lower(): b for b in REPORT_BASES}, "SummaryInventory"
            ),
        )
    if name == "send_local_list":
        return _send_local_list(a, "2.0.1")
    if name == "get_local_list_version":
        return call201.GetLocalListVersion()
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
        evse = _evse(a)
        return call201.TriggerMessage(
            requested_message=message, evse={"id": evse} if evse is not None else None
        )
    raise CommandError(f"{name}: not available in OCPP 2.0.1")


_COMMON = (
    "remote_start",
    "remote_stop",
    "set_charging_profile",
    "clear_charging_profile",
    "get_composite_schedule",
    "reset",
    "trigger_message",
    "change_availability",
    "unlock_connector",
    "clear_cache",
    "data_transfer",
    "send_local_list",
    "get_local_list_version",
)
COMMANDS_16 = (*_COMMON, "get_configuration", "change_configuration")
COMMANDS_201 = (*_COMMON, "get_variables", "set_variables", "get_base_report")
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
    if isinstance(value, decimal.Decimal):
        # The library reads 1.6 decimals (limits) as Decimal; JSON wants a number.
        return float(value)
    return str(value)
