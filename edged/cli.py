"""The ``edged`` command: run the daemon, check config, talk to the running daemon, tools."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
from pathlib import Path

from edged import __version__

DEFAULT_CONFIG = Path("/etc/edged/edged.toml")
EX_CONFIG = 78  # sysexits EX_CONFIG: systemd and installers know it as "configuration error"

# Groups whose arguments belong to a module of their own (each has main(argv) -> int).
_DELEGATED = {
    "license": "edged.licensing.cli:main",
    "mbus": "drivers.mbus.cli:main",
}
_SIMULATORS = {
    "modbus": "drivers.modbus.simulator:main",
    "mbus": "drivers.mbus.simulator:main",
    "ocpp": "drivers.ocpp.simulator:main",
}


def _call(target: str, argv: list[str]) -> int:
    module, _, attr = target.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    return int(fn(argv))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edged", description="Edge daemon for energy gateways.")
    p.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    r.add_argument(
        "--licence-dir",
        type=Path,
        default=None,
        help="licence directory (default: [licensing] directory)",
    )

    c = sub.add_parser("check-config", help="validate the configuration without starting anything")
    c.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    c.add_argument("--licence-dir", type=Path, default=None)

    s = sub.add_parser("status", help="ask the running daemon for its status")
    s.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    s.add_argument("--socket", type=Path, default=None, help="control socket (default from config)")
    s.add_argument("--json", action="store_true", help="print JSON")

    rl = sub.add_parser("reload", help="ask the running daemon to reload its configuration")
    rl.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    rl.add_argument("--socket", type=Path, default=None)

    o = sub.add_parser("ocpp", help="command a charger through the running daemon", add_help=False)
    o.add_argument("args", nargs=argparse.REMAINDER)

    sim = sub.add_parser("sim", help="run a device simulator (modbus, mbus, ocpp)", add_help=False)
    sim.add_argument("args", nargs=argparse.REMAINDER)
    for name in _DELEGATED:
        d = sub.add_parser(name, help=f"{name} tools", add_help=False)
        d.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _socket_path(config: Path, socket: Path | None) -> Path:
    """The daemon's control socket, read leniently from the config files.

    Only ``[control] socket`` (and ``[gateway] data_dir`` for its default) matter here, so
    a config that is broken elsewhere - say, right after a refused reload - still lets
    the operator reach the daemon that keeps running on the previous one.
    """
    if socket is not None:
        return socket
    import tomllib

    from edged import config as configmod
    from edged.errors import ConfigError

    if not config.is_file():
        raise ConfigError(config, "", "file not found (or give --socket PATH)")
    found: dict[str, str] = {}
    for file in configmod.config_files(config):
        try:
            doc = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        for section, key in (("control", "socket"), ("gateway", "data_dir")):
            value = doc.get(section, {}).get(key) if isinstance(doc.get(section), dict) else None
            if isinstance(value, str):
                found[f"{section}.{key}"] = value
    base = config.parent
    if "control.socket" in found:
        path = Path(found["control.socket"])
    else:
        path = Path(found.get("gateway.data_dir", "/var/lib/edged")) / "control.sock"
    return path if path.is_absolute() else (base / path).resolve()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edged`` command."""
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `edged license show | head`: the reader went away, which is not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in and args_in[0] in _DELEGATED:
        return _call(_DELEGATED[args_in[0]], args_in[1:])
    if args_in and args_in[0] == "sim":
        if len(args_in) < 2 or args_in[1] not in _SIMULATORS:
            print(f"usage: edged sim {{{','.join(_SIMULATORS)}}} ...", file=sys.stderr)
            return 2
        return _call(_SIMULATORS[args_in[1]], args_in[2:])
    from edged.errors import ConfigError, EdgedError

    # One place turns errors into what the operator sees: a config error is one line
    # and exit 78, anything else edged reports (no daemon, refused reload) exit 1.
    try:
        if args_in and args_in[0] == "ocpp":
            return _ocpp(args_in[1:])
        return _command(_parser().parse_args(args_in))
    except ConfigError as exc:
        print(f"edged: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except EdgedError as exc:
        print(f"edged: {exc}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    if args.cmd == "check-config":
        return _check_config(args.config, args.licence_dir)
    if args.cmd == "run":
        return _run(args.config, args.licence_dir)
    if args.cmd == "status":
        return _status(_socket_path(args.config, args.socket), args.json)
    if args.cmd == "reload":
        from edged.control import request

        reply = asyncio.run(request(_socket_path(args.config, args.socket), {"command": "reload"}))
        for note in reply.get("notes", []):
            print(f"warning: {note}", file=sys.stderr)
        print("reloaded")
        return 0
    return 2


def _check_config(path: Path, licence_dir: Path | None) -> int:
    from edged import app
    from edged import config as configmod

    cfg = configmod.load(path)
    plan = app.check(cfg, licence_dir=licence_dir)
    for w in plan.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if plan.unlicensed:
        print(
            f"warning: {len(plan.unlicensed)} device(s) not licensed and never polled: "
            f"{', '.join(d.id for d in plan.unlicensed)} (capacity {plan.licence_total}, "
            "gateway included; see `edged license show`)",
            file=sys.stderr,
        )
    print(
        f"{path}: OK ({len(cfg.files)} file(s), {len(cfg.connections)} connection(s), "
        f"{len(plan.admitted)} device(s) licensed, {len(plan.unlicensed)} unlicensed; "
        f"licence {plan.licence_used}/{plan.licence_total})"
    )
    return 0


def _run(path: Path, licence_dir: Path | None) -> int:
    from edged import app, logsetup
    from edged import config as configmod
    from edged.errors import ConfigError, EdgedError

    cfg = configmod.load(path)
    logsetup.setup(cfg.log_level)
    daemon = app.Daemon(path, licence_dir=licence_dir)
    try:
        return asyncio.run(daemon.run(cfg))
    except ConfigError as exc:
        logging.getLogger("edged").error("config error: %s", exc)
        return EX_CONFIG
    except EdgedError as exc:
        logging.getLogger("edged").error("cannot start: %s", exc)
        return 1


def _status(socket: Path, as_json: bool) -> int:
    from edged.control import format_status, request

    reply = asyncio.run(request(socket, {"command": "status"}))
    if as_json:
        print(json.dumps(reply.get("status", reply), indent=2))
    else:
        print(format_status(reply.get("status", {})))
    return 0


def _ocpp(argv: list[str]) -> int:
    from drivers.ocpp.cli import build_request, hash_password_main

    if argv[:1] == ["hash-password"]:
        return hash_password_main(argv[1:])
    from edged.control import request

    ap = argparse.ArgumentParser(prog="edged ocpp", add_help=False)
    ap.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--socket", type=Path, default=None)
    known, rest = ap.parse_known_args(argv)
    body = build_request(rest)
    msg = {
        "command": "device",
        "device": body["device"],
        "name": body["command"],
        "args": body.get("args", {}),
    }
    # A refusal ({"ok": false}) arrives as a ControlError from request().
    reply = asyncio.run(request(_socket_path(known.config, known.socket), msg))
    print(json.dumps(reply.get("result"), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
