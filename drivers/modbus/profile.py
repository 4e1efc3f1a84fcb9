"""Meter profiles: a meter model's register map as a TOML data file, validated on load.

A profile names the quantities a meter serves, where they live (table, register,
type, word/byte order) and how to turn the raw number into the canonical value
(scale, offset, unit). Shipped profiles live in ``drivers/modbus/profiles/``; a
device's ``profile`` setting names one of them or a path to a ``.toml`` file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from drivers.modbus import codec, units
from drivers.modbus.codec import DataType, Order
from drivers.modbus.planner import Span, Table
from edged.api import Options
from edged.errors import ConfigError
from edged.model import QUANTITIES, Source

DEFAULT_MAX_REGISTERS = 125
DEFAULT_MAX_GAP = 10
TABLES: tuple[Table, ...] = ("holding", "input")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


@dataclass(frozen=True)
class Point:
    """One quantity of a meter: where it is and how to convert it."""

    quantity: str
    table: Table
    register: int
    type: DataType
    word_order: Order
    byte_order: Order
    scale: float
    offset: float
    unit: str
    factor: float

    @property
    def span(self) -> Span:
        """The registers this point occupies."""
        return Span(self.table, self.register, codec.width(self.type))

    def value(self, registers: Sequence[int]) -> float:
        """The canonical value of this point from its raw registers."""
        raw = codec.decode(registers, self.type, self.word_order, self.byte_order)
        value = (raw * self.scale + self.offset) * self.factor
        # 15 significant digits drop the binary noise of decimal scales (2316 * 0.1 gives
        # 231.60000000000002); counters below 10**15 keep every digit.
        return float(f"{value:.15g}")

    def raw(self, canonical: float) -> float:
        """The raw register number that holds a canonical value (inverse of ``value``)."""
        return (canonical / self.factor - self.offset) / self.scale


@dataclass(frozen=True)
class Profile:
    """A validated meter profile."""

    name: str
    manufacturer: str
    model: str
    max_registers: int
    max_gap: int
    points: tuple[Point, ...]
    path: str

    @property
    def spans(self) -> tuple[Span, ...]:
        """The register span of every point, in point order."""
        return tuple(p.span for p in self.points)


def profiles_dir() -> Path:
    """Directory of the shipped profiles."""
    return Path(str(resources.files("drivers.modbus").joinpath("profiles")))


def shipped() -> dict[str, Path]:
    """Shipped profile names mapped to their files."""
    return {p.stem: p for p in sorted(profiles_dir().glob("*.toml"))}


def resolve(ref: str, base: Path | None = None) -> Path | None:
    """The file a ``profile`` setting refers to (a shipped name or a .toml path), or None."""
    if ref.endswith(".toml") or "/" in ref:
        path = Path(ref).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        return path if path.is_file() else None
    return shipped().get(ref)


_CACHE: dict[str, tuple[float, Profile]] = {}


def load(path: str | Path) -> Profile:
    """Read and validate a profile file (cached by path and modification time)."""
    p = Path(path)
    try:
        mtime = p.stat().st_mtime
    except OSError as exc:
        raise ConfigError(p, "", f"cannot read profile: {exc.strerror}") from None
    hit = _CACHE.get(str(p))
    if hit is not None and hit[0] == mtime:
        return hit[1]
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(p, "", f"cannot read profile: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(
            p, "", f"TOML syntax error: {msg}", line=int(m.group(1)) if m else None
        ) from None
    prof = parse(doc, str(p))
    _CACHE[str(p)] = (mtime, prof)
    return prof


def parse(doc: Mapping[str, Any], file: str) -> Profile:
    """Validate a parsed profile document; errors name file, key and line."""
    top = Options(doc, Source(file, ""))
    head_raw = top.raw("profile")
    points_raw = top.raw("points")
    top.finish()
    if not isinstance(head_raw, dict):
        raise ConfigError(file, "profile", "expected a table [profile]")
    head = Options(head_raw, Source(file, "profile"))
    name = head.str("name")
    if not _NAME.match(name):
        raise head.error("name", "must be lower-case letters, digits and '_'")
    manufacturer = head.str("manufacturer")
    model = head.str("model")
    head.str("reference", "")
    max_registers = head.int("max_registers", DEFAULT_MAX_REGISTERS, min=1, max=125)
    max_gap = head.int("max_gap", DEFAULT_MAX_GAP, min=0, max=125)
    word_order: Order = head.choice("word_order", codec.ORDERS, "big")
    byte_order: Order = head.choice("byte_order", codec.ORDERS, "big")
    head.finish()
    if (
        not isinstance(points_raw, list)
        or not points_raw
        or not all(isinstance(t, dict) for t in points_raw)
    ):
        raise ConfigError(file, "points", "expected at least one [[points]] table")
    points: list[Point] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(points_raw):
        pt = _point(
            Options(table, Source(file, f"points[{i}]")), word_order, byte_order, max_registers
        )
        if pt.quantity in seen:
            raise ConfigError(
                file,
                f"points[{i}].quantity",
                f"{pt.quantity!r} is already read by points[{seen[pt.quantity]}]",
            )
        seen[pt.quantity] = i
        points.append(pt)
    return Profile(name, manufacturer, model, max_registers, max_gap, tuple(points), file)


def _point(o: Options, word_order: Order, byte_order: Order, max_registers: int) -> Point:
    quantity = o.str("quantity")
    q = QUANTITIES.get(quantity)
    if q is None:
        raise o.error("quantity", f"unknown quantity {quantity!r} (see edged.model.QUANTITIES)")
    table: Table = o.choice("table", TABLES, "holding")
    dtype: DataType = o.choice("type", codec.TYPES)
    register = o.int("register", min=0, max=0xFFFF)
    if register + codec.width(dtype) > 0x10000:
        raise o.error("register", f"a {dtype} at {register} runs past register 65535")
    if codec.width(dtype) > max_registers:
        raise o.error("type", f"a {dtype} does not fit in max_registers={max_registers}")
    scale = o.float("scale", 1.0)
    if scale == 0:
        raise o.error("scale", "must not be 0")
    offset = o.float("offset", 0.0)
    unit = o.str("unit", q.unit)
    factor = units.factor(unit, q.unit)
    if factor is None:
        known = ", ".join(repr(u) for u in units.accepted(q.unit))
        raise o.error(
            "unit", f"cannot convert {unit!r} into {q.unit!r} for {quantity} (accepted: {known})"
        )
    pt = Point(
        quantity=quantity,
        table=table,
        register=register,
        type=dtype,
        word_order=o.choice("word_order", codec.ORDERS, word_order),
        byte_order=o.choice("byte_order", codec.ORDERS, byte_order),
        scale=scale,
        offset=offset,
        unit=unit,
        factor=factor,
    )
    o.finish()
    return pt
