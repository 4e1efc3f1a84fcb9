"""``edged modbus …``: one-shot reads and a unit-id scan, without the daemon.

``edged modbus read`` reads one meter through a profile, or raw registers decoded with
a given type and word/byte order, and prints the values (like ``mbpoll``).
``edged modbus scan`` asks every unit id of a bus for one register and prints each unit
that answers, as it answers. Both use the driver's own link, codec and profiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from drivers.modbus import codec
from drivers.modbus import profile as profiles
from drivers.modbus.errors import DeviceRefused, ExceptionResponse
from drivers.modbus.link import Link
from drivers.modbus.poller import DevicePoller
from drivers.modbus.settings import PARITIES, ConnectionSettings, DeviceSettings
from edged.api import DaemonLink
from edged.errors import DeviceTimeout, EdgedError
from edged.model import QUANTITIES

# Exception codes 0x0A/0x0B: a gateway has no path to, or no answer from, that unit id.
GATEWAY_NO_TARGET = frozenset({0x0A, 0x0B})


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _connection_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="Modbus TCP host (a meter or a TCP gateway)")
    where.add_argument("--device", help="Modbus RTU serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--port", type=int, default=502, help="TCP port (default: %(default)s)")
    p.add_argument("--baudrate", type=int, default=9600, help="RTU (default: %(default)s)")
    p.add_argument("--parity", choices=PARITIES, default="E", help="RTU (default: %(default)s)")
    p.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    p.add_argument(
        "--timeout", type=float, default=1.0, help="seconds per request (default: %(default)s)"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edged modbus", description="Read Modbus meters directly (no daemon needed)."
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    r = sub.add_parser(
        "read",
        help="read one meter through a profile, or registers with a type and word order",
        description="Read one meter and print decoded values: every point of a profile "
        "(canonical units), or COUNT values of TYPE from REGISTER on.",
    )
    _connection_args(r)
    r.add_argument("--unit", type=int, default=1, help="unit id 1-247 (default: %(default)s)")
    what = r.add_mutually_exclusive_group(required=True)
    what.add_argument("--profile", help="profile name (shipped or in profile_dir) or .toml path")
    what.add_argument("--register", type=_int, help="first register address (0-based; 0x.. ok)")
    r.add_argument("--count", type=int, default=1, help="values to read (default: %(default)s)")
    r.add_argument("--table", choices=profiles.TABLES, default="holding")
    r.add_argument("--type", choices=codec.TYPES, default="u16", help="(default: %(default)s)")
    r.add_argument("--word-order", choices=codec.ORDERS, default="big", help="(default: big)")
    r.add_argument("--byte-order", choices=codec.ORDERS, default="big", help="(default: big)")
    r.add_argument("--scale", type=float, default=1.0, help="multiply raw values by this")
    r.add_argument("--json", action="store_true", help="print JSON")

    s = sub.add_parser(
        "scan",
        help="find the unit ids that answer on a bus",
        description="Ask every unit id for one register and print each unit that answers "
        "(an exception response is an answer too).",
    )
    _connection_args(s)
    s.add_argument("--first", type=int, default=1, help="first unit id (default: %(default)s)")
    s.add_argument("--last", type=int, default=247, help="last unit id (default: %(default)s)")
    s.add_argument("--register", type=_int, default=0, help="register to ask for (default: 0)")
    s.add_argument("--table", choices=profiles.TABLES, default="holding")
    return p


def _int(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {text}")
    return value


def _settings(args: argparse.Namespace) -> ConnectionSettings:
    if args.host is not None:
        return ConnectionSettings(
            "tcp", args.host, args.port, "", 9600, "E", 1, 8, args.timeout, 0, 0.0
        )
    gap = max(0.00175, 3.5 * 11 / args.baudrate)
    return ConnectionSettings(
        "rtu",
        "",
        0,
        args.device,
        args.baudrate,
        args.parity,
        args.stopbits,
        8,
        args.timeout,
        0,
        gap,
    )


async def _read(args: argparse.Namespace) -> int:
    link = Link(_settings(args))
    try:
        await link.open()
        if args.profile is not None:
            return await _read_profile(link, args)
        return await _read_registers(link, args)
    finally:
        link.close()


async def _read_profile(link: Link, args: argparse.Namespace) -> int:
    path = profiles.resolve(args.profile, base=Path.cwd())
    if path is None:
        known = ", ".join(profiles.shipped())
        raise EdgedError(f"no profile {args.profile!r} (shipped: {known}; or a .toml path)")
    prof = profiles.load(path)
    poller = DevicePoller(DeviceSettings("cli", args.unit, prof, 1.0))
    values = await poller.poll(link.read)
    if args.json:
        out = {q: {"value": v, "unit": QUANTITIES[q].unit} for q, v in values.items()}
        _out(json.dumps({"unit": args.unit, "profile": prof.name, "values": out}, indent=2))
        return 0
    _out(f"unit {args.unit} at {link.settings.endpoint}, profile {prof.name}")
    for p in prof.points:
        if p.quantity in values:
            _out(f"  {p.quantity:<24} {values[p.quantity]:>16.10g} {QUANTITIES[p.quantity].unit}")
        else:
            _out(f"  {p.quantity:<24} {'-':>16} (refused or not available)")
    return 0


async def _read_registers(link: Link, args: argparse.Namespace) -> int:
    n = codec.width(args.type)
    total = n * args.count
    if args.count < 1 or args.register + total > 0x10000 or total > 125:
        raise EdgedError("--count must be at least 1, at most 125 registers, within 0-65535")
    regs = await link.read(args.table, args.register, total, args.unit)
    rows: list[dict[str, Any]] = []
    for i in range(args.count):
        words = regs[i * n : (i + 1) * n]
        raw = codec.decode(words, args.type, args.word_order, args.byte_order)
        rows.append(
            {
                "register": args.register + i * n,
                "registers": words,
                "value": float(f"{raw * args.scale:.15g}"),
            }
        )
    if args.json:
        _out(
            json.dumps({"unit": args.unit, "table": args.table, "type": args.type, "values": rows})
        )
        return 0
    _out(
        f"unit {args.unit} at {link.settings.endpoint}, {args.table} registers, {args.type}, "
        f"word order {args.word_order}, byte order {args.byte_order}"
    )
    for row in rows:
        hexes = " ".join(f"0x{w:04x}" for w in row["registers"])
        _out(f"  {row['register']:>5}  {hexes:<{7 * n}}  {row['value']:.10g}")
    return 0


async def _scan(args: argparse.Namespace) -> int:
    if not 1 <= args.first <= args.last <= 247:
        raise EdgedError("unit ids are 1-247 (--first <= --last)")
    link = Link(_settings(args))
    found: list[int] = []
    try:
        await link.open()
        for unit in range(args.first, args.last + 1):
            try:
                await link.read(args.table, args.register, 1, unit)
                note = ""
            except DeviceRefused as exc:
                if exc.code in GATEWAY_NO_TARGET:
                    continue  # a TCP gateway saying nobody answers behind it
                note = f" ({exc})"
            except ExceptionResponse as exc:
                note = f" ({exc})"
            except DeviceTimeout:
                continue
            found.append(unit)
            _out(f"unit {unit} answers{note}")
    finally:
        link.close()
    _out(f"{len(found)} unit(s) found on {link.settings.endpoint} ({args.first}-{args.last})")
    return 0 if found else 1


def main(argv: list[str], daemon: DaemonLink) -> int:
    """``edged modbus read|scan …``."""
    args = _parser().parse_args(argv)
    # Failures are reported once, as edged's own one-line error; not by pymodbus as well.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    if not 1 <= getattr(args, "unit", 1) <= 247:
        raise EdgedError(f"--unit must be 1-247, got {args.unit}")
    return asyncio.run(_read(args) if args.cmd == "read" else _scan(args))
