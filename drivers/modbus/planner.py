"""Coalescing planner: the fewest read requests that cover a device's points.

Points of one table are read together when the request stays within ``max_registers``
and no run of unwanted registers inside it is longer than ``max_gap``. Scanning points
by start address and extending the current request as far as the limits allow gives
the minimum number of requests (every request must start at the lowest uncovered
point, and extending it never leaves more points for later).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Table = Literal["holding", "input"]


@dataclass(frozen=True)
class Span:
    """A register range that one point occupies: ``count`` registers from ``start``."""

    table: Table
    start: int
    count: int

    @property
    def end(self) -> int:
        """One past the last register."""
        return self.start + self.count


@dataclass(frozen=True)
class Request:
    """One read request and the indices of the points it carries."""

    table: Table
    start: int
    count: int
    points: tuple[int, ...]

    @property
    def end(self) -> int:
        """One past the last register read."""
        return self.start + self.count


def plan(
    spans: Sequence[Span],
    max_registers: int,
    max_gap: int,
    only: Iterable[int] | None = None,
    avoid: Collection[tuple[Table, int]] = (),
) -> list[Request]:
    """Minimum requests covering ``spans`` (or the indices in ``only``), per table.

    No request reads over a register listed in ``avoid`` (registers a device refused).
    """
    chosen = range(len(spans)) if only is None else sorted(set(only))
    order = sorted(chosen, key=lambda i: (spans[i].table, spans[i].start, spans[i].end))
    requests: list[Request] = []
    cur: list[int] = []
    table: Table | None = None
    start = end = 0
    for i in order:
        s = spans[i]
        if s.count > max_registers:
            raise ValueError(
                f"a point of {s.count} registers exceeds max_registers {max_registers}"
            )
        fits = (
            cur
            and s.table == table
            and s.start - end <= max_gap
            and max(end, s.end) - start <= max_registers
            and not (avoid and any((s.table, r) in avoid for r in range(end, s.start)))
        )
        if fits:
            cur.append(i)
            end = max(end, s.end)
            continue
        if cur and table is not None:
            requests.append(Request(table, start, end - start, tuple(cur)))
        cur, table, start, end = [i], s.table, s.start, s.end
    if cur and table is not None:
        requests.append(Request(table, start, end - start, tuple(cur)))
    return requests
