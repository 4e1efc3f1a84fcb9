"""check-config (issue 18): tier line, site checks, and located messages for broken files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edged.cli import EX_CONFIG, main

HEAD = """
[gateway]
id = "gw-test"
data_dir = "{data}"

[licensing]
directory = "{data}/lic"
"""

PANEL = """
[connections.panel]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = 15020
"""

DEVICE = """
[[devices]]
id = "{id}"
connection = "panel"
address = {address}
profile = "eastron_sdm630"
"""


def write(tmp: Path, text: str, *, data: str | None = None) -> Path:
    path = tmp / "edged.toml"
    path.write_text(
        textwrap.dedent(text).replace("{data}", data or str(tmp / "data")), encoding="utf-8"
    )
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["check-config", "-c", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def device(dev_id: str, address: int, extra: str = "") -> str:
    return DEVICE.format(id=dev_id, address=address) + textwrap.dedent(extra)


def test_prints_account_tier_and_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    body = HEAD + PANEL + device("m1", 1, 'cloud_licence = "limited"\n')
    code, out, err = check(write(tmp_path, body), capsys)
    assert code == 0, err
    assert "account tier limited: each metering point publishes at most every 60 s" in out
    assert "cloud_licence" not in err


def test_warns_when_a_point_without_cloud_licence_drops_site_to_basic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = HEAD + PANEL + device("m1", 1, 'cloud_licence = "professional"\n') + device("m2", 2)
    path = write(tmp_path, body)
    code, out, err = check(path, capsys)
    assert code == 0, err
    assert "account tier basic" in out and "900 s" in out
    line = path.read_text().splitlines().index('id = "m2"')  # the [[devices]] header above it
    assert f"warning: {path}:{line}: devices[1].cloud_licence: not set on 1 metering point" in err
    assert "(m2)" in err and "900 s" in err


def test_data_dir_that_is_a_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\n")
    path = write(tmp_path, HEAD + PANEL + device("m1", 1), data=str(passwd))
    code, _, err = check(path, capsys)
    assert code == EX_CONFIG
    assert f"{path}:4: gateway.data_dir: not a directory: {passwd}" in err


def test_missing_serial_device_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    body = (
        HEAD
        + """
        [connections.bus]
        driver = "modbus"
        transport = "rtu"
        device = "/dev/ttyEDGED-NOPE"

        [[devices]]
        id = "m1"
        connection = "bus"
        address = 1
        profile = "eastron_sdm630"
        cloud_licence = "professional"
        """
    )
    path = write(tmp_path, body)
    code, _, err = check(path, capsys)
    assert code == 0, err
    assert f"warning: {path}:12: connections.bus.device: /dev/ttyEDGED-NOPE does not exist" in err


@pytest.mark.parametrize("section", ["connection", "mqtt"])
def test_unresolvable_host_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str
) -> None:
    bad = "no-such-host.invalid"
    if section == "mqtt":
        body = HEAD + f'\n[mqtt]\nhost = "{bad}"\n' + PANEL + device("m1", 1)
        key = "mqtt.host"
    else:
        body = HEAD + PANEL.replace('"127.0.0.1"', f'"{bad}"') + device("m1", 1)
        key = "connections.panel.host"
    path = write(tmp_path, body)
    code, _, err = check(path, capsys)
    assert code == EX_CONFIG
    assert f"{key}: '{bad}' is neither an IP address nor a name this machine can resolve" in err
    line = int(err.split(f"{path}:")[1].split(":")[0])
    assert bad in path.read_text().splitlines()[line - 1]


def test_nan_is_not_a_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, HEAD + PANEL + device("m1", 1, "poll_interval = nan\n"))
    code, _, err = check(path, capsys)
    assert code == EX_CONFIG
    assert "devices[0].poll_interval: expected a finite number, got nan" in err
    assert "got a number" not in err


def test_utf8_bom_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, HEAD + PANEL + device("m1", 1))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    code, out, err = check(path, capsys)
    assert code == 0, err
    assert "OK" in out


def test_misspelt_driver_key_gets_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    body = HEAD + PANEL + device("m1", 1).replace("address = 1", "adress = 1")
    path = write(tmp_path, body)
    code, _, err = check(path, capsys)
    assert code == EX_CONFIG
    line = path.read_text().splitlines().index("adress = 1") + 1
    assert f"{path}:{line}: devices[0].adress: unknown key (did you mean 'address'?)" in err


def test_truncated_file_names_a_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    text = textwrap.dedent(HEAD + PANEL + device("m1", 1)).replace("{data}", str(tmp_path))
    path = tmp_path / "edged.toml"
    path.write_text(text[: text.index('profile = "eastron') + len('profile = "east')])
    code, _, err = check(path, capsys)
    assert code == EX_CONFIG
    n = len(path.read_text().splitlines())
    assert f"{path}:{n}: TOML syntax error: Unterminated string (the file ends early" in err


def test_invalid_utf8_names_a_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = write(tmp_path, HEAD + PANEL + device("m1", 1))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = b"# caf\xe9 latin-1\n"
    path.write_bytes(b"".join(lines))
    code, _, err = check(path, capsys)
    assert code == EX_CONFIG
    assert f"{path}:4: not valid UTF-8 (byte 0xe9)" in err


def test_key_set_twice_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = write(tmp_path, HEAD + PANEL + device("m1", 1) + "address = 2\n")
    code, _, err = check(path, capsys)
    assert code == EX_CONFIG
    n = len(path.read_text().splitlines())
    assert f"{path}:{n}: devices.address: TOML syntax error: Cannot overwrite a value" in err


def test_errors_in_a_file_with_bom_keep_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "edged.toml"
    path.write_bytes(b'\xef\xbb\xbf[gateway]\nid = "bad id!"\n')
    code, _, err = check(path, capsys)
    assert code == EX_CONFIG
    assert f"{path}:2: gateway.id: must be 1-64 letters" in err
