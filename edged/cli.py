"""The ``edged`` command: run the daemon, check config, talk to the running daemon, tools."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from edged import __version__, api
from edged.api import CliCommand, Command, DriverCommand, SimulatorCommand

DEFAULT_CONFIG = Path("/etc/edged/edged.toml")
EX_CONFIG = 78  # sysexits EX_CONFIG: systemd and installers know it as "configuration error"

CORE_COMMANDS = ("run", "check-config", "status", "reload", "reconnect", "license", "sim")


def _driver_clis() -> dict[str, CliCommand]:
    """``edged <protocol> …`` of every driver that has one (built-in or by entry point)."""
    out: dict[str, CliCommand] = {}
    for name, drv in api.all_drivers().items():
        if isinstance(drv, api.HasCli) and name not in CORE_COMMANDS:
            out[name] = drv.cli()
    return out


def _simulators() -> dict[str, SimulatorCommand]:
    """``edged sim <protocol> …`` of every driver that ships a simulator."""
    return {
        name: drv.simulator()
        for name, drv in api.all_drivers().items()
        if isinstance(drv, api.HasSimulator)
    }


def _sim(argv: list[str]) -> int:
    drv = _one_driver(argv[0]) if argv and not argv[0].startswith("-") else None
    if isinstance(drv, api.HasSimulator):
        return int(drv.simulator().main(argv[1:]))
    sims = _simulators()
    p = argparse.ArgumentParser(
        prog="edged sim",
        description="Run a simulated device that speaks a driver's protocol "
        "(for tests, the demo and benchmarks).",
    )
    sub = p.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    for name, sim in sims.items():
        sub.add_parser(name, help=sim.help, add_help=False)
    if argv and argv[0] in sims:
        return int(sims[argv[0]].main(argv[1:]))
    p.parse_args(argv)  # prints help or a usage error and exits
    return 2


class _ControlLink:
    """``edged.api.DaemonLink`` over the daemon's control socket."""

    def command(
        self, command: Command, *, config: Path | None = None, socket: Path | None = None
    ) -> Any:
        """Send a driver command to the running daemon; return the driver's result."""
        from edged.control import request
        from edged.errors import EdgedError

        if not isinstance(command, DriverCommand):
            raise EdgedError(f"{type(command).__name__} cannot be sent from the command line")
        msg = {
            "command": "device",
            "device": command.device_id,
            "name": command.name,
            "args": dict(command.args),
        }
        # A refusal ({"ok": false}) arrives as a ControlError from request().
        reply = asyncio.run(request(_socket_path(config or DEFAULT_CONFIG, socket), msg))
        return reply.get("result")


def _licence_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--licence-dir",
        type=Path,
        default=None,
        help="licence directory (default: [licensing] directory)",
    )


def _parser(clis: dict[str, CliCommand]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edged", description="Edge daemon for energy gateways.")
    p.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the daemon")
    _config_arg(r, "main configuration file")
    _licence_dir_arg(r)
    r.add_argument(
        "--level",
        choices=("debug", "info", "warning", "error"),
        default=None,
        help="edged's log level (default: [logging] level, else info); the libraries' "
        "own lines follow [logging] libraries",
    )

    c = sub.add_parser("check-config", help="validate the configuration without starting anything")
    _config_arg(c, "main configuration file (conf.d/*.toml beside it are read too)")
    _licence_dir_arg(c)

    s = sub.add_parser("status", help="ask the running daemon for its status")
    _config_arg(s)
    s.add_argument("--socket", type=Path, default=None, help="control socket (default from config)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--values", action="store_true", help="show each device's last values")
    s.add_argument("device", nargs="?", metavar="DEVICE", help="show one device and its values")

    rl = sub.add_parser("reload", help="ask the running daemon to reload its configuration")
    _config_arg(rl)
    rl.add_argument(
        "--socket", type=Path, default=None, help="control socket (default from config)"
    )

    rc = sub.add_parser(
        "reconnect", help="ask the running daemon to retry a device's connection now"
    )
    _config_arg(rc)
    rc.add_argument(
        "--socket", type=Path, default=None, help="control socket (default from config)"
    )
    rc.add_argument("device", metavar="DEVICE", help="device id (its whole connection is retried)")

    lic = sub.add_parser("license", help="licences: install code, activate, show", add_help=False)
    lic.add_argument("args", nargs=argparse.REMAINDER)
    sim = sub.add_parser("sim", help="run a device simulator", add_help=False)
    sim.add_argument("args", nargs=argparse.REMAINDER)
    for name, what in (("export", "load profile as CSV"), ("report", "monthly energy summary")):
        ex = sub.add_parser(name, help=what, add_help=False)
        ex.add_argument("args", nargs=argparse.REMAINDER)
    for name, cli in clis.items():
        d = sub.add_parser(name, help=cli.help, add_help=False)
        d.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _config_arg(p: argparse.ArgumentParser, what: str | None = None) -> None:
    """``-c CONFIG`` with its help text and default."""
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        metavar="CONFIG",
        help=f"{what or 'the daemon configuration, for its control socket'} (default: %(default)s)",
    )


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
            doc = tomllib.loads(file.read_text(encoding="utf-8-sig"))
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


def _one_driver(name: str) -> api.AnyDriver | None:
    """The named driver for ``edged NAME …`` / ``edged sim NAME …`` (None when unknown)."""
    if name not in api.available():
        return None
    try:
        return api.get(name)
    except Exception:  # a broken third-party driver: argparse then says what is known
        return None


def _main(argv: list[str] | None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in and args_in[0] == "license":
        from edged.licensing import cli as licence_cli

        return licence_cli.main(args_in[1:])
    if args_in and args_in[0] == "sim":
        return _sim(args_in[1:])
    from edged.errors import ConfigError, EdgedError

    # One place turns errors into what the operator sees: a config error is one line
    # and exit 78, anything else edged reports (no daemon, refused reload) exit 1.
    try:
        if args_in and args_in[0] in ("export", "report"):
            from edged.export import cli_main

            return cli_main(args_in[0], args_in[1:])
        if args_in and args_in[0] not in CORE_COMMANDS and not args_in[0].startswith("-"):
            drv = _one_driver(args_in[0])
            if isinstance(drv, api.HasCli):
                return int(drv.cli().main(args_in[1:], _ControlLink()))
            return _command(_parser(_driver_clis()).parse_args(args_in))
        return _command(_parser(_driver_clis() if _wants_help(args_in) else {}).parse_args(args_in))
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
        return _run(args.config, args.licence_dir, args.level)
    if args.cmd == "status":
        return _status(_socket_path(args.config, args.socket), args.json, args.values, args.device)
    if args.cmd == "reload":
        from edged.control import request

        reply = asyncio.run(request(_socket_path(args.config, args.socket), {"command": "reload"}))
        for note in reply.get("notes", []):
            print(f"warning: {note}", file=sys.stderr)
        print("reloaded")
        return 0
    if args.cmd == "reconnect":
        from edged.control import request

        msg = {"command": "reconnect", "device": args.device}
        reply = asyncio.run(request(_socket_path(args.config, args.socket), msg))
        print(f"reconnecting connection {reply.get('connection')} (device {args.device})")
        return 0
    return 2


def _check_config(path: Path, licence_dir: Path | None) -> int:
    from edged import config as configmod
    from edged.provisioning import provision

    cfg = configmod.load(path)
    prov = provision(cfg, licence_dir=licence_dir)
    for w in [*prov.warnings, *_site_checks(cfg)]:
        print(f"warning: {w}", file=sys.stderr)
    if prov.unlicensed:
        print(
            f"warning: {len(prov.unlicensed)} device(s) not licensed and never polled: "
            f"{', '.join(d.id for d in prov.unlicensed)} (capacity {prov.licence_total}, "
            "gateway included; see `edged license show`)",
            file=sys.stderr,
        )
    print(
        f"{path}: OK ({len(cfg.files)} file(s), {len(cfg.connections)} connection(s), "
        f"{len(prov.admitted)} device(s) licensed, {len(prov.unlicensed)} unlicensed; "
        f"licence {prov.licence_used}/{prov.licence_total})"
    )
    print(_tier_line(cfg))
    from edged.app import outbox_size
    from edged.outbox_sizing import describe

    line, warning = describe(outbox_size(cfg, prov.intervals.values()), cfg.outbox.outage_hours)
    print(line)
    if warning:
        print(f"warning: {_section_error(cfg, 'outbox', 'max_mb')(warning)}", file=sys.stderr)
    return 0


def _tier_line(cfg: Any) -> str:
    """The account tier and the publish interval it implies."""
    from edged import tiers

    account = tiers.account_tier(cfg)
    return (
        f"account tier {account.value}: each metering point publishes at most every "
        f"{tiers.tier_interval(account):g} s"
    )


def _site_checks(cfg: Any) -> list[str]:
    """What can be checked without touching a device; raises ConfigError, returns warnings."""
    import ipaddress
    import socket

    from edged import tiers
    from edged.model import Tier

    warnings: list[str] = []
    account = tiers.account_tier(cfg)
    implicit = list(cfg.no_cloud_licence)
    if account is Tier.BASIC and implicit:
        srcs = {d.id: d.source for d in cfg.devices} | {v.id: v.source for v in cfg.virtual_meters}
        first = srcs[implicit[0]].error(
            "cloud_licence",
            f"not set on {len(implicit)} metering point(s) ({', '.join(implicit[:10])}"
            f"{', …' if len(implicit) > 10 else ''}), which count as basic: the account tier "
            "is the lowest of all, so the whole site publishes at most every "
            f"{tiers.tier_interval(Tier.BASIC):g} s (set cloud_licence on every device)",
        )
        warnings.append(str(first))
    hosts = [(cfg.mqtt.host, _section_error(cfg, "mqtt", "host"))]
    for conn in cfg.connections.values():
        host = conn.settings.get("host")
        if isinstance(host, str) and host:
            hosts.append((host, lambda m, c=conn: c.source.error("host", m)))
        device = conn.settings.get("device")
        if isinstance(device, str) and device.startswith("/") and not Path(device).exists():
            warnings.append(
                str(
                    conn.source.error(
                        "device",
                        f"{device} does not exist (yet): the daemon will keep retrying; "
                        "is the adapter plugged in and the path right (ls /dev/serial/by-id)?",
                    )
                )
            )
    for host, error in hosts:
        try:
            ipaddress.ip_address(host)
            continue
        except ValueError:
            pass
        try:
            socket.getaddrinfo(host, None)
        except (OSError, UnicodeError) as exc:
            raise error(
                f"{host!r} is neither an IP address nor a name this machine can resolve ({exc})"
            ) from None
    return warnings


def _section_error(cfg: Any, section: str, key: str) -> Any:
    """A function making a located error for ``[section] key`` of the loaded files."""
    from edged.errors import ConfigError

    def make(message: str) -> ConfigError:
        for file in reversed(cfg.files):
            err = ConfigError(file, f"{section}.{key}", message)
            if err.line is not None or file == cfg.files[0]:
                return err
        return ConfigError(cfg.files[0], f"{section}.{key}", message)

    return make


def _run(path: Path, licence_dir: Path | None, level: str | None = None) -> int:
    from edged import app, logsetup
    from edged import config as configmod
    from edged.errors import ConfigError, EdgedError

    cfg = configmod.load(path)
    logsetup.setup(level or cfg.log_level, libraries=cfg.log_libraries)
    daemon = app.Daemon(path, licence_dir=licence_dir)
    try:
        return asyncio.run(daemon.run(cfg))
    except ConfigError as exc:
        logging.getLogger("edged").error("config error: %s", exc)
        return EX_CONFIG
    except EdgedError as exc:
        logging.getLogger("edged").error("cannot start: %s", exc)
        return 1


def _status(socket: Path, as_json: bool, values: bool, device: str | None) -> int:
    from edged.control import format_status, request

    msg: dict[str, Any] = {"command": "status", "values": values}
    if device is not None:
        msg["device"] = device
    reply = asyncio.run(request(socket, msg))
    if as_json:
        print(json.dumps(reply.get("status", reply), indent=2))
    else:
        print(format_status(reply.get("status", {})))
    return 0


def _wants_help(argv: list[str]) -> bool:
    """True when argparse is going to print the top-level help or usage."""
    return not argv or argv[0] in ("-h", "--help")


if __name__ == "__main__":
    sys.exit(main())
