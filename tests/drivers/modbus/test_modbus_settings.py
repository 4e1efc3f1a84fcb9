"""Connection and device settings: defaults, endpoints and located errors from check()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drivers.modbus.driver import ModbusDriver
from drivers.modbus.settings import connection
from edged.errors import ConfigError
from tests.drivers.modbus.helpers import conn, dev


def test_tcp_defaults_and_endpoint() -> None:
    s = connection(conn(host="10.0.0.5"))
    assert (s.transport, s.port, s.timeout, s.retries, s.frame_gap) == ("tcp", 502, 1.0, 0, 0.0)
    assert (
        ModbusDriver().configure(conn(host="10.0.0.5", port=1502), []).endpoint
        == "tcp://10.0.0.5:1502"
    )


def test_rtu_defaults_and_endpoint() -> None:
    s = connection(conn(transport="rtu", device="/dev/ttyUSB0"))
    assert (s.baudrate, s.parity, s.stopbits, s.bytesize) == (9600, "E", 1, 8)
    assert s.frame_gap == pytest.approx(3.5 * 11 / 9600)
    assert (
        ModbusDriver().configure(conn(transport="rtu", device="/dev/ttyUSB0"), []).endpoint
        == "serial:///dev/ttyUSB0"
    )
    assert (
        ModbusDriver().configure(conn(transport="rtu", device="socket://h:1"), []).endpoint
        == "socket://h:1"
    )


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"host": "h", "port": 0}, "port"),
        ({"host": "h", "port": 70000}, "port"),
        ({"transport": "udp", "host": "h"}, "transport"),
        ({}, "host"),
        ({"transport": "rtu"}, "device"),
        ({"transport": "rtu", "device": "/dev/x", "parity": "X"}, "parity"),
        ({"transport": "rtu", "device": "/dev/x", "stopbits": 3}, "stopbits"),
        ({"host": "h", "timeout": 0}, "timeout"),
        ({"host": "h", "retries": -1}, "retries"),
        ({"host": "h", "baud": 9600}, "baud"),
    ],
)
def test_connection_errors_are_located(tmp_path: Path, settings: dict[str, Any], key: str) -> None:
    cfg = tmp_path / "edged.toml"
    cfg.write_text(
        '[connections.bus]\ndriver = "modbus"\n'
        + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in settings.items())
    )
    with pytest.raises(ConfigError) as err:
        ModbusDriver().configure(conn(file=str(cfg), **settings), [])
    assert err.value.key == f"connections.bus.{key}"
    assert err.value.file == str(cfg)
    lines = cfg.read_text().splitlines()
    # The line of the offending key, or of the table when a required key is missing.
    expected = next((n for n, ln in enumerate(lines, 1) if ln.startswith(f"{key} =")), 1)
    assert err.value.line == expected


@pytest.mark.parametrize(
    ("kwargs", "key", "words"),
    [
        ({"address": 0}, "address", "1-247"),
        ({"address": 248}, "address", "1-247"),
        ({"address": "5"}, "address", "1-247"),
        ({"profile": ""}, "profile", "required"),
        ({"profile": "no_such_meter"}, "profile", "no profile"),
        ({"profile": "missing.toml"}, "profile", "no profile"),
        ({"settings": {"colour": "red"}}, "colour", "unknown key"),
    ],
)
def test_device_errors_are_located(kwargs: dict[str, object], key: str, words: str) -> None:
    args: dict[str, object] = {
        "id": "m1",
        "profile": "eastron_sdm630",
        "index": 3,
        "file": "/etc/edged/edged.toml",
    }
    args.update(kwargs)
    with pytest.raises(ConfigError) as err:
        ModbusDriver().configure(conn(host="h"), [dev(**args)])  # type: ignore[arg-type]
    assert err.value.key == f"devices[3].{key}"
    assert words in err.value.message


def test_profile_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(
        '[profile]\nname = "mine"\nprotocol = "modbus"\nmanufacturer = "m"\nmodel = "x"\n'
        '[[points]]\nquantity = "frequency"\nregister = 3\ntype = "u16"\nscale = 0.01\n'
    )
    ModbusDriver().configure(
        conn(host="h"), [dev("m1", "mine.toml", file=str(tmp_path / "e.toml"))]
    )


def test_duplicate_unit_ids_on_one_connection_are_rejected() -> None:
    with pytest.raises(ConfigError) as err:
        ModbusDriver().configure(
            conn(host="h"), [dev("a", "bench8", 4, index=0), dev("b", "bench8", 4, index=1)]
        )
    assert err.value.key == "devices[1].address"


def test_a_broken_profile_file_fails_check_with_its_own_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[profile]\nname = "bad"\nprotocol = "modbus"\nmanufacturer = "m"\nmodel = "x"\n'
        '[[points]]\nquantity = "frequency"\nregister = 3\ntype = "u16"\n'
        'unit = "furlong"\n'
    )
    with pytest.raises(ConfigError) as err:
        ModbusDriver().configure(conn(host="h"), [dev("m1", str(bad))])
    assert (err.value.file, err.value.key, err.value.line) == (str(bad), "points[0].unit", 10)


async def test_rtu_framing_reaches_the_serial_client() -> None:
    # A pty cannot keep even parity, so 8E1 is checked where it is handed to pymodbus.
    from drivers.modbus.link import Link

    s = connection(conn(transport="rtu", device="/dev/ttyUSB7", baudrate=2400, stopbits=2,
                        timeout=0.7, retries=2))  # fmt: skip
    params = Link(s).client.comm_params
    assert (params.host, params.baudrate, params.parity, params.stopbits, params.bytesize) == (
        "/dev/ttyUSB7", 2400, "E", 2, 8)  # fmt: skip
    assert params.timeout_connect == 0.7
    assert not params.reconnect_delay  # reconnects are the driver's own, with backoff
