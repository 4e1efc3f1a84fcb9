"""From decoded M-Bus records to canonical quantities.

By default every current, plain record (storage 0, tariff 0, subunit 0,
instantaneous value) whose VIF names a canonical quantity is kept, converted to
the canonical unit. A profile (the one profile format of every protocol, read and
found by ``edged.profiles``) instead picks one record per canonical quantity by
its decoded quantity or description, storage, tariff and subunit:

    [profile]
    name = "heat-due-date"
    protocol = "mbus"
    manufacturer = "any"
    model = "heat meter"

    [[points]]
    quantity = "energy_heat"      # the canonical quantity to publish
    storage = 1                   # default 0; tariff and subunit likewise
    # record_quantity = "..."     # the decoded quantity to match (default: quantity)
    # description = "Energy"      # or match the record's description instead
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from drivers.mbus.telegram import DataRecord, Telegram
from edged import profiles
from edged.api import Options
from edged.model import QUANTITIES, unit_of

PROTOCOL = "mbus"
PROFILE_DIR = Path(__file__).parent / "profiles"
FUNCTIONS = ("instantaneous", "maximum", "minimum", "error")

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
    """One profile point: the quantity to publish and which record to take for it."""

    quantity: str
    record_quantity: str | None = None
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
        if self.record_quantity is not None and self.record_quantity not in (
            record.quantity,
            canonical_name(record.quantity, medium),
        ):
            return False
        return self.description is None or self.description.lower() == record.description.lower()


@dataclass(frozen=True)
class Profile:
    """A device profile: the records to publish and their quantities."""

    name: str
    points: tuple[Pick, ...]


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
    for pick in profile.points:
        for record, medium in records:
            if pick.matches(record, medium):
                value = convert(record.value, record.unit, unit_of(pick.quantity))
                if value is None:
                    log.debug(
                        "mbus profile=%s quantity=%s unit=%s not convertible",
                        profile.name,
                        pick.quantity,
                        record.unit,
                    )
                    continue
                values[pick.quantity] = value
                break
    return values


def load_profile(path: str | Path) -> Profile:
    """Read and validate an M-Bus profile file; ConfigError names the file and the key."""
    return profiles.load(path, PROTOCOL, parse)


def parse_profile(data: Mapping[str, Any], file: str | Path | None = None) -> Profile:
    """A profile from parsed TOML (the common parts checked by ``edged.profiles``)."""
    return parse(profiles.document(data, file, PROTOCOL))


def parse(doc: profiles.ProfileFile) -> Profile:
    """Validate the M-Bus keys of a profile whose common parts ``edged.profiles`` checked."""
    Options(doc.settings, doc.settings_source).finish()
    return Profile(doc.header.name, tuple(_pick(t) for t in doc.points))


def _pick(point: profiles.PointTable) -> Pick:
    o = Options(point.data, point.source)
    o.raw("quantity")  # checked by edged.profiles
    description = o.str("description", None)
    # Without a description the record is matched by its quantity, the point's by default.
    record_quantity = o.str("record_quantity", None if description else point.quantity)
    pick = Pick(
        quantity=point.quantity,
        record_quantity=record_quantity,
        description=description,
        storage=o.int("storage", 0, min=0),
        tariff=o.int("tariff", 0, min=0),
        subunit=o.int("subunit", 0, min=0),
        function=o.choice("function", FUNCTIONS, "instantaneous"),
    )
    o.finish()
    return pick
