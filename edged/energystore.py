"""The energy store: virtual meter books, load profile rows and the export journal in SQLite.

One file (``energy.sqlite`` in the data directory), WAL journal, ``synchronous=NORMAL``:
a commit survives kill -9 (only a power cut may lose the last commits, never corrupt
the file). The schema is versioned, one migration per version (as the outbox).

What must be written together is written in one transaction: a virtual meter's tally
(``base``, ``banked``, ``last``) as one row, and a load profile's open interval together
with the counter reading it was booked up to. Restored together, they keep the books
exact however old the last commit is (see ``edged.counters``): the source's own counter
still holds what came after.

The daemon writes through ``EnergyStore`` (one connection, guarded by a lock, used from
a worker thread); ``edged export`` / ``edged report`` open the file read-only and may
run while the daemon writes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edged import schema
from edged.counters import Tally
from edged.errors import EdgedError

FILENAME = "energy.sqlite"


class StoreError(EdgedError):
    """The energy store could not be opened or written."""


def _migrate_v1(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE tallies (meter TEXT NOT NULL, point TEXT NOT NULL, quantity TEXT NOT NULL,"
        " base REAL, banked REAL NOT NULL, last REAL, PRIMARY KEY (meter, point, quantity))"
    )
    # status: ok (seen whole), incomplete (not seen whole), gap (energy booked across a
    # gap, start and end are the readings around it), open / partial (the interval in
    # progress, still complete / not any more).
    db.execute(
        "CREATE TABLE profile (point TEXT NOT NULL, quantity TEXT NOT NULL, start REAL NOT NULL,"
        ' "end" REAL NOT NULL, energy REAL NOT NULL, peak REAL, status TEXT NOT NULL,'
        " gap INTEGER NOT NULL, PRIMARY KEY (point, quantity, start, gap))"
    )
    db.execute("CREATE INDEX profile_start ON profile (start)")
    # The reading the open interval was booked up to (last value and its time).
    db.execute(
        "CREATE TABLE readings (point TEXT NOT NULL, quantity TEXT NOT NULL, value REAL NOT NULL,"
        " ts REAL NOT NULL, PRIMARY KEY (point, quantity))"
    )
    db.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.execute("INSERT INTO counters (name, value) VALUES ('profile_dropped', 0)")
    db.execute(
        "CREATE TABLE exports (name TEXT NOT NULL, target TEXT NOT NULL, done REAL,"
        " PRIMARY KEY (name, target))"
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migrate_v1,)


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema up to date, one transaction per version; returns the version."""
    return schema.migrate(
        db,
        MIGRATIONS,
        lambda found, known: StoreError(
            f"energy store schema version {found} is newer than this edged knows "
            f"({known}); upgrade edged"
        ),
    )


@dataclass(frozen=True)
class Row:
    """One load profile row: energy of one metering point and quantity in one interval."""

    point: str
    quantity: str
    start: float
    end: float
    energy: float
    peak: float | None
    status: str


@dataclass(frozen=True)
class Reading:
    """The counter reading a point's open interval was booked up to."""

    value: float
    ts: float


TallyKey = tuple[str, str, str]
ReadingKey = tuple[str, str]


class EnergyStore:
    """Read-write access for the daemon (and tests)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            migrate(self._db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open energy store {path}: {exc}") from None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    # -- virtual meters -------------------------------------------------------------------

    def tallies(self) -> dict[TallyKey, Tally]:
        """Every stored tally by (meter, point, quantity)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT meter, point, quantity, base, banked, last FROM tallies"
            ).fetchall()
        return {(m, p, q): Tally(b, k, last) for m, p, q, b, k, last in rows}

    # -- load profile ---------------------------------------------------------------------

    def open_state(self) -> tuple[dict[ReadingKey, Reading], dict[ReadingKey, Row]]:
        """The last readings and the open interval rows (to resume after a restart)."""
        with self._lock:
            sql = "SELECT point, quantity, value, ts FROM readings"
            readings = self._db.execute(sql).fetchall()
            rows = self._db.execute(
                'SELECT point, quantity, start, "end", energy, peak, status FROM profile'
                " WHERE status IN ('open', 'partial')"
            ).fetchall()
        return (
            {(p, q): Reading(v, t) for p, q, v, t in readings},
            {(r[0], r[1]): Row(*r) for r in rows},
        )

    # -- one transaction for everything that belongs together ----------------------------

    def save(
        self,
        tallies: Iterable[tuple[TallyKey, Tally]] = (),
        rows: Iterable[Row] = (),
        readings: Iterable[tuple[ReadingKey, Reading]] = (),
    ) -> None:
        """Write tallies, profile rows and readings in one transaction."""
        with self._lock:
            try:
                with self._db:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany(
                        "INSERT OR REPLACE INTO tallies VALUES (?, ?, ?, ?, ?, ?)",
                        [(*k, t.base, t.banked, t.last) for k, t in tallies],
                    )
                    self._db.executemany(
                        "INSERT OR REPLACE INTO profile VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                r.point,
                                r.quantity,
                                r.start,
                                r.end,
                                r.energy,
                                r.peak,
                                r.status,
                                int(r.status == "gap"),
                            )
                            for r in rows
                        ],
                    )
                    self._db.executemany(
                        "INSERT OR REPLACE INTO readings VALUES (?, ?, ?, ?)",
                        [(*k, r.value, r.ts) for k, r in readings],
                    )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write energy store {self.path}: {exc}") from None

    def prune(self, before: float, max_bytes: int) -> int:
        """Drop rows that started before ``before`` and the oldest beyond ``max_bytes``."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            dropped = self._db.execute(
                "DELETE FROM profile WHERE start < ? AND status NOT IN ('open', 'partial')",
                (before,),
            ).rowcount
            page = int(self._db.execute("PRAGMA page_size").fetchone()[0])
            while True:
                used = int(self._db.execute("PRAGMA page_count").fetchone()[0]) - int(
                    self._db.execute("PRAGMA freelist_count").fetchone()[0]
                )
                if used * page <= max_bytes:
                    break
                n = self._db.execute(
                    "DELETE FROM profile WHERE rowid IN (SELECT rowid FROM profile"
                    " WHERE status NOT IN ('open', 'partial') ORDER BY start LIMIT 100)"
                ).rowcount
                if n == 0:
                    break
                dropped += n
            if dropped:
                self._db.execute(
                    "UPDATE counters SET value = value + ? WHERE name = 'profile_dropped'",
                    (dropped,),
                )
        return dropped

    def dropped(self) -> int:
        """Profile rows dropped by retention or the size cap, ever."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM counters WHERE name = 'profile_dropped'"
            ).fetchone()
        return int(row[0])

    # -- export journal -------------------------------------------------------------------

    def export_since(self, now: float) -> float:
        """When auto export was first enabled (set to ``now`` on the first call)."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO exports (name, target, done) VALUES ('', 'since', ?)",
                (now,),
            )
            row = self._db.execute(
                "SELECT done FROM exports WHERE name = '' AND target = 'since'"
            ).fetchone()
        return float(row[0])

    def exports_done(self) -> set[tuple[str, str]]:
        """(file name, target) of every export delivered."""
        with self._lock:
            rows = self._db.execute("SELECT name, target FROM exports WHERE name != ''")
            return {(n, t) for n, t in rows.fetchall()}

    def export_done(self, name: str, target: str, at: float) -> None:
        """Journal one delivered export (committed before the next one starts)."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO exports (name, target, done) VALUES (?, ?, ?)",
                (name, target, at),
            )


def read_rows(
    path: Path, start: float, end: float, points: Sequence[str] | None = None
) -> list[Row]:
    """Profile rows starting in [start, end), read-only (the daemon may be running)."""
    if not path.exists():
        raise StoreError(f"no load profile store at {path} (has the daemon run?)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from None
    try:
        db.execute("PRAGMA busy_timeout=5000")
        sql = (
            'SELECT point, quantity, start, "end", energy, peak, status FROM profile'
            " WHERE start >= ? AND start < ?"
        )
        args: list[object] = [start, end]
        if points:
            sql += f" AND point IN ({', '.join('?' for _ in points)})"
            args.extend(points)
        sql += " ORDER BY point, quantity, start"
        return [Row(*r) for r in db.execute(sql, args).fetchall()]
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    finally:
        db.close()
