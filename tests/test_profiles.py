"""Device profiles: one format, one loader and one lookup path for every protocol."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import drivers
from drivers.mbus import mapping
from drivers.mbus.driver import MBusDriver
from drivers.modbus import profile as modbus_profile
from drivers.modbus.driver import ModbusDriver
from edged import config as configmod
from edged import profiles
from edged.errors import ConfigError
from edged.model import QUANTITIES, ConnectionSpec, DeviceSpec, Source

# The protocol's own validator of the keys edged.profiles leaves to it.
VALIDATORS: dict[str, Callable[[profiles.ProfileFile], Any]] = {
    "modbus": modbus_profile.parse,
    "mbus": mapping.parse,
}
DRIVERS_DIR = Path(drivers.__file__).resolve().parent
SHIPPED = sorted(DRIVERS_DIR.glob("*/profiles/*.toml"))


def _id(path: Path) -> str:
    return str(path.relative_to(DRIVERS_DIR))


def test_every_protocol_with_shipped_profiles_has_a_validator_here() -> None:
    dirs = {p.parent.parent.name for p in SHIPPED}
    assert dirs == set(VALIDATORS)
    # The profiles directory is a package, so its data files ship in wheels.
    for protocol in dirs:
        assert (DRIVERS_DIR / protocol / "profiles" / "__init__.py").is_file(), protocol


@pytest.mark.parametrize("path", SHIPPED, ids=[_id(p) for p in SHIPPED])
def test_every_shipped_profile_loads_and_validates(path: Path) -> None:
    protocol = path.parent.parent.name
    doc = profiles.read(path, protocol)
    assert doc.header.protocol == protocol
    assert doc.header.name == path.stem, f"{path}: [profile] name must be the file's name"
    assert doc.header.manufacturer and doc.header.model
    assert doc.points and all(p.quantity in QUANTITIES for p in doc.points)
    assert VALIDATORS[protocol](doc) is not None
    # ... and the loader the driver uses finds it by name, without any configuration.
    assert profiles.find(path.stem, path.parent) == path


# -- the lookup path ---------------------------------------------------------------------

MODBUS_OWN = """
[profile]
name = "bench8"
protocol = "modbus"
manufacturer = "site"
model = "own bench8"

[[points]]
quantity = "frequency"
register = 0
type = "u16"
scale = 0.01
"""

MBUS_OWN = """
[profile]
name = "heat-meter-billing"
protocol = "mbus"
manufacturer = "site"
model = "own heat meter"

[[points]]
quantity = "energy_heat"
storage = 1
"""

CONFIG = """
[gateway]
id = "gw-test"
data_dir = "{tmp}/data"
{profile_dir}

[licensing]
directory = "{tmp}/lic"

[connections.panel]
driver = "modbus"
host = "127.0.0.1"
port = 15020

[connections.heat]
driver = "mbus"
device = "/dev/ttyUSB0"

[[devices]]
id = "m1"
connection = "panel"
address = 1
profile = "{modbus}"

[[devices]]
id = "h1"
connection = "heat"
address = 5
profile = "{mbus}"
"""


def _config(
    tmp: Path,
    profile_dir: str | None = None,
    modbus: str = "bench8",
    mbus: str = "heat-meter-billing",
) -> configmod.Config:
    text = CONFIG.format(
        tmp=tmp,
        profile_dir=f'profile_dir = "{profile_dir}"' if profile_dir is not None else "",
        modbus=modbus,
        mbus=mbus,
    )
    main = tmp / "etc" / "edged.toml"
    main.parent.mkdir(parents=True, exist_ok=True)
    main.write_text(textwrap.dedent(text))
    return configmod.load(main)


def _configure(cfg: configmod.Config) -> tuple[Any, Any]:
    by_conn = {name: [d for d in cfg.devices if d.connection == name] for name in cfg.connections}
    modbus = ModbusDriver().configure(cfg.connections["panel"], by_conn["panel"])
    mbus = MBusDriver().configure(cfg.connections["heat"], by_conn["heat"])
    return modbus, mbus


def test_the_configured_profile_directory_wins_over_a_shipped_profile(tmp_path: Path) -> None:
    own = tmp_path / "etc" / "profiles"
    own.mkdir(parents=True)
    (own / "bench8.toml").write_text(MODBUS_OWN)
    (own / "heat-meter-billing.toml").write_text(MBUS_OWN)

    # The default directory is profiles/ beside the main file.
    cfg = _config(tmp_path)
    assert cfg.gateway.profile_dir == own
    modbus, mbus = _configure(cfg)
    assert modbus.devices[0].profile.path == str(own / "bench8.toml")
    assert [p.quantity for p in modbus.devices[0].profile.points] == ["frequency"]
    assert [(p.quantity, p.storage) for p in mbus.meters[0].profile.points] == [("energy_heat", 1)]

    # A configured directory is taken relative to the main file; it replaces the default.
    other = tmp_path / "etc" / "site-profiles"
    other.mkdir()
    modbus, mbus = _configure(_config(tmp_path, profile_dir="site-profiles"))
    assert modbus.devices[0].profile.path == str(modbus_profile.PROFILE_DIR / "bench8.toml")
    assert len(modbus.devices[0].profile.points) == 8
    assert len(mbus.meters[0].profile.points) == 5


def test_a_configured_profile_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, profile_dir="nowhere")
    assert err.value.key == "gateway.profile_dir"
    assert err.value.line == 5
    assert "not a directory" in err.value.message


def test_a_profile_of_the_directory_is_found_by_name_and_listed(tmp_path: Path) -> None:
    own = tmp_path / "etc" / "profiles"
    own.mkdir(parents=True)
    (own / "site_meter.toml").write_text(MODBUS_OWN.replace('"bench8"', '"site_meter"'))
    modbus, _ = _configure(_config(tmp_path, modbus="site_meter"))
    assert modbus.devices[0].profile.name == "site_meter"

    with pytest.raises(ConfigError) as err:
        _configure(_config(tmp_path, modbus="site_metr"))
    msg = err.value.message
    assert err.value.key == "devices[0].profile"
    assert "no profile 'site_metr' for modbus" in msg
    assert "did you mean 'site_meter'?" in msg
    assert f"looked in {own}, {modbus_profile.PROFILE_DIR}" in msg
    assert "shipped: abb_b23, bench8," in msg
    assert f"in {own}: site_meter" in msg


def _mbus_device(profile: str, file: str | None = None) -> DeviceSpec:
    return DeviceSpec("h1", "mbus", "heat", 5, profile=profile, source=Source(file, "devices[0]"))


def _mbus_configure(dev: DeviceSpec) -> Any:
    bus = ConnectionSpec("heat", "mbus", {"device": "/dev/x"}, Source(None, "connections.heat"))
    return MBusDriver().configure(bus, [dev])


@pytest.mark.parametrize("file", [None, "edged.toml"])
def test_a_profile_in_the_working_directory_is_found_only_as_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.toml").write_text(MBUS_OWN.replace('"heat-meter-billing"', '"mine"'))
    with pytest.raises(ConfigError) as err:
        _mbus_configure(_mbus_device("mine", file))
    assert err.value.key == "devices[0].profile"
    assert "no profile 'mine' for mbus" in err.value.message
    assert "heat-meter-billing" in err.value.message  # the shipped names

    for ref in (str(tmp_path / "mine.toml"), "./mine.toml", "mine.toml"):
        settings = _mbus_configure(_mbus_device(ref, file))
        assert settings.meters[0].profile.name == "mine"

    # Modbus looks up names the same way.
    (tmp_path / "bench9.toml").write_text(MODBUS_OWN.replace('"bench8"', '"bench9"'))
    assert modbus_profile.resolve("bench9") is None
    assert modbus_profile.resolve("bench9.toml") == Path("bench9.toml")


def test_a_wrong_protocol_header_is_a_clear_error(tmp_path: Path) -> None:
    shipped_modbus = modbus_profile.PROFILE_DIR / "eastron_sdm630.toml"
    with pytest.raises(ConfigError) as err:
        _mbus_configure(_mbus_device(str(shipped_modbus)))
    assert err.value.file == str(shipped_modbus)
    assert err.value.key == "profile.protocol"
    assert err.value.line == 8
    assert err.value.message == (
        "this profile is for 'modbus', the device uses the 'mbus' driver "
        '(expected protocol = "mbus")'
    )
    # A name resolves per protocol: an M-Bus profile name means nothing to Modbus ...
    with pytest.raises(ConfigError, match="no profile 'heat-meter-billing' for modbus"):
        _configure(_config(tmp_path, modbus="heat-meter-billing"))
    # ... and a same-named file of the other protocol in the profile directory is an error.
    own = tmp_path / "etc" / "profiles"
    own.mkdir(parents=True)
    (own / "bench8.toml").write_text(MBUS_OWN.replace('"heat-meter-billing"', '"bench8"'))
    with pytest.raises(ConfigError) as err:
        _configure(_config(tmp_path))
    assert (err.value.file, err.value.key) == (str(own / "bench8.toml"), "profile.protocol")


# -- the common format -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key", "line", "words"),
    [
        (
            '[profile]\nname = "x"\nprotocol = "mbus"\nmanufacturer = "a"\n',
            "profile.model",
            1,
            "required",
        ),
        (
            '[profile]\nname = "x"\nprotocol = "mbus"\nmanufacturer = "a"\nmodel = "b"\n'
            'modle = "c"\n[[points]]\nquantity = "volume"\n',
            "profile.modle",
            6,
            "did you mean 'model'?",
        ),
        (
            '[profile]\nname = "X Y"\nprotocol = "mbus"\nmanufacturer = "a"\nmodel = "b"\n'
            '[[points]]\nquantity = "volume"\n',
            "profile.name",
            2,
            "lower-case",
        ),
        (
            'name = "old"\n[[pick]]\nquantity = "volume"\n',
            "name",
            1,
            "belongs in the [profile] table",
        ),
        (
            '[profile]\nname = "x"\nprotocol = "mbus"\nmanufacturer = "a"\nmodel = "b"\n'
            '[[pick]]\nquantity = "volume"\n',
            "pick",
            6,
            "[[pick]] tables are now [[points]]",
        ),
        (
            '[profile]\nname = "x"\nprotocol = "mbus"\nmanufacturer = "a"\nmodel = "b"\n'
            '[[points]]\nquantity = "volum"\n',
            "points[0].quantity",
            7,
            "did you mean 'volume'?",
        ),
        (
            '[profile]\nname = "x"\nprotocol = "mbus"\nmanufacturer = "a"\nmodel = "b"\n'
            '[mbus]\nspeed = 1\n[[points]]\nquantity = "volume"\n',
            "mbus.speed",
            7,
            "unknown key",
        ),
        (
            '[profile]\nname = "x"\nprotocol = "mbus"\nmanufacturer = "a"\nmodel = "b"\n'
            '[[points]]\nquantity = "volume"\nregister = 3\n',
            "points[0].register",
            8,
            "unknown key",
        ),
    ],
)
def test_format_errors_name_file_key_and_line(
    tmp_path: Path, body: str, key: str, line: int, words: str
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        mapping.load_profile(path)
    assert (err.value.file, err.value.key, err.value.line) == (str(path), key, line)
    assert words in err.value.message


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(MBUS_OWN)
    first = mapping.load_profile(path)
    assert mapping.load_profile(path) is first
    path.write_text(MBUS_OWN + '\n[[points]]\nquantity = "volume"\n')
    assert [p.quantity for p in mapping.load_profile(path).points] == ["energy_heat", "volume"]
