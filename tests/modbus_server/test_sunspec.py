"""SunSpec layouts against the SunSpec Alliance's model files; encoding with scale factors."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.modbus_server import sunspec
from edged.modbus_server.sunspec import (
    COMMON,
    METER_FLOAT,
    METER_INT,
    NOT_INT16,
    NOT_SUNSSF,
    Identity,
    decode_int,
    offsets,
)

MODELS = Path(__file__).parent / "sunspec_models"


def official(model: int) -> list[dict[str, Any]]:
    """The points of a model's top-level group as the SunSpec model file defines them."""
    doc = json.loads((MODELS / f"model_{model}.json").read_text())
    assert doc["id"] == model
    assert "groups" not in doc["group"], "these models have no repeating groups"
    return list(doc["group"]["points"])


# 201 calls the line-to-line voltages PPVphAB.. where 203 (whose names we use) says PhVphAB..
ALIASES = {201: {"PPVphAB": "PhVphAB", "PPVphBC": "PhVphBC", "PPVphCA": "PhVphCA"}}


@pytest.mark.parametrize(
    ("model", "ours"),
    [(1, COMMON), (201, METER_INT), (203, METER_INT), (211, METER_FLOAT), (213, METER_FLOAT)],
)
def test_layout_is_the_official_model_definition(
    model: int, ours: tuple[sunspec.PointDef, ...]
) -> None:
    points = official(model)
    alias = ALIASES.get(model, {})
    theirs = [(alias.get(p["name"], p["name"]), p["type"], p["size"], p.get("sf")) for p in points]
    assert theirs == [(p.name, p.type, p.size, p.sf) for p in ours]
    assert points[0]["name"] == "ID" and points[0]["value"] == model
    assert sunspec.length(ours) == sum(p["size"] for p in points) - 2


def test_model_lengths() -> None:
    assert sunspec.length(COMMON) == 66
    assert sunspec.length(METER_INT) == 105
    assert sunspec.length(METER_FLOAT) == 124
    assert sunspec.map_size(203) == 2 + 68 + 107 + 2


def ident() -> Identity:
    return Identity("edged", "edged electricity meter", "grid", "0.1.0", "gw-1/grid", 3)


def test_device_map_starts_with_marker_and_ends_with_end_model() -> None:
    regs = sunspec.device_map(ident(), 203, {})
    assert regs[:2] == [0x5375, 0x6E53]
    assert struct.pack(">2H", *regs[:2]) == b"SunS"
    assert regs[2:4] == [1, 66]
    assert regs[70:72] == [203, 105]
    assert regs[-2:] == [0xFFFF, 0]
    assert len(regs) == sunspec.map_size(203)


def test_common_model_strings() -> None:
    regs = sunspec.common_registers(ident())
    at = offsets(COMMON)

    def text(name: str, size: int) -> str:
        raw = b"".join(struct.pack(">H", r) for r in regs[at[name] : at[name] + size])
        return raw.rstrip(b"\0").decode()

    assert text("Mn", 16) == "edged"
    assert text("Md", 16) == "edged electricity meter"
    assert text("Opt", 8) == "grid"
    assert text("Vr", 8) == "0.1.0"
    assert text("SN", 16) == "gw-1/grid"
    assert regs[at["DA"]] == 3


def test_strings_are_cut_and_padded() -> None:
    assert sunspec.string_registers("abc", 2) == [0x6162, 0x6300]
    assert sunspec.string_registers("abcdefgh", 2) == [0x6162, 0x6364]
    # A cut never leaves half a UTF-8 sequence.
    assert sunspec.string_registers("aé", 1) == [0x6100]


def value_of(regs: list[int], model: int, name: str) -> float | None:
    """Decode one point of a meter model the way a SunSpec client does."""
    points = METER_FLOAT if model in (211, 213) else METER_INT
    at = offsets(points)
    defs = {p.name: p for p in points}
    p = defs[name]
    o = at[name]
    if p.type == "float32":
        (v,) = struct.unpack(">f", struct.pack(">2H", regs[o], regs[o + 1]))
        return None if math.isnan(v) else v
    assert p.sf is not None
    sf = regs[at[p.sf]]
    if p.type == "acc32":
        raw = (regs[o] << 16) | regs[o + 1]
        if raw == 0 or sf == NOT_SUNSSF:
            return None
        s = sf - 0x10000 if sf & 0x8000 else sf
        return raw * 10.0**s
    return decode_int(regs[o], sf)


THREE_PHASE = {
    "energy_import": 1523340.4,
    "energy_export": 1000.0,
    "power_active": 2310.5,
    "power_active_l1": 770.0,
    "power_active_l2": 770.2,
    "power_active_l3": 770.3,
    "voltage_l1": 230.14,
    "voltage_l2": 231.06,
    "voltage_l3": 229.52,
    "voltage_l1_l2": 399.6,
    "voltage_l2_l3": 399.1,
    "voltage_l3_l1": 398.7,
    "current_l1": 3.345,
    "current_l2": 3.2,
    "current_l3": 3.1,
    "frequency": 50.013,
    "power_factor": 0.981,
    "power_factor_l1": 0.97,
    "power_reactive": -462.1,
    "power_apparent": 2356.7,
}


def test_int_model_values_decode_to_the_canonical_values() -> None:
    values = sunspec.meter_values(203, THREE_PHASE)
    regs = sunspec.meter_registers(203, values)
    expect = {
        "W": (2310.5, 0.5),
        "WphA": (770.0, 0.5),
        "PhVphA": (230.14, 0.05),
        "PhVphAB": (399.6, 0.05),
        "PhV": ((230.14 + 231.06 + 229.52) / 3, 0.05),
        "PPV": ((399.6 + 399.1 + 398.7) / 3, 0.05),
        "A": (3.345 + 3.2 + 3.1, 0.005),
        "AphA": (3.345, 0.005),
        "Hz": (50.013, 0.005),
        "PF": (98.1, 0.005),
        "PFphA": (97.0, 0.005),
        "VAR": (-462.1, 0.5),
        "VA": (2356.7, 0.5),
        "TotWhImp": (1523340.4, 0.5),
        "TotWhExp": (1000.0, 0.5),
    }
    for name, (want, tol) in expect.items():
        got = value_of(regs, 203, name)
        assert got is not None, name
        assert abs(got - want) <= tol + 1e-9, (name, got, want)
    # What the canonical quantities do not carry is not implemented.
    assert value_of(regs, 203, "TotVAhImp") is None
    assert value_of(regs, 203, "TotWhImpPhA") is None
    assert value_of(regs, 203, "VAphA") is None
    assert regs[offsets(METER_INT)["Evt"] : offsets(METER_INT)["Evt"] + 2] == [0, 0]


def test_float_model_values() -> None:
    values = sunspec.meter_values(213, THREE_PHASE)
    regs = sunspec.meter_registers(213, values)
    assert regs[:2] == [213, 124]
    assert value_of(regs, 213, "W") == pytest.approx(2310.5)
    assert value_of(regs, 213, "PPVphAB") == pytest.approx(399.6, rel=1e-6)
    assert value_of(regs, 213, "PF") == pytest.approx(0.981, rel=1e-6)  # a factor, not %
    assert value_of(regs, 213, "TotWhImp") == pytest.approx(1523340.4, rel=1e-7)
    assert value_of(regs, 213, "TotVAhImp") is None


def test_stale_point_is_not_implemented_everywhere() -> None:
    regs = sunspec.meter_registers(203, {})
    at = offsets(METER_INT)
    for p in METER_INT[2:]:
        o = at[p.name]
        if p.type == "int16":
            assert regs[o] == NOT_INT16, p.name
        elif p.type == "acc32":
            assert regs[o : o + 2] == [0, 0], p.name
        elif p.type == "bitfield32":
            assert regs[o : o + 2] == [0xFFFF, 0xFFFF], p.name
    fregs = sunspec.meter_registers(213, {})
    fat = offsets(METER_FLOAT)
    for p in METER_FLOAT[2:]:
        o = fat[p.name]
        if p.type == "float32":
            assert fregs[o : o + 2] == [0x7FC0, 0], p.name


def test_a_value_too_large_for_the_preferred_exponent_moves_its_group() -> None:
    values = {"W": 120_000.0, "WphA": 40_000.0, "WphB": 40_000.0, "WphC": 40_000.0}
    regs = sunspec.meter_registers(203, values)
    at = offsets(METER_INT)
    assert regs[at["W_SF"]] == 1  # 10 W resolution: 12000 x 10
    assert value_of(regs, 203, "W") == 120_000.0
    assert value_of(regs, 203, "WphA") == 40_000.0


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["W", "WphA", "WphB", "A", "AphA", "PhV", "Hz", "PF", "TotWhImp"]),
        st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
        min_size=1,
    )
)
def test_property_decoded_value_is_within_half_a_unit_or_not_implemented(
    values: dict[str, float],
) -> None:
    regs = sunspec.meter_registers(203, values)
    at = offsets(METER_INT)
    defs = {p.name: p for p in METER_INT}
    for name, v in values.items():
        p = defs[name]
        assert p.sf is not None
        sf_raw = regs[at[p.sf]]
        got = value_of(regs, 203, name)
        if got is None:
            # Only what no exponent up to 10 can hold (or a negative / zero counter) is
            # served as not implemented.
            assert (p.type == "acc32" and round(v) <= 0) or abs(v) > 32767 * 10.0**10
            continue
        s = sf_raw - 0x10000 if sf_raw & 0x8000 else sf_raw
        assert -10 <= s <= 10
        assert abs(got - v) <= 10.0**s / 2 * (1 + 1e-9), (name, v, got, s)
        if p.type == "int16":
            assert regs[at[name]] != NOT_INT16


def test_choose_model_by_quantities() -> None:
    single = frozenset({"voltage_l1", "current_l1", "power_active"})
    assert sunspec.choose_model(single, "int") == 201
    assert sunspec.choose_model(frozenset({"voltage_l1", "voltage_l2"}), "int") == 203
    assert sunspec.choose_model(frozenset(), "int") == 203
    assert sunspec.choose_model(frozenset({"voltage_l1"}), "float") == 211
    assert sunspec.choose_model(frozenset({"power_active_l3"}), "float") == 213


def test_single_phase_values() -> None:
    live = {"voltage_l1": 229.9, "current_l1": 5.5, "power_active": 1200.0, "power_factor": 0.9}
    values = sunspec.meter_values(201, live)
    assert values["PhV"] == 229.9 and values["PhVphA"] == 229.9
    assert values["A"] == 5.5 and values["AphA"] == 5.5
    assert values["W"] == 1200.0 and values["WphA"] == 1200.0
    assert values["PF"] == pytest.approx(90.0) and values["PFphA"] == pytest.approx(90.0)
    assert "PhVphB" not in values and "PPV" not in values
