"""The durable outbox: order, sequence numbers, bounds, disk full, migrations."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from edged import payload
from edged.errors import OutboxError
from edged.model import Reading, Record
from edged.outbox import MIGRATIONS, Outbox, Stored


def rec(device: str, value: float, pad: int = 0) -> Record:
    """A small record; ``pad`` adds a label-sized quantity to make it bigger."""
    values = {"energy_import": Reading(last=value, ts=1_700_000_000.0)}
    if pad:
        values["power_active"] = Reading(
            last=float(pad), ts=1_700_000_000.0, mean=1.0, min=0.0, max=2.0, count=pad
        )
    return Record(device, 1_700_000_000.0, 60.0, values)


def body(stored: Stored) -> Record:
    """The record a stored row carries, read back as the cloud reads it."""
    assert stored.shape is not None
    (record,) = payload.decode(payload.message([(stored.shape, stored.payload)]))
    return record


async def open_box(path: Path, **kw: object) -> Outbox:
    kw.setdefault("max_records", 1000)
    kw.setdefault("max_bytes", 10_000_000)
    box = Outbox(path, **kw)  # type: ignore[arg-type]
    await box.open()
    return box


async def test_put_flush_batch_ack_and_sequences_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "outbox.sqlite"
    box = await open_box(path)
    for i in range(5):
        box.put(rec("a", i))
        box.put(rec("b", i))
    await box.flush()
    assert box.changed.is_set()
    batch = await box.next_batch(100)
    assert [(s.device_id, s.seq) for s in batch] == [
        (d, n) for n in range(1, 6) for d in ("a", "b")
    ]
    # The payload carries the assigned sequence number.
    assert [body(s).seq for s in batch[:2]] == [1, 1]
    assert [s.id for s in await box.next_batch(3, exclude_after=batch[1].id)] == [
        s.id for s in batch[2:5]
    ]
    await box.ack([s.id for s in batch[:4]])
    st = box.stats()
    assert (st.depth, st.written, st.acked) == (6, 10, 4)
    assert st.oldest is not None
    await box.close()

    box = await open_box(path)
    left = await box.next_batch(100)
    assert [(s.device_id, s.seq) for s in left] == [(s.device_id, s.seq) for s in batch[4:]]
    box.put(rec("a", 99))
    box.put(rec("c", 1))
    await box.flush()
    tail = (await box.next_batch(100))[-2:]
    assert [(s.device_id, s.seq) for s in tail] == [("a", 6), ("c", 1)]
    await box.close()


async def test_schema_is_versioned_and_a_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = await open_box(path)
    await box.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(OutboxError, match="newer"):
        await open_box(path)


def test_invalid_synchronous_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="synchronous"):
        Outbox(tmp_path / "o", max_records=1, max_bytes=1, synchronous="off")


async def test_record_limit_drops_exactly_the_oldest_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edged.outbox")
    path = tmp_path / "o.sqlite"
    box = await open_box(path, max_records=100, synchronous="full")
    for i in range(130):
        box.put(rec("m", i))
        if i % 7 == 0:
            await box.flush()  # several transactions, so drops happen across batches
    await box.flush()
    for i in range(20):
        box.put(rec("n", i))
    await box.flush()
    kept = await box.next_batch(1000)
    assert len(kept) == 100
    # 150 put, 100 kept: the 50 oldest overall went (all of them device m).
    assert [(s.device_id, s.seq) for s in kept] == [("m", n) for n in range(51, 131)] + [
        ("n", n) for n in range(1, 21)
    ]
    assert box.stats().dropped == 50
    warnings = [r for r in caplog.records if "dropping oldest" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    await box.ack([s.id for s in kept[:10]])
    ended = [r for r in caplog.records if "stopped dropping" in r.getMessage()]
    assert len(ended) == 1 and "dropped=50" in ended[0].getMessage()
    await box.close()
    box = await open_box(path, max_records=100)
    assert box.stats().dropped == 50  # the counter is persisted
    assert box.stats().depth == 90
    await box.close()


async def test_byte_limit_drops_oldest(tmp_path: Path) -> None:
    one = len(payload.fragment(rec("x", 24), 25))  # the kept ones: two-digit value and seq
    box = await open_box(tmp_path / "o.sqlite", max_bytes=one * 10 + one // 2)
    for i in range(25):
        box.put(rec("x", i))
    await box.flush()
    kept = await box.next_batch(100)
    assert [s.seq for s in kept] == list(range(16, 26))
    st = box.stats()
    assert st.dropped == 15
    assert st.bytes == sum(len(s.payload) for s in kept) <= one * 10 + one // 2
    await box.close()


async def test_disk_full_keeps_records_in_memory_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edged.outbox")
    path = tmp_path / "o.sqlite"
    # A hard page limit stands in for a full disk: SQLite answers SQLITE_FULL.
    box = await open_box(
        path, max_records=100_000, max_pages=40, retry_interval=0.05, max_pending=300
    )
    n = 0
    while box.stats().disk_error is None:
        for _ in range(50):
            box.put(rec("d", n, pad=7))
            n += 1
        await asyncio.sleep(0.02)
        assert n < 20_000, "the page limit never filled"
    err = box.stats().disk_error
    assert err is not None and "full" in err
    assert any(r.levelno == logging.ERROR and "disk full" in r.getMessage() for r in caplog.records)
    # Keep putting while full: the in-memory queue is bounded, the oldest overflow is counted.
    for _ in range(400):
        box.put(rec("d", n, pad=7))
        n += 1
    st = box.stats()
    assert st.dropped >= 400 - 300
    assert st.depth <= st.written + 300
    # Reads still work; acknowledging everything in the file frees pages, like space returning.
    stored = await box.next_batch(100_000)
    await box.ack([s.id for s in stored])
    await asyncio.wait_for(box.flush(), 10)
    st = box.stats()
    assert st.disk_error is None
    rest = await box.next_batch(100_000)
    seqs = [s.seq for s in stored] + [s.seq for s in rest]
    # Nothing lost except what was counted as dropped, and order kept.
    assert seqs == sorted(seqs)
    assert len(seqs) + st.dropped == n
    assert any("writable again" in r.getMessage() for r in caplog.records)
    await box.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    dropped = db.execute("SELECT value FROM counters WHERE name='dropped'").fetchone()[0]
    assert dropped == st.dropped
    db.close()


async def test_close_flushes(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = await open_box(path, max_records=5000)
    for i in range(2000):
        box.put(rec(f"dev{i % 10}", i))
    await box.close()
    box = await open_box(path, max_records=5000)
    assert box.stats().depth == 2000
    await box.close()
