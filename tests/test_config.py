"""Configuration: valid files load into typed objects; every mistake is one located line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edged import config as configmod
from edged.errors import ConfigError
from edged.model import Tier

BASE = """
[gateway]
id = "gw-test"
data_dir = "{data}"

[mqtt]
host = "127.0.0.1"
port = 1883

[licensing]
directory = "{data}/lic"

[connections.panel]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = 15020

[[devices]]
id = "m1"
connection = "panel"
address = 1
profile = "eastron_sdm630"
cloud_licence = "professional"

[[devices]]
id = "m2"
connection = "panel"
address = 2
profile = "eastron_sdm630"
"""


def write(tmp: Path, text: str, dropins: dict[str, str] | None = None) -> Path:
    main = tmp / "edged.toml"
    main.write_text(textwrap.dedent(text).replace("{data}", str(tmp / "data")))
    if dropins:
        (tmp / "conf.d").mkdir()
        for name, body in dropins.items():
            (tmp / "conf.d" / name).write_text(textwrap.dedent(body))
    return main


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged.cli", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_valid_config_loads_into_typed_objects(tmp_path: Path) -> None:
    cfg = configmod.load(
        write(
            tmp_path,
            BASE,
            {
                "10-extra.toml": """
        [connections.other]
        driver = "modbus"
        transport = "tcp"
        host = "127.0.0.1"
        port = 15021

        [[devices]]
        id = "m3"
        connection = "other"
        profile = "abb_b23"
        """
            },
        )
    )
    assert [d.id for d in cfg.devices] == ["m1", "m2", "m3"]
    assert cfg.devices[0].cloud_licence is Tier.PROFESSIONAL
    assert cfg.devices[1].cloud_licence is Tier.BASIC
    assert cfg.devices[0].address == 1 and cfg.devices[0].driver == "modbus"
    assert cfg.connections["panel"].settings["port"] == 15020
    assert cfg.mqtt.client_id == "edged-gw-test"
    assert cfg.devices[2].source.file is not None and cfg.devices[2].source.file.endswith(
        "10-extra.toml"
    )
    with pytest.raises(
        dataclasses.FrozenInstanceError
    ):  # frozen: config objects cannot be changed by accident
        cfg.devices[0].id = "x"  # type: ignore[misc]


def test_check_config_accepts_valid_file(tmp_path: Path) -> None:
    res = check_config(write(tmp_path, BASE))
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout


BAD = {
    "missing required key": (
        BASE.replace('id = "gw-test"', ""),
        "gateway.id",
        "required key is missing",
    ),
    "wrong type": (
        BASE.replace("port = 1883", 'port = "1883"'),
        "mqtt.port",
        "expected an integer",
    ),
    "unknown key": (
        BASE.replace("port = 1883", "port = 1883\nhots = 1"),
        "mqtt.hots",
        "unknown key",
    ),
    "unknown section": (BASE + "\n[mqt]\nhost = 'x'\n", "mqt", "unknown section"),
    "unknown driver": (
        BASE.replace('driver = "modbus"', 'driver = "modbuss"'),
        "connections.panel.driver",
        "unknown driver 'modbuss' (known:",
    ),
    "unknown profile": (
        BASE.replace('profile = "eastron_sdm630"\ncloud', 'profile = "nope"\ncloud'),
        "devices[0].profile",
        "nope",
    ),
    "duplicate device id": (
        BASE.replace('id = "m2"', 'id = "m1"'),
        "devices[1].id",
        "duplicate device id",
    ),
    "port out of range": (
        BASE.replace("port = 15020", "port = 70000"),
        "connections.panel.port",
        "65535",
    ),
    "unknown connection": (
        BASE.replace('connection = "panel"\naddress = 2', 'connection = "pannel"\naddress = 2'),
        "devices[1].connection",
        "no connection named 'pannel'",
    ),
    "toml syntax": (
        BASE.replace('host = "127.0.0.1"\nport = 1883', 'host = "127.0.0.1\nport = 1883'),
        "edged.toml:",
        "TOML syntax error",
    ),
    "unknown device key": (
        BASE.replace("address = 2", "adress = 2"),
        "devices[1].adress",
        "unknown key",
    ),
    "bad tier": (
        BASE.replace('cloud_licence = "professional"', 'cloud_licence = "gold"'),
        "devices[0].cloud_licence",
        "expected one of",
    ),
    "bad device id": (BASE.replace('id = "m2"', 'id = "m 2/x"'), "devices[1].id", "letters"),
    "ocpp certificate missing": (
        BASE + '\n[connections.ch]\ndriver = "ocpp"\nport = 19999\ntls_cert = "certs/gw.pem"\n'
        'tls_key = "certs/gw.key"\n',
        "connections.ch.tls_cert",
        "file not found",
    ),
    "typo of a required key": (
        BASE.replace('profile = "eastron_sdm630"\ncloud', 'profil = "eastron_sdm630"\ncloud'),
        "devices[0].profile",
        "is 'profil' a typo of 'profile'?",
    ),
    "label key not a name": (
        BASE.replace("address = 2", 'address = 2\nlabels = { "flat 3" = "a" }'),
        "devices[1].labels",
        "a key is letters, digits and '_'",
    ),
    "label not a string": (
        BASE.replace("address = 2", "address = 2\nlabels = { flat = 3 }"),
        "devices[1].labels",
        "expected a table of strings",
    ),
    "too many labels": (
        BASE.replace(
            "address = 2",
            "address = 2\nlabels = { " + ", ".join(f'l{i} = "x"' for i in range(17)) + " }",
        ),
        "devices[1].labels",
        "at most 16 labels",
    ),
    "same bus twice": (
        BASE + '\n[connections.again]\ndriver = "modbus"\ntransport = "tcp"\n'
        'host = "127.0.0.1"\nport = 15020\n',
        "connections.again",
        "same bus",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_is_one_located_line_and_exit_78(tmp_path: Path, case: str) -> None:
    text, key, message = BAD[case]
    path = write(tmp_path, text)
    res = check_config(path)
    assert res.returncode == 78, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert str(path) in lines[0]
    assert key in lines[0]
    assert message in lines[0]


def test_error_names_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("port = 15020", "port = 70000"))
    with pytest.raises(ConfigError) as err:
        from edged.provisioning import provision

        provision(configmod.load(path))
    lineno = path.read_text().splitlines().index("port = 70000") + 1
    assert err.value.line == lineno
    assert f"edged.toml:{lineno}:" in str(err.value)


def test_duplicate_connection_across_dropins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BASE,
        {
            "20-dup.toml": """
        [connections.panel]
        driver = "modbus"
        transport = "tcp"
        host = "127.0.0.1"
        port = 15099
        """
        },
    )
    res = check_config(path)
    assert res.returncode == 78
    assert "20-dup.toml" in res.stderr and "connection defined twice" in res.stderr


def test_missing_file(tmp_path: Path) -> None:
    res = check_config(tmp_path / "nope.toml")
    assert res.returncode == 78
    assert "nope.toml" in res.stderr and "file not found" in res.stderr


def test_dropin_overrides_scalar_and_is_named_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, BASE, {"50-mqtt.toml": "[mqtt]\nport = 0\n"})
    with pytest.raises(ConfigError) as err:
        configmod.load(path)
    assert err.value.file is not None and err.value.file.endswith("50-mqtt.toml")
    assert err.value.key == "mqtt.port"


def test_labels_reach_the_device_spec(tmp_path: Path) -> None:
    text = BASE.replace("address = 2", 'address = 2\nlabels = { flat = "3a", floor = "2" }')
    cfg = configmod.load(write(tmp_path, text))
    assert dict(cfg.devices[1].labels) == {"flat": "3a", "floor": "2"}
