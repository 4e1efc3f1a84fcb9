"""Turning OCPP meter values into canonical samples (quantity names and units of edged.model).

Both versions share the measurand vocabulary; they differ in how units are written
(1.6: ``unit`` string such as ``kWh``; 2.0.1: ``unitOfMeasure`` with a power-of-ten
multiplier) and in value types (1.6 strings, 2.0.1 numbers). Pure functions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edged.model import Sample

DEFAULT_MEASURAND = "Energy.Active.Import.Register"

# measurand → (quantity without phase, canonical unit, quantity prefix for per-phase values)
_MEASURANDS: Mapping[str, tuple[str, str, str | None]] = {
    "Energy.Active.Import.Register": ("energy_import", "Wh", None),
    "Energy.Active.Export.Register": ("energy_export", "Wh", None),
    "Energy.Reactive.Import.Register": ("energy_reactive_import", "varh", None),
    "Energy.Reactive.Export.Register": ("energy_reactive_export", "varh", None),
    "Power.Active.Import": ("power_active", "W", "power_active"),
    "Power.Reactive.Import": ("power_reactive", "var", "power_reactive"),
    "Power.Factor": ("power_factor", "", "power_factor"),
    "Power.Offered": ("power_offered", "W", None),
    "Current.Import": ("current_import", "A", "current"),
    "Current.Offered": ("current_offered", "A", None),
    "Voltage": ("voltage", "V", "voltage"),
    "Frequency": ("frequency", "Hz", None),
    "SoC": ("state_of_charge", "%", None),
    "Temperature": ("temperature", "°C", None),
}

# unit as written by chargers → (canonical unit, factor)
_UNITS: Mapping[str, tuple[str, float]] = {
    "Wh": ("Wh", 1.0),
    "kWh": ("Wh", 1000.0),
    "varh": ("varh", 1.0),
    "kvarh": ("varh", 1000.0),
    "W": ("W", 1.0),
    "kW": ("W", 1000.0),
    "var": ("var", 1.0),
    "kvar": ("var", 1000.0),
    "VA": ("VA", 1.0),
    "kVA": ("VA", 1000.0),
    "A": ("A", 1.0),
    "V": ("V", 1.0),
    "Percent": ("%", 1.0),
    "Hz": ("Hz", 1.0),
    "Celsius": ("°C", 1.0),
    "Celcius": ("°C", 1.0),
}

_PHASES = {"L1": 1, "L2": 2, "L3": 3, "L1-N": 1, "L2-N": 2, "L3-N": 3}
_LINE_TO_LINE = {"L1-L2": "voltage_l1_l2", "L2-L3": "voltage_l2_l3", "L3-L1": "voltage_l3_l1"}
_MAX_FUTURE_S = 300.0
# Chargers whose clock was never set report 1970 or their firmware's build date.
_EARLIEST = 1_577_836_800.0  # 2020-01-01


@dataclass(frozen=True)
class Converted:
    """One sampled value in canonical form."""

    quantity: str
    value: float


def quantity_for(measurand: str, phase: str | None) -> str | None:
    """The canonical quantity of a measurand and phase, or None when edged has no name for it."""
    entry = _MEASURANDS.get(measurand)
    if entry is None:
        return None
    base, _unit, phased = entry
    if not phase:
        return base
    if measurand == "Voltage" and phase in _LINE_TO_LINE:
        return _LINE_TO_LINE[phase]
    if phase == "N" and measurand == "Current.Import":
        return "current_n"
    n = _PHASES.get(phase)
    if phased is None or n is None:
        return None
    return f"{phased}_l{n}"


def _to_canonical(value: float, unit: str | None, multiplier: int, canonical: str) -> float | None:
    scale = 10.0**multiplier
    if unit is None or unit == "":
        return value * scale
    if unit == "K" and canonical == "°C":
        return value * scale - 273.15
    if unit == "Fahrenheit" and canonical == "°C":
        return (value * scale - 32.0) * 5.0 / 9.0
    known = _UNITS.get(unit)
    if known is None or known[0] != canonical:
        return None
    return value * scale * known[1]


def convert(sampled: Mapping[str, Any]) -> Converted | None:
    """Convert one sampledValue (snake_case keys, either version) or None when unusable."""
    if sampled.get("format") == "SignedData":
        return None
    measurand = sampled.get("measurand") or DEFAULT_MEASURAND
    phase = sampled.get("phase")
    if not isinstance(measurand, str) or not (phase is None or isinstance(phase, str)):
        return None
    name = quantity_for(measurand, phase)
    if name is None:
        return None
    raw = sampled.get("value")
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    unit: Any = sampled.get("unit")
    multiplier: Any = 0
    uom = sampled.get("unit_of_measure")
    if isinstance(uom, Mapping):
        unit = uom.get("unit", "Wh" if measurand.startswith("Energy.Active") else None)
        multiplier = uom.get("multiplier", 0)
    if not (unit is None or isinstance(unit, str)):
        return None
    if isinstance(multiplier, bool) or not isinstance(multiplier, int) or abs(multiplier) > 9:
        return None
    converted = _to_canonical(value, unit, multiplier, _MEASURANDS[measurand][1])
    if converted is None or not math.isfinite(converted):
        return None
    return Converted(name, converted)


def parse_timestamp(text: Any, now: float) -> float:
    """Epoch seconds of a charger timestamp; the wall clock when it is missing or implausible."""
    if not isinstance(text, str):
        return now
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return now
    if ts.tzinfo is None:
        return now
    epoch = ts.timestamp()
    return epoch if _EARLIEST <= epoch <= now + _MAX_FUTURE_S else now


def samples(
    device_id: str,
    meter_values: Iterable[Any],
    extra: Mapping[str, str] | None = None,
    now: float | None = None,
) -> list[Sample]:
    """One Sample per meterValue entry, keeping measurand, phase and context as attrs."""
    wall = time.time() if now is None else now
    out: list[Sample] = []
    for entry in meter_values:
        if not isinstance(entry, Mapping):
            continue
        values: dict[str, float] = {}
        attrs: dict[str, str] = dict(extra or {})
        sampled = entry.get("sampled_value")
        if not isinstance(sampled, list):
            continue
        for sv in sampled:
            if not isinstance(sv, Mapping):
                continue
            c = convert(sv)
            if c is None:
                continue
            values[c.quantity] = c.value
            attrs[f"{c.quantity}.measurand"] = str(sv.get("measurand") or DEFAULT_MEASURAND)
            if sv.get("phase"):
                attrs[f"{c.quantity}.phase"] = str(sv["phase"])
            context = sv.get("context")
            if isinstance(context, str):
                attrs.setdefault("context", context)
        if values:
            ts = parse_timestamp(entry.get("timestamp"), wall)
            out.append(Sample(device_id, ts, values, attrs))
    return out
