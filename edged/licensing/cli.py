"""``edged license …``: show the install code, activate, list, release and check upgrades."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from edged import config
from edged.errors import ConfigError, LicenceError
from edged.licensing.counting import Admission, capacity_at, maintenance_at, plan_admission
from edged.licensing.keys import running_from_source
from edged.licensing.licence import Licence, iso_time
from edged.licensing.release import (
    RELEASE_DATE,
    RELEASE_KIND,
    RELEASE_KINDS,
    RELEASE_VERSION,
    covers,
    release_kind,
)
from edged.licensing.state import LicenceState
from edged.licensing.store import DEFAULT_DIRECTORY, Evaluation, LicenceStore
from edged.model import DeviceSpec

DEFAULT_WARN_DAYS = (60, 30, 7, 1)


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(f"edged license: {text}\n")


class _Context:
    """Licence directory, devices and warning days, from --dir and -c."""

    def __init__(self, args: argparse.Namespace):
        self.devices: Sequence[DeviceSpec] | None = None
        self.warn_days: Sequence[int] = DEFAULT_WARN_DAYS
        self.tolerance = 3600.0
        directory: Path = DEFAULT_DIRECTORY
        history: tuple[Path, ...] = ()
        if args.config is not None:
            cfg = config.load(args.config)
            self.devices = cfg.devices
            self.warn_days = cfg.licensing.warn_days
            self.tolerance = cfg.licensing.clock_tolerance
            directory = cfg.licensing.directory
            history = (cfg.gateway.data_dir,)
        if args.dir is not None:
            directory = args.dir
        self.store = LicenceStore(directory, tolerance=self.tolerance, history=history)


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-c", "--config", type=Path, help="edged config file (for devices and dir)")
    p.add_argument("--dir", type=Path, help=f"licence directory (default {DEFAULT_DIRECTORY})")
    return p


def _parser() -> argparse.ArgumentParser:
    common = _common()
    p = argparse.ArgumentParser(
        prog="edged license",
        description="Install code, activation, status, release and upgrade checks of licences.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("install-code", parents=[common], help="show this gateway's install code")
    a = sub.add_parser("activate", parents=[common], help="verify and install a licence file")
    a.add_argument("file", type=Path)
    sub.add_parser("show", parents=[common], help="licences, capacity and devices counted")
    r = sub.add_parser("release", parents=[common], help="drop a licence and print a receipt")
    r.add_argument("licence_id")
    u = sub.add_parser("check-upgrade", parents=[common], help="is a release covered?")
    u.add_argument("version")
    u.add_argument("--date", type=date.fromisoformat, required=True, help="release date")
    u.add_argument("--kind", choices=RELEASE_KINDS, required=True)
    d = sub.add_parser(
        "demo-trial", parents=[common], help="activate a demo trial signed with the TEST key"
    )
    d.add_argument(
        "--key", type=Path, help="test key (default: tests/licensing/keys in the checkout)"
    )
    sub.add_parser("plan", add_help=False, help="cloud licence planner (edged.tiers)")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``edged license``; returns the exit status."""
    if argv[:1] == ["plan"]:
        return _plan(argv[1:])
    args = _parser().parse_args(argv)
    try:
        ctx = _Context(args)
        command: Callable[[_Context, argparse.Namespace], int] = _COMMANDS[args.command]
        return command(ctx, args)
    except ConfigError as exc:
        _err(str(exc))
        return 78
    except LicenceError as exc:
        _err(str(exc))
        return 1
    except OSError as exc:
        _err(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        return 1


def _plan(argv: list[str]) -> int:
    try:
        tiers = importlib.import_module("edged.tiers")
    except ImportError:
        _err("the licence planner (edged.tiers) is not installed")
        return 2
    plan_main: Callable[[list[str]], int] = tiers.plan_main
    return plan_main(argv)


def _install_code(ctx: _Context, args: argparse.Namespace) -> int:
    # Only the code on stdout, so scripts can capture it; the fingerprint is for humans.
    _out(ctx.store.install_code)
    sys.stderr.write(f"gateway key {ctx.store.gateway_fingerprint()}\n")
    return 0


def _activate(ctx: _Context, args: argparse.Namespace) -> int:
    data = args.file.read_bytes()
    try:
        lic = ctx.store.activate(data)
    except LicenceError as exc:
        _err(f"refused: {exc}")
        return 1
    until = f", until {iso_time(lic.valid_until)}" if lic.valid_until is not None else ""
    if lic.kind == "upgrade":
        what = f"version {lic.version}"
    elif lic.kind == "maintenance":
        what = f"{lic.term_years}-year term" if lic.term_years else "maintenance term"
    else:
        what = f"capacity {lic.capacity}"
    _out(f"activated {lic.id} ({lic.kind}, {what}{until})")
    _out("a running edged applies it on reload (systemctl reload edged)")
    return 0


def _release(ctx: _Context, args: argparse.Namespace) -> int:
    doc = ctx.store.release(args.licence_id)
    sys.stderr.write(
        f"released {args.licence_id}; send this receipt to your licence administrator:\n"
    )
    sys.stdout.write(doc.decode())
    return 0


def _check_upgrade(ctx: _Context, args: argparse.Namespace) -> int:
    result = covers(
        args.version, args.date, release_kind(args.kind), ctx.store.evaluate().genuine()
    )
    (_out if result.covered else _err)(result.reason)
    return 0 if result.covered else 1


def _show(ctx: _Context, args: argparse.Namespace) -> int:
    ev = ctx.store.evaluate()
    _out(f"install code   {ctx.store.install_code}")
    _out(f"directory      {ctx.store.directory}")
    if ev.clock_warning:
        _out(f"clock          WARNING: {ev.clock_warning}")
    _out()
    for line in format_table(ev):
        _out(line)
    _out()
    for line in format_summary(ev, ctx.devices, ctx.warn_days):
        _out(line)
    _out()
    for line in format_history(ev.history):
        _out(line)
    return 0


def format_history(state: LicenceState | None) -> list[str]:
    """What the licence history remembers: trials, releases, expiries, repairs."""
    if state is None:
        return []
    pad = " " * 15

    def ids(items: Sequence[str]) -> str:
        return ", ".join(items) if items else "none"

    lines = [
        f"history        trials used: {ids(sorted(state.trials))}",
        pad + "released: " + ids([f"{lid} ({iso_time(when)})" for lid, when in state.released]),
        f"{pad}seen expired: {ids(sorted(state.expired))}",
    ]
    if state.revoked:
        lines.append(f"{pad}disabled by a repair: {ids(sorted(state.revoked))}")
    if state.history_lost is not None:
        lines.append(
            f"{pad}history lost or altered on {iso_time(state.history_lost)}: "
            "no trial can be activated"
        )
    if not state.repairs:
        lines.append(f"{pad}repairs: none")
    for when, what in state.repairs:
        lines.append(f"{pad}repair {iso_time(when)}: {what}")
    return lines


def format_table(ev: Evaluation) -> list[str]:
    """The licence table of ``edged license show``."""
    if not ev.entries:
        return ["no licences installed"]
    rows = [("ID", "KIND", "CAPACITY", "STATUS", "UNTIL", "CUSTOMER", "REASON")]
    for e in ev.entries:
        lic = e.licence or e.claimed
        until = "-"
        if lic is not None and lic.valid_until is not None:
            until = iso_time(lic.valid_until)
        elif lic is not None and lic.version:
            until = f"version {lic.version}"
        rows.append(
            (
                e.id,
                lic.kind if lic else "?",
                str(lic.capacity) if lic else "?",
                e.status,
                until,
                lic.customer if lic else "?",
                e.reason,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return [
        "  ".join(c.ljust(widths[i]) if i != 2 else c.rjust(widths[i]) for i, c in enumerate(r[:6]))
        + "  "
        + r[6]
        for r in rows
    ]


def format_summary(
    ev: Evaluation, devices: Sequence[DeviceSpec] | None, warn_days: Sequence[int]
) -> list[str]:
    """Capacity, device count, maintenance and release lines of ``edged license show``."""
    window = capacity_at(ev.usable(), ev.now)
    change = f"; changes at {iso_time(window.next_change)}" if window.next_change else ""
    lines = [f"capacity       {window.capacity} devices, gateway included{change}"]
    if devices is not None:
        lines.append(_devices_line(plan_admission(devices, window.capacity)))
    m = maintenance_at(ev.genuine(), ev.now, warn_days)
    if m.end is None:
        lines.append("maintenance    none")
    elif m.ended:
        lines.append(f"maintenance    ended {iso_time(m.end)}")
    else:
        warn = f" (WARNING: ends in {m.days_left(ev.now)} days)" if m.warning_days else ""
        lines.append(f"maintenance    until {iso_time(m.end)}{warn}")
    result = covers(RELEASE_VERSION, RELEASE_DATE, RELEASE_KIND, ev.genuine())
    # Coverage decides whether this version may be installed as an upgrade; a running
    # gateway keeps working either way, so say what it means instead of alarming.
    state = (
        "covered by maintenance"
        if result.covered
        else "not covered by maintenance (it runs; upgrading to it needs a maintenance or "
        "upgrade licence)"
    )
    lines.append(f"this release   {RELEASE_VERSION} ({RELEASE_KIND}, {RELEASE_DATE}): {state}")
    return lines


def _devices_line(adm: Admission) -> str:
    line = f"devices        {adm.used} of {adm.total} used"
    if adm.unlicensed:
        line += f"; unlicensed ({len(adm.unlicensed)}): {', '.join(adm.unlicensed)}"
    return line


def _demo_trial(ctx: _Context, args: argparse.Namespace) -> int:
    # The signing code (tools/licensing) and the TEST key (tests/licensing/keys) exist only in
    # a source checkout, never in the wheel. The trial then goes through the normal trust
    # rule: it only activates where the test key is trusted.
    # Only the checkout's tools trust the TEST key (for this activation); the daemon counts
    # the trial only when started through the checkout's launcher, tools.licensing.trusting.
    checkout = Path(__file__).resolve().parents[2]
    if not running_from_source() or not (checkout / "tools" / "licensing" / "demo.py").is_file():
        _err(
            "demo-trial needs a source checkout of edged (it signs with tools/licensing and "
            "the TEST key in tests/licensing/keys); in the checkout run: "
            ".venv/bin/python -m tools.licensing.trusting license demo-trial --dir DIR"
        )
        return 1
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    demo = importlib.import_module("tools.licensing.demo")
    activate: Callable[[Path, Path], Licence | None] = demo.activate_demo_trial
    lic = activate(ctx.store.directory, args.key or demo.TEST_KEY)
    if lic is None:
        _out("a trial licence is already installed")
        return 0
    _out(f"activated demo trial {lic.id} (TEST key, capacity {lic.capacity})")
    return 0


_COMMANDS: dict[str, Callable[[_Context, argparse.Namespace], int]] = {
    "demo-trial": _demo_trial,
    "install-code": _install_code,
    "activate": _activate,
    "show": _show,
    "release": _release,
    "check-upgrade": _check_upgrade,
}
