"""The [web] section: defaults from [metrics], loopback unless password and TLS, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edged import config as configmod
from edged.errors import ConfigError
from edged.passwords import hash_password, verify_password

BASE = """
[gateway]
id = "gw-test"
data_dir = "{data}"

[licensing]
directory = "{data}/lic"
"""
HASH = hash_password("correct horse battery")


def write(tmp: Path, extra: str = "", dropin: str | None = None) -> Path:
    main = tmp / "edged.toml"
    main.write_text((BASE + textwrap.dedent(extra)).replace("{data}", str(tmp / "data")))
    if dropin is not None:
        (tmp / "conf.d").mkdir()
        (tmp / "conf.d" / "60-web.toml").write_text(textwrap.dedent(dropin))
    return main


def error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        configmod.load(path)
    return str(info.value)


def test_defaults_are_the_metrics_endpoint_on_loopback(tmp_path: Path) -> None:
    web = configmod.load(write(tmp_path)).web
    assert (web.enabled, web.address, web.port) == (True, "127.0.0.1", 9108)
    assert web.password_hash is None


def test_metrics_keys_set_the_server_when_web_does_not(tmp_path: Path) -> None:
    cfg = configmod.load(write(tmp_path, "[metrics]\nhost = '127.0.0.2'\nport = 19999\n"))
    assert (cfg.web.address, cfg.web.port) == ("127.0.0.2", 19999)
    off = configmod.load(write(tmp_path, "[metrics]\nenabled = false\n"))
    assert off.web.enabled is False


def test_web_keys_win_over_metrics(tmp_path: Path) -> None:
    path = write(tmp_path, "[metrics]\nenabled = false\nport = 19999\n", "[web]\nport = 8080\n")
    web = configmod.load(path).web
    assert (web.enabled, web.port) == (False, 8080)
    path.write_text(path.read_text() + "\n[web]\nenabled = true\n")
    web = configmod.load(path).web
    assert (web.enabled, web.port) == (True, 8080)


def test_non_loopback_without_password_is_an_error_naming_file_line_key(tmp_path: Path) -> None:
    path = write(tmp_path, dropin='[web]\nport = 8080\naddress = "0.0.0.0"\n')
    msg = error(path)
    assert msg.startswith(f"{tmp_path}/conf.d/60-web.toml:3: web.address: 0.0.0.0 is reachable")
    assert "password_hash" in msg


def test_metrics_host_elsewhere_now_needs_a_password_too(tmp_path: Path) -> None:
    msg = error(write(tmp_path, '[metrics]\nhost = "192.0.2.10"\n'))
    assert msg.startswith(f"{tmp_path}/edged.toml:9: metrics.host: 192.0.2.10 is reachable")


def test_non_loopback_with_password_needs_tls_or_insecure(tmp_path: Path) -> None:
    body = f'[web]\naddress = "0.0.0.0"\npassword_hash = "{HASH}"\n'
    assert "tls_cert and tls_key, or insecure = true" in error(write(tmp_path, body))
    cfg = configmod.load(write(tmp_path, body + "insecure = true\n"))
    assert cfg.web.address == "0.0.0.0" and cfg.web.insecure
    (tmp_path / "web.crt").write_text("cert")
    (tmp_path / "web.key").write_text("key")
    cfg = configmod.load(write(tmp_path, body + 'tls_cert = "web.crt"\ntls_key = "web.key"\n'))
    assert cfg.web.tls and cfg.web.tls_cert == tmp_path / "web.crt"


def test_bad_password_hash_tls_files_and_unknown_keys(tmp_path: Path) -> None:
    msg = error(write(tmp_path, '[web]\npassword_hash = "hunter2"\n'))
    assert msg.startswith(f"{tmp_path}/edged.toml:9: web.password_hash: expected a hash")
    msg = error(write(tmp_path, '[web]\ntls_cert = "nope.crt"\n'))
    assert "web.tls_cert: file not found" in msg
    (tmp_path / "web.crt").write_text("cert")
    msg = error(write(tmp_path, '[web]\ntls_cert = "web.crt"\n'))
    assert "tls_cert and tls_key go together" in msg
    assert "web.adress: unknown key (did you mean 'address'?)" in error(
        write(tmp_path, '[web]\nadress = "127.0.0.1"\n')
    )
    assert "web.port: must be at most 65535" in error(write(tmp_path, "[web]\nport = 70000\n"))


def test_check_config_exits_78_for_an_open_console(tmp_path: Path) -> None:
    path = write(tmp_path, dropin='[web]\naddress = "0.0.0.0"\n')
    out = subprocess.run(
        [sys.executable, "-m", "edged.cli", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 78, out
    assert "web.address: 0.0.0.0 is reachable from other machines" in out.stderr


def test_hash_password_command_makes_a_hash_the_config_accepts(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edged.cli", "web", "hash-password", "--stdin"],
        input="a long console password\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith('password_hash = "scrypt$')
    stored = line.split('"')[1]
    assert verify_password("a long console password", stored)
    assert not verify_password("another password", stored)
    cfg = configmod.load(write(tmp_path, "[web]\n" + line + "\n"))
    assert cfg.web.password_hash == stored
