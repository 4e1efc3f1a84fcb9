"""Pure parts of the OCPP driver: frame guard, meter value conversion, settings, CLI parsing."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ocpp import frame, meter
from drivers.ocpp.cli import build_request
from drivers.ocpp.driver import OcppDriver
from edged.errors import ConfigError
from edged.model import QUANTITIES, ConnectionSpec, unit_of
from tests.drivers.ocpp.ocpp_helpers import charger

# -- frames ---------------------------------------------------------------------------------


def test_valid_frames_parse() -> None:
    f = frame.parse('[2,"id1","Heartbeat",{}]', "1.6")
    assert (f.type_id, f.unique_id, f.action, f.payload) == (2, "id1", "Heartbeat", {})
    r = frame.parse('[3,"id1",{"currentTime":"x"}]', "2.0.1")
    assert (r.type_id, r.payload) == (3, {"currentTime": "x"})
    e = frame.parse('[4,"id1","GenericError","boom",{}]', "2.0.1")
    assert e.error == ("GenericError", "boom")


@pytest.mark.parametrize(
    ("raw", "uid", "reply"),
    [
        ("nope", "-1", True),
        ('[2,"k","Heartbeat",{"a":' + "1" * 30 + "}]", "-1", True),
        ('[2,"k","Heartbeat",' + "[" * 20 + "]" * 20 + "]", "k", True),
        ('[2,"k","Heartbeat",[]]', "k", True),
        ('[9,"k"]', "k", True),
        ('[3,"k"]', "k", False),
        ('[2,"' + "x" * 37 + '","Heartbeat",{}]', "-1", True),
    ],
)
def test_bad_frames_are_rejected_with_the_right_reply(raw: str, uid: str, reply: bool) -> None:
    with pytest.raises(frame.FrameRejected) as e:
        frame.parse(raw, "1.6")
    assert e.value.unique_id == uid
    assert e.value.reply is reply


def test_error_codes_use_each_versions_spelling() -> None:
    assert frame.error_code("FormatViolation", "1.6") == "FormationViolation"
    assert frame.error_code("RpcFrameworkError", "1.6") == "FormationViolation"
    assert frame.error_code("FormationViolation", "2.0.1") == "FormatViolation"
    assert frame.error_code("RpcFrameworkError", "2.0.1") == "RpcFrameworkError"
    text = frame.call_error("a", "GenericError", "x" * 1000)
    decoded = json.loads(text)
    assert decoded[:3] == [4, "a", "GenericError"] and len(decoded[3]) == 255


@given(st.text(max_size=200) | st.binary(max_size=50))
def test_parse_raises_only_frame_rejected(raw: str | bytes) -> None:
    with contextlib.suppress(frame.FrameRejected):
        frame.parse(raw, "2.0.1")


# -- meter values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sampled", "quantity", "value"),
    [
        ({"value": "12.5", "unit": "kWh"}, "energy_import", 12500.0),
        ({"value": "100", "measurand": "Energy.Active.Import.Register"}, "energy_import", 100.0),
        (
            {"value": 2.5, "unit_of_measure": {"unit": "Wh", "multiplier": 3}},
            "energy_import",
            2500.0,
        ),
        (
            {
                "value": 7,
                "measurand": "Energy.Active.Export.Register",
                "unit_of_measure": {"unit": "kWh"},
            },
            "energy_export",
            7000.0,
        ),
        (
            {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"},
            "power_active",
            7400.0,
        ),
        (
            {"value": "1500", "measurand": "Power.Active.Import", "phase": "L2", "unit": "W"},
            "power_active_l2",
            1500.0,
        ),
        ({"value": "16.1", "measurand": "Current.Import", "phase": "L1"}, "current_l1", 16.1),
        ({"value": "16", "measurand": "Current.Import"}, "current_import", 16.0),
        ({"value": "0.2", "measurand": "Current.Import", "phase": "N"}, "current_n", 0.2),
        (
            {"value": "231", "measurand": "Voltage", "phase": "L3-N", "unit": "V"},
            "voltage_l3",
            231.0,
        ),
        ({"value": "400", "measurand": "Voltage", "phase": "L1-L2"}, "voltage_l1_l2", 400.0),
        ({"value": "55", "measurand": "SoC", "unit": "Percent"}, "state_of_charge", 55.0),
        ({"value": "32", "measurand": "Current.Offered", "unit": "A"}, "current_offered", 32.0),
        ({"value": "11", "measurand": "Power.Offered", "unit": "kW"}, "power_offered", 11000.0),
        ({"value": "300.15", "measurand": "Temperature", "unit": "K"}, "temperature", 27.0),
        ({"value": "50", "measurand": "Frequency"}, "frequency", 50.0),
    ],
)
def test_sampled_values_convert_to_canonical_units(
    sampled: dict[str, object], quantity: str, value: float
) -> None:
    c = meter.convert(sampled)
    assert c is not None
    assert c.quantity == quantity
    assert c.value == pytest.approx(value)
    assert quantity in QUANTITIES


@pytest.mark.parametrize(
    "sampled",
    [
        {"value": "abc"},
        {"value": "1", "unit": "furlong"},
        {"value": "1", "measurand": "Power.Active.Import", "unit": "kWh"},
        {"value": "1", "measurand": "RPM"},
        {"value": "1", "measurand": "Power.Active.Import", "phase": "L9"},
        {"value": "1", "format": "SignedData"},
        {"value": True},
        {"value": "1e999"},
        {"value": 1, "unit_of_measure": {"unit": "Wh", "multiplier": 400}},
    ],
)
def test_unusable_sampled_values_are_skipped(sampled: dict[str, object]) -> None:
    assert meter.convert(sampled) is None


def test_samples_keep_measurand_phase_context_and_timestamp() -> None:
    entries = [
        {
            "timestamp": "2026-01-02T03:04:05.000Z",
            "sampled_value": [
                {"value": "1.5", "unit": "kWh", "context": "Sample.Clock"},
                {"value": "10", "measurand": "Current.Import", "phase": "L1"},
                {"value": "junk"},
            ],
        },
        {"sampled_value": []},
        "garbage",
    ]
    out = meter.samples("ev", entries, {"transaction_id": "7"}, now=2_000_000_000.0)
    assert len(out) == 1
    s = out[0]
    assert s.timestamp == 1767323045.0
    assert s.values == {"energy_import": 1500.0, "current_l1": 10.0}
    assert unit_of("energy_import") == "Wh"
    assert s.attrs["context"] == "Sample.Clock"
    assert s.attrs["current_l1.phase"] == "L1"
    assert s.attrs["energy_import.measurand"] == "Energy.Active.Import.Register"
    assert s.attrs["transaction_id"] == "7"


def test_implausible_timestamps_fall_back_to_the_wall_clock() -> None:
    now = 1_800_000_000.0
    assert meter.parse_timestamp("2100-01-01T00:00:00Z", now) == now
    assert meter.parse_timestamp("1970-01-01T00:00:10Z", now) == now  # clock never set
    assert meter.parse_timestamp("2026-01-01T00:00:00+01:00", now) == 1767222000.0
    assert meter.parse_timestamp("2026-01-01T00:00:00", now) == now  # no zone
    assert meter.parse_timestamp(None, now) == now
    assert meter.parse_timestamp("yesterday", now) == now


# -- settings -------------------------------------------------------------------------------


def _conn(**settings: object) -> ConnectionSpec:
    return ConnectionSpec(name="cs", driver="ocpp", settings=settings)


def test_endpoint_and_defaults() -> None:
    d = OcppDriver()
    assert d.configure(_conn(), []).endpoint == "ocpp://0.0.0.0:9000"
    assert d.configure(_conn(host="127.0.0.1", port=9443), []).endpoint == "ocpp://127.0.0.1:9443"
    d.configure(
        _conn(id_tags=["A", "B"]), [charger("ev1"), charger("ev2", "CP-2", ocpp_version="1.6")]
    )


@pytest.mark.parametrize(
    ("settings", "devices", "key"),
    [
        ({"tls_cert": "/c.pem"}, [], "tls_key"),
        ({"port": 0}, [], "port"),
        ({"id_tags": "A"}, [], "id_tags"),
        ({"colour": "red"}, [], "colour"),
        ({}, [charger("a", "X"), charger("b", "X")], "address"),
        ({}, [charger("a", ocpp_version="1.5")], "ocpp_version"),
        ({}, [charger("a", volume=3)], "volume"),
    ],
)
def test_bad_settings_name_the_key(
    settings: dict[str, object], devices: list[object], key: str
) -> None:
    with pytest.raises(ConfigError) as e:
        OcppDriver().configure(_conn(**settings), devices)  # type: ignore[arg-type]
    assert key in str(e.value)


def test_status_lists_configured_chargers_before_they_connect() -> None:
    d = OcppDriver()
    assert d.status() == {}


# -- CLI ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["remote-start", "ev1", "--id-tag", "CARD", "--connector", "2"],
            {
                "device": "ev1",
                "command": "remote_start",
                "args": {"id_tag": "CARD", "connector": 2},
            },
        ),
        (["remote_stop", "ev1"], {"device": "ev1", "command": "remote_stop", "args": {}}),
        (
            ["set-charging-profile", "ev1", "--limit", "16", "--unit", "A", "--purpose", "max"],
            {
                "device": "ev1",
                "command": "set_charging_profile",
                "args": {"limit": 16.0, "unit": "A", "purpose": "max"},
            },
        ),
        (
            ["get-configuration", "ev1", "HeartbeatInterval"],
            {
                "device": "ev1",
                "command": "get_configuration",
                "args": {"keys": ["HeartbeatInterval"]},
            },
        ),
        (
            ["change-configuration", "ev1", "HeartbeatInterval", "60"],
            {
                "device": "ev1",
                "command": "change_configuration",
                "args": {"key": "HeartbeatInterval", "value": "60"},
            },
        ),
        (
            ["get-variables", "ev1", "OCPPCommCtrlr.HeartbeatInterval"],
            {
                "device": "ev1",
                "command": "get_variables",
                "args": {"variables": ["OCPPCommCtrlr.HeartbeatInterval"]},
            },
        ),
        (
            ["set-variables", "ev1", "OCPPCommCtrlr.HeartbeatInterval=60"],
            {
                "device": "ev1",
                "command": "set_variables",
                "args": {"values": {"OCPPCommCtrlr.HeartbeatInterval": "60"}},
            },
        ),
        (
            ["reset", "ev1", "--type", "hard"],
            {"device": "ev1", "command": "reset", "args": {"type": "hard"}},
        ),
        (
            ["trigger-message", "ev1", "MeterValues"],
            {"device": "ev1", "command": "trigger_message", "args": {"message": "MeterValues"}},
        ),
    ],
)
def test_cli_builds_control_requests(argv: list[str], expected: dict[str, object]) -> None:
    assert build_request(argv) == expected
    json.dumps(build_request(argv))


@pytest.mark.parametrize(
    "argv",
    [[], ["fly", "ev1"], ["reset"], ["set-charging-profile", "ev1"], ["set-variables", "ev1", "x"]],
)
def test_cli_usage_errors_exit_with_status_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        build_request(argv)
    assert e.value.code == 2
    assert "usage: edged ocpp" in capsys.readouterr().err
