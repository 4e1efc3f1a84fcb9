"""Conformance of the M-Bus decoder against the libmbus regression corpus (rSCADA / Raditex).

Every expected record of the ``.norm.xml`` files is compared with our decode: function, storage
number, tariff, subunit, value and unit (values converted into our canonical units and compared
numerically). Where EN 13757-3 shows libmbus to be wrong, the record is listed in ``DEVIATIONS``
with the reason, and the test checks that we still disagree in the documented way.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from drivers.mbus.frame import FrameError
from drivers.mbus.telegram import (
    DataRecord,
    Telegram,
    TelegramError,
    decode_frame,
    from_hex,
    telegram_to_json,
)
from tests.drivers.mbus import CORPUS

EXPECTED_RECORDS = 942


def _corpus() -> Path:
    if not (CORPUS / "test-frames").is_dir():
        pytest.fail(
            f"M-Bus conformance corpus missing: expected {CORPUS} "
            "(tests/drivers/mbus/corpus in the repository)"
        )
    return CORPUS


@dataclass(frozen=True)
class Expected:
    """One ``DataRecord`` of a libmbus ``.norm.xml`` file."""

    index: int
    function: str
    storage: int | None
    tariff: int | None
    device: int | None
    unit: str
    quantity: str
    value: str


def _text(el: ET.Element, tag: str) -> str | None:
    child = el.find(tag)
    if child is None:
        return None
    return child.text or ""


def _int(el: ET.Element, tag: str) -> int | None:
    t = _text(el, tag)
    return None if t is None else int(t)


def load_expected(path: Path) -> list[Expected]:
    """Expected records of one ``.norm.xml`` (declared ISO-8859-1, actually UTF-8)."""
    text = path.read_bytes().decode("utf-8")
    text = text[text.index("?>") + 2 :] if text.startswith("<?xml") else text
    root = ET.fromstring(text)
    out = []
    for rec in root.iter("DataRecord"):
        out.append(
            Expected(
                index=int(rec.get("id", "0")),
                function=_text(rec, "Function") or "",
                storage=_int(rec, "StorageNumber"),
                tariff=_int(rec, "Tariff"),
                device=_int(rec, "Device"),
                unit=_text(rec, "Unit") or "",
                quantity=_text(rec, "Quantity") or "",
                value=_text(rec, "Value") or "",
            )
        )
    return out


_FUNCTIONS = {
    "Instantaneous value": "instantaneous",
    "Maximum value": "maximum",
    "Minimum value": "minimum",
    "Value during error state": "error",
    "Actual value": "instantaneous",
    "Stored value": "instantaneous",
}
_TRAILER_FUNCTIONS = ("More records follow", "Manufacturer specific")

# libmbus unit -> (our unit, factor from libmbus's value into ours)
_UNITS: dict[str, tuple[str, float]] = {
    "Wh": ("Wh", 1.0),
    "kWh": ("Wh", 1000.0),
    "J": ("Wh", 1 / 3600),
    "W": ("W", 1.0),
    "m^3": ("m3", 1.0),
    "l": ("m3", 0.001),
    "m^3/h": ("m3/h", 1.0),
    "°C": ("°C", 1.0),
    "K": ("K", 1.0),
    "s": ("s", 1.0),
    "V": ("V", 1.0),
    "A": ("A", 1.0),
    "bar": ("bar", 1.0),
    "kg": ("kg", 1.0),
    "": ("", 1.0),
    "-": ("", 1.0),
    "Units for H.C.A.": ("", 1.0),
    "Reserved": ("", 1.0),
}


# libmbus prints this placeholder when a type F time point has its invalid (IV) bit set.
_LIBMBUS_INVALID_TIME = "1900-01-00T00:00:00Z"

# libmbus quantity names that differ from our record descriptions only in wording.
_ALIASES = {
    "time point (date & time)": "time point",
    "time point (date)": "time point",
    "fabrication no": "fabrication number",
    "(enhanced) identification": "enhanced identification",
    "h.c.a.": "units for h.c.a.",
}


def _description(text: str) -> str:
    t = text.strip().lower()
    return _ALIASES.get(t, t)


def _fmt(value: object) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value[::-1].hex(" ").upper()
    return str(value)


def compare(exp: Expected, rec: DataRecord) -> str | None:
    """None if ``rec`` matches the libmbus expectation, else why not."""
    if _FUNCTIONS.get(exp.function) != rec.function:
        return f"function {exp.function!r} != {rec.function!r}"
    if exp.storage is not None and exp.storage != rec.storage:
        return f"storage {exp.storage} != {rec.storage}"
    if exp.tariff is not None and exp.tariff != rec.tariff:
        return f"tariff {exp.tariff} != {rec.tariff}"
    if exp.device is not None and exp.device != rec.subunit:
        return f"subunit {exp.device} != {rec.subunit}"
    if exp.quantity and _description(exp.quantity) != _description(rec.description):
        return f"quantity {exp.quantity!r} != description {rec.description!r}"
    value = rec.value
    if exp.value == _LIBMBUS_INVALID_TIME and rec.invalid and value is None:
        return None  # both say: the meter flagged this time point invalid
    if exp.unit in _UNITS and isinstance(value, int | float) and not isinstance(value, bool):
        unit, factor = _UNITS[exp.unit]
        if exp.unit in ("-",) or (exp.unit == "" and exp.quantity and not unit):
            unit = rec.unit if not rec.unit else unit
        if unit != rec.unit and not (unit == "" and rec.unit == exp.quantity):
            return f"unit {exp.unit!r} -> {unit!r} != {rec.unit!r}"
        try:
            want = float(exp.value) * factor
        except ValueError:
            return f"value {exp.value!r} is not numeric, we have {value!r}"
        if not math.isclose(want, float(value), rel_tol=1e-6, abs_tol=1e-6):
            return f"value {want!r} != {value!r}"
        return None
    got = _fmt(value) if value is not None else ""
    if got != exp.value:
        # libmbus prints some numbers as strings of their digits with %f formatting
        try:
            if math.isclose(float(exp.value), float(got), rel_tol=1e-9, abs_tol=1e-6):
                return None
        except ValueError:
            pass
        return f"value {exp.value!r} != {got!r} (unit {exp.unit!r} vs {rec.unit!r})"
    return None


# (frame, expected record index, reason): EN 13757-3 and libmbus disagree; the standard wins.
_ZERO_DATE = (
    "type G date 00.00.00 is no calendar date: reported invalid with no value; "
    "libmbus prints 2000-00-00"
)
_BCD_ERROR = (
    "BCD digits A-E are an error marker (EN 13757-3 type A): reported invalid with no value; "
    "libmbus reads the nibbles as decimal digits"
)
_LIMIT_DURATION = (
    "VIFE E101 ufnn (0x50/0x58): duration of limit exceed in seconds, not volume flow; "
    "libmbus keeps the base quantity"
)
_EVENT_DATE = (
    "VIFE E110 1f1b (0x6F): date/time of end of last event, not the base quantity; "
    "libmbus keeps the base quantity and scales the date as a number"
)
DEVIATIONS: list[tuple[str, int, str]] = [
    ("ACW_Itron-BM-plus-m", 2, _ZERO_DATE),
    ("itron_bm_+m", 2, _ZERO_DATE),
    ("siemens_water", 3, _ZERO_DATE),
    ("siemens_wfh21", 3, _ZERO_DATE),
    ("ELS_Elster-F96-Plus", 4, _BCD_ERROR),
    ("ELS_Elster-F96-Plus", 5, _BCD_ERROR),
    ("abb_f95", 2, _BCD_ERROR),
    ("abb_f95", 3, _BCD_ERROR),
    ("SEN_Pollustat", 12, _LIMIT_DURATION),
    ("SEN_Pollustat", 13, _LIMIT_DURATION),
    ("landis+gyr_ultraheat_t230", 19, _EVENT_DATE + " (all-zero date: invalid)"),
    ("landis+gyr_ultraheat_t230", 20, _EVENT_DATE + " (all-zero date: invalid)"),
    ("landis+gyr_ultraheat_t230", 21, _EVENT_DATE),
    ("landis+gyr_ultraheat_t230", 22, _EVENT_DATE),
    (
        "manual_frame2",
        1,
        "fixed structure unit 0x3E means 'same unit as counter 1, historic value': "
        "0.135 m3 at storage 1; libmbus reports the raw 135 with unit 'reserved but historic'",
    ),
    (
        "sen_pollutherm",
        2,
        "VIF 0x7B announces an FB extension but has no extension bit: we keep the value with "
        "description 'Reserved'; libmbus emits an empty record (no function, unit or value)",
    ),
]


def _frames() -> list[Path]:
    return sorted((_corpus() / "test-frames").glob("*.hex"))


def run_corpus() -> tuple[int, int, list[tuple[str, int, str]]]:
    """Decode every test frame; (matching records, total records, mismatches)."""
    total = 0
    matched = 0
    mismatches: list[tuple[str, int, str]] = []
    for hex_path in _frames():
        name = hex_path.stem
        expected = load_expected(hex_path.with_suffix(".norm.xml"))
        total += len(expected)
        telegram = decode_frame(from_hex(hex_path.read_text()))
        records = list(telegram.records)
        for exp in expected:
            if exp.function in _TRAILER_FUNCTIONS:
                why = _compare_trailer(exp, telegram)
            elif exp.index >= len(records):
                why = f"record {exp.index} missing, we decoded {len(records)}"
            else:
                why = compare(exp, records[exp.index])
            if why is None:
                matched += 1
            else:
                mismatches.append((name, exp.index, why))
    return matched, total, mismatches


def _compare_trailer(exp: Expected, telegram: Telegram) -> str | None:
    more = exp.function == "More records follow"
    if telegram.more_follows != more:
        return f"more_follows {telegram.more_follows} but libmbus says {exp.function!r}"
    got = telegram.manufacturer_data.hex(" ").upper()
    if got != exp.value:
        return f"manufacturer data {exp.value!r} != {got!r}"
    return None


def test_every_test_frame_decodes() -> None:
    frames = _frames()
    assert len(frames) == 76
    for path in frames:
        telegram = decode_frame(from_hex(path.read_text()))
        assert telegram.error is None, path.name
        telegram_to_json(telegram)  # must be JSON-ready for every frame


def test_expected_records_match_or_are_listed_deviations() -> None:
    matched, total, mismatches = run_corpus()
    print(f"\nM-Bus corpus: {matched}/{total} records match; {len(DEVIATIONS)} listed deviations")
    assert total == EXPECTED_RECORDS
    listed = {(f, i) for f, i, _ in DEVIATIONS}
    unlisted = [m for m in mismatches if (m[0], m[1]) not in listed]
    assert not unlisted, "\n".join(f"{f}[{i}]: {why}" for f, i, why in unlisted)
    stale = listed - {(m[0], m[1]) for m in mismatches}
    assert not stale, f"listed deviations that now match libmbus: {sorted(stale)}"
    assert matched + len(DEVIATIONS) == total


def _decode(folder: str, name: str) -> Telegram:
    return decode_frame(from_hex((_corpus() / folder / f"{name}.hex").read_text()))


def test_deviations_decode_as_the_standard_says() -> None:
    t = _decode("test-frames", "ELS_Elster-F96-Plus")
    assert [(r.value, r.invalid) for r in t.records[4:6]] == [(None, True), (None, True)]
    t = _decode("test-frames", "SEN_Pollustat")
    assert [(r.value, r.unit, r.quantity) for r in t.records[12:14]] == [
        (11582321, "s", None),
        (756, "s", None),
    ]
    t = _decode("test-frames", "landis+gyr_ultraheat_t230")
    assert t.records[21].value == datetime(2011, 8, 26, 20, 50)
    assert t.records[21].quantity is None
    t = _decode("test-frames", "manual_frame2")
    assert t.fixed
    assert [(r.value, r.unit, r.storage) for r in t.records] == [(0.001, "m3", 0), (0.135, "m3", 1)]
    t = _decode("test-frames", "ACW_Itron-BM-plus-m")
    assert t.records[2].value is None and t.records[2].invalid


def test_type_i_date_and_invalid_type_f() -> None:
    t = _decode("test-frames", "LGB_G350")
    assert t.records[1].value == datetime(2016, 7, 22, 8, 0, 0)
    t = _decode("test-frames", "REL-Relay-Padpuls2")
    assert t.records[1].invalid and t.records[1].value is None


def test_lvar_binary_16_keeps_the_following_bytes_aligned() -> None:
    t = _decode("test-frames", "example_binary16_lvar")
    (rec,) = t.records
    assert rec.unit == "PW"
    assert isinstance(rec.value, bytes) and len(rec.value) == 16


def test_data_after_dif_0f_1f_is_kept() -> None:
    t = _decode("test-frames", "Elster-F2")
    assert t.more_follows
    assert t.manufacturer_data[:4] == bytes.fromhex("C4090101")
    assert len(t.manufacturer_data) == 52
    t = _decode("test-frames", "berg_dz_plus")
    assert t.more_follows and len(t.manufacturer_data) == 16


def test_manufacturer_vife_keeps_phase_records_distinct() -> None:
    # eastron_sdm630 is left out: its records are byte-identical, nothing marks the phases.
    for name in (
        "EMU_EMU-Professional-375-M-Bus",
        "SBC_Saia-Burgess-ALE3",
        "electricity-meter-1",
        "electricity-meter-2",
    ):
        t = _decode("test-frames", name)
        keys = [
            (r.dif, r.vif, r.function, r.storage, r.tariff, r.subunit, r.vife) for r in t.records
        ]
        assert len(set(keys)) == len(keys), name
        phased = [r for r in t.records if any("manufacturer specific" in d for d in r.vife)]
        assert phased, name
        assert all(r.quantity is None for r in phased), name


def test_emu_total_power_keeps_its_quantity() -> None:
    t = _decode("test-frames", "EMU_EMU-Professional-375-M-Bus")
    totals = [r for r in t.records if r.quantity == "power_active"]
    assert [r.value for r in totals] == [-2, 14]
    assert t.header is not None and t.header.manufacturer == "EMU"


_APP_ERRORS = {
    "application_busy": (8, "Application busy"),
    "buffer_too_long": (2, "Buffer too long, truncated"),
    "error": (0, "Unspecified error"),
    "premature_end_of_record": (4, "Premature end of record"),
    "too_many_difes": (5, "More than 10 DIFEs"),
    "too_many_readouts": (9, "Too many readouts"),
    "too_many_records": (3, "Too many records"),
    "too_many_vifes": (6, "More than 10 VIFEs"),
    "unimplemented_ci": (1, "Unimplemented CI-Field"),
    "unspecified_error": (0, "Unspecified error"),
}


def _libmbus_error_text(name: str) -> str:
    root = ET.fromstring(
        (_corpus() / "error-frames" / f"{name}.xml").read_bytes().decode("utf-8").split("?>", 1)[1]
    )
    el = root.find("./SlaveInformation/Error")
    assert el is not None and el.text
    return el.text.replace("\u00b4", "").replace("\u00c2", "")


@pytest.mark.parametrize("name", sorted(_APP_ERRORS))
def test_application_error_frames_decode_to_their_error(name: str) -> None:
    t = _decode("error-frames", name)
    assert t.error is not None
    assert (t.error.code, t.error.text) == _APP_ERRORS[name]
    assert t.error.text == _libmbus_error_text(name)
    assert t.records == ()


_MALFORMED = sorted(
    p.stem for p in (CORPUS / "error-frames").glob("*.hex") if not p.with_suffix(".xml").exists()
)


def test_ten_malformed_frames_in_corpus() -> None:
    _corpus()
    assert len(_MALFORMED) == 10


@pytest.mark.parametrize("name", _MALFORMED)
def test_malformed_frames_are_rejected_with_our_error(name: str) -> None:
    with pytest.raises(TelegramError) as info:
        _decode("error-frames", name)
    assert str(info.value)  # a message that says what is wrong


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (CORPUS / "unsupported-frames").glob("*.hex"))
)
def test_unsupported_frames_never_crash(name: str) -> None:
    try:
        t = _decode("unsupported-frames", name)
    except (FrameError, TelegramError) as exc:
        assert str(exc)
    else:
        telegram_to_json(t)


def _import_meterbus() -> object:
    """pyMeterBus sets the root logger on import; put logging back as it was."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        import meterbus
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
    return meterbus


def test_second_opinion_from_pymeterbus_agrees_on_numbers() -> None:
    meterbus: Any = _import_meterbus()
    agree = 0
    disagree: list[tuple[str, int, object, object]] = []
    for path in _frames():
        raw = from_hex(path.read_text())
        try:
            theirs = meterbus.load(raw).body.bodyPayload.records
        except Exception:  # pyMeterBus fails on a few corpus frames; it is only a second opinion
            continue
        ours = decode_frame(raw).records
        for i, (a, b) in enumerate(zip(theirs, ours, strict=False)):
            try:
                v = a.parsed_value
            except Exception:
                continue
            if isinstance(v, bool) or not isinstance(v, int | Decimal):
                continue
            if not isinstance(b.value, int | float):
                continue
            if math.isclose(float(v), float(b.value), rel_tol=1e-6, abs_tol=1e-9):
                agree += 1
            else:
                disagree.append((path.stem, i, v, b.value))
    assert agree > 700
    assert not disagree, disagree
