"""The rest of ``edged ocpp``: availability, unlock, cache, data transfer, composite schedule,
base report, local authorization list; and the bugs an independent OCPP client found.

Every request is checked against the ``ocpp`` library's own JSON schemas, here directly
and again on the way to the simulator (the library validates each call and answer).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.messages import Call, _validate_payload

from drivers.ocpp import cli, commands, settings
from drivers.ocpp.state import ChargerStatus, Transaction
from edged.api import DriverCommand
from edged.errors import ConfigError
from edged.model import ConnectionSpec
from tests.drivers.ocpp.ocpp_helpers import central, charger, running, wait_until

VERSIONS = ["1.6", "2.0.1"]

# command → (arguments, the simulator's answer without volatile fields), per version.
NEW_COMMANDS: dict[str, list[tuple[dict[str, Any], dict[str, dict[str, Any]]]]] = {
    "change_availability": [
        ({"type": "inoperative", "connector": 0}, {"*": {"status": "Scheduled"}}),
        ({"type": "operative"}, {"*": {"status": "Accepted"}}),
    ],
    "unlock_connector": [
        (
            {"connector": 1},
            {"1.6": {"status": "Unlocked"}, "2.0.1": {"status": "OngoingAuthorizedTransaction"}},
        )
    ],
    "clear_cache": [({}, {"*": {"status": "Accepted"}})],
    "data_transfer": [
        (
            {"vendor_id": "edged", "message_id": "ping", "data": "hello"},
            {"*": {"status": "Accepted", "data": "hello"}},
        ),
        ({"vendor_id": "someone.else"}, {"*": {"status": "UnknownVendorId"}}),
    ],
    "clear_charging_profile": [({"purpose": "tx_default"}, {"*": {"status": "Unknown"}})],
    "get_composite_schedule": [({"duration": 600, "unit": "A"}, {})],
    "send_local_list": [
        (
            {"list_version": 3, "update_type": "full", "tags": ["CARD1", "CARD2:Blocked"]},
            {"*": {"status": "Accepted"}},
        ),
        (
            {"list_version": 4, "update_type": "differential", "remove": ["CARD1"]},
            {"*": {"status": "Accepted"}},
        ),
        (
            {"list_version": 2, "update_type": "differential", "tags": ["LATE"]},
            {"*": {"status": "VersionMismatch"}},
        ),
    ],
    "get_local_list_version": [({}, {"1.6": {"list_version": 4}, "2.0.1": {"version_number": 4}})],
    "get_base_report": [({"report_base": "FullInventory"}, {"2.0.1": {"status": "Accepted"}})],
}


def _validate(version: str, request: Any) -> None:
    """The ocpp library's own schema validation of a request, as its call() does it."""
    payload = remove_nones(snake_to_camel_case(serialize_as_dict(request)))
    _validate_payload(Call("1", type(request).__name__, payload), version)


def _status(transaction: bool = True) -> ChargerStatus:
    st = ChargerStatus("ev1", "CP1")
    if transaction:
        st.transactions["17"] = Transaction("17", 1, time.time(), "TAG")
    return st


@pytest.mark.parametrize("version", VERSIONS)
def test_every_command_passes_the_librarys_schema_validation(version: str) -> None:
    checked = 0
    for name, cases in NEW_COMMANDS.items():
        for args, _ in cases:
            if name not in (commands.COMMANDS_16 if version == "1.6" else commands.COMMANDS_201):
                with pytest.raises(commands.CommandError, match="not available"):
                    commands.build(version, name, args, _status())
                continue
            _validate(version, commands.build(version, name, args, _status()))
            checked += 1
    # The typed limits, every purpose, with lapse and phases.
    for purpose in ("tx_default", "tx", "max"):
        args = {"limit": 16.25, "unit": "A", "purpose": purpose, "duration": 90.5, "phases": 1}
        _validate(version, commands.build(version, "set_charging_profile", args, _status()))
        _validate(
            version,
            commands.build(version, "clear_charging_profile", {"purpose": purpose}, _status()),
        )
    _validate(version, commands.build(version, "clear_charging_profile", {}, _status()))
    assert checked >= 12


def test_data_transfer_data_as_text_or_json() -> None:
    args = {"vendor_id": "v", "data": '{"a": [1, 2]}'}
    assert commands.build("2.0.1", "data_transfer", args, _status()).data == {"a": [1, 2]}
    assert commands.build("1.6", "data_transfer", args, _status()).data == '{"a": [1, 2]}'
    structured = {"vendor_id": "v", "data": {"a": 1}}
    assert commands.build("1.6", "data_transfer", structured, _status()).data == '{"a":1}'
    _validate("1.6", commands.build("1.6", "data_transfer", structured, _status()))


@pytest.mark.parametrize(("given", "sent"), [(15.96, 15.9), (8.2, 8.2), (16, 16.0), (0, 0.0)])
def test_limits_are_rounded_down_to_one_decimal(given: float, sent: float) -> None:
    request = commands.build("2.0.1", "set_charging_profile", {"limit": given}, _status())
    period = request.charging_profile["charging_schedule"][0]["charging_schedule_period"][0]
    assert period["limit"] == sent


def test_bad_arguments_are_refused_with_the_argument_named() -> None:
    cases = [
        ("send_local_list", {"tags": ["A"]}, "list_version"),
        ("send_local_list", {"list_version": 1, "tags": ["A:Nope"]}, "tags"),
        ("send_local_list", {"list_version": 1, "remove": ["A"]}, "remove"),
        ("data_transfer", {}, "vendor_id"),
        ("change_availability", {"type": "maybe"}, "type"),
        ("get_composite_schedule", {"duration": 0}, "duration"),
        ("set_charging_profile", {"limit": 10, "duration": 0}, "duration"),
        ("set_charging_profile", {"limit": 10, "phases": 4}, "phases"),
        ("set_charging_profile", {"limit": 10, "purpose": "max", "connector": 2}, "connector"),
    ]
    for name, args, key in cases:
        with pytest.raises(commands.CommandError, match=key):
            commands.build("1.6", name, args, _status())
    with pytest.raises(commands.CommandError, match=r"not available in OCPP 1\.6"):
        commands.build("1.6", "get_base_report", {}, _status())


@pytest.mark.parametrize("version", VERSIONS)
async def test_every_new_command_is_answered_by_the_simulator(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = cs.sim("CP1", version, interval=10)
        async with running(sim):
            await sim.charging.wait()
            await wait_until(lambda: cs.driver.status()["ev1"]["transaction"] is not None)
            for name, cases in NEW_COMMANDS.items():
                for args, answers in cases:
                    expected = answers.get(version, answers.get("*"))
                    if expected is None and answers:
                        continue  # not a command of this version
                    res = await cs.driver.command(DriverCommand("ev1", name, args))
                    if expected is not None:
                        assert res["result"] == expected, (name, args)
            assert sim.available is True
            assert sim.local_list == {"CARD2": "Blocked"} and sim.local_list_version == 4
            if version == "2.0.1":
                await wait_until(lambda: sim.reports_sent == 1)
                sent = [a for n, a in sim.received if n == "GetBaseReport"]
                assert sent[0]["report_base"] == "FullInventory"
            # The composite schedule reports the limit the charger applies.
            await cs.driver.command(DriverCommand("ev1", "set_charging_profile", {"limit": 4140}))
            res = await cs.driver.command(
                DriverCommand("ev1", "get_composite_schedule", {"duration": 60, "unit": "A"})
            )
            result = res["result"]
            schedule = result["charging_schedule"] if version == "1.6" else result["schedule"]
            assert result["status"] == "Accepted"
            assert schedule["charging_schedule_period"] == [{"start_period": 0, "limit": 6.0}]


# -- the bugs ----------------------------------------------------------------------------------


def test_2_0_1_trigger_message_keeps_the_evse_given_as_connector() -> None:
    args = cli.build_request(["trigger-message", "ev1", "StatusNotification", "--connector", "2"])
    request = commands.build("2.0.1", "trigger_message", args["args"], _status())
    assert request.evse == {"id": 2}


async def test_2_0_1_trigger_message_reaches_the_charger_with_its_evse() -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = cs.sim("CP1", "2.0.1", interval=10)
        async with running(sim):
            await sim.booted.wait()
            await cs.driver.command(
                DriverCommand(
                    "ev1", "trigger_message", {"message": "StatusNotification", "connector": 1}
                )
            )
            sent = [a for n, a in sim.received if n == "TriggerMessage"]
            assert sent[-1]["evse"] == {"id": 1}


def test_two_remote_starts_in_one_second_get_different_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_790_000_000.25)
    st = _status(transaction=False)
    first = commands.build("2.0.1", "remote_start", {}, st)
    second = commands.build("2.0.1", "remote_start", {}, st)
    assert first.remote_start_id != second.remote_start_id
    # Another charger has its own sequence; both start from the clock.
    other = commands.build("2.0.1", "remote_start", {}, _status(transaction=False))
    assert other.remote_start_id == first.remote_start_id


async def test_remote_start_ids_reach_the_charger_unique() -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = cs.sim("CP1", "2.0.1", interval=10, auto_start=False)
        async with running(sim):
            await sim.booted.wait()
            for _ in range(3):
                await cs.driver.command(DriverCommand("ev1", "remote_start", {"id_tag": "T"}))
            ids = [a["remote_start_id"] for n, a in sim.received if n == "RequestStartTransaction"]
            assert len(set(ids)) == 3


def test_remote_start_names_the_tags_type_not_central() -> None:
    request = commands.build("2.0.1", "remote_start", {"id_tag": "CARD"}, _status(False))
    assert request.id_token == {"id_token": "CARD", "type": "ISO14443"}


async def test_remote_start_sends_the_tags_own_type() -> None:
    async with central([charger("ev1", "CP1", id_token_type="KeyCode")]) as cs:
        sim = cs.sim("CP1", "2.0.1", interval=10, auto_start=False)
        async with running(sim):
            await sim.booted.wait()

            async def start(**args: Any) -> dict[str, Any]:
                await cs.driver.command(DriverCommand("ev1", "remote_start", args))
                sent = [a for n, a in sim.received if n == "RequestStartTransaction"]
                return sent[-1]["id_token"]  # type: ignore[no-any-return]

            # Never presented: the charger's configured type.
            assert await start(id_tag="PIN1") == {"id_token": "PIN1", "type": "KeyCode"}
            # Presented at the charger (the simulator's cards are ISO 14443): that type.
            assert await sim.plug_in("CARD9")
            await sim.unplug()
            assert await start(id_tag="CARD9") == {"id_token": "CARD9", "type": "ISO14443"}
            # Said on the command line: that type.
            assert await start(id_tag="X", id_token_type="eMAID") == {
                "id_token": "X",
                "type": "eMAID",
            }


def test_id_token_type_setting_is_checked() -> None:
    conn = ConnectionSpec(name="cs", driver="ocpp", settings={"port": 9000})
    with pytest.raises(ConfigError, match="id_token_type"):
        settings.parse(conn, [charger("ev1", "CP1", id_token_type="Magnetic")])
    parsed = settings.parse(conn, [charger("ev1", "CP1", id_token_type="ISO15693")])
    assert parsed.chargers["CP1"].id_token_type == "ISO15693"


async def test_the_log_names_the_close_code_the_server_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from websockets.asyncio.client import connect

    caplog.set_level(logging.INFO, logger="edged.ocpp")
    async with central([charger("big", "BIG")], max_message_size=4096) as cs:
        async with connect(f"{cs.url}/BIG", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            await ws.send('[2,"big","DataTransfer",{"vendorId":"' + "x" * 10_000 + '"}]')
            await wait_until(lambda: cs.driver.status()["big"]["connected"] is False)
        line = next(r.getMessage() for r in caplog.records if "disconnected" in r.getMessage())
        assert "code=1009" in line and "by=server" in line, line


def test_help_lists_hash_password(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_request(["--help"])
    out = capsys.readouterr().out
    assert "hash-password" in out
    for name in ("change-availability", "send-local-list", "get-base-report", "clear-cache"):
        assert name in out


def test_command_lines_become_requests() -> None:
    def req(*argv: str) -> dict[str, Any]:
        return cli.build_request(list(argv))["args"]  # type: ignore[no-any-return]

    assert req(
        "send-local-list", "ev1", "--list-version", "2", "--tag", "A", "--tag", "B:Blocked:KeyCode"
    ) == {
        "list_version": 2,
        "update_type": "full",
        "tags": ["A", "B:Blocked:KeyCode"],
    }
    assert req("change-availability", "ev1", "inoperative", "--connector", "1") == {
        "type": "inoperative",
        "connector": 1,
    }
    assert req(
        "set-charging-profile",
        "ev1",
        "--limit",
        "10",
        "--unit",
        "A",
        "--purpose",
        "tx",
        "--stack-level",
        "1",
        "--duration",
        "30",
        "--phases",
        "1",
    ) == {
        "limit": 10.0,
        "unit": "A",
        "purpose": "tx",
        "stack_level": 1,
        "duration": 30.0,
        "phases": 1,
    }
    assert req("unlock-connector", "ev1", "--connector", "1", "--connector-id", "2") == {
        "connector": 1,
        "connector_id": 2,
    }
    assert req("remote-start", "ev1", "--id-tag", "C", "--id-token-type", "ISO15693") == {
        "id_tag": "C",
        "id_token_type": "ISO15693",
    }
