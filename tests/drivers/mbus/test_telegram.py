"""M-Bus application layer: every data coding, the VIF tables and orthogonal VIFEs, byte by byte."""

from __future__ import annotations

import json
import math
import struct
from datetime import date, datetime, time

import pytest

from drivers.mbus import frame as fr
from drivers.mbus.telegram import (
    DataRecord,
    Telegram,
    TelegramError,
    decode_frame,
    decode_user_data,
    from_hex,
    telegram_to_json,
)
from edged.errors import DecodeError
from edged.model import QUANTITIES

# id 12345678, manufacturer "ABC", version 1, access 0x10, status 0, signature 0
_HEADER = bytes.fromhex("78563412 4304 01")


def _var(records: str, medium: int = 0x04, ci: int = 0x72) -> Telegram:
    data = _HEADER + bytes((medium, 0x10, 0x00, 0x00, 0x00)) + bytes.fromhex(records)
    return decode_user_data(ci, data)


def _one(records: str, medium: int = 0x04) -> DataRecord:
    (rec,) = _var(records, medium).records
    return rec


def test_header_fields() -> None:
    t = _var("", medium=0x07)
    assert t.header is not None
    h = t.header
    assert (h.id, h.manufacturer, h.version, h.medium, h.medium_name) == (
        12345678,
        "ABC",
        1,
        7,
        "Water",
    )
    assert (h.access_number, h.status, h.signature) == (0x10, 0, 0)
    assert t.records == () and not t.fixed and t.error is None


@pytest.mark.parametrize(
    ("records", "value"),
    [
        ("01 13 FF", -0.001),
        ("02 13 00 80", -32.768),
        ("03 13 FF FF 7F", 8388.607),
        ("04 16 FF FF FF FF", -1),
        ("06 16 01 00 00 00 00 80", -(2**47) + 1),
        ("07 16 00 00 00 00 00 00 00 01", 2**56),
        ("09 13 99", 0.099),
        ("0A 13 34 12", 1.234),
        ("0B 13 56 34 12", 123.456),
        ("0C 16 78 56 34 12", 12345678),
        ("0E 16 12 90 78 56 34 12", 123456789012),
        ("0A 13 23 F1", -0.123),
    ],
)
def test_integer_and_bcd_codings(records: str, value: float) -> None:
    rec = _one(records)
    assert rec.unit == "m3" and rec.quantity == "volume"
    assert isinstance(rec.value, int | float)
    assert math.isclose(rec.value, value, rel_tol=1e-12), rec.value


def test_bcd_error_nibbles_are_an_error_marker() -> None:
    rec = _one("0A 13 2A 01")
    assert rec.value is None and rec.invalid
    assert rec.raw == bytes.fromhex("2A 01")


def test_real32() -> None:
    rec = _one("05 2B" + struct.pack("<f", 1.5).hex())
    assert (rec.value, rec.unit, rec.quantity) == (1.5, "W", "power_thermal")
    rec = _one("05 2B" + struct.pack("<f", 0.1).hex())
    assert rec.value == 0.1  # rounded to the 7 digits a float32 carries


def test_joules_are_reported_in_wh_and_medium_picks_the_quantity() -> None:
    assert _one("04 0E 24 00 00 00").value == 10000  # 36 MJ
    assert _one("04 06 01 00 00 00", medium=0x02).quantity == "energy_import"
    assert _one("04 06 01 00 00 00", medium=0x04).quantity == "energy_heat"
    assert _one("04 2B 01 00 00 00", medium=0x02).quantity == "power_active"
    assert _one("04 06 01 00 00 00", medium=0x0F).quantity is None  # unknown medium


def test_primary_table_units() -> None:
    cases = {
        "02 3B 10 00": (0.016, "m3/h", "volume_flow"),
        "02 43 01 00": (0.006, "m3/h", "volume_flow"),  # 1e-4 m3/min
        "02 5A 10 01": (27.2, "°C", "flow_temperature"),
        "02 5E 10 01": (27.2, "°C", "return_temperature"),
        "02 61 10 01": (2.72, "K", "temperature_difference"),
        "02 66 10 01": (27.2, "°C", "external_temperature"),
        "02 68 E8 03": (1, "bar", "pressure"),
        "02 22 02 00": (7200, "s", "on_time"),
        "02 27 01 00": (86400, "s", "operating_time"),
        "02 1B 05 00": (5, "kg", "mass"),
        "02 53 05 00": (5, "kg/h", "mass_flow"),
        "02 FD 48 E8 03": (100, "V", "voltage"),
        "02 FD 59 E8 03": (1, "A", "current"),
        "02 FB 01 02 00": (2_000_000, "Wh", "energy_heat"),
        "02 FB 10 02 00": (200, "m3", "volume"),
    }
    for records, (value, unit, quantity) in cases.items():
        rec = _one(records)
        assert isinstance(rec.value, int | float)
        assert math.isclose(rec.value, value, rel_tol=1e-12), (records, rec.value)
        assert (rec.unit, rec.quantity) == (unit, quantity), records
        assert quantity in QUANTITIES


def test_fd_identification_records_are_unscaled_and_have_no_quantity() -> None:
    rec = _one("0D FD 0E 03 33 32 31")
    assert (rec.value, rec.description, rec.quantity) == ("123", "Firmware version", None)
    rec = _one("04 FD 17 00 00 00 80")
    assert (rec.value, rec.description) == (2**31, "Error flags")


def test_dates_types_f_g_i_j() -> None:
    assert _one("02 6C BF 15").value == date(2013, 5, 31)
    assert _one("04 6D 0C 0C BD 16").value == datetime(2013, 6, 29, 12, 12)
    assert _one("06 6D 00 00 08 16 27 00").value == datetime(2016, 7, 22, 8, 0, 0)
    assert _one("03 6D 1E 2D 0C").value == time(12, 45, 30)
    invalid = _one("04 6D 8C 0C BD 16")
    assert invalid.invalid and invalid.value is None
    zero = _one("02 6C 00 00")
    assert zero.invalid and zero.value is None
    assert _one("04 6D 0C 0C BD 16").unit == ""


def test_lvar_codings() -> None:
    assert _one("0D 13 C2 34 12").value == 1.234
    assert _one("0D 13 D1 05").value == -0.005
    assert _one("0D FD 3A E2 01 01").value == 257
    t = _var("0D FD 3A F0 " + "AA " * 16 + "01 13 07")
    assert t.records[0].value == b"\xaa" * 16
    assert t.records[1].value == 0.007  # the next record stays aligned
    t = _var("0D FD 3A F5 " + "00 " * 48 + "01 13 07")
    assert t.records[1].value == 0.007
    with pytest.raises(TelegramError, match="reserved LVAR 0xF7"):
        _var("0D FD 3A F7 00")


def test_dif_function_storage_tariff_subunit() -> None:
    assert [r.function for r in _var("01 13 01 11 13 01 21 13 01 31 13 01").records] == [
        "instantaneous",
        "maximum",
        "minimum",
        "error",
    ]
    rec = _one("C1 5B 13 01")
    assert (rec.storage, rec.tariff, rec.subunit) == (1 | (0xB << 1), 1, 1)
    rec = _one("81 80 10 13 01")  # two DIFEs: tariff bits of the second go above the first
    assert (rec.storage, rec.tariff, rec.subunit) == (0, 1 << 2, 0)
    assert rec.dif == bytes.fromhex("81 80 10")


def test_orthogonal_vifes() -> None:
    rec = _one("02 93 74 10 00")
    assert rec.value == pytest.approx(0.00016)
    assert rec.vife == ("multiplicative correction 1e-2",) and rec.quantity == "volume"
    rec = _one("02 93 7B 10 00")
    assert rec.value == pytest.approx(0.017)
    rec = _one("02 93 7D 10 00")
    assert rec.value == 16
    rec = _one("02 93 15 10 00")
    assert rec.vife == ("error: no data available (undefined value)",) and rec.quantity is None
    rec = _one("02 93 22 10 00")
    assert (rec.unit, rec.quantity) == ("m3/h", None)
    rec = _one("04 BB 58 10 00 00 00")
    assert (rec.value, rec.unit, rec.quantity) == (16, "s", None)
    assert rec.description == "Duration of upper limit exceed (Volume flow)"
    rec = _one("04 DA 6F 0C 0C BD 16")
    assert rec.value == datetime(2013, 6, 29, 12, 12) and rec.quantity is None
    rec = _one("02 BB 48 10 00")
    assert rec.vife == ("upper limit value",) and rec.quantity is None


def test_manufacturer_specific_vife_is_kept() -> None:
    t = _var("02 FD C9 FF 01 E8 00 02 FD C9 FF 02 E9 00", medium=0x02)
    a, b = t.records
    assert a.vife == ("manufacturer specific VIFE FF 01",)
    assert b.vife == ("manufacturer specific VIFE FF 02",)
    assert (a.value, b.value) == (232, 233)
    assert a.vif != b.vif and a.quantity is None


def test_plain_text_vif() -> None:
    rec = _one("02 FC 03 48 52 25 74 D4 11")
    assert (rec.value, rec.unit, rec.description) == (45.64, "%RH", "%RH")
    rec = _one("01 7C 01 43 05")
    assert (rec.value, rec.unit) == (5, "C")


def test_filler_manufacturer_data_and_more_follows() -> None:
    t = _var("2F 2F 01 13 01 2F 0F 01 02 03")
    assert len(t.records) == 1
    assert t.manufacturer_data == b"\x01\x02\x03" and not t.more_follows
    t = _var("01 13 01 1F")
    assert t.more_follows and t.manufacturer_data == b""


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ("81", "DIFE missing"),
        ("01", "VIF missing"),
        ("01 93", "VIFE missing"),
        ("02 13 01", "premature end of data"),
        ("0D 13", "LVAR missing"),
        ("01 FD", "VIFE missing"),
        ("81 " + "80 " * 10 + "00 13 01", "more than 10 DIFEs"),
        ("01 93 " + "80 " * 10 + "00 01", "more than 10 VIFEs"),
        ("01 7C 05 41", "runs past the end"),
        ("3F", "reserved special-function DIF"),
        ("7F", "global readout request"),
    ],
)
def test_malformed_records(records: str, message: str) -> None:
    with pytest.raises(TelegramError, match=message):
        _var(records)


def test_msb_first_variant_ci_76() -> None:
    data = bytes.fromhex("12345678 0443 01 04 10 00 0000") + bytes.fromhex("02 13 10 00")
    t = decode_user_data(0x76, data)
    assert t.header is not None and t.header.id == 12345678 and t.header.manufacturer == "ABC"
    assert t.records[0].value == 4.096


def test_short_and_no_header() -> None:
    t = decode_user_data(0x7A, bytes.fromhex("2A 00 0000 04 06 01 00 00 00"))
    assert t.header is not None and t.header.access_number == 0x2A
    assert t.records[0].value == 1000 and t.records[0].quantity is None  # medium unknown
    t = decode_user_data(0x78, bytes.fromhex("01 13 05"))
    assert t.header is None and t.records[0].value == 0.005
    with pytest.raises(TelegramError, match="short header"):
        decode_user_data(0x7A, b"\x00")
    with pytest.raises(TelegramError, match="compact frame"):
        decode_user_data(0x79, b"\x00\x00")
    with pytest.raises(TelegramError, match="0x51"):
        decode_user_data(0x51, b"")


def test_fixed_structure_binary_and_msb() -> None:
    # status 0x80: binary counters; units kWh (0x05) on counter 1, l (0x29) on counter 2
    data = bytes.fromhex("78563412 07 80 85 29 10000000 20000000")
    t = decode_user_data(0x73, data)
    assert t.fixed and t.header is not None
    assert t.header.medium_name == "Electricity"
    assert [(r.value, r.unit, r.quantity) for r in t.records] == [
        (16000, "Wh", "energy_import"),
        (0.032, "m3", "volume"),
    ]
    data = bytes.fromhex("12345678 07 80 85 29 00000010 00000020")
    assert decode_user_data(0x77, data).records[0].value == 16000
    with pytest.raises(TelegramError, match="16 bytes"):
        decode_user_data(0x73, data[:15])


def test_application_errors() -> None:
    assert decode_user_data(0x70, b"\x08").error is not None
    t = decode_user_data(0x70, b"\x42")
    assert t.error is not None and t.error.text == "Unknown error (0x42)"
    assert decode_frame(bytes.fromhex("68 03 03 68 08 01 70 79 16")).error is not None


def test_decode_frame_and_errors_are_decode_errors() -> None:
    assert issubclass(TelegramError, DecodeError)
    with pytest.raises(TelegramError, match="short frame"):
        decode_frame(fr.encode(fr.ShortFrame(fr.REQ_UD2, 1)))
    with pytest.raises(fr.FrameError):
        decode_frame(b"\x68\x03\x03")
    wire = fr.encode(fr.LongFrame(fr.RSP_UD, 1, 0x72, _HEADER + bytes(5) + b"\x01\x13\x05"))
    assert decode_frame(wire).records[0].value == 0.005


def test_from_hex() -> None:
    assert from_hex("68 1F\n 1f:68") == b"\x68\x1f\x1f\x68"
    with pytest.raises(TelegramError, match="hex"):
        from_hex("68 1")


def test_telegram_to_json_is_json() -> None:
    t = _var("04 6D 0C 0C BD 16 0D FD 3A F0 " + "AA " * 16 + "0A 13 2A 01 0F 09")
    doc = telegram_to_json(t)
    text = json.dumps(doc)
    back = json.loads(text)
    assert back["header"]["manufacturer"] == "ABC"
    assert back["records"][0]["value"] == "2013-06-29T12:12:00"
    assert back["records"][1]["value"] == "AA " * 15 + "AA"
    assert back["records"][2]["invalid"] is True and back["records"][2]["value"] is None
    assert back["manufacturer_data"] == "09"
