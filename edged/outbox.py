"""The durable outbox: a bounded FIFO of records in SQLite, written by one thread.

Design choices (see docs/uplink.md):

* WAL journal. ``synchronous=NORMAL`` (the default) makes every commit durable
  against a crash of the process (kill -9, OOM): the commit is in the WAL file
  before ``put``'s records count as durable. Only a power cut may lose the last
  commits (never corrupt the file). ``synchronous=FULL`` also survives power
  loss at the cost of one fsync per commit.
* Every SQLite call runs in one dedicated thread that owns the connection. The
  event loop only appends to an in-memory queue and is woken through
  ``call_soon_threadsafe``; it never waits on fsync.
* Records put while the disk is full stay in that queue (bounded; on overflow
  the oldest are dropped and counted) and are written when space returns. A
  reserve file is deleted on the first "disk full" so deletes, checkpoints and
  the WAL can proceed, and is recreated after recovery; the WAL is capped with
  ``journal_size_limit``.
* When the configured size is exceeded the oldest records are dropped; the
  drop counter is persisted in the same transaction. The reported depth never
  exceeds ``max_records``.
* A record is encoded once, in ``put_many`` (``edged.payload.shape`` and
  ``fragment``), and stored as those bytes; the uplink joins them into messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged import schema
from edged.errors import OutboxError
from edged.model import Record
from edged.payload import fragment, shape

log = logging.getLogger(__name__)

SYNCHRONOUS = ("normal", "full")
WRITE_BATCH = 5000
"""Most records written in one transaction (bounds the time a commit holds the thread)."""
RESERVE_BYTES = 2 * 1024 * 1024
WAL_LIMIT_BYTES = 8 * 1024 * 1024
CHUNK = 500
"""Ids per ``IN (...)`` list when deleting acknowledged records."""


@dataclass(frozen=True)
class Stored:
    """A record as stored in the outbox."""

    id: int
    device_id: str
    seq: int
    payload: bytes
    """The record's fragment (``edged.payload.fragment``), or a whole version 1 body
    for records stored by an older edged (``shape`` None)."""
    created: float
    shape: str | None = None


@dataclass(frozen=True)
class OutboxStats:
    """What the outbox holds and what happened to it since it was opened."""

    depth: int
    """Records held, never more than ``max_records`` (records put beyond the bound and not
    yet written replace the oldest, which are about to be dropped)."""
    bytes: int
    oldest: float | None
    dropped: int
    written: int
    acked: int
    disk_error: str | None


@dataclass(frozen=True)
class _Pending:
    index: int
    device_id: str
    seq: int
    payload: bytes
    created: float
    shape: str


@dataclass
class _Command:
    kind: str
    arg: Any
    future: asyncio.Future[Any]


# Schema migrations: MIGRATIONS[n] brings the database from user_version n to n + 1.
def _migrate_v1(db: sqlite3.Connection) -> None:
    # AUTOINCREMENT: ids are never reused, so an acknowledgement that arrives after
    # its record was dropped can never delete a newer record that took its id.
    db.execute(
        "CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL,"
        " seq INTEGER NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL)"
    )
    db.execute("CREATE TABLE sequences (device_id TEXT PRIMARY KEY, seq INTEGER NOT NULL)")
    db.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.execute("INSERT INTO counters (name, value) VALUES ('dropped', 0)")


def _migrate_v2(db: sqlite3.Connection) -> None:
    # Record format 2: a record is stored as its fragment plus its shape (window length and
    # quantity names), which the uplink joins into messages. Rows of format 1 keep a NULL
    # shape and are sent as they were stored.
    db.execute("ALTER TABLE records ADD COLUMN shape TEXT")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migrate_v1, _migrate_v2)


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema up to date, one transaction per version; returns the version."""
    return schema.migrate(
        db,
        MIGRATIONS,
        lambda found, known: OutboxError(
            f"outbox schema version {found} is newer than this edged knows "
            f"({known}); upgrade edged or move the outbox file away"
        ),
    )


def _is_disk_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower()


class Outbox:
    """A durable, bounded FIFO of records; see the module docstring for the guarantees."""

    def __init__(
        self,
        path: Path,
        *,
        max_records: int,
        max_bytes: int,
        synchronous: str = "normal",
        max_pending: int = 10_000,
        max_pages: int | None = None,
        reserve_bytes: int = RESERVE_BYTES,
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            raise OutboxError(
                f"outbox synchronous must be one of {SYNCHRONOUS}, got {synchronous!r}"
            )
        self.path = Path(path)
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.synchronous = synchronous
        self.max_pending = max_pending
        self.max_pages = max_pages
        self.reserve_bytes = reserve_bytes
        self.retry_interval = retry_interval
        self._clock = clock
        self.changed = asyncio.Event()

        self._cond = threading.Condition()
        self._pending: deque[_Pending] = deque()
        self._commands: list[_Command] = []
        self._stopping = False
        self._put_index = 0
        self._seqs: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._resolved = 0

        # Written by the writer thread, read by stats(); plain ints under the GIL.
        self._db_count = 0
        self._db_bytes = 0
        # Records taken from the queue and not yet committed (counted in the depth).
        self._writing = 0
        self._writing_bytes = 0
        self._db_oldest: float | None = None
        self._dropped_db = 0
        self._dropped_mem = 0
        self._written = 0
        self._acked = 0
        self._disk_error: str | None = None
        self._dropping = False
        self._episode_dropped = 0
        self._db: sqlite3.Connection | None = None

    @property
    def reserve_path(self) -> Path:
        """The file whose space is given back when the disk fills up."""
        return self.path.with_name(self.path.name + ".reserve")

    # -- event-loop side -------------------------------------------------------------------

    async def open(self) -> None:
        """Create directories, migrate the schema and start the writer thread."""
        if self._thread is not None:
            raise OutboxError("outbox is already open")
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(opened,), name="edged-outbox", daemon=True
        )
        self._thread.start()
        try:
            await opened
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            raise

    def put(self, record: Record) -> None:
        """Queue a record for writing; assigns its per-device sequence number. Never blocks."""
        self.put_many((record,))

    def put_many(self, records: Iterable[Record]) -> None:
        """Queue records for writing, encoded once each, with one wake-up of the writer.

        A record that cannot be encoded (a non-finite value) raises OutboxError after
        the records before it were queued; it takes no sequence number.
        """
        now = self._clock()
        items: list[tuple[str, int, bytes, str]] = []
        error: OutboxError | None = None
        for record in records:
            device = record.device_id
            seq = self._seqs.get(device, 0) + 1
            try:
                item = (device, seq, fragment(record, seq), shape(record))
            except (TypeError, ValueError) as exc:
                error = OutboxError(f"record not serialisable device={device} error={exc}")
                break
            self._seqs[device] = seq
            items.append(item)
        if items:
            with self._cond:
                for device, seq, frag, sh in items:
                    self._put_index += 1
                    self._pending.append(_Pending(self._put_index, device, seq, frag, now, sh))
                # A batch the writer holds is in memory too (and comes back on failure).
                overflow = min(
                    len(self._pending), len(self._pending) + self._writing - self.max_pending
                )
                for _ in range(max(0, overflow)):
                    self._pending.popleft()
                if overflow > 0:
                    self._note_drop_locked(overflow)
                self._cond.notify()
        if error is not None:
            raise error

    def room(self) -> int:
        """Records that can still be put before the oldest would be dropped."""
        with self._cond:
            held = self._db_count + self._writing + len(self._pending)
        return max(0, self.max_records - held)

    async def flush(self) -> None:
        """Return when every record put so far is durable (or was dropped by the bounds)."""
        target = self._put_index
        if self._resolved >= target:
            return
        assert self._loop is not None, "outbox is not open"
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((target, fut))
        with self._cond:
            self._cond.notify()
        await fut

    async def next_batch(self, limit: int, exclude_after: int | None = None) -> list[Stored]:
        """Up to ``limit`` durable records, oldest first, with id > ``exclude_after``."""
        result: list[Stored] = await self._command("read", (limit, exclude_after or 0))
        return result

    async def ack(self, ids: Sequence[int]) -> None:
        """Delete acknowledged records (ids no longer present are ignored)."""
        if ids:
            await self._command("ack", list(ids))

    def stats(self) -> OutboxStats:
        """Depth, size and counters (depth includes records not yet written)."""
        with self._cond:
            mem = list(self._pending)
            db_count, db_bytes = (
                self._db_count + self._writing,
                self._db_bytes + self._writing_bytes,
            )
        oldest = self._db_oldest
        if oldest is None and mem:
            oldest = mem[0].created
        return OutboxStats(
            # Records put beyond the bound displace the oldest when they are written: the
            # outbox never holds more than max_records, and neither does its depth.
            depth=min(db_count + len(mem), self.max_records),
            bytes=min(db_bytes + sum(len(p.payload) for p in mem), self.max_bytes),
            oldest=oldest,
            dropped=self._dropped_db + self._dropped_mem,
            written=self._written,
            acked=self._acked,
            disk_error=self._disk_error,
        )

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 (bounds the flush only)
        """Flush (for at most ``timeout`` seconds) and stop the writer thread."""
        if self._thread is None:
            return
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            with self._cond:
                lost = len(self._pending)
            log.error(
                "outbox closed with unwritten records count=%d error=%s", lost, self._disk_error
            )
        with self._cond:
            self._stopping = True
            self._cond.notify()
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    async def _command(self, kind: str, arg: Any) -> Any:
        if self._thread is None or self._loop is None:
            raise OutboxError("outbox is not open")
        fut: asyncio.Future[Any] = self._loop.create_future()
        with self._cond:
            self._commands.append(_Command(kind, arg, fut))
            self._cond.notify()
        return await fut

    def _on_resolved(self, resolved: int, wrote: bool) -> None:
        if resolved > self._resolved:
            self._resolved = resolved
        if wrote:
            self.changed.set()
        still = []
        for target, fut in self._waiters:
            if fut.done():
                continue
            if target <= self._resolved:
                fut.set_result(None)
            else:
                still.append((target, fut))
        self._waiters = still

    # -- writer thread ---------------------------------------------------------------------

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(fn, *args)

    @staticmethod
    def _settle(
        fut: asyncio.Future[Any], result: Any = None, exc: BaseException | None = None
    ) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def _thread_main(self, opened: asyncio.Future[None]) -> None:
        try:
            self._open_db()
        except Exception as exc:
            err = (
                exc
                if isinstance(exc, OutboxError)
                else OutboxError(f"cannot open outbox path={self.path} error={exc}")
            )
            self._call(self._settle, opened, None, err)
            return
        self._call(self._settle, opened, None)
        try:
            self._serve()
        finally:
            assert self._db is not None
            with contextlib.suppress(sqlite3.Error):
                self._db.close()

    def _open_db(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db = db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        if self.max_pages is not None:
            db.execute(f"PRAGMA max_page_count={int(self.max_pages)}")
        migrate(db)
        self._seqs.update(db.execute("SELECT device_id, seq FROM sequences").fetchall())
        count, size = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM records"
        ).fetchone()
        self._db_count, self._db_bytes = int(count), int(size)
        self._dropped_db = int(
            db.execute("SELECT value FROM counters WHERE name='dropped'").fetchone()[0]
        )
        self._refresh_oldest()
        self._ensure_reserve()
        log.info(
            "outbox open path=%s depth=%d dropped=%d synchronous=%s",
            self.path,
            self._db_count,
            self._dropped_db,
            self.synchronous,
        )

    def _serve(self) -> None:
        retry_at = 0.0
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    can_write = bool(self._pending) and now >= retry_at
                    if self._commands or can_write or self._stopping:
                        break
                    timeout = (retry_at - now) if self._pending else None
                    self._cond.wait(timeout)
                commands, self._commands = self._commands, []
                batch: list[_Pending] = []
                if can_write:
                    for _ in range(min(WRITE_BATCH, len(self._pending))):
                        batch.append(self._pending.popleft())
                    self._writing = len(batch)
                    self._writing_bytes = sum(len(p.payload) for p in batch)
                # close() flushed before asking to stop: whatever is still pending now
                # cannot be written (disk full) and is reported there.
                stopping = self._stopping
            try:
                acks = [c for c in commands if c.kind == "ack"]
                if acks:
                    self._apply_acks(acks)
                if batch:
                    ok = self._write(batch)
                    retry_at = 0.0 if ok else time.monotonic() + self.retry_interval
                for c in commands:
                    if c.kind == "read":
                        self._read(c)
            except Exception as exc:  # the thread must survive anything SQLite throws
                log.exception("outbox writer error path=%s", self.path)
                for c in commands:
                    self._call(self._settle, c.future, None, OutboxError(str(exc)))
                retry_at = time.monotonic() + self.retry_interval
            if stopping:
                return

    def _apply_acks(self, acks: list[_Command]) -> None:
        db = self._db
        assert db is not None
        ids = [i for c in acks for i in c.arg]
        try:
            n = size = 0
            db.execute("BEGIN IMMEDIATE")
            for start in range(0, len(ids), CHUNK):
                part = ids[start : start + CHUNK]
                marks = ",".join("?" * len(part))
                rows = db.execute(
                    f"DELETE FROM records WHERE id IN ({marks}) RETURNING LENGTH(payload)", part
                ).fetchall()
                n += len(rows)
                size += sum(r[0] for r in rows)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._disk_trouble(exc)
            for c in acks:
                self._call(self._settle, c.future, None, OutboxError(f"ack failed: {exc}"))
            return
        self._db_count -= n
        self._db_bytes -= size
        self._acked += n
        self._refresh_oldest()
        with self._cond:
            if self._dropping and self._db_count < self.max_records:
                self._end_drop_episode()
        for c in acks:
            self._call(self._settle, c.future, None)

    def _write(self, batch: list[_Pending]) -> bool:
        """Write one batch in one transaction; on failure put it back and return False."""
        db = self._db
        assert db is not None
        last_seq: dict[str, int] = {}
        for p in batch:
            last_seq[p.device_id] = p.seq
        size = sum(len(p.payload) for p in batch)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO records (device_id, seq, payload, created, shape)"
                " VALUES (?, ?, ?, ?, ?)",
                [(p.device_id, p.seq, p.payload, p.created, p.shape) for p in batch],
            )
            db.executemany(
                "INSERT INTO sequences (device_id, seq) VALUES (?, ?) ON CONFLICT(device_id)"
                " DO UPDATE SET seq = MAX(seq, excluded.seq)",
                list(last_seq.items()),
            )
            count, nbytes = self._db_count + len(batch), self._db_bytes + size
            dropped, dropped_bytes = self._drop_oldest(count, nbytes)
            mem_dropped = self._dropped_mem
            if dropped or mem_dropped:
                db.execute(
                    "UPDATE counters SET value = value + ? WHERE name='dropped'",
                    (dropped + mem_dropped,),
                )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            with self._cond:
                self._writing = self._writing_bytes = 0
                self._pending.extendleft(reversed(batch))
                overflow = len(self._pending) - self.max_pending
                for _ in range(max(0, overflow)):
                    self._pending.popleft()
                if overflow > 0:
                    self._note_drop_locked(overflow)
            self._disk_trouble(exc)
            return False
        with self._cond:
            self._dropped_mem -= mem_dropped
            self._dropped_db += dropped + mem_dropped
            resolved = self._pending[0].index - 1 if self._pending else batch[-1].index
            if dropped:
                self._note_db_drop(dropped)
            elif self._dropping and not mem_dropped and not self._pending_overflowing():
                self._end_drop_episode()
            self._db_count = count - dropped
            self._db_bytes = nbytes - dropped_bytes
            self._writing = self._writing_bytes = 0
        self._written += len(batch)
        self._refresh_oldest()
        if self._disk_error is not None:
            log.info("outbox writable again path=%s depth=%d", self.path, self._db_count)
            self._disk_error = None
            self._ensure_reserve()
        self._call(self._on_resolved, resolved, True)
        return True

    def _drop_oldest(self, count: int, nbytes: int) -> tuple[int, int]:
        """Delete the oldest rows until both bounds hold; returns (rows, payload bytes)."""
        surplus_n = count - self.max_records
        surplus_b = nbytes - self.max_bytes
        if surplus_n <= 0 and surplus_b <= 0:
            return 0, 0
        db = self._db
        assert db is not None
        n = size = 0
        last_id = None
        cur = db.execute("SELECT id, LENGTH(payload) FROM records ORDER BY id")
        for row_id, length in cur:
            if n >= surplus_n and size >= surplus_b:
                break
            n += 1
            size += length
            last_id = row_id
        cur.close()
        if last_id is not None:
            db.execute("DELETE FROM records WHERE id <= ?", (last_id,))
        return n, size

    def _read(self, c: _Command) -> None:
        db = self._db
        assert db is not None
        limit, after = c.arg
        rows = db.execute(
            "SELECT id, device_id, seq, payload, created, shape FROM records WHERE id > ?"
            " ORDER BY id LIMIT ?",
            (after, limit),
        ).fetchall()
        self._call(self._settle, c.future, [Stored(*r) for r in rows])

    def _rollback(self) -> None:
        assert self._db is not None
        with contextlib.suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    def _refresh_oldest(self) -> None:
        assert self._db is not None
        row = self._db.execute("SELECT created FROM records ORDER BY id LIMIT 1").fetchone()
        self._db_oldest = float(row[0]) if row else None

    def _disk_trouble(self, exc: sqlite3.Error) -> None:
        full = _is_disk_full(exc)
        what = "disk full" if full else "write failed"
        message = f"{what}: {exc}"
        if self._disk_error is None:
            with self._cond:
                held = len(self._pending)
            log.error(
                "outbox %s path=%s error=%s held_in_memory=%d max_in_memory=%d; "
                "free disk space, records are kept in memory until then",
                what,
                self.path,
                exc,
                held,
                self.max_pending,
            )
        self._disk_error = message
        if full:
            self._release_reserve()

    def _ensure_reserve(self) -> None:
        if self.reserve_bytes <= 0 or self.reserve_path.exists():
            return
        try:
            with self.reserve_path.open("wb") as f:
                # Real zeros, not a sparse file: the blocks must be allocated to be worth keeping.
                chunk = b"\0" * 65536
                for _ in range(0, self.reserve_bytes, len(chunk)):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            log.warning("outbox reserve file not created path=%s error=%s", self.reserve_path, exc)
            with contextlib.suppress(OSError):
                self.reserve_path.unlink()

    def _release_reserve(self) -> None:
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("outbox reserve file not removed path=%s error=%s", self.reserve_path, exc)
            return
        log.warning(
            "outbox released reserve space path=%s bytes=%d", self.reserve_path, self.reserve_bytes
        )
        assert self._db is not None
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- drop accounting: always called with self._cond held (put() runs on the loop) ------

    def _pending_overflowing(self) -> bool:
        return len(self._pending) >= self.max_pending

    def _note_drop_locked(self, n: int) -> None:
        self._dropped_mem += n
        self._start_or_continue_episode(n, "in-memory queue full (disk unavailable)")

    def _note_db_drop(self, n: int) -> None:
        self._start_or_continue_episode(n, "outbox full")

    def _start_or_continue_episode(self, n: int, why: str) -> None:
        if not self._dropping:
            self._dropping = True
            self._episode_dropped = 0
            log.warning(
                "outbox dropping oldest records reason=%s path=%s max_records=%d max_bytes=%d",
                why,
                self.path,
                self.max_records,
                self.max_bytes,
            )
        self._episode_dropped += n

    def _end_drop_episode(self) -> None:
        self._dropping = False
        log.info(
            "outbox stopped dropping records dropped=%d total_dropped=%d path=%s",
            self._episode_dropped,
            self._dropped_db + self._dropped_mem,
            self.path,
        )
