"""``edged ocpp …``: turning the command line into a request for the running daemon.

``build_request`` only parses; the daemon's control socket carries the request to
``OcppDriver.command``. ``hash-password`` runs locally (it needs no daemon).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from drivers.ocpp.commands import REPORT_BASES, TRIGGERS
from drivers.ocpp.passwords import hash_password
from drivers.ocpp.settings import ID_TOKEN_TYPES
from edged.api import DaemonLink, DriverCommand


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edged ocpp", description="Send a command to a connected OCPP charger."
    )
    # Read by main() before this parser runs; listed here so --help documents them.
    p.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        help="the daemon configuration, for its control socket (default: /etc/edged/edged.toml)",
    )
    p.add_argument("--socket", help="control socket (default from the configuration)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name.replace("_", "-"), aliases=[name], help=help)
        sp.add_argument("charger", metavar="CHARGER", help="device id of the charger")
        return sp

    # Runs locally, before this parser (see main); listed so --help shows it.
    sub.add_parser(
        "hash-password",
        help="hash a charger password for its password_hash setting (needs no daemon)",
    )
    sp = command("remote_start", "start a transaction")
    sp.add_argument("--id-tag", default="edged", help="id tag to start with (default: edged)")
    sp.add_argument("--connector", type=int, help="connector (1.6) or EVSE (2.0.1), default 1")
    sp.add_argument(
        "--id-token-type",
        choices=ID_TOKEN_TYPES,
        help="2.0.1: the tag's type (default: as the charger last presented the tag, "
        "else the charger's id_token_type setting)",
    )
    sp = command("remote_stop", "stop a transaction")
    sp.add_argument("--transaction-id", help="default: the charger's active transaction")
    sp = command("set_charging_profile", "limit charging power or current")
    sp.add_argument("--limit", type=float, required=True, help="limit in --unit")
    sp.add_argument("--unit", choices=("W", "A"), default="W")
    sp.add_argument("--connector", type=int, help="connector (1.6) or EVSE (2.0.1); 0 = all")
    sp.add_argument(
        "--purpose",
        choices=PURPOSE_CHOICES,
        default="tx_default",
        help="tx_default (default): TxDefaultProfile; tx: TxProfile of the running "
        "transaction; max: the station maximum profile",
    )
    sp.add_argument("--profile-id", type=int, help="default: one per purpose, level, connector")
    sp.add_argument("--stack-level", type=int)
    sp.add_argument("--duration", type=float, help="seconds until the limit lapses")
    sp.add_argument("--phases", type=int, choices=(1, 2, 3), help="number of phases to use")
    sp = command("clear_charging_profile", "remove charging profiles (all when no filter)")
    sp.add_argument("--connector", type=int, help="connector (1.6) or EVSE (2.0.1)")
    sp.add_argument("--purpose", choices=PURPOSE_CHOICES)
    sp.add_argument("--stack-level", type=int)
    sp.add_argument("--profile-id", type=int)
    sp = command("get_composite_schedule", "the limit the charger applies over a period")
    sp.add_argument("--connector", type=int, help="connector (1.6) or EVSE (2.0.1); default 0")
    sp.add_argument("--duration", type=int, default=3600, help="seconds (default: 3600)")
    sp.add_argument("--unit", choices=("A", "W"))
    sp = command("change_availability", "make the charger or a connector (in)operative")
    sp.add_argument("type", choices=("operative", "inoperative"))
    sp.add_argument("--connector", type=int, help="connector (1.6) or EVSE (2.0.1); 0 = all")
    sp = command("unlock_connector", "unlock a connector's cable")
    sp.add_argument("--connector", type=int, help="connector (1.6) or EVSE (2.0.1); default 1")
    sp.add_argument("--connector-id", type=int, help="2.0.1: connector of the EVSE; default 1")
    command("clear_cache", "clear the charger's authorization cache")
    sp = command("data_transfer", "send vendor-specific data")
    sp.add_argument("--vendor-id", required=True)
    sp.add_argument("--message-id")
    sp.add_argument("--data", help="text (JSON is sent as structured data in 2.0.1)")
    sp = command("get_base_report", "ask for a device model report (2.0.1)")
    sp.add_argument(
        "--report-base", choices=REPORT_BASES, default="SummaryInventory", help="which report"
    )
    sp = command("send_local_list", "replace or update the local authorization list")
    sp.add_argument("--list-version", type=int, required=True, help="the list's new version")
    sp.add_argument("--update", choices=("full", "differential"), default="full")
    sp.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="TAG[:STATUS[:TYPE]]",
        help="a tag to list (status default Accepted; 2.0.1 token type default ISO14443); "
        "repeat for more",
    )
    sp.add_argument(
        "--remove", action="append", default=[], metavar="TAG", help="differential: drop a tag"
    )
    command("get_local_list_version", "the version of the local authorization list")
    sp = command("get_configuration", "read configuration keys (1.6)")
    sp.add_argument("keys", nargs="*", metavar="KEY", help="keys to read (default: all)")
    sp = command("change_configuration", "change one configuration key (1.6)")
    sp.add_argument("key")
    sp.add_argument("value")
    sp = command("get_variables", "read device model variables (2.0.1)")
    sp.add_argument("variables", nargs="+", metavar="COMPONENT.VARIABLE")
    sp = command("set_variables", "set device model variables (2.0.1)")
    sp.add_argument("assignments", nargs="+", metavar="COMPONENT.VARIABLE=VALUE")
    sp = command("reset", "reset the charger")
    sp.add_argument(
        "--type",
        choices=("soft", "hard"),
        default="soft",
        help="soft/hard (1.6); mapped to OnIdle/Immediate for 2.0.1",
    )
    sp = command("trigger_message", "ask the charger to send a message now")
    sp.add_argument("message", choices=TRIGGERS)
    sp.add_argument("--connector", type=int, help="connector (1.6) or EVSE (2.0.1)")
    return p


PURPOSE_CHOICES = ("tx_default", "tx", "max")


def build_request(argv: list[str]) -> dict[str, Any]:
    """Parse ``edged ocpp <command> CHARGER [options]`` into a control-socket request.

    A wrong command line prints argparse's usage message and exits with status 2.
    """
    parser = _parser()
    ns = parser.parse_args(argv)
    command = ns.command.replace("-", "_")
    if command == "hash_password":
        parser.error("hash-password takes no charger: run `edged ocpp hash-password`")
    args: dict[str, Any] = {}
    # Options that are passed on under their own name when given.
    for key in ("connector", "stack_level", "profile_id", "connector_id", "message_id"):
        if getattr(ns, key, None) is not None:
            args[key] = getattr(ns, key)
    if command == "remote_start":
        args["id_tag"] = ns.id_tag
        if ns.id_token_type is not None:
            args["id_token_type"] = ns.id_token_type
    elif command == "remote_stop":
        if ns.transaction_id is not None:
            args["transaction_id"] = ns.transaction_id
    elif command == "set_charging_profile":
        args.update(limit=ns.limit, unit=ns.unit, purpose=ns.purpose)
        for key in ("duration", "phases"):
            if getattr(ns, key) is not None:
                args[key] = getattr(ns, key)
    elif command == "clear_charging_profile":
        if ns.purpose is not None:
            args["purpose"] = ns.purpose
    elif command == "get_composite_schedule":
        args["duration"] = ns.duration
        if ns.unit is not None:
            args["unit"] = ns.unit
    elif command == "change_availability":
        args["type"] = ns.type
    elif command == "data_transfer":
        args["vendor_id"] = ns.vendor_id
        if ns.data is not None:
            args["data"] = ns.data
    elif command == "get_base_report":
        args["report_base"] = ns.report_base
    elif command == "send_local_list":
        args.update(list_version=ns.list_version, update_type=ns.update, tags=ns.tags)
        if ns.remove:
            args["remove"] = ns.remove
    elif command == "get_configuration":
        if ns.keys:
            args["keys"] = ns.keys
    elif command == "change_configuration":
        args.update(key=ns.key, value=ns.value)
    elif command == "get_variables":
        args["variables"] = ns.variables
    elif command == "set_variables":
        values: dict[str, str] = {}
        for item in ns.assignments:
            name, sep, value = item.partition("=")
            if not sep or not name:
                parser.error(f"set-variables: expected COMPONENT.VARIABLE=VALUE, got {item!r}")
            values[name] = value
        args["values"] = values
    elif command == "reset":
        args["type"] = ns.type
    elif command == "trigger_message":
        args["message"] = ns.message
    return {"device": ns.charger, "command": command, "args": args}


def hash_password_main(argv: list[str]) -> int:
    """``edged ocpp hash-password``: print the password_hash for a charger's config entry."""
    p = argparse.ArgumentParser(
        prog="edged ocpp hash-password",
        description="Hash a charger password for the password_hash key (reads stdin if piped).",
    )
    p.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("charger password: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        sys.stderr.write("edged ocpp hash-password: empty password\n")
        return 2
    sys.stdout.write(hash_password(password) + "\n")
    return 0


def main(argv: list[str], daemon: DaemonLink) -> int:
    """``edged ocpp [-c CONFIG | --socket PATH] COMMAND CHARGER …``."""
    if argv[:1] == ["hash-password"]:
        return hash_password_main(argv[1:])
    ap = argparse.ArgumentParser(prog="edged ocpp", add_help=False)
    ap.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        metavar="CONFIG",
        help="the daemon configuration, for its control socket (default: /etc/edged/edged.toml)",
    )
    ap.add_argument("--socket", type=Path, default=None)
    known, rest = ap.parse_known_args(argv)
    if rest[:1] == ["hash-password"]:
        return hash_password_main(rest[1:])
    body = build_request(rest)
    command = DriverCommand(body["device"], body["command"], body.get("args", {}))
    result = daemon.command(command, config=known.config, socket=known.socket)
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    return 0
