"""SunSpec register layout and encoding of one metering point (pure: no I/O, no clock).

Layout of one unit id, in holding registers (function 3; function 4 reads the same):

    40000  "SunS" marker (0x5375 0x6E53)    Modbus "register 40001" in 1-based numbering
    40002  common model 1 (ID 1, L 66)      manufacturer, model, options, version, serial
    40070  meter model (ID, L)              201/203 (int16 + scale factors, L 105) or
                                            211/213 (float32, L 124)
    ...    end model (0xFFFF, 0)

Addresses here are 0-based protocol addresses (what goes into the request PDU); manuals
that count registers from 1 call the marker register 40001. SunSpec clients look at 40000
first (pysunspec2: 40000, then 0, then 50000).

The layouts below are the SunSpec Alliance's model definitions (``sunspec/models``,
``json/model_{1,201,203,211,213}.json``); ``tests/modbus_server/test_sunspec.py`` compares
every point's offset, type, size and scale-factor reference with those files, which are
committed beside it.

Why the values a client decodes are right (the correctness argument):

1. Offsets and types are the official ones (test above), so a client's decoding of point
   P reads exactly the registers this module wrote for P.
2. An int16 point P with scale factor register S: the encoder picks one exponent ``s`` for
   all points sharing S (``_pick_sf``): the smallest ``s`` >= the preferred exponent such that
   every such value ``v`` has ``round(v / 10**s)`` within -32767..32767. The client computes
   ``raw * 10**s``, which differs from ``v`` by at most ``10**s / 2`` (rounding to nearest).
   ``-32768`` (0x8000, not implemented) can never be produced for a real value, so a value
   is never mistaken for "not implemented" and vice versa. ``s`` stays within -10..10 as the
   sunssf type requires; a group no exponent fits is served as not implemented.
3. acc32 energy counters work the same way within 1..2**32-1 (0 means not implemented in
   SunSpec; a counter that is really 0 Wh reads as not implemented, a limit of the type).
4. A value and its scale factor come from the same computation: every read computes the
   whole model from one snapshot of the live values, so a client that reads a model in one
   request (107 registers fit one; pysunspec2 reads each model so) gets a consistent pair.
   The preferred exponents are fixed, so ``s`` only moves when a value outgrows int16.
5. Stale or missing values are the spec's "not implemented" values (int16 0x8000, uint16
   0xFFFF, acc32 0, float32 NaN 0x7FC00000, bitfield32 0xFFFFFFFF), never a number.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

BASE_ADDRESS = 40000
MARKER = (0x5375, 0x6E53)  # "SunS"
END_MODEL = (0xFFFF, 0x0000)
COMMON_ID = 1

NOT_INT16 = 0x8000
NOT_UINT16 = 0xFFFF
NOT_ACC32 = 0
NOT_FLOAT32 = 0x7FC00000
NOT_BITFIELD32 = 0xFFFFFFFF
NOT_SUNSSF = 0x8000

PointType = Literal["uint16", "int16", "acc32", "float32", "bitfield32", "sunssf", "string", "pad"]


@dataclass(frozen=True)
class PointDef:
    """One point of a model: name, type, size in registers and its scale-factor point."""

    name: str
    type: PointType
    size: int
    sf: str | None = None


def _p(name: str, type_: PointType, size: int = 1, sf: str | None = None) -> PointDef:
    return PointDef(name, type_, size, sf)


COMMON: tuple[PointDef, ...] = (
    _p("ID", "uint16"),
    _p("L", "uint16"),
    _p("Mn", "string", 16),
    _p("Md", "string", 16),
    _p("Opt", "string", 8),
    _p("Vr", "string", 8),
    _p("SN", "string", 16),
    _p("DA", "uint16"),
    _p("Pad", "pad"),
)


def _phased(base: str, type_: PointType, sf: str, total: str | None = None) -> list[PointDef]:
    size = 2 if type_ in ("acc32", "float32") else 1
    ref = None if type_ == "float32" else sf
    head = total or base
    return [
        _p(head, type_, size, ref),
        *(_p(f"{base}{ph}", type_, size, ref) for ph in ("phA", "phB", "phC")),
    ]


def _meter_int() -> tuple[PointDef, ...]:
    pts: list[PointDef] = [_p("ID", "uint16"), _p("L", "uint16")]
    pts += [*_phased("A", "int16", "A_SF"), _p("A_SF", "sunssf")]
    pts += [*_phased("PhV", "int16", "V_SF")]
    pts += [_p("PPV", "int16", 1, "V_SF")]
    pts += [_p(f"PhVph{pp}", "int16", 1, "V_SF") for pp in ("AB", "BC", "CA")]
    pts += [_p("V_SF", "sunssf"), _p("Hz", "int16", 1, "Hz_SF"), _p("Hz_SF", "sunssf")]
    for base, sf in (("W", "W_SF"), ("VA", "VA_SF"), ("VAR", "VAR_SF"), ("PF", "PF_SF")):
        pts += [*_phased(base, "int16", sf), _p(sf, "sunssf")]
    for direction in ("Exp", "Imp"):
        pts += [
            _p(f"TotWh{direction}", "acc32", 2, "TotWh_SF"),
            *(_p(f"TotWh{direction}Ph{ph}", "acc32", 2, "TotWh_SF") for ph in "ABC"),
        ]
    pts.append(_p("TotWh_SF", "sunssf"))
    for direction in ("Exp", "Imp"):
        pts += [
            _p(f"TotVAh{direction}", "acc32", 2, "TotVAh_SF"),
            *(_p(f"TotVAh{direction}Ph{ph}", "acc32", 2, "TotVAh_SF") for ph in "ABC"),
        ]
    pts.append(_p("TotVAh_SF", "sunssf"))
    for quadrant in ("ImpQ1", "ImpQ2", "ExpQ3", "ExpQ4"):
        pts += [
            _p(f"TotVArh{quadrant}", "acc32", 2, "TotVArh_SF"),
            *(_p(f"TotVArh{quadrant}Ph{ph}", "acc32", 2, "TotVArh_SF") for ph in "ABC"),
        ]
    pts += [_p("TotVArh_SF", "sunssf"), _p("Evt", "bitfield32", 2)]
    return tuple(pts)


def _meter_float() -> tuple[PointDef, ...]:
    f: PointType = "float32"
    pts: list[PointDef] = [_p("ID", "uint16"), _p("L", "uint16")]
    pts += _phased("A", f, "")
    pts += _phased("PhV", f, "")
    pts += [_p("PPV", f, 2)] + [_p(f"PPVph{pp}", f, 2) for pp in ("AB", "BC", "CA")]
    pts += [_p("Hz", f, 2)]
    for base in ("W", "VA", "VAR", "PF"):
        pts += _phased(base, f, "")
    for direction in ("Exp", "Imp"):
        pts += [_p(f"TotWh{direction}", f, 2)]
        pts += [_p(f"TotWh{direction}Ph{ph}", f, 2) for ph in "ABC"]
    for direction in ("Exp", "Imp"):
        pts += [_p(f"TotVAh{direction}", f, 2)]
        pts += [_p(f"TotVAh{direction}Ph{ph}", f, 2) for ph in "ABC"]
    for quadrant in ("ImpQ1", "ImpQ2", "ExpQ3", "ExpQ4"):
        pts += [_p(f"TotVArh{quadrant}", f, 2)]
        pts += [_p(f"TotVArh{quadrant}ph{ph}", f, 2) for ph in "ABC"]
    pts += [_p("Evt", "bitfield32", 2)]
    return tuple(pts)


METER_INT = _meter_int()
"""Models 201 (single phase) and 203 (three-phase wye): same layout, ID differs (201 names
the line-to-line voltages ``PPVphAB``.. where 203 says ``PhVphAB``..; offsets are equal)."""
METER_FLOAT = _meter_float()
"""Models 211 (single phase) and 213 (three-phase wye), float32: same layout, ID differs."""


def length(points: Sequence[PointDef]) -> int:
    """The model's length register L: its size without the ID and L registers."""
    return sum(p.size for p in points) - 2


def offsets(points: Sequence[PointDef]) -> dict[str, int]:
    """Register offset of every point from the model's ID register."""
    out: dict[str, int] = {}
    pos = 0
    for p in points:
        out[p.name] = pos
        pos += p.size
    return out


MeterModel = Literal[201, 203, 211, 213]

# Finest resolution per scale-factor group: 0.01 A, 0.1 V, 0.01 Hz, 1 W/VA/var, 0.01 %,
# 1 Wh/VAh/varh. A value that does not fit int16 (acc32) at that resolution moves the whole
# group to a coarser exponent (see the module docstring).
PREFERRED_SF: Mapping[str, int] = {
    "A_SF": -2,
    "V_SF": -1,
    "Hz_SF": -2,
    "W_SF": 0,
    "VA_SF": 0,
    "VAR_SF": 0,
    "PF_SF": -2,
    "TotWh_SF": 0,
    "TotVAh_SF": 0,
    "TotVArh_SF": 0,
}


def _fits(raw: int, type_: PointType) -> bool:
    if type_ == "int16":
        return -32767 <= raw <= 32767
    return 1 <= raw <= 0xFFFFFFFF  # acc32: 0 is "not implemented", counters are not negative


def _pick_sf(values: Sequence[float], type_: PointType, preferred: int) -> int | None:
    """The smallest exponent >= preferred at which every value fits its type, or None."""
    for s in range(preferred, 11):
        scale = 10.0**s
        if all(_fits(round(v / scale), type_) for v in values):
            return s
    return None


def _words32(value: int) -> tuple[int, int]:
    return (value >> 16) & 0xFFFF, value & 0xFFFF


def _float_words(value: float | None) -> tuple[int, int]:
    if value is None or not math.isfinite(value):
        return _words32(NOT_FLOAT32)
    try:
        (bits,) = struct.unpack(">I", struct.pack(">f", value))
    except OverflowError:  # beyond float32: not representable, so not served as a number
        return _words32(NOT_FLOAT32)
    return _words32(int(bits))


def string_registers(text: str, size: int) -> list[int]:
    """A SunSpec string: UTF-8, NUL-padded, two bytes per register, cut at ``size``."""
    data = text.encode("utf-8")[: 2 * size]
    # Never cut inside a UTF-8 sequence (ids are ASCII; labels may not be).
    data = data.decode("utf-8", "ignore").encode("utf-8").ljust(2 * size, b"\0")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, 2 * size, 2)]


@dataclass(frozen=True)
class Identity:
    """What the common model says about one metering point."""

    manufacturer: str
    model: str
    options: str
    version: str
    serial: str
    device_address: int


@functools.lru_cache(maxsize=512)
def _common(ident: Identity) -> tuple[int, ...]:
    return tuple(_common_registers(ident))


def common_registers(ident: Identity) -> list[int]:
    """Model 1 (ID and L included)."""
    return list(_common(ident))


def _common_registers(ident: Identity) -> list[int]:
    regs = [COMMON_ID, length(COMMON)]
    regs += string_registers(ident.manufacturer, 16)
    regs += string_registers(ident.model, 16)
    regs += string_registers(ident.options, 8)
    regs += string_registers(ident.version, 8)
    regs += string_registers(ident.serial, 16)
    regs += [ident.device_address & 0xFFFF, 0]
    return regs


def meter_registers(model: MeterModel, values: Mapping[str, float]) -> list[int]:
    """A meter model (ID and L included) from SunSpec point values in SunSpec units.

    ``values`` holds the points that are implemented and fresh; every other point is
    encoded as not implemented. ``Evt`` is 0 (no event) when any value is present.
    """
    points = METER_FLOAT if model in (211, 213) else METER_INT
    regs = [model, length(points)]
    if points is METER_FLOAT:
        for p in points[2:]:
            if p.type == "bitfield32":
                regs += _words32(0 if values else NOT_BITFIELD32)
            else:
                regs += _float_words(values.get(p.name))
        return regs
    exponents = _exponents(points, values)
    for p in points[2:]:
        if p.type == "sunssf":
            s = exponents.get(p.name)
            regs.append(NOT_SUNSSF if s is None else s & 0xFFFF)
        elif p.type == "bitfield32":
            regs += _words32(0 if values else NOT_BITFIELD32)
        else:
            v = values.get(p.name)
            s = exponents.get(p.sf) if p.sf else None
            if v is None or s is None or not math.isfinite(v):
                regs += [NOT_INT16] if p.type == "int16" else _words32(NOT_ACC32)
                continue
            raw = round(v / 10.0**s)
            if p.type == "int16":
                regs.append(raw & 0xFFFF)
            else:
                regs += _words32(raw)
    return regs


def _groups(points: Sequence[PointDef]) -> dict[str, tuple[PointType, tuple[str, ...]]]:
    """Scale-factor point → the type and names of the points it scales."""
    names: dict[str, list[str]] = {}
    types: dict[str, PointType] = {}
    for p in points:
        if p.sf is not None:
            names.setdefault(p.sf, []).append(p.name)
            types[p.sf] = p.type
    return {sf: (types[sf], tuple(n)) for sf, n in names.items()}


_INT_GROUPS = _groups(METER_INT)


def _exponents(points: Sequence[PointDef], values: Mapping[str, float]) -> dict[str, int]:
    groups = _INT_GROUPS if points is METER_INT else _groups(points)
    out: dict[str, int] = {}
    for sf, (type_, names) in groups.items():
        vals = [v for n in names if (v := values.get(n)) is not None and math.isfinite(v)]
        preferred = PREFERRED_SF[sf]
        s = _pick_sf(vals, type_, preferred) if vals else preferred
        if s is not None:
            out[sf] = s
    return out


def decode_int(raw: int, sf_raw: int) -> float | None:
    """A client's view of an int16 point and its scale factor (None: not implemented)."""
    if raw == NOT_INT16 or sf_raw == NOT_SUNSSF:
        return None
    value = raw - 0x10000 if raw & 0x8000 else raw
    s = sf_raw - 0x10000 if sf_raw & 0x8000 else sf_raw
    return float(value) * 10.0**s


# -- canonical quantities → SunSpec points -------------------------------------------------

_PHASES = ("A", "B", "C")
THREE_PHASE_HINTS = frozenset(
    f"{base}_l{n}"
    for base in ("voltage", "current", "power_active", "power_reactive", "power_apparent")
    for n in (2, 3)
) | {"voltage_l1_l2", "voltage_l2_l3", "voltage_l3_l1"}
"""Quantities only a polyphase meter has: a point with any of them gets model 203/213."""


def choose_model(quantities: set[str] | frozenset[str], models: str) -> MeterModel:
    """203/213 for a point with polyphase quantities (or none yet), else 201/211.

    201 and 203 (211 and 213) have the same layout, so a client that scanned before the
    first sample reads the same registers afterwards.
    """
    three = not quantities or bool(quantities & THREE_PHASE_HINTS)
    if models == "float":
        return 213 if three else 211
    return 203 if three else 201


def _sum(vals: Mapping[str, float], names: Sequence[str]) -> float | None:
    got = [vals[n] for n in names if n in vals]
    return sum(got) if got and len(got) == len(names) else None


def _mean(vals: Mapping[str, float], names: Sequence[str]) -> float | None:
    total = _sum(vals, names)
    return None if total is None else total / len(names)


def meter_values(model: MeterModel, live: Mapping[str, float]) -> dict[str, float]:
    """SunSpec point values (SunSpec units) from fresh canonical values of one point.

    Totals come from the meter's own total when it has one, else from all three phases
    (a sum for currents and powers, the mean for voltages). Power factor is a percentage in
    the int models (``Pct``) and a plain factor in the float models (``PF``). Energy per
    phase, apparent and reactive energy are not in the canonical quantities: not served.
    """
    single = model in (201, 211)
    phases = ("1",) if single else ("1", "2", "3")
    out: dict[str, float] = {}

    def put(name: str, value: float | None) -> None:
        if value is not None:
            out[name] = value

    def phased(prefix: str, base: str, how: str) -> None:
        names = [f"{base}_l{n}" for n in phases]
        total = live.get(base)
        if total is None:
            total = _mean(live, names) if how == "mean" else _sum(live, names)
        put(prefix, total)
        for n, ph in zip(phases, _PHASES, strict=False):
            put(f"{prefix}ph{ph}", live.get(f"{base}_l{n}"))
        if single:  # a single-phase meter's total is its phase A
            put(f"{prefix}phA", out.get(f"{prefix}phA", live.get(base)))

    phased("A", "current", "sum")
    phased("PhV", "voltage", "mean")
    phased("W", "power_active", "sum")
    phased("VA", "power_apparent", "sum")
    phased("VAR", "power_reactive", "sum")
    pf_live = {k: v for k, v in live.items() if k.startswith("power_factor")}
    pf_scale = 1.0 if model in (211, 213) else 100.0
    pf_total = pf_live.get("power_factor")
    put("PF", None if pf_total is None else pf_total * pf_scale)
    for n, ph in zip(phases, _PHASES, strict=False):
        v = pf_live.get(f"power_factor_l{n}")
        put(f"PFph{ph}", None if v is None else v * pf_scale)
    if single and "PFphA" not in out and "PF" in out:
        out["PFphA"] = out["PF"]
    if not single:
        pairs = ("l1_l2", "l2_l3", "l3_l1")
        ll_prefix = "PPVph" if model == 213 else "PhVph"
        for pair, name in zip(pairs, ("AB", "BC", "CA"), strict=True):
            put(f"{ll_prefix}{name}", live.get(f"voltage_{pair}"))
        put("PPV", _mean(live, [f"voltage_{p}" for p in pairs]))
    put("Hz", live.get("frequency"))
    put("TotWhImp", live.get("energy_import"))
    put("TotWhExp", live.get("energy_export"))
    return out


def model_size(model: MeterModel) -> int:
    """Registers of a meter model, ID and L included."""
    return length(METER_FLOAT if model in (211, 213) else METER_INT) + 2


def device_map(ident: Identity, model: MeterModel, values: Mapping[str, float]) -> list[int]:
    """Every register from the marker to the end model (index 0 is address 40000)."""
    return [
        *MARKER,
        *common_registers(ident),
        *meter_registers(model, values),
        *END_MODEL,
    ]


def map_size(model: MeterModel) -> int:
    """Registers from the marker to the end model included."""
    return 2 + length(COMMON) + 2 + model_size(model) + 2
