"""The driver registry: built-ins, third-party drivers by entry point, clear unknown-name errors."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged import api, cli
from edged.errors import ConfigError
from edged.model import Source


@pytest.fixture
def third_party_driver(tmp_path: Path) -> Iterator[str]:
    """A distribution on sys.path that registers a driver under ``edged.drivers``."""
    (tmp_path / "acme_edged_driver.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass

            from edged.api import CliCommand, SimulatorCommand


            @dataclass(frozen=True)
            class AcmeSettings:
                endpoint: str


            def acme_cli(argv, daemon):
                print("acme cli", *argv)
                return 0


            def acme_sim(argv):
                print("acme sim", *argv)
                return 0


            class AcmeDriver:
                name = "acme"
                polled = True

                def configure(self, connection, devices):
                    return AcmeSettings("acme://" + connection.name)

                async def run(self, settings, ctx):
                    pass

                def cli(self):
                    return CliCommand("acme meter tools", acme_cli)

                def simulator(self):
                    return SimulatorCommand("simulated acme meters", acme_sim)
            """
        )
    )
    info = tmp_path / "acme_edged_driver-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-edged-driver\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[edged.drivers]\nacme = acme_edged_driver:AcmeDriver\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield "acme"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("acme_edged_driver", None)


def test_builtin_drivers_implement_the_protocol() -> None:
    for name in ("modbus", "mbus", "ocpp"):
        drv = api.get(name)
        assert isinstance(drv, api.Driver)
        assert drv.name == name


def test_entry_point_driver_is_found(third_party_driver: str) -> None:
    assert third_party_driver in api.available()
    drv = api.get(third_party_driver)
    assert isinstance(drv, api.Driver)
    assert type(drv).__name__ == "AcmeDriver"


def test_unknown_driver_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        api.get("modbuss", Source("/etc/edged/edged.toml", "connections.panel.driver"))
    text = str(err.value)
    assert "unknown driver 'modbuss'" in text
    assert "known: mbus, modbus, ocpp" in text
    assert "connections.panel.driver" in text


def test_entry_point_driver_gets_its_subcommands_and_simulator(
    third_party_driver: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    top = capsys.readouterr().out
    assert "acme meter tools" in top and "ocpp" in top and "mbus" in top
    with pytest.raises(SystemExit) as done:
        cli.main(["sim", "--help"])
    assert done.value.code == 0
    sims = capsys.readouterr().out
    for name in ("acme", "modbus", "mbus", "ocpp"):
        assert name in sims
    assert "simulated acme meters" in sims
    assert cli.main(["acme", "scan", "--all"]) == 0
    assert capsys.readouterr().out == "acme cli scan --all\n"
    assert cli.main(["sim", "acme", "--count", "2"]) == 0
    assert capsys.readouterr().out == "acme sim --count 2\n"


def test_a_driver_that_breaks_the_contract_is_refused(tmp_path: Path) -> None:
    (tmp_path / "broken_edged_driver.py").write_text("class Broken:\n    name = 'broken'\n")
    info = tmp_path / "broken_edged_driver-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-edged-driver\nVersion: 1\n")
    (info / "entry_points.txt").write_text("[edged.drivers]\nbroken = broken_edged_driver:Broken\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ConfigError) as err:
            api.get("broken", Source("/etc/edged/edged.toml", "connections.x.driver"))
        assert "does not implement edged.api.Driver" in str(err.value)
        # The command line of the other drivers keeps working.
        assert "broken" not in api.all_drivers() and "modbus" in api.all_drivers()
        for argv in (["--help"], ["sim", "--help"]):
            with pytest.raises(SystemExit) as done:
                cli.main(argv)
            assert done.value.code == 0
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("broken_edged_driver", None)
