"""``edged mbus``: scan a bus, read one meter, decode a frame file."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from drivers.mbus import telegram as tg
from drivers.mbus.address import PRIMARY_MAX, SecondaryAddress, manufacturer_code, parse_address
from drivers.mbus.master import Master, header_address
from drivers.mbus.transport import BAUDRATES, PARITIES, LineSettings, LinkSpec, parse_tcp
from drivers.mbus.vif import medium_name
from edged.errors import EdgedError


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def format_telegram(t: tg.Telegram) -> str:
    """A decoded telegram as readable lines: header, then one line per record."""
    lines: list[str] = []
    if t.error is not None:
        lines.append(f"application error {t.error.code}: {t.error.text}")
    h = t.header
    if h is not None:
        lines.append(
            f"id {h.id:08d}  manufacturer {h.manufacturer}  version {h.version}"
            f"  medium {h.medium_name} (0x{h.medium:02X})  access {h.access_number}"
            f"  status 0x{h.status:02X}"
        )
    for n, r in enumerate(t.records):
        where = f"storage {r.storage} tariff {r.tariff} subunit {r.subunit}"
        unit = f" {r.unit}" if r.unit else ""
        value = r.value.hex(" ").upper() if isinstance(r.value, bytes) else r.value
        quantity = f"  -> {r.quantity}" if r.quantity else ""
        flag = "  (invalid)" if r.invalid else ""
        lines.append(
            f"{n:3d}  {r.function:<13} {where:<30} {r.description}: {value}{unit}{quantity}{flag}"
        )
    if t.manufacturer_data:
        lines.append(f"manufacturer data: {t.manufacturer_data.hex(' ').upper()}")
    if t.more_follows:
        lines.append("more records follow in the next telegram")
    return "\n".join(lines)


def _link_spec(args: argparse.Namespace) -> LinkSpec:
    settings = LineSettings(args.baud, args.parity)
    if args.tcp:
        host, port = parse_tcp(args.tcp)
        return LinkSpec("tcp", settings, host=host, port=port)
    return LinkSpec("serial", settings, device=args.device)


def _bus_options(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--device", help="serial device of the level converter, e.g. /dev/ttyUSB0")
    where.add_argument("--tcp", metavar="HOST:PORT", help="M-Bus-to-Ethernet converter")
    p.add_argument("--baud", type=int, default=2400, choices=BAUDRATES, help="default 2400")
    p.add_argument("--parity", default="E", choices=PARITIES, help="default E (8E1)")
    p.add_argument(
        "--timeout", type=float, help="response timeout in seconds (default: EN 13757-2)"
    )
    p.add_argument("--retries", type=int, default=2, help="retries per request (default 2)")


class _Progress:
    """Scan progress on stderr (stdout stays the list of slaves): a bar on a terminal."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._open = False

    def elapsed(self) -> float:
        """Seconds since the scan started."""
        return time.monotonic() - self.start

    def __call__(self, text: str) -> None:
        self.line(f"{text}, {self.elapsed():.0f} s elapsed")

    def step(self, done: int, total: int, text: str) -> None:
        """How far a scan of known length got, with the time it will still take."""
        elapsed = self.elapsed()
        left = elapsed / done * (total - done) if done else 0.0
        detail = f"{text}, {elapsed:.0f} s elapsed, about {left:.0f} s left"
        if self.tty:
            bar = "#" * (30 * done // total) + "." * (30 - 30 * done // total)
            sys.stderr.write(f"\rscan: [{bar}] {done}/{total} {detail}\x1b[K")
            sys.stderr.flush()
            self._open = True
        else:
            self.line(detail)

    def line(self, text: str) -> None:
        """One progress line (on a terminal: below the bar)."""
        self.end()
        sys.stderr.write(f"scan: {text}\n")
        sys.stderr.flush()

    def end(self) -> None:
        """Finish a bar line before other output."""
        if self._open:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._open = False


def _say(progress: _Progress, text: str) -> None:
    progress.end()
    _out(text)
    sys.stdout.flush()


async def _scan(args: argparse.Namespace) -> int:
    link = await _link_spec(args).open()
    progress = _Progress()
    try:
        master = Master(link, retries=args.retries, timeout=args.timeout)
        if args.secondary:
            mask = SecondaryAddress.parse(args.mask)

            def found_one(a: SecondaryAddress) -> None:
                _say(
                    progress,
                    f"{a}  manufacturer {manufacturer_code(a.manufacturer)}"
                    f"  version {a.version}  medium {medium_name(a.medium)} (0x{a.medium:02X})",
                )

            found = await master.scan_secondary(mask, progress=progress, on_found=found_one)
            _say(progress, f"{len(found)} slaves found ({progress.elapsed():.0f} s)")
            return 0
        addresses = range(args.first, args.last + 1)
        primaries: list[int] = []
        for n, address in enumerate(addresses):
            # A full scan takes about a minute at 2400 baud: say how far it got.
            if n and (n % 25 == 0 or progress.tty):
                progress.step(n, len(addresses), f"address {address} ({n}/{len(addresses)}), "
                              f"{len(primaries)} found so far")  # fmt: skip
            if not await master.scan_primary(range(address, address + 1), retries=0):
                continue
            primaries.append(address)
            try:
                reading = await master.read(address)
                secondary = header_address(reading.frames[0])
                medium = reading.telegrams[0].header if reading.telegrams else None
                what = f"  medium {medium.medium_name}" if medium is not None else ""
                _say(progress, f"primary {address:3d}  secondary {secondary or '-'}{what}")
            except EdgedError as exc:
                _say(progress, f"primary {address:3d}  answered SND_NKE but not REQ_UD2: {exc}")
        _say(progress, f"{len(primaries)} slaves found ({progress.elapsed():.0f} s)")
        return 0
    finally:
        progress.end()
        await link.close()


async def _read(args: argparse.Namespace) -> int:
    try:
        address = parse_address(args.address)
    except ValueError as exc:
        raise SystemExit(f"edged mbus read: {exc}") from exc
    link = await _link_spec(args).open()
    try:
        master = Master(link, retries=args.retries, timeout=args.timeout)
        reading = await master.read(address)
    finally:
        await link.close()
    if args.json:
        _out(json.dumps([tg.telegram_to_json(t) for t in reading.telegrams], indent=2, default=str))
    else:
        for n, t in enumerate(reading.telegrams):
            if len(reading.telegrams) > 1:
                _out(f"telegram {n + 1} of {len(reading.telegrams)}")
            _out(format_telegram(t))
    return 0


def _decode(args: argparse.Namespace) -> int:
    """Decode each file; a frame that does not decode is reported and the rest go on."""
    failed = 0
    many = len(args.files) > 1
    documents: list[dict[str, object]] = []
    for name in args.files:
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SystemExit(f"edged mbus decode: cannot read {path}: {exc.strerror}") from exc
        try:
            t = tg.decode_frame(tg.from_hex(text))
        except EdgedError as exc:
            sys.stderr.write(f"edged mbus decode: {path}: {exc}\n")
            failed += 1
            continue
        if args.json:
            doc = tg.telegram_to_json(t)
            documents.append({"file": str(path), **doc} if many else doc)
        else:
            if many:
                _out(f"== {path}")
            _out(format_telegram(t))
    if args.json and documents:
        _out(json.dumps(documents if many else documents[0], indent=2, default=str))
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    """Entry point of ``edged mbus``."""
    parser = argparse.ArgumentParser(prog="edged mbus", description="Wired M-Bus tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    scan = sub.add_parser("scan", help="find the slaves on a bus")
    _bus_options(scan)
    scan.add_argument("--secondary", action="store_true", help="wildcard search by secondary id")
    scan.add_argument("--mask", default="FFFFFFFFFFFFFFFF", help="secondary mask to search below")
    scan.add_argument("--first", type=int, default=0, help="first primary address (default 0)")
    scan.add_argument("--last", type=int, default=250, help="last primary address (default 250)")
    read = sub.add_parser("read", help="read every telegram of one meter")
    read.add_argument("address", help="primary address 0..250 or 16-hex-digit secondary address")
    _bus_options(read)
    read.add_argument("--json", action="store_true", help="print JSON")
    decode = sub.add_parser("decode", help="decode frames from .hex files")
    decode.add_argument("files", nargs="+", metavar="FILE", help="file with a frame as hex bytes")
    decode.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "decode":
            return _decode(args)
        if args.command == "scan":
            if args.secondary:
                try:
                    SecondaryAddress.parse(args.mask)
                except ValueError as exc:
                    parser.error(f"--mask: {exc}")
            elif not 0 <= args.first <= args.last <= PRIMARY_MAX:
                parser.error(
                    f"--first/--last: primary addresses are 0-{PRIMARY_MAX} "
                    f"(251-255 are reserved), got {args.first}-{args.last}"
                )
            return asyncio.run(_scan(args))
        return asyncio.run(_read(args))
    except ValueError as exc:
        parser.error(str(exc))
    except EdgedError as exc:
        sys.stderr.write(f"edged mbus {args.command}: {exc}\n")
        return 1
    return 2  # pragma: no cover - parser.error exits
