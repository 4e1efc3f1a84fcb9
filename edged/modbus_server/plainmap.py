"""The plain register map: every canonical quantity as float32, big-endian (pure).

Every unit id (metering point: electricity, heat, water, gas, virtual meters alike) serves
the same map from holding register 0 (function 3; function 4 reads the same registers):

    0      map version (1)
    1      status: 0 = fresh (the device is online and at least one value is fresh),
                   1 = stale (offline, stale, not licensed, or no fresh value)
    2      age in seconds of the newest value (0xFFFF: never read or older than 65534 s)
    3      number of quantities in the map
    4      unit id of this metering point
    5..9   reserved (0)
    10+2i  quantity i of ``edged.model.QUANTITIES`` in its order, float32 big-endian
           (high word first) in its canonical unit; NaN (0x7FC00000) when the point does not
           have the quantity or its value is stale

The order is the order of the canonical quantity table, so the address of a quantity is
the same on every unit; new quantities are appended to that table, so addresses stay.
The whole map (114 registers) fits one read request. ``docs/modbus-server.md`` carries the
table that ``rows()`` generates (a test keeps the two equal).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from edged.model import QUANTITIES, Quantity

VERSION = 1
HEADER = 10
STATUS_FRESH = 0
STATUS_STALE = 1
AGE_UNKNOWN = 0xFFFF
NAN_WORDS = (0x7FC0, 0x0000)

ORDER: tuple[str, ...] = tuple(QUANTITIES)
ADDRESS: Mapping[str, int] = {name: HEADER + 2 * i for i, name in enumerate(ORDER)}
SIZE = HEADER + 2 * len(ORDER)


@dataclass(frozen=True)
class Row:
    """One line of the documented map."""

    address: int
    quantity: Quantity


def rows() -> list[Row]:
    """The quantities of the map with their addresses, in register order."""
    return [Row(ADDRESS[name], QUANTITIES[name]) for name in ORDER]


def float_words(value: float) -> tuple[int, int]:
    """float32 big-endian, high word first; NaN for what float32 cannot hold."""
    if not math.isfinite(value):
        return NAN_WORDS
    try:
        (bits,) = struct.unpack(">I", struct.pack(">f", value))
    except OverflowError:
        return NAN_WORDS
    return (bits >> 16) & 0xFFFF, bits & 0xFFFF


def registers(unit: int, fresh: Mapping[str, float], age: float | None) -> list[int]:
    """The map of one unit: ``fresh`` holds the values served as fresh (the rest are NaN).

    ``age`` is the age of the newest value in seconds (None when the point never sent one).
    """
    status = STATUS_FRESH if fresh else STATUS_STALE
    age_reg = AGE_UNKNOWN if age is None else min(AGE_UNKNOWN - 1, max(0, int(age)))
    regs = [VERSION, status, age_reg, len(ORDER), unit & 0xFFFF, 0, 0, 0, 0, 0]
    for name in ORDER:
        v = fresh.get(name)
        regs.extend(NAN_WORDS if v is None else float_words(v))
    return regs


def markdown_table() -> str:
    """The documented map (``docs/modbus-server.md`` carries exactly this table)."""
    lines = [
        "| address (0-based) | register (1-based) | quantity | unit | kind | description |",
        "| ---: | ---: | --- | --- | --- | --- |",
    ]
    for row in rows():
        q = row.quantity
        lines.append(
            f"| {row.address}-{row.address + 1} | {row.address + 1}-{row.address + 2} | "
            f"`{q.name}` | {q.unit or '-'} | {q.kind} | {q.description} |"
        )
    return "\n".join(lines)
