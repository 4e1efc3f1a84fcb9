"""Load profile exports: ``edged export`` (CSV), ``edged report`` (monthly summary), auto export.

CSV columns (docs/zev.md, "CSV columns"), one row per interval, metering point and quantity:

``point, quantity, start, end, energy_wh, peak_w, status``

``start``/``end`` are RFC 3339 UTC; ``energy_wh`` is the energy booked to the row;
``peak_w`` the interval's peak demand (empty when the point sent no power); ``status``
``ok``, ``incomplete``, ``gap`` (energy across an outage, start and end are the readings
around it) or ``open`` (the interval in progress).

Auto export (Professional, ``features.auto_export``) writes the same CSV for every day
(``daily``) and/or month (``monthly``) that ended since the feature was first enabled,
to a directory and/or by HTTP(S) POST. A delivery is journalled in the energy store after
it succeeded (directory: written and renamed into place; HTTP: a 2xx answer); a file not
journalled is delivered again after a restart, so none is lost. Each POST carries the
file name in ``X-Edged-Export`` (and ``Idempotency-Key``): a crash between the server's
2xx and the journal write is the only way to deliver a file twice, and the receiver can
drop that repeat by name.
"""

from __future__ import annotations

import asyncio
import calendar
import csv
import io
import logging
import os
import random
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from edged.energyconfig import ExportConfig
from edged.energystore import EnergyStore, Row, read_rows
from edged.errors import EdgedError
from edged.model import iso

log = logging.getLogger("edged.export")

COLUMNS = ("point", "quantity", "start", "end", "energy_wh", "peak_w", "status")
SETTLE = 300.0
"""Seconds after a period's end before it is exported (its last interval has closed)."""
CHECK_EVERY = 30.0


def public_status(row: Row, now: float) -> str:
    """The status shown in exports: an interval in progress is ``open`` until its end."""
    if row.status == "partial":
        return "open" if row.end > now else "incomplete"
    if row.status == "open":
        return "open" if row.end > now else "incomplete"
    return row.status


def _num(x: float | None) -> str:
    if x is None:
        return ""
    r = round(x, 3)
    return str(int(r)) if float(r).is_integer() else repr(r)


def to_csv(rows: Sequence[Row], now: float) -> str:
    """The CSV text of profile rows (header first)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow(
            [
                r.point,
                r.quantity,
                iso(r.start),
                iso(r.end),
                _num(r.energy),
                _num(r.peak),
                public_status(r, now),
            ]
        )
    return buf.getvalue()


def parse_time(text: str) -> float:
    """``2026-11-01``, ``2026-11-01T06:00`` or a full RFC 3339 time (UTC unless a zone is given)."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EdgedError(
            f"cannot read time {text!r}: expected e.g. 2026-11-01 or 2026-11-01T06:00:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def month_bounds(month: str) -> tuple[float, float]:
    """Start and end (UTC) of a month given as ``YYYY-MM``."""
    try:
        year, mon = (int(x) for x in month.split("-"))
        start = datetime(year, mon, 1, tzinfo=UTC)
    except ValueError:
        raise EdgedError(f"cannot read month {month!r}: expected YYYY-MM, e.g. 2026-11") from None
    days = calendar.monthrange(year, mon)[1]
    return start.timestamp(), start.timestamp() + days * 86400.0


def report(rows: Sequence[Row], month: str, now: float) -> str:
    """A monthly summary per metering point and quantity (text table)."""
    sums: dict[tuple[str, str], dict[str, float]] = {}
    peaks: dict[tuple[str, str], tuple[float, float]] = {}
    for r in rows:
        s = sums.setdefault((r.point, r.quantity), {"energy": 0.0, "ok": 0, "inc": 0, "gap": 0})
        s["energy"] += r.energy
        st = public_status(r, now)
        s["ok" if st == "ok" else "gap" if st == "gap" else "inc"] += 1
        if r.peak is not None and r.peak > peaks.get((r.point, r.quantity), (-1.0, 0.0))[0]:
            peaks[(r.point, r.quantity)] = (r.peak, r.start)
    lines = [
        f"load profile report {month} (UTC)",
        f"{'point':<24} {'quantity':<14} {'energy kWh':>12} {'peak kW':>9} {'peak at':<20} "
        f"{'ok':>5} {'incomplete':>10} {'gaps':>4}",
    ]
    for (point, q), s in sorted(sums.items()):
        peak = peaks.get((point, q))
        lines.append(
            f"{point:<24} {q:<14} {s['energy'] / 1000:>12.3f} "
            f"{(peak[0] / 1000 if peak else 0):>9.3f} "
            f"{(iso(peak[1])[:16] if peak else '-'):<20} "
            f"{int(s['ok']):>5} {int(s['inc']):>10} {int(s['gap']):>4}"
        )
    if not sums:
        lines.append("(no load profile rows in this month)")
    return "\n".join(lines) + "\n"


def export_csv(
    path: Path, start: float, end: float, points: Sequence[str] | None, now: float
) -> str:
    """CSV of the store at ``path`` for rows starting in [start, end)."""
    return to_csv(read_rows(path, start, end, points), now)


# --- auto export ------------------------------------------------------------------------


def periods(schedule: Sequence[str], since: float, until: float) -> list[tuple[str, float, float]]:
    """(file name, start, end) of every scheduled period that ended in (since, until]."""
    out: list[tuple[str, float, float]] = []
    if "daily" in schedule:
        day = int(since // 86400) * 86400
        while day + 86400 <= until:
            if day + 86400 > since:
                name = datetime.fromtimestamp(day, UTC).strftime("loadprofile-%Y-%m-%d.csv")
                out.append((name, float(day), float(day + 86400)))
            day += 86400
    if "monthly" in schedule:
        d = datetime.fromtimestamp(since, UTC)
        year, mon = d.year, d.month
        while True:
            start, end = month_bounds(f"{year:04d}-{mon:02d}")
            if end > until:
                break
            if end > since:
                out.append((f"loadprofile-{year:04d}-{mon:02d}.csv", start, end))
            year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return out


class AutoExport:
    """Exports finished days and months once each, to a directory and/or an HTTP endpoint."""

    def __init__(
        self,
        cfg: ExportConfig,
        store: EnergyStore,
        clock: Callable[[], float] = time.time,
        settle: float = SETTLE,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.settle = settle
        self.delivered = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background until ``stop``."""
        self._task = asyncio.create_task(self._loop(), name="auto-export")

    async def stop(self) -> None:
        """Stop (a delivery in progress is retried after the next start)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a full disk or a bad directory: try again later
                log.error("auto export failed error=%s", exc)
            await asyncio.sleep(CHECK_EVERY)

    def _targets(self) -> list[str]:
        targets = []
        if self.cfg.directory is not None:
            targets.append(f"dir:{self.cfg.directory}")
        if self.cfg.url is not None:
            targets.append(f"url:{self.cfg.url}")
        return targets

    async def run_once(self) -> int:
        """Deliver every due file to every target not yet journalled; returns how many."""
        now = self.clock()
        since = await asyncio.to_thread(self.store.export_since, now)
        done = await asyncio.to_thread(self.store.exports_done)
        n = 0
        for name, start, end in periods(self.cfg.schedule, since, now - self.settle):
            pending = [t for t in self._targets() if (name, t) not in done]
            if not pending:
                continue
            rows = await asyncio.to_thread(
                read_rows, self.store.path, start, end, self.cfg.points or None
            )
            text = to_csv(rows, self.clock())
            for target in pending:
                if target.startswith("dir:"):
                    await asyncio.to_thread(_write_file, Path(target[4:]) / name, text)
                else:
                    await self._post(name, text)
                await asyncio.to_thread(self.store.export_done, name, target, self.clock())
                self.delivered += 1
                n += 1
                log.info("exported file=%s target=%s rows=%d", name, target, len(rows))
        return n

    async def _post(self, name: str, text: str) -> None:
        """POST one file until a 2xx answer (capped, jittered backoff)."""
        import aiohttp

        assert self.cfg.url is not None
        headers = {
            "Content-Type": "text/csv; charset=utf-8",
            "X-Edged-Export": name,
            "Idempotency-Key": name,
        }
        if self.cfg.token:
            headers["Authorization"] = f"Bearer {self.cfg.token}"
        ctx: ssl.SSLContext | bool = True
        if self.cfg.ca_file is not None:
            ctx = ssl.create_default_context(cafile=str(self.cfg.ca_file))
        delay = self.cfg.retry_initial
        url, body = self.cfg.url, text.encode()
        timeout = aiohttp.ClientTimeout(total=60)
        while True:
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.post(url, data=body, headers=headers, ssl=ctx) as resp,
                ):
                    if 200 <= resp.status < 300:
                        return
                    error = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = str(exc) or type(exc).__name__
            log.warning("export post failed file=%s error=%s retry_in=%.1f", name, error, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.cfg.retry_max)


def _write_file(path: Path, text: str) -> None:
    """Write atomically: a temporary file, fsync, rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- the command line -------------------------------------------------------------------


def _store_path(config: Path, store: Path | None) -> Path:
    if store is not None:
        return store
    from edged import config as configmod

    cfg = configmod.load(config)
    assert cfg.load_profile is not None
    return cfg.load_profile.path


def cli_main(cmd: str, argv: Sequence[str]) -> int:
    """``edged export`` and ``edged report`` (they read the store; the daemon may run)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog=f"edged {cmd}")
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path("/etc/edged/edged.toml"),
        help="the daemon configuration, for the store's path (default: %(default)s)",
    )
    p.add_argument("--store", type=Path, help="the energy store file (instead of -c)")
    if cmd == "export":
        p.add_argument("--from", dest="start", required=True, help="e.g. 2026-11-01 (UTC)")
        p.add_argument("--to", dest="end", required=True, help="end, exclusive (UTC)")
        p.add_argument("--points", help="comma-separated metering point ids (default: all)")
        p.add_argument("--format", choices=("csv",), default="csv")
        p.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")
    else:
        p.add_argument("--month", required=True, help="YYYY-MM (UTC)")
    args = p.parse_args(list(argv))
    path = _store_path(args.config, args.store)
    now = time.time()
    if cmd == "report":
        start, end = month_bounds(args.month)
        sys.stdout.write(report(read_rows(path, start, end), args.month, now))
        return 0
    start, end = parse_time(args.start), parse_time(args.end)
    if end <= start:
        raise EdgedError(f"--to ({args.end}) must be after --from ({args.start})")
    points = [x for x in args.points.split(",") if x] if args.points else None
    text = export_csv(path, start, end, points, now)
    if args.output is not None:
        _write_file(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
