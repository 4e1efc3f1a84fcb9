"""A ``licence_group`` is one physical I/O module, or ``check-config`` refuses it (issue 16)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edged import config as configmod
from edged.errors import ConfigError

HEAD = """
[gateway]
id = "gw-test"
data_dir = "{tmp}/data"

[licensing]
directory = "{tmp}/lic"
"""


def connection(name: str, port: int) -> str:
    return f"""
[connections.{name}]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = {port}
"""


def device(dev_id: str, conn: str, address: int, group: str | None = "iox-1") -> str:
    text = f"""
[[devices]]
id = "{dev_id}"
connection = "{conn}"
address = {address}
profile = "eastron_sdm630"
"""
    return text + (f'licence_group = "{group}"\n' if group else "")


def write(tmp: Path, body: str) -> Path:
    path = tmp / "edged.toml"
    path.write_text(textwrap.dedent(HEAD).replace("{tmp}", str(tmp)) + body)
    return path


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged.cli", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    hits = [i for i, ln in enumerate(path.read_text().splitlines(), 1) if needle in ln]
    return hits[nth - 1]


def test_six_unrelated_meters_in_one_group_are_refused_by_check_config(tmp_path: Path) -> None:
    # The attack of issue 16: six meters on six connections in one group ran on capacity 2.
    body = "".join(connection(f"c{i}", 15020 + i) for i in range(6))
    body += "".join(device(f"m{i}", f"c{i}", 1) for i in range(6))
    path = write(tmp_path, body)
    res = check_config(path)
    print(res.stderr)
    assert res.returncode == 78
    line = line_of(path, 'licence_group = "iox-1"', nth=2)
    assert f"{path}:{line}: devices[1].licence_group: licence group 'iox-1'" in res.stderr
    assert "different connections are separate devices" in res.stderr


def test_a_group_at_two_addresses_is_refused(tmp_path: Path) -> None:
    body = connection("bus", 15020) + device("a", "bus", 1) + device("b", "bus", 2)
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        configmod.load(path)
    assert err.value.key == "devices[1].licence_group"
    assert err.value.line == line_of(path, 'licence_group = "iox-1"', nth=2)
    assert "different addresses are separate devices" in str(err.value)


def test_a_fourth_logical_device_in_one_group_is_refused(tmp_path: Path) -> None:
    body = connection("bus", 15020) + "".join(device(f"d{i}", "bus", 5) for i in range(4))
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        configmod.load(path)
    assert err.value.key == "devices[3].licence_group"
    assert "already has 3 devices (d0, d1, d2)" in str(err.value)


def test_one_module_of_three_logical_devices_is_accepted(tmp_path: Path) -> None:
    # The licensing rule only; whether a driver can address three logical devices at one
    # physical address is the driver's own check (check-config runs it after this one).
    body = connection("bus", 15020) + "".join(device(f"d{i}", "bus", 5) for i in range(3))
    body += device("other", "bus", 6, group="iox-2") + device("plain", "bus", 7, group=None)
    cfg = configmod.load(write(tmp_path, body))
    assert [d.licence_group for d in cfg.devices] == ["iox-1"] * 3 + ["iox-2", None]
