"""``[load_management]`` and ``[[circuits]]``: validated into frozen settings.

A circuit has a current limit per phase (A) and/or a power limit (W), an optional parent
circuit, an optional meter (a metering point whose ``current_l1..3`` measure everything on
the circuit) and the chargers on it. Every mistake names file, line and key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.api import Options
from edged.errors import ConfigError
from edged.model import DeviceSpec, Source

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PHASE_NAMES = ("L1", "L2", "L3")
NOMINAL_VOLTAGE = 230.0


@dataclass(frozen=True)
class Settings:
    """``[load_management]``: how limits are decided and sent."""

    enabled: bool = True
    min_current: float = 6.0
    """Below this a car does not charge (IEC 61851): a session gets 0 or at least this."""
    safe_current: float = 6.0
    """Where every charger goes when its circuit is not measured (and on its own, as its
    default profile, when the gateway is gone)."""
    stale_after: float = 10.0
    """A circuit meter without a reading for this long puts its circuit in fail-safe."""
    min_interval: float = 10.0
    """Seconds between two raises of one charger's limit (lowering is never held back)."""
    dead_band: float = 1.0
    """A raise smaller than this (A) is not sent."""
    lease: float = 120.0
    """Limits above the safe current lapse after this long unless renewed (at half)."""
    raise_delay: float = 5.0
    """Raises wait this long after a charger was lowered, so the lowered ones act first."""
    voltage: float = NOMINAL_VOLTAGE
    """Nominal phase voltage for power limits (W to A)."""
    source: Source = field(default_factory=lambda: Source(None, "load_management"))


@dataclass(frozen=True)
class ChargerRef:
    """A charger (or one connector / EVSE of it) on a circuit."""

    device: str
    connector: int | None
    phases: frozenset[int]
    max_current: float
    source: Source = field(default_factory=lambda: Source(None, ""))

    @property
    def key(self) -> str:
        """The charger's identity in status and metrics: device, or device#connector."""
        return self.device if self.connector is None else f"{self.device}#{self.connector}"


@dataclass(frozen=True)
class Circuit:
    """One circuit: limits, parent, meter and the chargers directly on it."""

    name: str
    max_current: float | None
    max_power: float | None
    parent: str | None
    meter: str | None
    margin: float
    chargers: tuple[ChargerRef, ...]
    source: Source = field(default_factory=lambda: Source(None, ""))


@dataclass(frozen=True)
class LoadManagementConfig:
    """Everything load management runs with (no circuits: nothing to do)."""

    settings: Settings = field(default_factory=Settings)
    circuits: tuple[Circuit, ...] = ()

    @property
    def active(self) -> bool:
        """True when circuits are configured and management is enabled."""
        return bool(self.circuits) and self.settings.enabled

    def chargers(self) -> list[tuple[Circuit, ChargerRef]]:
        """Every charger with the circuit it is on."""
        return [(c, ch) for c in self.circuits for ch in c.chargers]


def parse(
    section: Options,
    circuits: Sequence[tuple[Mapping[str, Any], Source]],
    devices: Sequence[DeviceSpec],
    *,
    feature_enabled: bool,
) -> LoadManagementConfig:
    """Validate ``[load_management]`` and every ``[[circuits]]`` table."""
    settings = _settings(section)
    if not circuits:
        return LoadManagementConfig(settings, ())
    if not feature_enabled:
        raise circuits[0][1].error(
            "",
            "circuits need dynamic load management: set [features] load_management = true "
            "(a professional-tier feature)",
        )
    by_id = {d.id: d for d in devices}
    parsed = [_circuit(table, src, by_id, settings) for table, src in circuits]
    names: dict[str, Circuit] = {}
    for c in parsed:
        if c.name in names:
            raise c.source.error(
                "name", f"circuit {c.name!r} defined twice (first at {names[c.name].source.key})"
            )
        names[c.name] = c
    for c in parsed:
        if c.parent is not None and c.parent not in names:
            known = ", ".join(sorted(names))
            raise c.source.error("parent", f"no circuit named {c.parent!r} (known: {known})")
    for c in parsed:
        seen = [c.name]
        parent = c.parent
        while parent is not None:
            if parent in seen:
                loop = " -> ".join([*seen, parent])
                raise c.source.error("parent", f"circuits form a cycle: {loop}")
            seen.append(parent)
            parent = names[parent].parent
    owner: dict[tuple[str, int | None], tuple[Circuit, ChargerRef]] = {}
    for c in parsed:
        for ch in c.chargers:
            for key in _overlapping(ch):
                if key in owner:
                    other, first = owner[key]
                    err = ch.source.error(
                        "device",
                        f"charger {ch.key!r} is already on circuit {other.name!r} "
                        f"({first.source.key}): a charger is on one circuit only",
                    )
                    line = _line_naming(c.source, ch.device) or err.line
                    raise ConfigError(err.file, err.key, err.message, line=line)
            owner[(ch.device, ch.connector)] = (c, ch)
    _check_safe_current(parsed, settings)
    return LoadManagementConfig(settings, tuple(parsed))


def _overlapping(ch: ChargerRef) -> list[tuple[str, int | None]]:
    """Keys that clash with this one: the same connector, or the whole charger."""
    return [(ch.device, ch.connector), (ch.device, None)]


def _settings(o: Options) -> Settings:
    min_current = o.float("min_current", 6.0, min=0, max=80)
    safe = o.float("safe_current", 6.0, min=0, max=80)
    if 0 < safe < min_current:
        raise o.error(
            "safe_current",
            f"must be 0 (pause) or at least min_current ({min_current:g} A), got {safe:g}: "
            "a car does not charge below the minimum",
        )
    lease = o.float("lease", 120.0, min=10, max=86400)
    s = Settings(
        enabled=o.bool("enabled", True),
        min_current=min_current,
        safe_current=safe,
        stale_after=o.float("stale_after", 10.0, min=1, max=3600),
        min_interval=o.float("min_interval", 10.0, min=0, max=3600),
        dead_band=o.float("dead_band", 1.0, min=0, max=32),
        lease=lease,
        raise_delay=o.float("raise_delay", 5.0, min=0, max=300),
        voltage=o.float("voltage", NOMINAL_VOLTAGE, min=100, max=300),
        source=o.source,
    )
    o.finish()
    return s


def _circuit(
    table: Mapping[str, Any], src: Source, devices: Mapping[str, DeviceSpec], s: Settings
) -> Circuit:
    o = Options(table, src)
    name = o.str("name")
    if not _NAME.match(name):
        raise o.error("name", "must be 1-64 letters, digits, '.', '_' or '-'")
    max_current = o.float("max_current", None, min=0, max=10_000)
    max_power = o.float("max_power", None, min=0, max=10_000_000)
    if max_current is None and max_power is None:
        raise o.error("max_current", "a circuit needs max_current (A per phase) or max_power (W)")
    parent = o.str("parent", None)
    if parent == name:
        raise o.error("parent", f"circuit {name!r} cannot be its own parent")
    meter = o.str("meter", None)
    if meter is not None:
        dev = devices.get(meter)
        if dev is None:
            raise o.error("meter", f"no device with id {meter!r}")
        if dev.driver == "ocpp":
            raise o.error("meter", f"{meter!r} is a charger; the meter measures the whole circuit")
    margin = o.float("margin", 0.0, min=0, max=1000)
    raw = o.raw("chargers", [])
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise o.error("chargers", 'expected an array of tables ({ device = "...", ... })')
    chargers = tuple(
        _charger(t, Source(src.file, f"{src.key}.chargers[{i}]"), devices, s, src)
        for i, t in enumerate(raw)
    )
    o.finish()
    return Circuit(name, max_current, max_power, parent, meter, margin, chargers, src)


def _charger(
    table: Mapping[str, Any],
    src: Source,
    devices: Mapping[str, DeviceSpec],
    s: Settings,
    circuit_src: Source,
) -> ChargerRef:
    o = _ChargerOptions(table, src, circuit_src)
    device = o.str("device")
    dev = devices.get(device)
    if dev is None:
        raise o.error("device", f"no device with id {device!r}")
    if dev.driver != "ocpp":
        raise o.error(
            "device",
            f"{device!r} is a {dev.driver} device, not an OCPP charger: only chargers take "
            "charging limits",
        )
    connector = o.int("connector", None, min=1, max=99)
    phases = o.choice("phases", (1, 3), 3)
    if phases == 1:
        phase = o.choice("phase", PHASE_NAMES, "L1")
        used = frozenset({PHASE_NAMES.index(phase) + 1})
    else:
        if o.has("phase"):
            raise o.error("phase", "only a 1-phase charger (phases = 1) names its phase")
        used = frozenset({1, 2, 3})
    max_current = o.float("max_current", 16.0, min=0, max=1000)
    if max_current < s.min_current:
        raise o.error(
            "max_current",
            f"{max_current:g} A is below min_current ({s.min_current:g} A): it could never charge",
        )
    o.finish()
    return ChargerRef(device, connector, used, max_current, src)


class _ChargerOptions(Options):
    """Options of one inline charger table: errors point at the line that names it."""

    def __init__(self, data: Mapping[str, Any], source: Source, circuit: Source) -> None:
        super().__init__(data, source)
        self._circuit = circuit
        self._device = data.get("device")

    def error(self, key: str, message: str) -> ConfigError:
        err = super().error(key, message)
        line = _line_naming(self._circuit, self._device)
        return err if line is None else ConfigError(err.file, err.key, err.message, line=line)


def _line_naming(circuit: Source, device: object) -> int | None:
    """The line of ``device = "<id>"`` within the circuit's table, when it can be found."""
    start = ConfigError(circuit.file, circuit.key, "").line
    if start is None or circuit.file is None or not isinstance(device, str):
        return None
    try:
        lines = Path(circuit.file).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    pat = re.compile(r"\bdevice\s*=\s*[\"']" + re.escape(device) + r"[\"']")
    for i in range(start, len(lines)):
        if re.match(r"\s*\[\[?\s*[A-Za-z]", lines[i]):
            break  # the next table
        if pat.search(lines[i]):
            return i + 1
    return None


def _check_safe_current(circuits: Sequence[Circuit], s: Settings) -> None:
    """Every charger at the safe current must fit every circuit it is below."""
    if s.safe_current == 0:
        return
    by_name = {c.name: c for c in circuits}
    below: dict[str, list[ChargerRef]] = {c.name: [] for c in circuits}
    for c in circuits:
        name: str | None = c.name
        while name is not None:
            below[name].extend(c.chargers)
            name = by_name[name].parent
    for c in circuits:
        if c.max_current is not None:
            for p in (1, 2, 3):
                n = sum(1 for ch in below[c.name] if p in ch.phases)
                need = n * s.safe_current
                if need > c.max_current - c.margin:
                    raise c.source.error(
                        "max_current",
                        f"{n} charger(s) on L{p} at the safe current of {s.safe_current:g} A "
                        f"need {need:g} A, more than this circuit allows "
                        f"({c.max_current:g} A - margin {c.margin:g} A); lower "
                        "[load_management] safe_current (0 pauses)",
                    )
        if c.max_power is not None:
            need_w = sum(len(ch.phases) for ch in below[c.name]) * s.safe_current * s.voltage
            if need_w > c.max_power - 3 * c.margin * s.voltage:
                raise c.source.error(
                    "max_power",
                    f"the chargers at the safe current of {s.safe_current:g} A need "
                    f"{need_w:g} W, more than this circuit allows ({c.max_power:g} W); lower "
                    "[load_management] safe_current (0 pauses)",
                )
