"""[[circuits]] and [load_management]: parsed into frozen settings; mistakes located."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edged import config as configmod
from edged.cli import EX_CONFIG, main
from edged.errors import ConfigError

SITE = """
[gateway]
id = "gw-test"
data_dir = "{data}"

[licensing]
directory = "{data}/lic"

[features]
load_management = true

[connections.panel]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = 15020

[connections.chargers]
driver = "ocpp"
port = 19000

[[devices]]
id = "grid"
connection = "panel"
address = 1
profile = "eastron_sdm630"
cloud_licence = "{tier}"

[[devices]]
id = "cp1"
connection = "chargers"
cloud_licence = "{tier}"

[[devices]]
id = "cp2"
connection = "chargers"
cloud_licence = "{tier}"

[[devices]]
id = "cp3"
connection = "chargers"
cloud_licence = "{tier}"

[load_management]
min_current = 6
safe_current = 6
stale_after = 5
lease = 60
"""

CIRCUITS = """
[[circuits]]
name = "main"
max_current = 63
meter = "grid"
margin = 2
chargers = [{ device = "cp1", phases = 3, max_current = 32 }]

[[circuits]]
name = "garage"
parent = "main"
max_current = 32
max_power = 22000
chargers = [
  { device = "cp2", phases = 1, phase = "L2", max_current = 16 },
  { device = "cp3", connector = 1 },
]
"""


def write(tmp: Path, body: str, tier: str = "professional") -> Path:
    path = tmp / "edged.toml"
    text = textwrap.dedent(SITE).replace("{data}", str(tmp / "data")).replace("{tier}", tier)
    path.write_text(text + textwrap.dedent(body), encoding="utf-8")
    return path


def error(tmp: Path, body: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        configmod.load(write(tmp, body))
    return err.value


def line_of(path: Path, needle: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if needle in ln)


def test_circuits_load_into_frozen_settings(tmp_path: Path) -> None:
    cfg = configmod.load(write(tmp_path, CIRCUITS))
    lm = cfg.load_management
    assert lm.active
    assert lm.settings.safe_current == 6 and lm.settings.stale_after == 5
    assert lm.settings.lease == 60 and lm.settings.min_interval == 10  # the default
    main_c, garage = lm.circuits
    assert (main_c.name, main_c.max_current, main_c.meter, main_c.margin) == ("main", 63, "grid", 2)
    assert garage.parent == "main" and garage.max_power == 22000 and garage.meter is None
    cp2, cp3 = garage.chargers
    assert cp2.phases == {2} and cp2.max_current == 16
    assert cp3.phases == {1, 2, 3} and cp3.connector == 1 and cp3.key == "cp3#1"
    assert cp3.max_current == 16  # the default


def test_no_circuits_no_load_management(tmp_path: Path) -> None:
    cfg = configmod.load(write(tmp_path, ""))
    assert not cfg.load_management.active and cfg.load_management.circuits == ()


@pytest.mark.parametrize(
    ("body", "key", "needle", "message"),
    [
        (
            CIRCUITS.replace('device = "cp1"', 'device = "nope"'),
            "circuits[0].chargers[0].device",
            'device = "nope"',
            "no device with id 'nope'",
        ),
        (
            CIRCUITS.replace('device = "cp1"', 'device = "grid"'),
            "circuits[0].chargers[0].device",
            'device = "grid"',
            "'grid' is a modbus device, not an OCPP charger",
        ),
        (
            CIRCUITS.replace('meter = "grid"', 'meter = "cp1"'),
            "circuits[0].meter",
            'meter = "cp1"',
            "is a charger",
        ),
        (
            CIRCUITS.replace('meter = "grid"', 'meter = "gird"'),
            "circuits[0].meter",
            'meter = "gird"',
            "no device with id 'gird'",
        ),
        (
            CIRCUITS.replace('parent = "main"', 'parent = "mian"'),
            "circuits[1].parent",
            'parent = "mian"',
            "no circuit named 'mian' (known: garage, main)",
        ),
        (
            CIRCUITS.replace('name = "main"\n', 'name = "main"\nparent = "garage"\n'),
            "circuits[0].parent",
            'parent = "garage"',
            "circuits form a cycle: main -> garage -> main",
        ),
        (
            CIRCUITS.replace('device = "cp3", connector = 1', 'device = "cp1"'),
            "circuits[1].chargers[1].device",
            '{ device = "cp1" },',
            "charger 'cp1' is already on circuit 'main' (circuits[0].chargers[0])",
        ),
        (
            CIRCUITS.replace("max_current = 63\n", ""),
            "circuits[0].max_current",
            "[[circuits]]",
            "needs max_current (A per phase) or max_power (W)",
        ),
        (
            CIRCUITS.replace("phases = 3, max_current = 32", "phases = 2"),
            "circuits[0].chargers[0].phases",
            'device = "cp1"',
            "expected one of 1, 3, got 2",
        ),
        (
            CIRCUITS.replace("phases = 3, max_current = 32", 'phases = 3, phase = "L1"'),
            "circuits[0].chargers[0].phase",
            'device = "cp1"',
            "only a 1-phase charger (phases = 1) names its phase",
        ),
        (
            CIRCUITS.replace("max_current = 32 }", "max_current = 32, maxcurrent = 1 }"),
            "circuits[0].chargers[0].maxcurrent",
            'device = "cp1"',
            "unknown key (did you mean 'max_current'?)",
        ),
        (
            CIRCUITS.replace("max_current = 32\nmax_power", "max_current = 10\nmax_power"),
            "circuits[1].max_current",
            "max_current = 10",
            "2 charger(s) on L2 at the safe current of 6 A need 12 A, more than this circuit",
        ),
        (
            CIRCUITS.replace("margin = 2", "margin = -1"),
            "circuits[0].margin",
            "margin = -1",
            "must be at least 0",
        ),
    ],
    ids=[
        "unknown device",
        "not a charger",
        "meter is a charger",
        "unknown meter",
        "unknown parent",
        "cycle",
        "charger on two circuits",
        "no limit",
        "bad phases",
        "phase on a 3-phase charger",
        "typo",
        "safe current does not fit",
        "negative margin",
    ],
)
def test_mistakes_name_file_line_and_key(
    tmp_path: Path, body: str, key: str, needle: str, message: str
) -> None:
    err = error(tmp_path, body)
    path = tmp_path / "edged.toml"
    assert err.file == str(path)
    assert err.key == key
    assert message in err.message
    assert err.line == line_of(path, needle), str(err)


def test_safe_current_between_zero_and_minimum_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, CIRCUITS)
    path.write_text(path.read_text().replace("safe_current = 6", "safe_current = 3"))
    with pytest.raises(ConfigError) as exc:
        configmod.load(path)
    assert exc.value.key == "load_management.safe_current"
    assert exc.value.line == line_of(path, "safe_current = 3")
    assert "must be 0 (pause) or at least min_current (6 A)" in exc.value.message


def test_circuits_need_the_feature_switched_on(tmp_path: Path) -> None:
    path = write(tmp_path, CIRCUITS)
    path.write_text(path.read_text().replace("load_management = true", "load_management = false"))
    with pytest.raises(ConfigError) as exc:
        configmod.load(path)
    assert exc.value.key == "circuits[0]"
    assert "set [features] load_management = true" in exc.value.message


def test_check_config_refuses_circuits_below_professional(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, CIRCUITS, tier="limited")
    code = main(["check-config", "-c", str(path)])
    _, err = capsys.readouterr()
    assert code == EX_CONFIG
    assert "features.load_management" in err
    assert "needs the professional cloud tier but the account tier is limited" in err


def test_check_config_accepts_circuits_on_professional(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, CIRCUITS)
    code = main(["check-config", "-c", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "OK" in out
