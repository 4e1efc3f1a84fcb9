"""The contract between the core and the drivers.

A driver owns one protocol. The core hands it the raw ``[connections.NAME]`` table and
the devices on it once, through ``configure``; the driver validates its own keys into
frozen settings (raising ``ConfigError`` naming file, line and key) and later runs the
connection with exactly those settings. Everything else a driver can do is an optional
capability, a small protocol of its own that the core checks with ``isinstance``:

- ``LiveUpdate``: take a new device list without dropping the connection;
- ``Commandable``: take typed ``Command`` objects (charger limits, driver commands);
- ``HasCli`` / ``HasSimulator``: ``edged <protocol> …`` and ``edged sim <protocol> …``;
- ``Scannable``: search a configured bus for devices (the console's bus scan).

The registry lists the built-in drivers and those registered by other distributions
under the entry-point group ``edged.drivers``. Only ``edged.app`` and ``edged.cli``
reach it; the rest of the core never imports a concrete driver.
"""

from __future__ import annotations

import builtins
import difflib
import importlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from edged.errors import ConfigError
from edged.model import ConnectionSpec, DeviceSpec, DeviceState, Sample, Source

ENTRY_POINT_GROUP = "edged.drivers"
_log = logging.getLogger("edged.api")

# -- located option parsing -----------------------------------------------------------

_MISSING: Any = object()

# The keys of a ``[[devices]]`` table the core reads itself; the rest go to the driver.
DEVICE_KEYS = (
    "id",
    "connection",
    "address",
    "profile",
    "poll_interval",
    "publish_interval",
    "cloud_licence",
    "licence_group",
    "medium",
    "labels",
)


class Options:
    """Typed, located access to a driver-specific settings table.

    Drivers read their own keys through this so every mistake names file, key and
    line; ``finish()`` rejects keys nobody read.
    """

    def __init__(
        self,
        data: Mapping[builtins.str, Any],
        source: Source,
        core_keys: Sequence[builtins.str] = (),
    ):
        self._data = data
        self._source = source
        self._read: set[builtins.str] = set()
        # Keys the core already read from the same table: candidates for "did you mean".
        self._core = tuple(core_keys)

    @classmethod
    def of(cls, spec: ConnectionSpec | DeviceSpec) -> Options:
        """Located access to the driver-specific settings of a connection or device."""
        core = DEVICE_KEYS if isinstance(spec, DeviceSpec) else ("driver",)
        return cls(spec.settings, spec.source, core)

    @property
    def source(self) -> Source:
        """Where these options were configured."""
        return self._source

    def has(self, key: builtins.str) -> builtins.bool:
        """True when the key was configured."""
        return key in self._data

    def _get(self, key: builtins.str, default: Any) -> Any:
        self._read.add(key)
        if key in self._data:
            return self._data[key]
        if default is _MISSING:
            # A typo of a required key is reported as missing; name the likely culprit.
            near = difflib.get_close_matches(key, [k for k in self._data if k not in self._read])
            hint = f" (is {near[0]!r} a typo of {key!r}?)" if near else ""
            raise self._source.error(key, f"required key is missing{hint}")
        return default

    def error(self, key: builtins.str, message: builtins.str) -> ConfigError:
        """A located error for one of these keys."""
        return self._source.error(key, message)

    def str(self, key: builtins.str, default: Any = _MISSING) -> Any:
        """A string option."""
        v = self._get(key, default)
        if v is not default and not isinstance(v, str):
            raise self.error(key, f"expected a string, got {_typename(v)}")
        return v

    def int(
        self,
        key: builtins.str,
        default: Any = _MISSING,
        *,
        min: builtins.int | None = None,
        max: builtins.int | None = None,
    ) -> Any:
        """An integer option within an optional range."""
        v = self._get(key, default)
        if v is default:
            return v
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(key, f"expected an integer, got {_typename(v)}")
        _check_range(self, key, v, min, max)
        return v

    def float(
        self,
        key: builtins.str,
        default: Any = _MISSING,
        *,
        min: builtins.float | None = None,
        max: builtins.float | None = None,
    ) -> Any:
        """A number option within an optional range."""
        v = self._get(key, default)
        if v is default:
            return v
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(key, f"expected a number, got {_typename(v)}")
        if not math.isfinite(v):
            raise self.error(key, f"expected a finite number, got {v}")
        _check_range(self, key, v, min, max)
        return float(v)

    def bool(self, key: builtins.str, default: Any = _MISSING) -> Any:
        """A boolean option."""
        v = self._get(key, default)
        if v is not default and not isinstance(v, bool):
            raise self.error(key, f"expected true or false, got {_typename(v)}")
        return v

    def choice(self, key: builtins.str, choices: tuple[Any, ...], default: Any = _MISSING) -> Any:
        """One of a fixed set of values."""
        v = self._get(key, default)
        if v is not default and v not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise self.error(key, f"expected one of {allowed}, got {v!r}")
        return v

    def raw(self, key: builtins.str, default: Any = _MISSING) -> Any:
        """The value as TOML gave it, for the caller to check."""
        return self._get(key, default)

    def finish(self) -> None:
        """Reject keys that were configured but never read."""
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            near = difflib.get_close_matches(unknown[0], sorted(self._read | set(self._core)))
            if near:
                known = f"did you mean {near[0]!r}?"
            elif self._read:
                known = f"known here: {', '.join(sorted(self._read))}"
            else:
                known = "no driver-specific keys are known here"
            raise self.error(unknown[0], f"unknown key ({known})")


def _typename(v: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(v), type(v).__name__)


def _check_range(opts: Options, key: str, v: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and v < lo:
        raise opts.error(key, f"must be at least {lo}, got {v}")
    if hi is not None and v > hi:
        raise opts.error(key, f"must be at most {hi}, got {v}")


# -- the driver contract ---------------------------------------------------------------


class DriverContext(Protocol):
    """What a running connection may tell the core."""

    def sample(self, sample: Sample) -> None:
        """Hand over one sample (canonical quantities and units)."""

    def state(self, device_id: str, state: DeviceState, error: str | None = None) -> None:
        """Report that a device went online, offline, ..."""

    def count(self, event: str, device_id: str | None = None, n: int = 1) -> None:
        """Count an event (``poll``, ``poll_error``, ``frame_rejected``, ...) for metrics."""

    def observe(self, event: str, seconds: float, device_id: str | None = None) -> None:
        """Record a latency (e.g. ``poll``) for metrics."""


@runtime_checkable
class Settings(Protocol):
    """What ``configure`` returns: the frozen, validated settings of one connection."""

    @property
    def endpoint(self) -> str:
        """The identity of the physical bus or socket (two connections may not share one)."""


S = TypeVar("S", bound=Settings)
S_contra = TypeVar("S_contra", bound=Settings, contravariant=True)


@runtime_checkable
class Driver(Protocol[S]):
    """A protocol driver: validates its settings once, then runs one connection."""

    name: str
    # Polled drivers ask their devices; served ones (OCPP) wait for devices to speak, so
    # the core never reports their silence as stale.
    polled: bool

    def configure(self, connection: ConnectionSpec, devices: Sequence[DeviceSpec]) -> S:
        """Validate the connection and its devices; raise ConfigError naming file and key."""

    async def run(self, settings: S, ctx: DriverContext) -> None:
        """Run the connection until cancelled. Must never let one dead device stall others."""


@runtime_checkable
class LiveUpdate(Protocol[S_contra]):
    """Capability: apply a new device list to a running connection."""

    def update(self, settings: S_contra) -> bool:
        """Take the new settings live; False when only a restart can apply them.

        Called on reload only when the connection's own keys are unchanged and only its
        devices differ; afterwards samples of devices no longer on the list are rejected.
        """


# -- commands ------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A command for one device, handed to the driver that owns it."""

    device_id: str


ChargingPurpose = Literal["default", "tx", "station_max"]
"""Which charging profile carries a limit: OCPP's TxDefaultProfile, TxProfile (the running
transaction) or ChargePointMaxProfile (2.0.1: ChargingStationMaxProfile)."""


@dataclass(frozen=True)
class SetChargingLimit(Command):
    """Limit a charger (all its connectors when ``connector`` is None).

    ``limit`` is per phase in amperes unless ``unit`` says watts; 0 pauses charging.
    ``duration`` (seconds) makes the limit lapse on its own, so a charger that loses the
    gateway falls back to the profile below it (a lower ``stack_level``) instead of keeping
    a limit nobody watches any more. ``phases`` is how many phases the limit is for.
    """

    limit: float
    unit: Literal["A", "W"] = "A"
    connector: int | None = None
    purpose: ChargingPurpose = "default"
    stack_level: int = 0
    duration: float | None = None
    phases: int | None = None


@dataclass(frozen=True)
class ClearChargingLimit(Command):
    """Remove the charging profiles edged set (all of them when ``purpose`` is None)."""

    connector: int | None = None
    purpose: ChargingPurpose | None = None
    stack_level: int | None = None


@dataclass(frozen=True)
class WriteRegister(Command):
    """Write a Modbus holding register (``values``: one or more 16-bit words) or a coil."""

    address: int
    values: tuple[int, ...] = ()
    coil: bool | None = None
    """For a coil write: the state to set (``values`` is then empty)."""


@dataclass(frozen=True)
class StartCharging(Command):
    """Start a charging session."""

    id_tag: str = "edged"
    connector: int | None = None


@dataclass(frozen=True)
class StopCharging(Command):
    """Stop the device's running charging session."""


@dataclass(frozen=True)
class DriverCommand(Command):
    """A protocol-specific command by name, as ``edged <protocol> …`` sends it."""

    name: str
    args: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))


@runtime_checkable
class Commandable(Protocol):
    """Capability: devices of this driver take commands."""

    async def command(self, command: Command) -> Mapping[str, Any]:
        """Run one command; return a JSON-ready result or raise an EdgedError saying why.

        A device that answers but declines (a charger's ``status`` other than Accepted)
        is not an error here: the result carries its answer; ``refusal`` reads it.
        """


def refusal(command: Command, result: object) -> str | None:
    """Why the device declined a command it answered, or None when it carried it out.

    A charger's answer comes back as ``{"result": {"status": ...}, ...}``: any status but
    ``Accepted`` is a refusal (``Rejected``, ``NotSupported``, ...), except ``Unknown`` to
    a ``ClearChargingLimit``, which means no profile matched: none is in force, which is
    what the clear asked for. An answer without a status (a register write) is done.
    """
    status = None
    if isinstance(result, Mapping):
        inner = result.get("result", result)
        if isinstance(inner, Mapping):
            status = inner.get("status")
    if status is None or str(status) == "Accepted":
        return None
    if isinstance(command, ClearChargingLimit) and str(status) == "Unknown":
        return None
    return f"status {status}"


@dataclass(frozen=True)
class DeviceInfo:
    """What a driver knows about one configured device before it runs.

    The core checks rules that name a device against it (``edged.actions``):
    ``quantities`` is None when they are known only once the device speaks (a charger's
    measurands); ``commands`` are the typed commands the device takes; the writable
    holding registers and coils are those its configuration declares.
    """

    quantities: frozenset[str] | None = None
    commands: frozenset[type[Command]] = frozenset()
    writable_registers: frozenset[int] = frozenset()
    writable_coils: frozenset[int] = frozenset()


@runtime_checkable
class Describes(Protocol[S_contra]):
    """Capability: say what a configured device serves and takes (for validating rules)."""

    def describe(self, settings: S_contra, device_id: str) -> DeviceInfo | None:
        """The device's description, or None when it is not on these settings."""


# -- command line and simulators ---------------------------------------------------------


class DaemonLink(Protocol):
    """What a driver's command line may ask of the running daemon (its control socket)."""

    def command(
        self, command: Command, *, config: Path | None = None, socket: Path | None = None
    ) -> Any:
        """Send a command to a device through the daemon; return the driver's result.

        ``config`` is the daemon's configuration file (for the socket path) or ``socket``
        the control socket itself; the default configuration when neither is given.
        """


@dataclass(frozen=True)
class CliCommand:
    """``edged <name> …``: a driver's own subcommands."""

    help: str
    main: Callable[[list[str], DaemonLink], int]


@dataclass(frozen=True)
class SimulatorCommand:
    """``edged sim <name> …``: a simulated device that speaks the driver's protocol."""

    help: str
    main: Callable[[list[str]], int]


@runtime_checkable
class HasCli(Protocol):
    """Capability: the driver adds ``edged <name> …`` subcommands."""

    def cli(self) -> CliCommand:
        """The driver's command line."""


@runtime_checkable
class HasSimulator(Protocol):
    """Capability: the driver ships a simulator, started with ``edged sim <name>``."""

    def simulator(self) -> SimulatorCommand:
        """The driver's simulator command."""


# -- bus scans -------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanRequest:
    """Which addresses of a bus to search (inclusive; the driver knows the valid range)."""

    first: int = 0
    last: int = 250


@dataclass(frozen=True)
class ScanFound:
    """A device that answered: its address and what it said about itself."""

    address: str
    details: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ScanEvent:
    """Progress of a scan: ``done`` of ``total`` addresses asked, and a find if any."""

    done: int
    total: int
    found: ScanFound | None = None


@runtime_checkable
class Scannable(Protocol[S_contra]):
    """Capability: search the bus of a configured connection for devices.

    The core stops the connection's own task for the time of the scan, so the driver has
    the bus to itself; it opens it with ``settings``, asks each address in turn and closes
    it again. A request outside the bus's address range raises ``ValueError``.
    """

    def scan(self, settings: S_contra, request: ScanRequest) -> AsyncIterator[ScanEvent]:
        """Yield progress after each address and each device found."""


# -- the registry --------------------------------------------------------------------

BUILTINS: Mapping[str, str] = {
    "modbus": "drivers.modbus.driver:ModbusDriver",
    "mbus": "drivers.mbus.driver:MBusDriver",
    "ocpp": "drivers.ocpp.driver:OcppDriver",
}

AnyDriver = Driver[Any]


def _load(target: str) -> Callable[[], AnyDriver]:
    """The object an entry-point target (``module:attribute``) names."""
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    factory: Callable[[], AnyDriver] = obj
    return factory


def available() -> dict[str, str]:
    """Known driver names mapped to their import targets (built-ins win on clashes)."""
    # Loaded here, not at import: reading every installed distribution's metadata costs
    # time and memory a configuration of built-in drivers never needs.
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    found.update(BUILTINS)
    return found


def get(name: str, source: Source | None = None) -> AnyDriver:
    """A new instance of the named driver; an unknown name lists the known ones."""
    # A built-in name wins on clashes: no need to look at the installed entry points
    # (asked once per connection, a thousand times on a large gateway).
    target = BUILTINS.get(name)
    if target is None:
        targets = available()
        if name not in targets:
            known = ", ".join(sorted(targets))
            src = source or Source(None, "driver")
            raise ConfigError(src.file, src.key, f"unknown driver {name!r} (known: {known})")
        target = targets[name]
    drv = _load(target)()
    if not isinstance(drv, Driver):
        src = source or Source(None, "driver")
        raise ConfigError(
            src.file,
            src.key,
            f"driver {name!r} ({target}) does not implement edged.api.Driver "
            "(name, polled, configure, run)",
        )
    return drv


def all_drivers() -> dict[str, AnyDriver]:
    """One instance of every driver that loads, by name (for the command line).

    A broken third-party driver is left out with a warning: it must not take the
    command line of the others with it.
    """
    found: dict[str, AnyDriver] = {}
    for name in sorted(available()):
        try:
            found[name] = get(name)
        except Exception as exc:  # an entry point that fails to import or to construct
            _log.warning("driver %r left out: %s", name, exc)
    return found
