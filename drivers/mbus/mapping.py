"""From decoded M-Bus records to canonical quantities.

By default every current, plain record (storage 0, tariff 0, subunit 0,
instantaneous value) whose VIF names a canonical quantity is kept, converted to
the canonical unit. A profile (a TOML data file) instead picks records by
quantity, storage, tariff, subunit or description and names them itself:

    [[pick]]
    quantity = "energy_heat"      # or: description = "Energy"
    storage = 1                   # default 0; tariff and subunit likewise
    name = "energy_heat"          # the canonical quantity to publish it as
"""

from __future__ import annotations

import logging
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from drivers.mbus.telegram import DataRecord, Telegram
from edged.errors import ConfigError
from edged.model import QUANTITIES, unit_of

log = logging.getLogger(__name__)

# unit as decoded -> (canonical unit, factor into it)
_UNITS: Mapping[str, tuple[str, float]] = {
    "Wh": ("Wh", 1.0),
    "kWh": ("Wh", 1e3),
    "MWh": ("Wh", 1e6),
    "GWh": ("Wh", 1e9),
    "J": ("Wh", 1 / 3600),
    "kJ": ("Wh", 1e3 / 3600),
    "MJ": ("Wh", 1e6 / 3600),
    "GJ": ("Wh", 1e9 / 3600),
    "varh": ("varh", 1.0),
    "kvarh": ("varh", 1e3),
    "W": ("W", 1.0),
    "kW": ("W", 1e3),
    "MW": ("W", 1e6),
    "J/h": ("W", 1 / 3600),
    "var": ("var", 1.0),
    "kvar": ("var", 1e3),
    "VA": ("VA", 1.0),
    "kVA": ("VA", 1e3),
    "m3": ("m3", 1.0),
    "m^3": ("m3", 1.0),
    "m³": ("m3", 1.0),
    "l": ("m3", 1e-3),
    "L": ("m3", 1e-3),
    "m3/h": ("m3/h", 1.0),
    "m^3/h": ("m3/h", 1.0),
    "m³/h": ("m3/h", 1.0),
    "m3/min": ("m3/h", 60.0),
    "m3/s": ("m3/h", 3600.0),
    "l/h": ("m3/h", 1e-3),
    "kg": ("kg", 1.0),
    "t": ("kg", 1e3),
    "kg/h": ("kg/h", 1.0),
    "°C": ("°C", 1.0),
    "C": ("°C", 1.0),
    "K": ("K", 1.0),
    "bar": ("bar", 1.0),
    "V": ("V", 1.0),
    "A": ("A", 1.0),
    "Hz": ("Hz", 1.0),
    "s": ("s", 1.0),
    "min": ("s", 60.0),
    "h": ("s", 3600.0),
    "d": ("s", 86400.0),
    "%": ("%", 1.0),
    "": ("", 1.0),
}

ELECTRICITY = 0x02
# Generic VIF quantities that name a canonical quantity only together with the medium.
_BY_MEDIUM: Mapping[str, tuple[str, str]] = {
    # generic name: (electricity meter, any other meter)
    "energy": ("energy_import", "energy_heat"),
    "power": ("power_active", "power_thermal"),
}


def canonical_name(quantity: str | None, medium: int | None) -> str | None:
    """The canonical quantity a decoded record's quantity stands for on this medium."""
    if quantity is None:
        return None
    if quantity in QUANTITIES:
        return quantity
    pair = _BY_MEDIUM.get(quantity)
    if pair is None:
        return None
    return pair[0] if medium == ELECTRICITY else pair[1]


def convert(value: object, unit: str, target: str) -> float | None:
    """``value`` in ``unit`` converted into ``target``; None when not a number or no rule."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | Fraction):
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    rule = _UNITS.get(unit)
    if rule is None or rule[0] != target:
        return None
    return number * rule[1]


def _is_instantaneous(record: DataRecord) -> bool:
    return record.function.lower().startswith("inst")


@dataclass(frozen=True)
class Pick:
    """One profile rule: which record to take and the quantity to publish it as."""

    name: str
    quantity: str | None = None
    description: str | None = None
    storage: int = 0
    tariff: int = 0
    subunit: int = 0
    function: str = "instantaneous"

    def matches(self, record: DataRecord, medium: int | None) -> bool:
        """True when ``record`` is the one this rule means."""
        if (record.storage, record.tariff, record.subunit) != (
            self.storage,
            self.tariff,
            self.subunit,
        ):
            return False
        if not record.function.lower().startswith(self.function.lower()[:4]):
            return False
        if self.quantity is not None and self.quantity not in (
            record.quantity,
            canonical_name(record.quantity, medium),
        ):
            return False
        return self.description is None or self.description.lower() == record.description.lower()


@dataclass(frozen=True)
class Profile:
    """A device profile: the records to publish and their names."""

    name: str
    picks: tuple[Pick, ...]


def map_telegrams(
    telegrams: Iterable[Telegram], profile: Profile | None = None
) -> dict[str, float]:
    """Canonical quantity -> value from all telegrams of one read."""
    records: list[tuple[DataRecord, int | None]] = []
    for t in telegrams:
        medium = t.header.medium if t.header is not None else None
        records += [(r, medium) for r in t.records if not r.invalid]
    values: dict[str, float] = {}
    if profile is None:
        for record, medium in records:
            if (record.storage, record.tariff, record.subunit) != (0, 0, 0):
                continue
            if not _is_instantaneous(record):
                continue
            name = canonical_name(record.quantity, medium)
            if name is None or name in values:
                continue
            value = convert(record.value, record.unit, unit_of(name))
            if value is not None:
                values[name] = value
        return values
    for pick in profile.picks:
        for record, medium in records:
            if pick.matches(record, medium):
                value = convert(record.value, record.unit, unit_of(pick.name))
                if value is None:
                    log.debug(
                        "mbus profile=%s pick=%s unit=%s not convertible",
                        profile.name,
                        pick.name,
                        record.unit,
                    )
                    continue
                values[pick.name] = value
                break
    return values


_PICK_KEYS = {"name", "quantity", "description", "storage", "tariff", "subunit", "function"}


def load_profile(path: str | Path) -> Profile:
    """Read a profile file; ConfigError names the file and the key that is wrong."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read profile: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"invalid TOML: {exc}") from exc
    return parse_profile(data, file)


def parse_profile(data: Mapping[str, Any], file: str | Path | None = None) -> Profile:
    """A profile from parsed TOML."""
    unknown = sorted(set(data) - {"name", "description", "pick"})
    if "description" in data and not isinstance(data["description"], str):
        raise ConfigError(file, "description", "expected a string")
    if unknown:
        raise ConfigError(file, unknown[0], "unknown key (known: name, description, pick)")
    raw = data.get("pick")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(file, "pick", "a profile needs at least one [[pick]] table")
    picks = []
    for i, entry in enumerate(raw):
        where = f"pick[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(file, where, "expected a table")
        extra = sorted(set(entry) - _PICK_KEYS)
        if extra:
            known = ", ".join(sorted(_PICK_KEYS))
            raise ConfigError(file, f"{where}.{extra[0]}", f"unknown key (known: {known})")
        name = entry.get("name", entry.get("quantity"))
        if not isinstance(name, str) or name not in QUANTITIES:
            raise ConfigError(file, f"{where}.name", f"not a canonical quantity: {name!r}")
        if "quantity" not in entry and "description" not in entry:
            raise ConfigError(file, where, "give quantity or description to pick a record")
        for key in ("storage", "tariff", "subunit"):
            v = entry.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(file, f"{where}.{key}", "expected a non-negative integer")
        for key in ("quantity", "description", "function"):
            if key in entry and not isinstance(entry[key], str):
                raise ConfigError(file, f"{where}.{key}", "expected a string")
        picks.append(
            Pick(
                name=name,
                quantity=entry.get("quantity"),
                description=entry.get("description"),
                storage=entry.get("storage", 0),
                tariff=entry.get("tariff", 0),
                subunit=entry.get("subunit", 0),
                function=entry.get("function", "instantaneous"),
            )
        )
    profile_name = data.get("name", Path(file).stem if file else "profile")
    return Profile(str(profile_name), tuple(picks))
