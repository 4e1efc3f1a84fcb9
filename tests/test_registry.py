"""The driver registry: built-ins, third-party drivers by entry point, clear unknown-name errors."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import drivers
from edged.errors import ConfigError
from edged.model import Source


@pytest.fixture
def third_party_driver(tmp_path: Path) -> Iterator[str]:
    """A distribution on sys.path that registers a driver under ``edged.drivers``."""
    (tmp_path / "acme_edged_driver.py").write_text(
        textwrap.dedent(
            """
            class AcmeDriver:
                name = "acme"

                def endpoint(self, connection):
                    return "acme://" + connection.name

                def check(self, connection, devices):
                    pass

                async def run(self, connection, devices, ctx):
                    pass
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
        drv = drivers.get(name)
        assert isinstance(drv, drivers.Driver)
        assert drv.name == name


def test_entry_point_driver_is_found(third_party_driver: str) -> None:
    assert third_party_driver in drivers.available()
    drv = drivers.get(third_party_driver)
    assert isinstance(drv, drivers.Driver)
    assert type(drv).__name__ == "AcmeDriver"


def test_unknown_driver_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        drivers.get("modbuss", Source("/etc/edged/edged.toml", "connections.panel.driver"))
    text = str(err.value)
    assert "unknown driver 'modbuss'" in text
    assert "known: mbus, modbus, ocpp" in text
    assert "connections.panel.driver" in text
