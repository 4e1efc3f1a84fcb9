"""Conversion of the units a register holds into the canonical units of edged quantities."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# Per canonical unit: the units a meter may report it in and the factor into the canonical one.
# Only multiplicative conversions: an offset scale (°F) is not something meters put on Modbus.
_FACTORS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "Wh": {"Wh": 1.0, "kWh": 1e3, "MWh": 1e6},
        "varh": {"varh": 1.0, "kvarh": 1e3, "Mvarh": 1e6},
        "W": {"W": 1.0, "kW": 1e3, "MW": 1e6},
        "var": {"var": 1.0, "kvar": 1e3, "Mvar": 1e6},
        "VA": {"VA": 1.0, "kVA": 1e3, "MVA": 1e6},
        "V": {"V": 1.0, "mV": 1e-3, "kV": 1e3},
        "A": {"A": 1.0, "mA": 1e-3, "kA": 1e3},
        "Hz": {"Hz": 1.0, "mHz": 1e-3},
        "": {"": 1.0},
        "%": {"%": 1.0},
        "°C": {"°C": 1.0, "degC": 1.0},
        "K": {"K": 1.0},
        "m3": {"m3": 1.0, "l": 1e-3},
        "m3/h": {"m3/h": 1.0, "l/h": 1e-3, "l/s": 3.6},
        "kg": {"kg": 1.0, "t": 1e3},
        "kg/h": {"kg/h": 1.0, "t/h": 1e3},
        "bar": {"bar": 1.0, "mbar": 1e-3, "kPa": 1e-2},
        "s": {"s": 1.0, "min": 60.0, "h": 3600.0},
    }
)


def factor(source_unit: str, canonical_unit: str) -> float | None:
    """Factor from ``source_unit`` into ``canonical_unit``, or None if they do not convert."""
    return _FACTORS.get(canonical_unit, {}).get(source_unit)


def accepted(canonical_unit: str) -> tuple[str, ...]:
    """Units that convert into ``canonical_unit`` (for error messages)."""
    return tuple(_FACTORS.get(canonical_unit, {canonical_unit: 1.0}))
