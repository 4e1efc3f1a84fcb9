"""EN 13757-3 value information tables: primary VIF, the FB and FD extension tables, and the
combinable (orthogonal) VIFE table.

Each lookup answers what a code means, in which canonical unit the value is reported and how the
raw number is scaled into it. Scales are kept as exact integer ratios (value = raw * num / den) so
that a reading of 12345 in 0.001 m3 becomes 12.345 and not 12.345000000000001.
"""

from __future__ import annotations

from dataclasses import dataclass

# Kinds of value a VIF announces; they choose how the data field is interpreted.
NUMBER = "number"
DATE = "date"  # type G (or type F/I truncated to a date)
DATETIME = "datetime"  # type F, I (and J as time of day)
IDENT = "ident"  # identification numbers, versions, addresses: reported unscaled
TEXT = "text"  # plain-text VIF; the unit is in the telegram


@dataclass(frozen=True)
class Vif:
    """Meaning of a (primary or extension-table) VIF code."""

    description: str
    unit: str
    num: int = 1  # value = raw * num / den, in ``unit``
    den: int = 1
    quantity: str | None = None  # generic quantity key, resolved against the medium later
    kind: str = NUMBER


def _pow10(exp: int) -> tuple[int, int]:
    return (10**exp, 1) if exp >= 0 else (1, 10**-exp)


def _scaled(
    desc: str, unit: str, exp: int, quantity: str | None, mul: int = 1, div: int = 1
) -> Vif:
    num, den = _pow10(exp)
    return Vif(desc, unit, num * mul, den * div, quantity)


_DURATION_UNITS = (1, 60, 3600, 86400)  # nn = seconds, minutes, hours, days
_LONG_DURATION_UNITS = (3600, 86400, 2629746, 31556952)  # pp = hours, days, months, years


def _duration(desc: str, nn: int, quantity: str | None = None) -> Vif:
    return Vif(desc, "s", _DURATION_UNITS[nn], 1, quantity)


def _build_primary() -> dict[int, Vif]:
    t: dict[int, Vif] = {}
    for n in range(8):
        t[0x00 + n] = _scaled("Energy", "Wh", n - 3, "energy")
        # Joules are reported as Wh (1 Wh = 3600 J) so energy has one canonical unit.
        t[0x08 + n] = _scaled("Energy", "Wh", n, "energy", div=3600)
        t[0x10 + n] = _scaled("Volume", "m3", n - 6, "volume")
        t[0x18 + n] = _scaled("Mass", "kg", n - 3, "mass")
        t[0x28 + n] = _scaled("Power", "W", n - 3, "power")
        t[0x30 + n] = _scaled("Power", "W", n, "power", div=3600)
        t[0x38 + n] = _scaled("Volume flow", "m3/h", n - 6, "volume_flow")
        t[0x40 + n] = _scaled("Volume flow", "m3/h", n - 7, "volume_flow", mul=60)
        t[0x48 + n] = _scaled("Volume flow", "m3/h", n - 9, "volume_flow", mul=3600)
        t[0x50 + n] = _scaled("Mass flow", "kg/h", n - 3, "mass_flow")
    for nn in range(4):
        t[0x20 + nn] = _duration("On time", nn, "on_time")
        t[0x24 + nn] = _duration("Operating time", nn, "operating_time")
        t[0x58 + nn] = _scaled("Flow temperature", "°C", nn - 3, "flow_temperature")
        t[0x5C + nn] = _scaled("Return temperature", "°C", nn - 3, "return_temperature")
        t[0x60 + nn] = _scaled("Temperature difference", "K", nn - 3, "temperature_difference")
        t[0x64 + nn] = _scaled("External temperature", "°C", nn - 3, "external_temperature")
        t[0x68 + nn] = _scaled("Pressure", "bar", nn - 3, "pressure")
        t[0x70 + nn] = _duration("Averaging duration", nn)
        t[0x74 + nn] = _duration("Actuality duration", nn)
    t[0x6C] = Vif("Time point", "", kind=DATE)
    t[0x6D] = Vif("Time point", "", kind=DATETIME)
    t[0x6E] = Vif("Units for H.C.A.", "")
    t[0x6F] = Vif("Reserved", "")
    t[0x78] = Vif("Fabrication number", "", kind=IDENT)
    t[0x79] = Vif("Enhanced identification", "", kind=IDENT)
    t[0x7A] = Vif("Bus address", "", kind=IDENT)
    t[0x7E] = Vif("Any VIF", "")
    t[0x7F] = Vif("Manufacturer specific", "")
    return t


def _build_fd() -> dict[int, Vif]:
    """Main VIFE code extension table (after VIF 0xFD)."""
    t: dict[int, Vif] = {}
    for nn in range(4):
        t[0x00 + nn] = _scaled("Credit", "currency units", nn - 3, None)
        t[0x04 + nn] = _scaled("Debit", "currency units", nn - 3, None)
        t[0x24 + nn] = _duration("Storage interval", nn)
        t[0x2C + nn] = _duration("Duration since last readout", nn)
        t[0x34 + nn] = _duration("Period of tariff", nn)
        t[0x3C + nn] = _duration("Period of nominal data transmissions", nn)
        t[0x68 + nn] = Vif("Duration since last cumulation", "s", _LONG_DURATION_UNITS[nn])
        t[0x6C + nn] = Vif("Operating time battery", "s", _LONG_DURATION_UNITS[nn])
    for nn in range(1, 4):
        t[0x30 + nn] = _duration("Duration of tariff", nn)
    names = {
        0x08: "Access number",
        0x09: "Medium",
        0x0A: "Manufacturer",
        0x0B: "Parameter set identification",
        0x0C: "Model / Version",
        0x0D: "Hardware version",
        0x0E: "Firmware version",
        0x0F: "Software version",
        0x10: "Customer location",
        0x11: "Customer",
        0x12: "Access code user",
        0x13: "Access code operator",
        0x14: "Access code system operator",
        0x15: "Access code developer",
        0x16: "Password",
        0x17: "Error flags",
        0x18: "Error mask",
        0x19: "Security key",
        0x1A: "Digital output",
        0x1B: "Digital input",
        0x1C: "Baud rate",
        0x1D: "Response delay time",
        0x1E: "Retry",
        0x1F: "Remote control",
        0x20: "First storage number for cyclic storage",
        0x21: "Last storage number for cyclic storage",
        0x22: "Size of storage block",
        0x23: "Descriptor for tariff and subunit",
        0x2A: "Operator specific data",
        0x2B: "Time point second",
        0x3A: "Dimensionless",
        0x3B: "Data container for wireless M-Bus",
        0x60: "Reset counter",
        0x61: "Cumulation counter",
        0x62: "Control signal",
        0x63: "Day of week",
        0x64: "Week number",
        0x65: "Time point of day change",
        0x66: "State of parameter activation",
        0x67: "Special supplier information",
        0x71: "RF level",
        0x72: "Daylight saving",
        0x73: "Listening window management",
        0x74: "Remaining battery life time",
        0x75: "Number of times the meter was stopped",
        0x76: "Data container for manufacturer specific protocol",
    }
    for code, name in names.items():
        t[code] = Vif(name, "", kind=IDENT)
    t[0x28] = Vif("Storage interval", "s", 2629746)
    t[0x29] = Vif("Storage interval", "s", 31556952)
    t[0x38] = Vif("Period of tariff", "s", 2629746)
    t[0x39] = Vif("Period of tariff", "s", 31556952)
    t[0x1C] = Vif("Baud rate", "Bd")
    t[0x1D] = Vif("Response delay time", "bit times")
    t[0x71] = Vif("RF level", "dBm")
    t[0x74] = Vif("Remaining battery life time", "s", 86400)
    t[0x30] = Vif("Start of tariff", "", kind=DATETIME)
    t[0x70] = Vif("Date and time of battery change", "", kind=DATETIME)
    for n in range(16):
        t[0x40 + n] = _scaled("Voltage", "V", n - 9, "voltage")
        t[0x50 + n] = _scaled("Current", "A", n - 12, "current")
    return t


def _build_fb() -> dict[int, Vif]:
    """Alternate VIFE code extension table (after VIF 0xFB)."""
    t: dict[int, Vif] = {}
    for n in range(2):
        t[0x00 + n] = _scaled("Energy", "Wh", n + 5, "energy")
        t[0x02 + n] = _scaled("Reactive energy", "varh", n + 3, "reactive_energy")
        t[0x08 + n] = Vif("Energy", "Wh", 10 ** (n + 8), 3600, "energy")  # 10^(n-1) GJ
        t[0x10 + n] = _scaled("Volume", "m3", n + 2, "volume")
        t[0x18 + n] = _scaled("Mass", "kg", n + 5, "mass")
        t[0x1A + n] = _scaled("Relative humidity", "%", n - 1, None)
        t[0x28 + n] = _scaled("Power", "W", n + 5, "power")
        t[0x30 + n] = Vif("Power", "W", 10 ** (n + 8), 3600, "power")  # 10^(n-1) GJ/h
    for nn in range(4):
        t[0x0C + nn] = Vif("Energy", "Wh", 1163 * 10**nn, 10, "energy")  # 10^(nn-1) Mcal
        t[0x14 + nn] = _scaled("Reactive power", "var", nn, "reactive_power")
        t[0x2C + nn] = _scaled("Frequency", "Hz", nn - 3, "frequency")
        t[0x34 + nn] = _scaled("Apparent power", "VA", nn, "apparent_power")
        t[0x58 + nn] = _scaled("Flow temperature", "°F", nn - 3, None)
        t[0x5C + nn] = _scaled("Return temperature", "°F", nn - 3, None)
        t[0x60 + nn] = _scaled("Temperature difference", "°F", nn - 3, None)
        t[0x64 + nn] = _scaled("External temperature", "°F", nn - 3, None)
        t[0x70 + nn] = _scaled("Cold / warm temperature limit", "°F", nn - 3, None)
        t[0x74 + nn] = _scaled("Cold / warm temperature limit", "°C", nn - 3, None)
    t[0x20] = Vif("Volume", "ft3")
    t[0x21] = _scaled("Volume", "ft3", -1, None)
    t[0x22] = _scaled("Volume", "US gal", -1, None)
    t[0x23] = Vif("Volume", "US gal")
    t[0x24] = _scaled("Volume flow", "US gal/min", -3, None)
    t[0x25] = Vif("Volume flow", "US gal/min")
    t[0x26] = Vif("Volume flow", "US gal/h")
    t[0x2A] = _scaled("Phase U-U", "°", -1, None)
    t[0x2B] = _scaled("Phase U-I", "°", -1, None)
    for n in range(8):
        t[0x78 + n] = _scaled("Cumulated count of max power", "W", n - 3, None)
    return t


PRIMARY: dict[int, Vif] = _build_primary()
FD_TABLE: dict[int, Vif] = _build_fd()
FB_TABLE: dict[int, Vif] = _build_fb()

VIF_FB = 0xFB
VIF_FD = 0xFD
VIF_TEXT = 0x7C
VIF_MANUFACTURER = 0x7F


_RESERVED = Vif("Reserved", "")  # the raw VIF bytes of the record still tell which code


def primary(code: int) -> Vif:
    """Meaning of a primary VIF (extension bit ignored)."""
    v = PRIMARY.get(code & 0x7F)
    return v if v is not None else _RESERVED


def extension(table: int, code: int) -> Vif:
    """Meaning of the first VIFE after VIF 0xFB or 0xFD (extension bit ignored)."""
    tab = FD_TABLE if table == VIF_FD else FB_TABLE
    v = tab.get(code & 0x7F)
    return v if v is not None else _RESERVED


# Record error codes carried by VIFE E000 xxxx in slave responses (EN 13757-3, table 18).
RECORD_ERRORS: dict[int, str] = {
    0x00: "none",
    0x01: "too many DIFEs",
    0x02: "storage number not implemented",
    0x03: "unit number not implemented",
    0x04: "tariff number not implemented",
    0x05: "function not implemented",
    0x06: "data class not implemented",
    0x07: "data size not implemented",
    0x0B: "too many VIFEs",
    0x0C: "illegal VIF-group",
    0x0D: "illegal VIF-exponent",
    0x0E: "VIF/DIF mismatch",
    0x0F: "unimplemented action",
    0x15: "no data available (undefined value)",
    0x16: "data overflow",
    0x17: "data underflow",
    0x18: "data error",
    0x1C: "premature end of record",
}

_PER = {
    0x20: "/s",
    0x21: "/min",
    0x22: "/h",
    0x23: "/d",
    0x24: "/week",
    0x25: "/month",
    0x26: "/year",
    0x27: "/revolution",
    0x2C: "/l",
    0x2D: "/m3",
    0x2E: "/kg",
    0x2F: "/K",
    0x30: "/kWh",
    0x31: "/GJ",
    0x32: "/kW",
    0x33: "/(K*l)",
    0x34: "/V",
    0x35: "/A",
    0x36: "*s",
    0x37: "*s/V",
    0x38: "*s/A",
}

_ORTHOGONAL_FLAGS = {
    0x39: "start date(/time) of",
    0x3A: "uncorrected unit",
    0x3B: "accumulation only if positive",
    0x3C: "accumulation of abs value only if negative",
    0x3D: "alternate non-metric unit system",
    0x3E: "value at base conditions",
    0x3F: "OBIS declaration",
    0x7E: "future value",
}

_DURATION_NAMES = ("s", "min", "h", "d")


@dataclass(frozen=True)
class Orthogonal:
    """Effect of one combinable VIFE on a record."""

    descriptor: str
    unit_suffix: str = ""  # appended to the unit ("/h", ...)
    num: int = 1  # value is multiplied by num / den
    den: int = 1
    offset_exp: int | None = None  # additive correction 10^exp in the VIF's unit
    replaces: Vif | None = None  # the record now means something else (durations, dates, counts)
    keeps_quantity: bool = True  # False when the record no longer is the VIF's quantity


def orthogonal(code: int) -> Orthogonal:
    """Meaning of a combinable (orthogonal) VIFE, extension bit ignored."""
    c = code & 0x7F
    if c < 0x20:
        text = RECORD_ERRORS.get(c, f"reserved error code 0x{c:02X}")
        return Orthogonal(f"error: {text}", keeps_quantity=(c == 0))
    if c in _PER:
        return Orthogonal(f"per {_PER[c][1:]}", unit_suffix=_PER[c], keeps_quantity=False)
    if c in (0x28, 0x29):
        return Orthogonal(f"increment per input pulse on channel {c & 1}", keeps_quantity=False)
    if c in (0x2A, 0x2B):
        return Orthogonal(f"increment per output pulse on channel {c & 1}", keeps_quantity=False)
    if c in _ORTHOGONAL_FLAGS:
        keeps = c in (0x3A, 0x3B, 0x3C, 0x3E)
        if c == 0x39:
            return Orthogonal(
                "start date(/time) of", replaces=Vif("Start date/time", "", kind=DATETIME)
            )
        return Orthogonal(_ORTHOGONAL_FLAGS[c], keeps_quantity=keeps)
    if 0x40 <= c <= 0x4F:
        upper = "upper" if c & 0x08 else "lower"
        if c & 0x07 == 0x00:
            return Orthogonal(f"{upper} limit value", keeps_quantity=False)
        if c & 0x07 == 0x01:
            return Orthogonal(
                f"number of exceeds of {upper} limit",
                replaces=Vif(f"Number of exceeds of {upper} limit", "", kind=IDENT),
            )
        if c & 0x02:
            first = "last" if c & 0x04 else "first"
            edge = "end" if c & 0x01 else "begin"
            what = f"date/time of {edge} of {first} {upper} limit exceed"
            return Orthogonal(what, replaces=Vif(what[0].upper() + what[1:], "", kind=DATETIME))
        return Orthogonal(f"reserved VIFE 0x{c:02X}", keeps_quantity=False)
    if 0x50 <= c <= 0x5F:
        upper = "upper" if c & 0x08 else "lower"
        first = "last" if c & 0x04 else "first"
        nn = c & 0x03
        what = f"duration of {first} {upper} limit exceed ({_DURATION_NAMES[nn]})"
        return Orthogonal(
            what, replaces=Vif(f"Duration of {upper} limit exceed", "s", _DURATION_UNITS[nn])
        )
    if 0x60 <= c <= 0x67:
        first = "last" if c & 0x04 else "first"
        nn = c & 0x03
        what = f"duration of {first} ({_DURATION_NAMES[nn]})"
        return Orthogonal(what, replaces=Vif("Duration", "s", _DURATION_UNITS[nn]))
    if 0x68 <= c <= 0x6F:
        if c & 0x02:
            first = "last" if c & 0x04 else "first"
            edge = "end" if c & 0x01 else "begin"
            what = f"date/time of {edge} of {first}"
            return Orthogonal(what, replaces=Vif("Event date/time", "", kind=DATETIME))
        upper = "upper" if c & 0x04 else "lower"
        return Orthogonal(f"value during {upper} limit exceed", keeps_quantity=False)
    if 0x70 <= c <= 0x77:
        num, den = _pow10((c & 0x07) - 6)
        return Orthogonal(f"multiplicative correction 1e{(c & 0x07) - 6}", num=num, den=den)
    if 0x78 <= c <= 0x7B:
        return Orthogonal(f"additive correction 1e{(c & 0x03) - 3}", offset_exp=(c & 0x03) - 3)
    if c == 0x7C:
        return Orthogonal("extension of combinable VIFE", keeps_quantity=False)
    if c == 0x7D:
        return Orthogonal("multiplicative correction 1e3", num=1000)
    # 0x7F is handled by the caller: what follows is manufacturer specific.
    return Orthogonal(f"reserved VIFE 0x{c:02X}", keeps_quantity=False)


MEDIUMS: dict[int, str] = {
    0x00: "Other",
    0x01: "Oil",
    0x02: "Electricity",
    0x03: "Gas",
    0x04: "Heat (outlet)",
    0x05: "Steam",
    0x06: "Warm water",
    0x07: "Water",
    0x08: "Heat cost allocator",
    0x09: "Compressed air",
    0x0A: "Cooling load meter (outlet)",
    0x0B: "Cooling load meter (inlet)",
    0x0C: "Heat (inlet)",
    0x0D: "Heat / cooling load meter",
    0x0E: "Bus / system component",
    0x0F: "Unknown medium",
    0x10: "Irrigation water",
    0x11: "Water data logger",
    0x12: "Gas data logger",
    0x13: "Gas converter",
    0x14: "Calorific value",
    0x15: "Hot water",
    0x16: "Cold water",
    0x17: "Dual register (hot/cold) water",
    0x18: "Pressure",
    0x19: "A/D converter",
    0x1A: "Smoke detector",
    0x1B: "Room sensor",
    0x1C: "Gas detector",
    0x20: "Breaker (electricity)",
    0x21: "Valve (gas or water)",
    0x25: "Customer unit (display device)",
    0x28: "Waste water",
    0x29: "Garbage",
    0x2A: "Carbon dioxide",
    0x31: "Communication controller",
    0x32: "Unidirectional repeater",
    0x33: "Bidirectional repeater",
    0x36: "Radio converter (system side)",
    0x37: "Radio converter (meter side)",
}


def medium_name(medium: int) -> str:
    """Name of a header medium (device type) code."""
    return MEDIUMS.get(medium, f"Reserved (0x{medium:02X})")


APP_ERRORS: dict[int, str] = {
    0x00: "Unspecified error",
    0x01: "Unimplemented CI-Field",
    0x02: "Buffer too long, truncated",
    0x03: "Too many records",
    0x04: "Premature end of record",
    0x05: "More than 10 DIFEs",
    0x06: "More than 10 VIFEs",
    0x07: "Reserved",
    0x08: "Application busy",
    0x09: "Too many readouts",
}
