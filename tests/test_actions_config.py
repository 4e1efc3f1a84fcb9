"""`[[actions]]` rules: valid rules load; each mistake is a check-config error at file:line:key."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edged import config as configmod
from edged.actions.config import Rule
from edged.api import SetChargingLimit, StopCharging, WriteRegister
from edged.errors import ConfigError
from edged.provisioning import provision

SITE = """
[gateway]
id = "gw-test"
data_dir = "{tmp}/data"

[licensing]
directory = "{tmp}/lic"

[connections.meters]
driver = "modbus"
host = "127.0.0.1"
port = 15020

[connections.chargers]
driver = "ocpp"
host = "127.0.0.1"
port = 19000

[[devices]]
id = "grid"
connection = "meters"
address = 1
profile = "eastron_sdm630"
cloud_licence = "limited"

[[devices]]
id = "relay"
connection = "meters"
address = 2
profile = "eastron_sdm630"
cloud_licence = "limited"
writable_coils = [0, 1]
writable_registers = [100]

[[devices]]
id = "ev1"
connection = "chargers"
address = "CP-1"
medium = "ev_charger"
cloud_licence = "limited"
"""

RULE = """
[[actions]]
name = "limit-ev"
min_interval = 30

[actions.when]
point = "grid"
quantity = "power_active"
above = 5000
for = 5
clear = 4000

[[actions.then]]
charger = "ev1"
limit = 6

[[actions.then]]
event = "grid_import_high"

[[actions.on_clear]]
charger = "ev1"
limit = 16

[[actions.on_clear]]
event = "grid_import_normal"
"""


def load(tmp: Path, rules: str, site: str = SITE) -> tuple[Path, tuple[Rule, ...]]:
    path = tmp / "edged.toml"
    path.write_text(textwrap.dedent(site).replace("{tmp}", str(tmp)) + textwrap.dedent(rules))
    cfg = configmod.load(path)
    provision(cfg, licence_dir=tmp / "lic")
    return path, cfg.actions


def line_of(path: Path, needle: str, nth: int = 0) -> int:
    hits = [i + 1 for i, ln in enumerate(path.read_text().splitlines()) if needle in ln]
    return hits[nth]


def test_a_valid_rule_loads_into_typed_actions(tmp_path: Path) -> None:
    _, rules = load(tmp_path, RULE)
    (rule,) = rules
    assert rule.name == "limit-ev" and rule.min_interval == 30.0
    w = rule.when
    assert (w.kind, w.point, w.quantity, w.low, w.clear_low, w.hold) == (
        "above",
        "grid",
        "power_active",
        5000.0,
        4000.0,
        5.0,
    )
    assert w.active(5000.1) and not w.active(5000.0)
    assert w.cleared(4000.0) and not w.cleared(4000.1)
    assert rule.then[0].command == SetChargingLimit("ev1", 6.0, "A")
    assert rule.then[1].event == "grid_import_high"
    assert rule.on_clear[0].command == SetChargingLimit("ev1", 16.0, "A")


def test_modbus_writes_stop_and_state_conditions_load(tmp_path: Path) -> None:
    _, rules = load(
        tmp_path,
        """
        [[actions]]
        name = "heat-pump-boost"
        [actions.when]
        point = "grid"
        quantity = "power_active"
        below = -2000
        clear = -500
        [[actions.then]]
        modbus_write = "relay"
        coil = 1
        value = true
        [[actions.then]]
        modbus_write = "relay"
        register = 100
        value = -2

        [[actions]]
        name = "meter-lost"
        [actions.when]
        point = "grid"
        state = "stale"
        max_age = 30
        [[actions.then]]
        charger = "ev1"
        stop = true
        """,
    )
    boost, lost = rules
    assert boost.when.kind == "below" and boost.when.clear_high == -500.0
    assert boost.then[0].command == WriteRegister("relay", 1, (), True)
    assert boost.then[1].command == WriteRegister("relay", 100, (0xFFFE,))
    assert lost.when.kind == "stale" and lost.when.max_age == 30.0
    assert lost.then[0].command == StopCharging("ev1")


def _bad(rule: str) -> str:
    return RULE.replace("above = 5000\n", rule)


BAD = {
    "unknown point": (
        RULE.replace('point = "grid"', 'point = "gird"'),
        "actions[0].when.point",
        'point = "gird"',
        "no device or virtual meter 'gird' (did you mean 'grid'?",
    ),
    "unknown quantity": (
        RULE.replace('quantity = "power_active"', 'quantity = "power_actve"'),
        "actions[0].when.quantity",
        'quantity = "power_actve"',
        "did you mean 'power_active'?",
    ),
    "quantity the meter does not serve": (
        RULE.replace('quantity = "power_active"', 'quantity = "flow_temperature"'),
        "actions[0].when.quantity",
        'quantity = "flow_temperature"',
        "device 'grid' does not serve 'flow_temperature'",
    ),
    "empty between": (
        _bad("between = [10, 5]\n").replace("clear = 4000\n", ""),
        "actions[0].when.between",
        "between = [10, 5]",
        "is empty: the condition can never be true",
    ),
    "clear on the wrong side": (
        RULE.replace("clear = 4000", "clear = 6000"),
        "actions[0].when.clear",
        "clear = 6000",
        "must be at most the 'above' threshold 5000",
    ),
    "below clear on the wrong side": (
        _bad("below = 5000\n"),
        "actions[0].when.clear",
        "clear = 4000",
        "must be at least the 'below' threshold 5000",
    ),
    "a state of charge that cannot be reached": (
        RULE.replace('point = "grid"', 'point = "ev1"')
        .replace('"power_active"', '"state_of_charge"')
        .replace("above = 5000", "above = 100")
        .replace("clear = 4000", "clear = 80"),
        "actions[0].when.above",
        "above = 100",
        "never exceeds 100: the condition can never be true",
    ),
    "two conditions": (
        _bad("above = 5000\nbelow = 10\n"),
        "actions[0].when.below",
        "below = 10",
        "needs exactly one of above, below, between, state, event",
    ),
    "charger command to a Modbus meter": (
        RULE.replace('charger = "ev1"\nlimit = 6', 'charger = "grid"\nlimit = 6'),
        "actions[0].then[0].charger",
        'charger = "grid"',
        "device 'grid' (driver modbus) cannot take charger commands",
    ),
    "Modbus write to a charger": (
        RULE.replace('charger = "ev1"\nlimit = 6', 'modbus_write = "ev1"\ncoil = 0\nvalue = true'),
        "actions[0].then[0].modbus_write",
        'modbus_write = "ev1"',
        "device 'ev1' (driver ocpp) cannot take Modbus writes",
    ),
    "write to a coil not declared writable": (
        RULE.replace(
            'charger = "ev1"\nlimit = 6', 'modbus_write = "relay"\ncoil = 5\nvalue = true'
        ),
        "actions[0].then[0].coil",
        "coil = 5",
        "coil 5 of device 'relay' is not declared writable (writable_coils: 0, 1)",
    ),
    "write to a register not declared writable": (
        RULE.replace(
            'charger = "ev1"\nlimit = 6', 'modbus_write = "relay"\nregister = 100\nvalues = [1, 2]'
        ),
        "actions[0].then[0].register",
        "register = 100",
        "register 101 of device 'relay' is not declared writable",
    ),
    "no actions": (
        RULE.split("[[actions.then]]")[0],
        "actions[0].then",
        "[[actions]]",
        "required: at least one [[actions.then]]",
    ),
    "unknown action key": (
        RULE.replace("limit = 6", "limit = 6\namps = 3"),
        "actions[0].then[0].amps",
        "amps = 3",
        "unknown key",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_mistakes_name_file_line_and_key(tmp_path: Path, case: str) -> None:
    rules, key, line_text, message = BAD[case]
    with pytest.raises(ConfigError) as err:
        load(tmp_path, rules)
    e = err.value
    path = tmp_path / "edged.toml"
    assert e.file == str(path)
    assert e.key == key, str(e)
    assert e.line == line_of(path, line_text), str(e)
    if message is not None:
        assert message in e.message, str(e)


def test_rules_below_the_limited_tier_are_refused(tmp_path: Path) -> None:
    basic = SITE.replace('cloud_licence = "limited"\nwritable', 'cloud_licence = "basic"\nwritable')
    with pytest.raises(ConfigError) as err:
        load(tmp_path, RULE, site=basic)
    assert err.value.key == "actions[0]"
    assert "if/then actions needs the limited cloud tier" in err.value.message
    assert "relay (basic)" in err.value.message


def test_check_config_prints_the_located_error(tmp_path: Path) -> None:
    path = tmp_path / "edged.toml"
    path.write_text(
        textwrap.dedent(SITE).replace("{tmp}", str(tmp_path))
        + textwrap.dedent(RULE.replace("clear = 4000", "clear = 6000"))
    )
    res = subprocess.run(
        [sys.executable, "-m", "edged.cli", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert f"{path}:{line_of(path, 'clear = 6000')}: actions[0].when.clear: must be at most" in (
        res.stderr
    )


DOC_SITE = """
[gateway]
id = "gw-doc"
data_dir = "{tmp}/data"

[connections.meters]
driver = "modbus"
host = "127.0.0.1"
port = 15020

[connections.pv]
driver = "modbus"
host = "127.0.0.1"
port = 15021

[connections.chargers]
driver = "ocpp"
host = "127.0.0.1"
port = 19000

[[devices]]
id = "grid"
connection = "meters"
profile = "eastron_sdm630"
cloud_licence = "limited"

[[devices]]
id = "io-module"
connection = "meters"
address = 2
profile = "eastron_sdm630"
cloud_licence = "limited"
writable_coils = [0]

[[devices]]
id = "inverter"
connection = "pv"
profile = "eastron_sdm630"
cloud_licence = "limited"
writable_registers = [40242]

[[devices]]
id = "wallbox"
connection = "chargers"
address = "CP-1"
cloud_licence = "limited"
"""


def _doc_rules(path: Path) -> list[str]:
    """The TOML examples with rules in a document, without the devices they show."""
    blocks = re.findall(r"```toml\n(.*?)```", path.read_text(), flags=re.S)
    rules = [b for b in blocks if "[[actions]]" in b]
    return [b[b.index("[[actions]]") :] for b in rules]


@pytest.mark.parametrize("doc", ["docs/actions.md", "README.md"])
def test_the_documented_rules_pass_check_config(tmp_path: Path, doc: str) -> None:
    examples = _doc_rules(Path(__file__).resolve().parent.parent / doc)
    assert examples
    for i, example in enumerate(examples):
        site = tmp_path / str(i)
        site.mkdir()
        _, rules = load(site, example, site=DOC_SITE)
        assert rules
