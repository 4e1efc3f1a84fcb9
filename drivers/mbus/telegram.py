"""M-Bus application layer (EN 13757-3): decoding the user data of an RSP_UD telegram.

Handles the variable data structure (CI 0x72/0x76 long header, 0x7A short header, 0x78 no
header), the fixed data structure (CI 0x73/0x77) and application errors (CI 0x70). Values are
scaled into canonical units (Wh, m3, W, m3/h, °C, K, s, bar, V, A, ...) and, where one fits,
named with a quantity from ``edged.model.QUANTITIES``. Decoding is pure and raises only
``TelegramError`` (or ``FrameError`` from the link layer) on malformed input.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from datetime import date, datetime, time

from drivers.mbus import frame as link
from drivers.mbus import vif as tables
from edged.errors import DecodeError
from edged.model import QUANTITIES

Value = int | float | str | bytes | datetime | date | time | None


class TelegramError(DecodeError):
    """The user data of a telegram is malformed or of a kind this decoder does not read."""


@dataclass(frozen=True)
class Header:
    """The fixed part in front of the data records (long header, or what a short one holds)."""

    id: int
    manufacturer: str
    version: int
    medium: int
    medium_name: str
    access_number: int
    status: int
    signature: int


@dataclass(frozen=True)
class DataRecord:
    """One decoded data record, value scaled into ``unit``."""

    dif: bytes  # DIF and DIFEs as received
    vif: bytes  # VIF, plain-text unit and VIFEs as received
    function: str  # "instantaneous", "maximum", "minimum" or "error"
    storage: int
    tariff: int
    subunit: int
    value: Value
    unit: str
    quantity: str | None
    description: str
    vife: tuple[str, ...] = ()  # what the VIF extensions said, in order
    invalid: bool = False  # the meter flagged the value invalid, or it holds an error marker
    raw: bytes = b""  # the data field as received


@dataclass(frozen=True)
class AppError:
    """An application error reported by the slave (CI 0x70)."""

    code: int
    text: str


@dataclass(frozen=True)
class Telegram:
    """A decoded RSP_UD: header, records, trailing manufacturer data and flags."""

    header: Header | None
    records: tuple[DataRecord, ...]
    manufacturer_data: bytes = b""
    more_follows: bool = False  # DIF 0x1F: request the next telegram
    error: AppError | None = None
    fixed: bool = False


CI_ERROR = link.CI_ERROR
CI_LONG = link.CI_RESPONSE_LONG
CI_LONG_MSB = link.CI_RESPONSE_LONG_MSB
CI_FIXED = link.CI_RESPONSE_FIXED
CI_FIXED_MSB = link.CI_RESPONSE_FIXED_MSB
CI_NONE = link.CI_RESPONSE_NONE
CI_COMPACT = link.CI_RESPONSE_NONE_MSB
CI_SHORT = link.CI_RESPONSE_SHORT

MAX_DIFE = 10
MAX_VIFE = 10
_FUNCTIONS = ("instantaneous", "maximum", "minimum", "error")
# Data field length by the DIF's low nibble; 0x0D (LVAR) and 0x0F (special) are handled apart.
_LENGTHS = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, -1, 6, -1)
_BCD_CODINGS = frozenset((0x09, 0x0A, 0x0B, 0x0C, 0x0E))
_ELECTRICITY = 0x02
_UNKNOWN_MEDIA = frozenset((0x00, 0x0F))


def _quantity(key: str | None, medium: int | None) -> str | None:
    """Canonical quantity name for a generic VIF quantity, given the medium of the meter."""
    if key is None:
        return None
    if key in ("energy", "power"):
        if medium is None or medium in _UNKNOWN_MEDIA:
            return None
        if key == "energy":
            return "energy_import" if medium == _ELECTRICITY else "energy_heat"
        return "power_active" if medium == _ELECTRICITY else "power_thermal"
    mapped = {
        "reactive_energy": "energy_reactive_import",
        "reactive_power": "power_reactive",
        "apparent_power": "power_apparent",
    }.get(key, key)
    return mapped if mapped in QUANTITIES else None


# --- codings ------------------------------------------------------------------------------


def _bcd(raw: bytes) -> int | None:
    """Type A BCD (least significant byte first); F in the top nibble means negative.

    Any other non-decimal nibble is an error marker, reported as None.
    """
    digits = raw[::-1].hex()
    negative = digits[:1] == "f"
    if negative:
        digits = digits[1:]
    if not digits or not digits.isdigit():
        return None
    value = int(digits)
    return -value if negative else value


def _real32(raw: bytes) -> float:
    """IEEE 754 single precision, rounded to the 7 significant digits it carries."""
    v: float = struct.unpack("<f", raw)[0]
    if v == 0.0 or not math.isfinite(v):
        return v
    return float(f"{v:.7g}")


def _signed(raw: bytes) -> int:
    return int.from_bytes(raw, "little", signed=True)


def _year(yy: int, hundreds: int) -> int:
    if hundreds:
        return 1900 + 100 * hundreds + yy
    # Meters without the hundred-year bits count from 1981 to 2080.
    return 2000 + yy if yy < 81 else 1900 + yy


def _type_g(b: bytes) -> date | None:
    day = b[0] & 0x1F
    month = b[1] & 0x0F
    yy = ((b[0] & 0xE0) >> 5) | ((b[1] & 0xF0) >> 1)
    try:
        return date(_year(yy, 0), month, day)
    except ValueError:
        return None


def _type_f(b: bytes) -> tuple[datetime | None, bool]:
    invalid = bool(b[0] & 0x80)
    minute = b[0] & 0x3F
    hour = b[1] & 0x1F
    hundreds = (b[1] >> 5) & 0x03
    day = b[2] & 0x1F
    month = b[3] & 0x0F
    yy = ((b[2] & 0xE0) >> 5) | ((b[3] & 0xF0) >> 1)
    if invalid:  # IV bit: the meter says the time is not valid
        return None, True
    try:
        return datetime(_year(yy, hundreds), month, day, hour, minute), False
    except ValueError:
        return None, True


def _type_i(b: bytes) -> tuple[datetime | None, bool]:
    second = b[0] & 0x3F
    minute = b[1] & 0x3F
    invalid = bool(b[1] & 0x80)
    hour = b[2] & 0x1F
    day = b[3] & 0x1F
    month = b[4] & 0x0F
    yy = ((b[3] & 0xE0) >> 5) | ((b[4] & 0xF0) >> 1)
    if invalid:
        return None, True
    try:
        return datetime(_year(yy, 0), month, day, hour, minute, second), False
    except ValueError:
        return None, True


def _type_j(b: bytes) -> time | None:
    try:
        return time(b[2] & 0x1F, b[1] & 0x3F, b[0] & 0x3F)
    except ValueError:
        return None


def _lvar(lvar: int, offset: int) -> tuple[int, str]:
    """Data length and coding announced by an LVAR byte (EN 13757-3, LVAR table)."""
    if lvar <= 0xBF:
        return lvar, "text"
    if 0xC0 <= lvar <= 0xC9:
        return lvar - 0xC0, "bcd"  # (LVAR - C0h) * 2 digits
    if 0xD0 <= lvar <= 0xD9:
        return lvar - 0xD0, "bcd-"
    if 0xE0 <= lvar <= 0xEF:
        return lvar - 0xE0, "binary"
    if 0xF0 <= lvar <= 0xF4:
        return 4 * (lvar - 0xEC), "binary"
    if lvar == 0xF5:
        return 48, "binary"
    if lvar == 0xF6:
        return 64, "binary"
    raise TelegramError(f"reserved LVAR 0x{lvar:02X} at offset {offset}: record length unknown")


# --- record semantics -----------------------------------------------------------------------


def _decode_value(coding: int, lvar_kind: str, raw: bytes, kind: str) -> tuple[Value, bool]:
    """Interpret a data field; returns (value, invalid)."""
    if coding in (0x00, 0x08):
        return None, False
    if kind in (tables.DATE, tables.DATETIME) and coding in (0x02, 0x03, 0x04, 0x06):
        n = len(raw)
        if n == 2:
            d = _type_g(raw)
            return d, d is None
        if n == 4:
            return _type_f(raw)
        if n == 6:
            return _type_i(raw)
        t = _type_j(raw)
        return t, t is None
    if coding == 0x05:
        return _real32(raw), False
    if coding in _BCD_CODINGS:
        v = _bcd(raw)
        return v, v is None
    if coding == 0x0D:
        if lvar_kind == "text":
            return raw[::-1].decode("latin-1"), False
        if lvar_kind in ("bcd", "bcd-"):
            v = _bcd(raw)
            if v is None:
                return None, True
            return (-v if lvar_kind == "bcd-" else v), False
        if len(raw) <= 8:
            return _signed(raw) if raw else 0, False
        return raw, False
    if kind == tables.IDENT:
        return int.from_bytes(raw, "little"), False
    return _signed(raw), False


def _scale(value: Value, num: int, den: int) -> Value:
    if num == 1 and den == 1:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, int):
        n = value * num
        return n if den == 1 else n / den
    return value * num / den


@dataclass(frozen=True)
class _Vib:
    base: tables.Vif
    orthogonal: tuple[int, ...]
    text: str | None
    manufacturer: bool = False  # VIF 0x7F/0xFF: every VIFE is the manufacturer's


def _orthogonal_effects(
    codes: tuple[int, ...],
) -> tuple[list[str], list[tables.Orthogonal], bool]:
    """Descriptors and effects of the combinable VIFEs; True if they turn manufacturer specific."""
    descriptors: list[str] = []
    effects: list[tables.Orthogonal] = []
    i = 0
    while i < len(codes):
        c = codes[i] & 0x7F
        if c == 0x7F:
            rest = bytes(codes[i:]).hex(" ").upper()
            descriptors.append(f"manufacturer specific VIFE {rest}")
            return descriptors, effects, True
        if c == 0x7C and i + 1 < len(codes):
            descriptors.append(f"extended combinable VIFE 0x{codes[i + 1] & 0x7F:02X}")
            effects.append(tables.Orthogonal("extended", keeps_quantity=False))
            i += 2
            continue
        o = tables.orthogonal(c)
        descriptors.append(o.descriptor)
        effects.append(o)
        i += 1
    return descriptors, effects, False


def _make_record(
    dif_bytes: bytes,
    vib_bytes: bytes,
    vib: _Vib,
    coding: int,
    lvar_kind: str,
    raw: bytes,
    msb: bool,
    medium: int | None,
    storage: int,
    tariff: int,
    subunit: int,
) -> DataRecord:
    base = vib.base
    if vib.manufacturer:
        rest = bytes(vib.orthogonal).hex(" ").upper()
        descriptors = [f"manufacturer specific VIFE {rest}"] if rest else []
        effects: list[tables.Orthogonal] = []
        manufacturer = True
    else:
        descriptors, effects, manufacturer = _orthogonal_effects(vib.orthogonal)
    meaning = base
    keeps = not manufacturer
    num, den = base.num, base.den
    offset_exp: int | None = None
    unit = base.unit
    replaced = False
    for o in effects:
        if o.replaces is not None:
            meaning = o.replaces
            num, den = meaning.num, meaning.den
            unit = meaning.unit
            replaced = True
            keeps = False
            continue
        if not o.keeps_quantity:
            keeps = False
        if o.unit_suffix:
            unit = (unit or "1") + o.unit_suffix
        num *= o.num
        den *= o.den
        if o.offset_exp is not None:
            offset_exp = o.offset_exp
    data = raw[::-1] if msb and coding != 0x0D else raw
    value, invalid = _decode_value(coding, lvar_kind, data, meaning.kind)
    if meaning.kind in (tables.NUMBER, tables.TEXT) and isinstance(value, int | float):
        value = _scale(value, num, den)
        if offset_exp is not None and isinstance(value, int | float):
            on, od = _pow10(offset_exp)
            value = value + _ratio(on * base.num, od * base.den)
    if isinstance(value, datetime | date | time):
        unit = ""
    description = meaning.description
    if replaced:
        description = f"{meaning.description} ({base.description})"
    quantity = _quantity(base.quantity, medium) if keeps and not replaced else None
    if meaning.kind in (tables.DATE, tables.DATETIME, tables.IDENT):
        quantity = None
    return DataRecord(
        dif=dif_bytes,
        vif=vib_bytes,
        function=_FUNCTIONS[(dif_bytes[0] >> 4) & 0x03],
        storage=storage,
        tariff=tariff,
        subunit=subunit,
        value=value,
        unit=unit,
        quantity=quantity,
        description=description,
        vife=tuple(descriptors),
        invalid=invalid,
        raw=raw,
    )


def _pow10(exp: int) -> tuple[int, int]:
    return (10**exp, 1) if exp >= 0 else (1, 10**-exp)


def _ratio(num: int, den: int) -> int | float:
    return num if den == 1 else num / den


def _vib(vif: int, vifes: list[int], text: str | None, offset: int) -> _Vib:
    code = vif & 0x7F
    if text is not None:
        return _Vib(tables.Vif(text, text, kind=tables.TEXT), tuple(vifes), text)
    if vif in (tables.VIF_FB, tables.VIF_FD):
        if not vifes:
            raise TelegramError(f"VIF 0x{vif:02X} at offset {offset} lacks its extension byte")
        return _Vib(tables.extension(vif, vifes[0]), tuple(vifes[1:]), None)
    if code == tables.VIF_MANUFACTURER:
        # Everything after a manufacturer-specific VIF is the manufacturer's; keep it raw.
        return _Vib(tables.Vif("Manufacturer specific", ""), tuple(vifes), None, True)
    return _Vib(tables.primary(code), tuple(vifes), None)


def _decode_records(
    data: bytes, pos: int, msb: bool, medium: int | None
) -> tuple[list[DataRecord], bytes, bool]:
    """Parse data records from ``pos``; returns records, manufacturer data, more-follows."""
    records: list[DataRecord] = []
    n = len(data)
    while pos < n:
        dif = data[pos]
        if dif & 0x0F == 0x0F:
            if dif == 0x2F:  # idle filler
                pos += 1
                continue
            if dif in (0x0F, 0x1F):
                return records, bytes(data[pos + 1 :]), dif == 0x1F
            if dif == 0x7F:
                raise TelegramError(
                    f"global readout request DIF 0x7F at offset {pos} in a slave response"
                )
            raise TelegramError(f"reserved special-function DIF 0x{dif:02X} at offset {pos}")
        start = pos
        pos += 1
        storage = (dif >> 6) & 0x01
        tariff = 0
        subunit = 0
        ndife = 0
        b = dif
        while b & 0x80:
            if pos >= n:
                raise TelegramError(f"premature end of record at offset {start}: DIFE missing")
            if ndife == MAX_DIFE:
                raise TelegramError(f"record at offset {start} has more than {MAX_DIFE} DIFEs")
            b = data[pos]
            pos += 1
            storage |= (b & 0x0F) << (1 + 4 * ndife)
            tariff |= ((b >> 4) & 0x03) << (2 * ndife)
            subunit |= ((b >> 6) & 0x01) << ndife
            ndife += 1
        dif_bytes = bytes(data[start:pos])
        if pos >= n:
            raise TelegramError(f"premature end of record at offset {start}: VIF missing")
        vib_start = pos
        vif = data[pos]
        pos += 1
        text: str | None = None
        if vif & 0x7F == tables.VIF_TEXT:
            if pos >= n:
                raise TelegramError(
                    f"premature end of record at offset {start}: plain-text VIF length missing"
                )
            tlen = data[pos]
            pos += 1
            if pos + tlen > n:
                raise TelegramError(
                    f"plain-text VIF of {tlen} characters at offset {vib_start} "
                    f"runs past the end of the telegram"
                )
            text = bytes(data[pos : pos + tlen])[::-1].decode("latin-1")
            pos += tlen
        vifes: list[int] = []
        b = vif
        while b & 0x80:
            if pos >= n:
                raise TelegramError(f"premature end of record at offset {start}: VIFE missing")
            if len(vifes) == MAX_VIFE:
                raise TelegramError(f"record at offset {start} has more than {MAX_VIFE} VIFEs")
            b = data[pos]
            pos += 1
            vifes.append(b)
        vib_bytes = bytes(data[vib_start:pos])
        coding = dif & 0x0F
        lvar_kind = ""
        if coding == 0x0D:
            if pos >= n:
                raise TelegramError(f"premature end of record at offset {start}: LVAR missing")
            length, lvar_kind = _lvar(data[pos], pos)
            pos += 1
        else:
            length = _LENGTHS[coding]
        if pos + length > n:
            raise TelegramError(
                f"premature end of data at offset {start}: record needs {length} bytes, "
                f"{n - pos} left"
            )
        raw = bytes(data[pos : pos + length])
        pos += length
        records.append(
            _make_record(
                dif_bytes,
                vib_bytes,
                _vib(vif, vifes, text, vib_start),
                coding,
                lvar_kind,
                raw,
                msb,
                medium,
                storage,
                tariff,
                subunit,
            )
        )
    return records, b"", False


def _manufacturer(code: int) -> str:
    return "".join(chr(((code >> shift) & 0x1F) + 64) for shift in (10, 5, 0))


def _bcd_id(raw: bytes) -> int:
    """Identification number; wildcard or garbage nibbles are folded in as their value."""
    value = 0
    for byte in reversed(raw):
        value = value * 100 + (byte >> 4) * 10 + (byte & 0x0F)
    return value


def _long_header(data: bytes, msb: bool) -> Header:
    if len(data) < 12:
        raise TelegramError(f"long header needs 12 bytes, telegram has {len(data)}")
    ident = data[0:4]
    mfr = data[4:6]
    sig = data[10:12]
    if msb:
        ident, mfr, sig = ident[::-1], mfr[::-1], sig[::-1]
    medium = data[7]
    return Header(
        id=_bcd_id(ident),
        manufacturer=_manufacturer(int.from_bytes(mfr, "little")),
        version=data[6],
        medium=medium,
        medium_name=tables.medium_name(medium),
        access_number=data[8],
        status=data[9],
        signature=int.from_bytes(sig, "little"),
    )


# --- fixed data structure -------------------------------------------------------------------

_FIXED_MEDIA = (
    (0x00, "Other"),
    (0x01, "Oil"),
    (0x02, "Electricity"),
    (0x03, "Gas"),
    (0x04, "Heat"),
    (0x05, "Steam"),
    (0x06, "Hot water"),
    (0x07, "Water"),
    (0x08, "Heat cost allocator"),
    (0x0F, "Reserved"),
    (0x03, "Gas (mode 2)"),
    (0x04, "Heat (mode 2)"),
    (0x06, "Hot water (mode 2)"),
    (0x07, "Water (mode 2)"),
    (0x08, "Heat cost allocator (mode 2)"),
    (0x0F, "Reserved"),
)


def _fixed_unit(code: int) -> tables.Vif:
    """Counter unit of the fixed data structure (6-bit code)."""
    if 0x02 <= code <= 0x0A:
        return tables.Vif("Energy", "Wh", 10 ** (code - 0x02), 1, "energy")
    if 0x0B <= code <= 0x13:
        return tables.Vif("Energy", "Wh", 10 ** (code - 0x0B + 3), 3600, "energy")
    if 0x14 <= code <= 0x1C:
        return tables.Vif("Power", "W", 10 ** (code - 0x14), 1, "power")
    if 0x1D <= code <= 0x25:
        return tables.Vif("Power", "W", 10 ** (code - 0x1D + 3), 3600, "power")
    if 0x26 <= code <= 0x2E:
        return tables.Vif("Volume", "m3", 1, 10 ** (6 - (code - 0x26)), "volume")
    if 0x2F <= code <= 0x37:
        return tables.Vif("Volume flow", "m3/h", 1, 10 ** (6 - (code - 0x2F)), "volume_flow")
    if code == 0x38:
        return tables.Vif("Temperature", "°C", 1, 1000, "temperature")
    if code == 0x39:
        return tables.Vif("Units for H.C.A.", "")
    if code == 0x00:
        return tables.Vif("Time (h,m,s)", "", kind=tables.IDENT)
    if code == 0x01:
        return tables.Vif("Date (D,M,Y)", "", kind=tables.IDENT)
    if code == 0x3F:
        return tables.Vif("Without units", "")
    return tables.Vif(f"Reserved fixed unit 0x{code:02X}", "")


def _decode_fixed(data: bytes, msb: bool) -> Telegram:
    if len(data) != 16:
        raise TelegramError(f"fixed data structure needs 16 bytes, telegram has {len(data)}")
    ident, counters = data[0:4], (data[8:12], data[12:16])
    units = data[6:8]
    if msb:
        ident = ident[::-1]
        counters = (counters[0][::-1], counters[1][::-1])
    access, status = data[4], data[5]
    medium, medium_name = _FIXED_MEDIA[((units[0] >> 6) & 0x03) | (((units[1] >> 6) & 0x03) << 2)]
    header = Header(
        id=_bcd_id(ident),
        manufacturer="",
        version=0,
        medium=medium,
        medium_name=medium_name,
        access_number=access,
        status=status,
        signature=0,
    )
    binary = bool(status & 0x80)
    stored = 1 if status & 0x40 else 0
    first_code = units[0] & 0x3F
    records = []
    for i, raw in enumerate(counters):
        code = units[i] & 0x3F
        storage = stored
        if i == 1 and code == 0x3E:  # "same unit as counter 1, but historic value"
            code, storage = first_code, 1
        meaning = _fixed_unit(code)
        if binary:
            value: Value = int.from_bytes(raw, "little")
            invalid = False
        else:
            value = _bcd(raw)
            invalid = value is None
        if meaning.kind == tables.NUMBER:
            value = _scale(value, meaning.num, meaning.den)
        records.append(
            DataRecord(
                dif=b"",
                vif=bytes((units[i],)),
                function="instantaneous",
                storage=storage,
                tariff=0,
                subunit=0,
                value=value,
                unit=meaning.unit,
                quantity=_quantity(meaning.quantity, medium),
                description=meaning.description,
                invalid=invalid,
                raw=bytes(data[8 + 4 * i : 12 + 4 * i]),
            )
        )
    return Telegram(header=header, records=tuple(records), fixed=True)


# --- public API -----------------------------------------------------------------------------


def decode_user_data(ci: int, data: bytes) -> Telegram:
    """Decode the user data that follows CI ``ci`` in an RSP_UD long frame."""
    data = bytes(data)
    if ci == CI_ERROR:
        code = data[0] if data else 0
        text = tables.APP_ERRORS.get(code, f"Unknown error (0x{code:02X})")
        return Telegram(header=None, records=(), error=AppError(code, text))
    if ci in (CI_FIXED, CI_FIXED_MSB):
        return _decode_fixed(data, ci == CI_FIXED_MSB)
    if ci in (CI_LONG, CI_LONG_MSB):
        msb = ci == CI_LONG_MSB
        header = _long_header(data, msb)
        records, mdata, more = _decode_records(data, 12, msb, header.medium)
        return Telegram(header, tuple(records), mdata, more)
    if ci == CI_SHORT:
        if len(data) < 4:
            raise TelegramError(f"short header needs 4 bytes, telegram has {len(data)}")
        signature = int.from_bytes(data[2:4], "little")
        header = Header(
            id=0,
            manufacturer="",
            version=0,
            medium=0x0F,
            medium_name=tables.medium_name(0x0F),
            access_number=data[0],
            status=data[1],
            signature=signature,
        )
        records, mdata, more = _decode_records(data, 4, False, None)
        return Telegram(header, tuple(records), mdata, more)
    if ci == CI_NONE:
        records, mdata, more = _decode_records(data, 0, False, None)
        return Telegram(None, tuple(records), mdata, more)
    if ci == CI_COMPACT:
        raise TelegramError("compact frame (CI 0x79) needs the format signature; not supported")
    raise TelegramError(f"CI 0x{ci:02X} is not a slave response this decoder reads")


def decode_frame(raw: bytes) -> Telegram:
    """Parse one link-layer frame and decode the telegram it carries."""
    f = link.parse(raw)
    if isinstance(f, link.LongFrame):
        return decode_user_data(f.ci, f.data)
    if isinstance(f, link.ControlFrame):
        return decode_user_data(f.ci, b"")
    kind = "ACK" if isinstance(f, link.AckFrame) else "short frame"
    raise TelegramError(f"a {kind} carries no user data")


_HEX_SEPARATORS = re.compile(r"[\s:,]+")


def from_hex(text: str) -> bytes:
    """Bytes of a hex dump such as ``68 1F 1F 68 ...`` (spaces, newlines or none)."""
    cleaned = _HEX_SEPARATORS.sub("", text)
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    try:
        return bytes.fromhex(cleaned)
    except ValueError as exc:
        raise TelegramError(f"not a hex dump: {exc}") from None


def _json_value(value: Value) -> object:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex(" ").upper()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def telegram_to_json(t: Telegram) -> dict[str, object]:
    """A JSON-ready dict of a decoded telegram (for ``edged mbus decode --json``)."""
    header: dict[str, object] | None = None
    if t.header is not None:
        h = t.header
        header = {
            "id": h.id,
            "manufacturer": h.manufacturer,
            "version": h.version,
            "medium": h.medium,
            "medium_name": h.medium_name,
            "access_number": h.access_number,
            "status": h.status,
            "signature": h.signature,
        }
    return {
        "header": header,
        "fixed": t.fixed,
        "error": None if t.error is None else {"code": t.error.code, "text": t.error.text},
        "more_follows": t.more_follows,
        "manufacturer_data": t.manufacturer_data.hex(" ").upper(),
        "records": [
            {
                "index": i,
                "dif": r.dif.hex(" ").upper(),
                "vif": r.vif.hex(" ").upper(),
                "function": r.function,
                "storage": r.storage,
                "tariff": r.tariff,
                "subunit": r.subunit,
                "value": _json_value(r.value),
                "unit": r.unit,
                "quantity": r.quantity,
                "description": r.description,
                "vife": list(r.vife),
                "invalid": r.invalid,
            }
            for i, r in enumerate(t.records)
        ],
    }
