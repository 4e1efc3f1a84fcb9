"""Profiles: every shipped profile loads and validates; mistakes are located."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.modbus import profile
from drivers.modbus.planner import plan
from edged.errors import ConfigError
from edged.model import QUANTITIES

REQUIRED = {"eastron_sdm630", "abb_b23", "carlo_gavazzi_em24", "janitza_umg604", "bench8"}


def test_every_shipped_profile_loads_and_validates() -> None:
    found = profile.shipped()
    assert set(found) >= REQUIRED
    for name, path in found.items():
        prof = profile.load(path)
        assert prof.name == name, f"{path}: [profile] name must match the file name"
        assert prof.points
        assert all(p.quantity in QUANTITIES for p in prof.points)
        # Every point fits the coalescing limits and the header names its source document.
        assert plan(prof.spans, prof.max_registers, prof.max_gap)
        assert "Follows" in path.read_text().splitlines()[1] or name == "bench8"


def test_bench8_is_eight_floats_in_one_request() -> None:
    prof = profile.load(profile.shipped()["bench8"])
    assert [p.type for p in prof.points] == ["f32"] * 8
    assert len(plan(prof.spans, prof.max_registers, prof.max_gap)) == 1


def test_energy_in_kwh_is_converted_to_wh() -> None:
    prof = profile.load(profile.shipped()["eastron_sdm630"])
    energy = next(p for p in prof.points if p.quantity == "energy_import")
    assert energy.factor == 1000.0
    assert energy.value([0x3F80, 0x0000]) == 1000.0  # 1.0 kWh


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "meter.toml"
    path.write_text(body)
    return path


HEAD = '[profile]\nname = "t"\nprotocol = "modbus"\nmanufacturer = "x"\nmodel = "y"\n'


@pytest.mark.parametrize(
    ("points", "key", "line", "words"),
    [
        (
            '[[points]]\nquantity = "nonsense"\nregister = 0\ntype = "u16"\n',
            "points[0].quantity",
            8,
            "unknown quantity",
        ),
        (
            '[[points]]\nquantity = "energy_import"\nregister = 0\ntype = "u16"\nunit = "W"\n',
            "points[0].unit",
            11,
            "cannot convert",
        ),
        (
            '[[points]]\nquantity = "frequency"\nregister = 0\ntype = "u24"\n',
            "points[0].type",
            10,
            "expected one of",
        ),
        (
            '[[points]]\nquantity = "frequency"\nregister = 65535\ntype = "u32"\n',
            "points[0].register",
            9,
            "runs past",
        ),
        (
            '[[points]]\nquantity = "frequency"\nregister = 0\ntype = "u16"\ncolour = 1\n',
            "points[0].colour",
            11,
            "unknown key",
        ),
        (
            '[[points]]\nquantity = "frequency"\nregister = 0\ntype = "u16"\n'
            '[[points]]\nquantity = "frequency"\nregister = 2\ntype = "u16"\n',
            "points[1].quantity",
            12,
            "already read",
        ),
    ],
)
def test_profile_errors_name_file_key_and_line(
    tmp_path: Path, points: str, key: str, line: int, words: str
) -> None:
    path = _write(tmp_path, HEAD + "\n" + points)
    with pytest.raises(ConfigError) as err:
        profile.load(path)
    assert err.value.file == str(path)
    assert err.value.key == key
    assert err.value.line == line
    assert words in err.value.message


def test_header_errors_are_located(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        HEAD + '\n[modbus]\nmax_registers = 300\n\n[[points]]\nquantity = "frequency"\n'
        'register = 0\ntype = "u16"\n',
    )
    with pytest.raises(ConfigError) as err:
        profile.load(path)
    assert (err.value.key, err.value.line) == ("modbus.max_registers", 8)


def test_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = _write(tmp_path, HEAD + "broken = = 1\nmore = 2\n")
    with pytest.raises(ConfigError) as err:
        profile.load(path)
    assert err.value.line == 6 and "syntax" in err.value.message


def test_resolve_shipped_name_and_relative_path(tmp_path: Path) -> None:
    assert profile.resolve("janitza_umg604") == profile.shipped()["janitza_umg604"]
    assert profile.resolve("no_such_meter") is None
    path = _write(
        tmp_path, HEAD + '[[points]]\nquantity = "frequency"\nregister = 0\ntype = "u16"\n'
    )
    assert profile.resolve("meter.toml", tmp_path) == path
    assert profile.load(path).points[0].table == "holding"
