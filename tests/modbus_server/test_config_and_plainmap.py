"""The [modbus_server] section (unit ids, allow-list, located errors) and the plain map."""

from __future__ import annotations

import ipaddress
import os
import struct
import subprocess
import textwrap
from pathlib import Path

import pytest

from edged import config as configmod
from edged.errors import ConfigError
from edged.modbus_server import plainmap
from edged.modbus_server.config import DEFAULT_PORT, is_allowed
from edged.model import QUANTITIES
from tests.daemon import TRUST, edged

ROOT = Path(__file__).resolve().parents[2]

BASE = """
[gateway]
id = "gw-test"
data_dir = "{data}"

[licensing]
directory = "{data}/lic"

[connections.panel]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = 15020

[[devices]]
id = "grid"
connection = "panel"
address = 1
profile = "eastron_sdm630"

[[devices]]
id = "pv"
connection = "panel"
address = 2
profile = "eastron_sdm630"

[[devices]]
id = "heat"
connection = "panel"
address = 3
profile = "eastron_sdm630"
medium = "heat"

[[virtual_meters]]
id = "site"
sources = ["grid", "pv"]
"""


def load(tmp: Path, section: str) -> configmod.Config:
    main = tmp / "edged.toml"
    main.write_text(textwrap.dedent(BASE).replace("{data}", str(tmp / "data")) + section)
    return configmod.load(main)


def test_defaults_serve_every_point_in_config_order(tmp_path: Path) -> None:
    cfg = load(tmp_path, "").modbus_server
    assert cfg.address == "127.0.0.1"
    assert cfg.port == DEFAULT_PORT == 5020
    assert dict(cfg.units) == {"grid": 1, "pv": 2, "heat": 3, "site": 4}
    assert is_allowed("127.0.0.1", cfg.allow) and is_allowed("::1", cfg.allow)
    assert not is_allowed("192.0.2.1", cfg.allow)
    assert cfg.models == "int"


def test_explicit_units_and_the_rest_fill_free_ids(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """
[modbus_server]
address = "0.0.0.0"
port = 1502
allow = ["192.0.2.0/28", "2001:db8::7"]
models = "float"
max_age = 5
units = { pv = 1, site = 10 }
""",
    ).modbus_server
    assert dict(cfg.units) == {"grid": 2, "pv": 1, "heat": 3, "site": 10}
    assert cfg.allow == (
        ipaddress.ip_network("192.0.2.0/28"),
        ipaddress.ip_network("2001:db8::7/128"),
    )
    assert is_allowed("192.0.2.7", cfg.allow)
    assert is_allowed("::ffff:192.0.2.7", cfg.allow)  # IPv4-mapped peer on a dual-stack socket
    assert not is_allowed("192.0.2.16", cfg.allow)
    assert cfg.models == "float" and cfg.max_age == 5.0


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ("units = { gird = 1 }", "modbus_server.units.gird", "no metering point 'gird'"),
        ("units = { grid = 1, pv = 1 }", "modbus_server.units.pv", "already given to 'grid'"),
        ("units = { grid = 0 }", "modbus_server.units.grid", "from 1 to 247"),
        ('allow = ["10.0.0.300"]', "modbus_server.allow", "not an IP address or network"),
        ('address = "gateway.local"', "modbus_server.address", "expected an IP address"),
        ("port = 70000", "modbus_server.port", "at most 65535"),
        ('models = "double"', "modbus_server.models", "expected one of"),
        ("max_connection = 3", "modbus_server.max_connection", "did you mean"),
    ],
)
def test_mistakes_name_file_line_and_key(
    tmp_path: Path, section: str, key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, f"\n[modbus_server]\n{section}\n")
    e = err.value
    assert e.key == key
    assert message in e.message
    assert e.file == str(tmp_path / "edged.toml")
    lines = (tmp_path / "edged.toml").read_text().splitlines()
    assert e.line is not None and section.split(" ")[0] in lines[e.line - 1]


# -- plain map ----------------------------------------------------------------------------


def test_plain_map_is_every_canonical_quantity_in_order() -> None:
    assert tuple(QUANTITIES) == plainmap.ORDER
    assert plainmap.ADDRESS["energy_import"] == 10
    assert 10 + 2 * len(QUANTITIES) == plainmap.SIZE
    assert plainmap.SIZE <= 125  # one request reads it all


def test_plain_map_registers_fresh_and_stale() -> None:
    regs = plainmap.registers(7, {"power_active": 2310.5, "volume": 12.25}, age=1.7)
    assert regs[:5] == [1, plainmap.STATUS_FRESH, 1, len(QUANTITIES), 7]
    a = plainmap.ADDRESS["power_active"]
    assert struct.unpack(">f", struct.pack(">2H", *regs[a : a + 2]))[0] == 2310.5
    v = plainmap.ADDRESS["volume"]
    assert struct.unpack(">f", struct.pack(">2H", *regs[v : v + 2]))[0] == 12.25
    e = plainmap.ADDRESS["energy_import"]
    assert regs[e : e + 2] == [0x7FC0, 0]  # absent: NaN
    stale = plainmap.registers(7, {}, age=None)
    assert stale[1] == plainmap.STATUS_STALE and stale[2] == 0xFFFF
    assert all(stale[i : i + 2] == [0x7FC0, 0] for i in range(10, plainmap.SIZE, 2))
    # beyond float32: NaN, never an infinity presented as a value
    assert plainmap.registers(1, {"pulses": 1e300}, 0.0)[plainmap.ADDRESS["pulses"]] == 0x7FC0


def test_docs_carry_the_generated_table() -> None:
    text = (ROOT / "docs" / "modbus-server.md").read_text()
    begin = "<!-- plain-map:begin -->\n"
    end = "<!-- plain-map:end -->"
    documented = text.split(begin, 1)[1].split(end, 1)[0].strip()
    assert documented == plainmap.markdown_table(), (
        "docs/modbus-server.md is out of date; paste the output of\n"
        "python -c 'from edged.modbus_server import plainmap; print(plainmap.markdown_table())'"
    )


def test_check_config_refuses_the_server_below_professional(tmp_path: Path) -> None:
    # BASE sets no cloud_licence: every metering point counts as basic.
    main = tmp_path / "edged.toml"
    text = textwrap.dedent(BASE).replace("{data}", str(tmp_path / "data"))
    text = text.replace(
        '[[devices]]\nid = "grid"', '[[devices]]\ncloud_licence = "limited"\nid = "grid"'
    )
    text = text.replace("[licensing]", "[features]\nmodbus_server = true\n\n[licensing]")
    main.write_text(text + "\n[modbus_server]\nport = 1502\n")
    out = subprocess.run(
        edged("check-config", "-c", str(main)),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **TRUST},
    )
    assert out.returncode == 78, out
    assert "features.modbus_server" in out.stderr
    assert "needs the professional cloud tier" in out.stderr
