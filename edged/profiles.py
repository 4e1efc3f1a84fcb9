"""Device profiles: one file format, one loader and one lookup path for every protocol.

A meter model is data, not code. Every protocol's profiles are TOML files of one shape::

    [profile]                       # the common header
    name = "eastron_sdm630"         # lower-case letters, digits, '_' and '-'; the file's name
    protocol = "modbus"             # the driver the profile is for ("modbus", "mbus", ...)
    manufacturer = "Eastron"
    model = "SDM630"
    description = "..."             # optional
    reference = "..."               # optional: the document the profile follows

    [modbus]                        # optional: protocol-wide settings, named after the protocol
    word_order = "big"

    [[points]]                      # one table per canonical quantity (each at most once)
    quantity = "energy_import"      # edged.model.QUANTITIES
    register = 0x0048               # ... and the protocol's own selector keys
    type = "f32"

This module reads the files, checks the header and the ``quantity`` of every point, and
hands the rest to the protocol's validator (``drivers.<protocol>``), which checks its own
keys. It also finds a profile: a value with a '/' or ending in ``.toml`` is a path
(relative to the configuration file that names it); anything else is a name, looked up as
``<name>.toml`` in the configured profile directory (``[gateway] profile_dir``) first and
then among the protocol's shipped profiles. Nothing else is searched (not the current
directory).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, cast

from edged.errors import ConfigError
from edged.model import QUANTITIES, DeviceSpec, Source

SUFFIX = ".toml"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
HEADER = "profile"
POINTS = "points"
_REQUIRED_HEADER = ("name", "protocol", "manufacturer", "model")
_OPTIONAL_HEADER = ("description", "reference")

T = TypeVar("T")
_NOWHERE = Source(None, "")


@dataclass(frozen=True)
class Header:
    """The common ``[profile]`` table of a profile file."""

    name: str
    protocol: str
    manufacturer: str
    model: str
    description: str = ""
    reference: str = ""


@dataclass(frozen=True)
class PointTable:
    """One ``[[points]]`` table: its canonical quantity and its keys, for the protocol to check."""

    quantity: str
    data: Mapping[str, Any]
    source: Source


@dataclass(frozen=True)
class ProfileFile:
    """A profile file whose common parts are valid; the protocol's keys are still unchecked."""

    file: str
    header: Header
    points: tuple[PointTable, ...]
    # The optional ``[<protocol>]`` table ({} when absent) and where it is.
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    settings_source: Source = _NOWHERE


# -- lookup --------------------------------------------------------------------------------


def is_path(ref: str) -> bool:
    """True when a ``profile`` value is a file path rather than a profile name."""
    return ref.endswith(SUFFIX) or "/" in ref or os.sep in ref


def shipped(directory: Path) -> dict[str, Path]:
    """The profiles in ``directory`` (a protocol's shipped ones): name -> file, sorted."""
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.glob(f"*{SUFFIX}")) if p.is_file()}


def search_path(shipped_dir: Path, profile_dir: Path | None = None) -> tuple[Path, ...]:
    """Where a profile name is looked up, in order: the configured directory, the shipped one."""
    return (profile_dir, shipped_dir) if profile_dir is not None else (shipped_dir,)


def find(
    ref: str, shipped_dir: Path, *, profile_dir: Path | None = None, base: Path | None = None
) -> Path | None:
    """The file a ``profile`` value refers to, or None.

    A path is taken relative to ``base`` (the directory of the configuration file that
    names it); a name is ``<name>.toml`` in ``profile_dir``, else in ``shipped_dir``.
    """
    if is_path(ref):
        path = Path(ref).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        return path if path.is_file() else None
    if not NAME.match(ref):
        return None
    for directory in search_path(shipped_dir, profile_dir):
        candidate = directory / f"{ref}{SUFFIX}"
        if candidate.is_file():
            return candidate
    return None


def locate(
    ref: str,
    protocol: str,
    shipped_dir: Path,
    *,
    profile_dir: Path | None = None,
    base: Path | None = None,
    source: Source = _NOWHERE,
    key: str = "profile",
) -> Path:
    """Like ``find``; a profile that is not there is a ConfigError at ``source``/``key``.

    For a name the error lists where it looked, the known names and the closest one.
    """
    path = find(ref, shipped_dir, profile_dir=profile_dir, base=base)
    if path is not None:
        return path
    if is_path(ref):
        p = Path(ref).expanduser()
        where = base / p if base is not None and not p.is_absolute() else p
        raise source.error(key, f"no profile file {str(where)!r}")
    dirs = search_path(shipped_dir, profile_dir)
    names = sorted({n for d in dirs for n in shipped(d)})
    near = difflib.get_close_matches(ref, names, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    own = sorted(shipped(profile_dir)) if profile_dir is not None else []
    known = f"shipped: {', '.join(shipped(shipped_dir)) or 'none'}"
    if own:
        known += f"; in {profile_dir}: {', '.join(own)}"
    raise source.error(
        key,
        f"no profile {ref!r} for {protocol} ({hint}looked in "
        f"{', '.join(str(d) for d in dirs)}; {known}; or give a path to a {SUFFIX} file)",
    )


def device_profile(dev: DeviceSpec, protocol: str, shipped_dir: Path) -> Path:
    """The profile file a device's ``profile`` setting names, along the one lookup path."""
    if not dev.profile:
        raise dev.source.error("profile", "required key is missing")
    base = Path(dev.source.file).parent if dev.source.file else None
    return locate(
        dev.profile,
        protocol,
        shipped_dir,
        profile_dir=dev.profile_dir,
        base=base,
        source=dev.source,
    )


# -- reading -------------------------------------------------------------------------------

_CACHE: dict[tuple[str, str, Callable[[ProfileFile], object]], tuple[tuple[int, int], object]] = {}


def load(path: str | Path, protocol: str, validate: Callable[[ProfileFile], T]) -> T:
    """Read a profile file and validate it with the protocol's ``validate``.

    Results are cached by file, protocol and validator until the file changes.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ConfigError(p, "", f"cannot read profile: {exc.strerror or exc}") from None
    stamp = (st.st_mtime_ns, st.st_size)
    key = (str(p), protocol, cast(Callable[[ProfileFile], object], validate))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == stamp:
        return cast(T, hit[1])
    result = validate(read(p, protocol))
    _CACHE[key] = (stamp, result)
    return result


def read(path: str | Path, protocol: str) -> ProfileFile:
    """Read a profile file and check its common parts (see ``document``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(p, "", f"cannot read profile: {msg}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(
            p, "", f"TOML syntax error: {msg}", line=int(m.group(1)) if m else None
        ) from None
    return document(doc, str(p), protocol)


def document(doc: Mapping[str, Any], file: str | Path | None, protocol: str) -> ProfileFile:
    """Check a parsed profile's header, its layout and every point's ``quantity``.

    Errors name the file, the key and (found in the file) its line.
    """
    name = str(file) if file is not None else None
    # The header first: a profile of another protocol is reported as that, not by its keys.
    raw_header = doc.get(HEADER)
    header = None
    if isinstance(raw_header, dict):
        header = _header(raw_header, Source(name, HEADER), protocol)
    allowed = (HEADER, protocol, POINTS)
    for key, value in doc.items():
        if key not in allowed:
            # The line of an array of tables is that of its first [[key]] header.
            tables = isinstance(value, list) and bool(value) and isinstance(value[0], dict)
            line = ConfigError(name, f"{key}[0]", "").line if tables else None
            raise ConfigError(name, key, _unknown_top(key, allowed), line=line)
    if header is None:
        raise ConfigError(name, HEADER, f"expected a table [{HEADER}] (name, protocol, ...)")
    settings = doc.get(protocol, {})
    if not isinstance(settings, dict):
        raise ConfigError(name, protocol, f"expected a table [{protocol}]")
    raw_points = doc.get(POINTS)
    if (
        not isinstance(raw_points, list)
        or not raw_points
        or not all(isinstance(t, dict) for t in raw_points)
    ):
        raise ConfigError(name, POINTS, f"expected at least one [[{POINTS}]] table")
    points: list[PointTable] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(raw_points):
        src = Source(name, f"{POINTS}[{i}]")
        quantity = _quantity(table, src)
        if quantity in seen:
            raise src.error(
                "quantity", f"{quantity!r} is already read by {POINTS}[{seen[quantity]}]"
            )
        seen[quantity] = i
        points.append(PointTable(quantity, MappingProxyType(dict(table)), src))
    return ProfileFile(
        file=name or "<profile>",
        header=header,
        points=tuple(points),
        settings=MappingProxyType(dict(settings)),
        settings_source=Source(name, protocol),
    )


def _unknown_top(key: str, allowed: Sequence[str]) -> str:
    known = ", ".join(allowed)
    if key == "pick":
        return (
            f"unknown key: [[pick]] tables are now [[{POINTS}]] (see docs/mbus.md; known: {known})"
        )
    if key in _REQUIRED_HEADER or key in _OPTIONAL_HEADER:
        return f"unknown key: {key!r} belongs in the [{HEADER}] table (known: {known})"
    return f"unknown key (known: {known})"


def _header(raw: Mapping[str, Any], src: Source, protocol: str) -> Header:
    values: dict[str, str] = {}
    for key in (*_REQUIRED_HEADER, *_OPTIONAL_HEADER):
        v = raw.get(key)
        if v is None:
            if key in _REQUIRED_HEADER:
                raise src.error(key, "required key is missing")
            continue
        if not isinstance(v, str):
            raise src.error(key, "expected a string")
        values[key] = v
    unknown = sorted(set(raw) - set(values))
    if unknown:
        known = (*_REQUIRED_HEADER, *_OPTIONAL_HEADER)
        near = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise src.error(unknown[0], f"unknown key ({hint}known: {', '.join(known)})")
    if not NAME.match(values["name"]):
        raise src.error("name", "must be lower-case letters, digits, '_' and '-'")
    if values["protocol"] != protocol:
        raise src.error(
            "protocol",
            f"this profile is for {values['protocol']!r}, the device uses the {protocol!r} "
            f'driver (expected protocol = "{protocol}")',
        )
    return Header(**values)


def _quantity(table: Mapping[str, Any], src: Source) -> str:
    quantity = table.get("quantity")
    if quantity is None:
        raise src.error("quantity", "required key is missing (a canonical quantity)")
    if not isinstance(quantity, str):
        raise src.error("quantity", "expected a string")
    if quantity not in QUANTITIES:
        near = difflib.get_close_matches(quantity, list(QUANTITIES), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise src.error(
            "quantity",
            f"unknown quantity {quantity!r}: not a canonical quantity "
            f"(see edged.model.QUANTITIES){hint}",
        )
    return quantity
