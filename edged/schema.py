"""Versioned SQLite schemas: one migration per version, the version in ``PRAGMA user_version``.

Used by every SQLite file edged keeps (the outbox, the energy store). Each migration runs in
its own transaction together with the version it reaches, so a crash leaves the file at a
whole version; a file newer than this edged knows is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

Migration = Callable[[sqlite3.Connection], None]


def migrate(
    db: sqlite3.Connection,
    migrations: Sequence[Migration],
    too_new: Callable[[int, int], Exception],
) -> int:
    """Bring the schema up to date; returns the version. ``too_new(found, known)`` is the
    error raised for a file written by a newer edged."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > len(migrations):
        raise too_new(version, len(migrations))
    for target in range(version + 1, len(migrations) + 1):
        with db:
            db.execute("BEGIN IMMEDIATE")
            migrations[target - 1](db)
            db.execute(f"PRAGMA user_version = {target}")
    return len(migrations)
