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

from drivers.ocpp.commands import TRIGGERS
from drivers.ocpp.passwords import hash_password
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

    sp = command("remote_start", "start a transaction")
    sp.add_argument("--id-tag", default="edged", help="id tag to start with (default: edged)")
    sp.add_argument("--connector", type=int, help="connector (1.6) or EVSE (2.0.1), default 1")
    sp = command("remote_stop", "stop a transaction")
    sp.add_argument("--transaction-id", help="default: the charger's active transaction")
    sp = command("set_charging_profile", "limit charging power or current")
    sp.add_argument("--limit", type=float, required=True, help="limit in --unit")
    sp.add_argument("--unit", choices=("W", "A"), default="W")
    sp.add_argument("--connector", type=int, help="connector (1.6) or EVSE (2.0.1); 0 = all")
    sp.add_argument(
        "--purpose",
        choices=("tx_default", "max"),
        default="tx_default",
        help="TxDefaultProfile, or the station maximum profile",
    )
    sp.add_argument("--profile-id", type=int)
    sp.add_argument("--stack-level", type=int)
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


_CANONICAL = {
    "remote-start": "remote_start",
    "remote-stop": "remote_stop",
    "set-charging-profile": "set_charging_profile",
    "get-configuration": "get_configuration",
    "change-configuration": "change_configuration",
    "get-variables": "get_variables",
    "set-variables": "set_variables",
    "trigger-message": "trigger_message",
}


def build_request(argv: list[str]) -> dict[str, Any]:
    """Parse ``edged ocpp <command> CHARGER [options]`` into a control-socket request.

    A wrong command line prints argparse's usage message and exits with status 2.
    """
    parser = _parser()
    ns = parser.parse_args(argv)
    command = _CANONICAL.get(ns.command, ns.command)
    args: dict[str, Any] = {}
    if command == "remote_start":
        args["id_tag"] = ns.id_tag
        if ns.connector is not None:
            args["connector"] = ns.connector
    elif command == "remote_stop":
        if ns.transaction_id is not None:
            args["transaction_id"] = ns.transaction_id
    elif command == "set_charging_profile":
        args.update(limit=ns.limit, unit=ns.unit, purpose=ns.purpose)
        for key in ("connector", "profile_id", "stack_level"):
            if getattr(ns, key) is not None:
                args[key] = getattr(ns, key)
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
        if ns.connector is not None:
            args["connector"] = ns.connector
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
    body = build_request(rest)
    command = DriverCommand(body["device"], body["command"], body.get("args", {}))
    result = daemon.command(command, config=known.config, socket=known.socket)
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    return 0
