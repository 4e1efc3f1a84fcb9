"""Cloud account tier: publish intervals, feature gates and the licence planner.

Every metering point (device or virtual meter) carries its own cloud licence;
the account tier is the lowest of them. The tier sets how often a device may
publish and which cloud features the configuration may rely on. A connection
(for example an M-Bus gateway or converter) is not a metering point and needs
no cloud licence.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.config import Config, VirtualMeter, load
from edged.errors import ConfigError
from edged.model import DeviceSpec, Tier

TIER_INTERVALS: Mapping[Tier, float] = {
    Tier.BASIC: 900.0,
    Tier.LIMITED: 60.0,
    Tier.PROFESSIONAL: 1.0,
}

# The lowest tier that unlocks each gated feature (smart-me licence sheet).
FEATURE_TIERS: Mapping[str, Tier] = {
    "actions": Tier.LIMITED,
    "load_profiles": Tier.LIMITED,
    "virtual_meters": Tier.PROFESSIONAL,
    "load_management": Tier.PROFESSIONAL,
    "modbus_server": Tier.PROFESSIONAL,
    "auto_export": Tier.PROFESSIONAL,
}

COMMERCIAL_TIER = Tier.PROFESSIONAL

# Energy types of the licence planner: the sheet prices electricity apart from
# heat / cold / water / gas. A charger meters electricity.
ELECTRICITY_MEDIA = frozenset({"electricity", "ev_charger"})
HEAT_WATER_MEDIA = frozenset({"heat", "cold", "heat_cold", "water", "hot_water", "gas"})

_MAX_NAMED = 10


@dataclass(frozen=True)
class MeteringPoint:
    """Anything that needs a cloud licence: a configured device or a virtual meter."""

    id: str
    medium: str
    cloud_licence: Tier
    virtual: bool


def metering_points(config: Config) -> list[MeteringPoint]:
    """All metering points of the configuration in config order (devices, then virtual meters)."""
    points = [_device_point(d) for d in config.devices]
    points.extend(_virtual_point(v) for v in config.virtual_meters)
    return points


def _device_point(d: DeviceSpec) -> MeteringPoint:
    return MeteringPoint(d.id, d.medium, d.cloud_licence, d.virtual)


def _virtual_point(v: VirtualMeter) -> MeteringPoint:
    return MeteringPoint(v.id, v.medium, v.cloud_licence, True)


def lowest_tier(tiers: Iterable[Tier]) -> Tier:
    """The lowest of the given tiers; Basic when there are none."""
    return min(tiers, key=lambda t: t.rank, default=Tier.BASIC)


def account_tier(config: Config) -> Tier:
    """The account tier: the lowest cloud licence of any metering point (none → Basic)."""
    return lowest_tier(p.cloud_licence for p in metering_points(config))


def tier_interval(tier: Tier) -> float:
    """Seconds between two values a tier allows per metering point."""
    return TIER_INTERVALS[tier]


def publish_interval(device: DeviceSpec, account: Tier) -> tuple[float, str | None]:
    """The device's publish interval under the account tier, and a warning if it was clamped."""
    floor = TIER_INTERVALS[account]
    wanted = device.publish_interval
    if wanted is None or wanted == floor:
        return floor, None
    if wanted > floor:
        return wanted, None
    message = (
        f"{_fmt_seconds(wanted)} is shorter than the {account.value} cloud tier allows; "
        f"publishing every {_fmt_seconds(floor)} (raise the cloud licences of all metering "
        "points to publish faster)"
    )
    return floor, str(device.source.error("publish_interval", message))


def publish_intervals(config: Config) -> tuple[dict[str, float], list[str]]:
    """Publish interval of every device under the account tier, and the clamp warnings."""
    account = account_tier(config)
    intervals: dict[str, float] = {}
    warnings: list[str] = []
    for dev in config.devices:
        interval, warning = publish_interval(dev, account)
        intervals[dev.id] = interval
        if warning is not None:
            warnings.append(warning)
    return intervals, warnings


def _fmt_seconds(s: float) -> str:
    return f"{s:g} s"


# --- feature gates ---------------------------------------------------------------------------


def check_features(config: Config) -> None:
    """Raise ConfigError when a configured feature needs a higher tier than the account has."""
    points = metering_points(config)
    account = lowest_tier(p.cloud_licence for p in points)
    for name in sorted(FEATURE_TIERS, key=lambda n: (FEATURE_TIERS[n].rank, n)):
        needed = FEATURE_TIERS[name]
        if config.cloud.features.get(name, False) and account.rank < needed.rank:
            key = f"features.{name}"
            file = _file_setting(config, ("features", name))
            raise ConfigError(
                file, key, _gate_message(f"feature {name!r}", needed, account, points)
            )
    if config.cloud.usage == "commercial" and account.rank < COMMERCIAL_TIER.rank:
        file = _file_setting(config, ("cloud", "usage"))
        raise ConfigError(
            file,
            "cloud.usage",
            _gate_message("commercial API use", COMMERCIAL_TIER, account, points),
        )
    needed = FEATURE_TIERS["virtual_meters"]
    if config.virtual_meters and account.rank < needed.rank:
        vm = config.virtual_meters[0]
        raise vm.source.error("", _gate_message("virtual meters", needed, account, points))
    needed = FEATURE_TIERS["actions"]
    if config.actions and account.rank < needed.rank:
        rule = config.actions[0].source
        raise rule.error("", _gate_message("if/then actions", needed, account, points))


def _gate_message(what: str, needed: Tier, account: Tier, points: list[MeteringPoint]) -> str:
    below = [p for p in points if p.cloud_licence.rank < needed.rank]
    if below:
        named = ", ".join(f"{p.id} ({p.cloud_licence.value})" for p in below[:_MAX_NAMED])
        if len(below) > _MAX_NAMED:
            named += f" and {len(below) - _MAX_NAMED} more"
        why = f"metering points below {needed.value}: {named}"
    else:
        why = "no metering point is configured"
    return (
        f"{what} needs the {needed.value} cloud tier but the account tier is {account.value} "
        f"({why}); raise their cloud_licence to {needed.value!r} or turn the feature off"
    )


def _file_setting(config: Config, path: tuple[str, str]) -> str | None:
    """The file that set a section key last (drop-ins override the main file)."""
    section, key = path
    for file in reversed(config.files):
        try:
            doc = tomllib.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        table = doc.get(section)
        if isinstance(table, dict) and key in table:
            return str(file)
    return str(config.files[0]) if config.files else None


# --- status ----------------------------------------------------------------------------------


def tier_status(config: Config) -> dict[str, Any]:
    """Account tier, interval in force and each metering point's cloud licence (JSON-ready)."""
    points = metering_points(config)
    account = lowest_tier(p.cloud_licence for p in points)
    intervals, warnings = publish_intervals(config)
    higher = [t for t in Tier if t.rank > account.rank]
    limiting = []
    if higher:
        limiting = [p.id for p in points if p.cloud_licence == account]
    return {
        "name": account.value,
        "account_tier": account.value,
        "interval": TIER_INTERVALS[account],
        "limited_by": limiting,
        "devices": {
            d.id: {"cloud_licence": d.cloud_licence.value, "publish_interval": intervals[d.id]}
            for d in config.devices
        },
        "virtual_meters": {
            v.id: {"cloud_licence": v.cloud_licence.value} for v in config.virtual_meters
        },
        "warnings": warnings,
    }


# --- licence planner -------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How many Professional cloud licences a site needs, by energy type."""

    electricity_meters: int
    electricity_virtual: int
    heat_water_meters: int
    heat_water_virtual: int
    other: int
    zev_extra_virtual: int
    gateways: int
    already_professional: int

    @property
    def electricity(self) -> int:
        """Licences for electricity metering points, ZEV virtual meters included."""
        return self.electricity_meters + self.electricity_virtual + self.zev_extra_virtual

    @property
    def heat_water(self) -> int:
        """Licences for heat, cold, water and gas metering points."""
        return self.heat_water_meters + self.heat_water_virtual

    @property
    def total(self) -> int:
        """All Professional licences the account needs."""
        return self.electricity + self.heat_water + self.other

    @property
    def missing(self) -> int:
        """Licences still to buy beyond those already configured as Professional."""
        return self.total - self.already_professional


def zev_virtual_meters(pv: int) -> int:
    """The rule of thumb's virtual meters for a ZEV: one with one PV plant, two with more."""
    if pv < 1:
        raise ValueError("a ZEV plan needs at least one PV plant")
    return 1 if pv == 1 else 2


def plan(config: Config, zev: bool = False, pv: int = 0) -> Plan:
    """Count the Professional cloud licences the configured site needs."""
    points = metering_points(config)
    extra = 0
    if zev:
        # The rule of thumb names virtual meters the site will need; those the
        # config already defines (electricity virtual meters) count towards it.
        defined = sum(1 for p in points if p.virtual and p.medium in ELECTRICITY_MEDIA)
        extra = max(0, zev_virtual_meters(pv) - defined)
    elif pv:
        raise ValueError("the PV plant count only applies to a ZEV plan")

    def count(media: frozenset[str], virtual: bool) -> int:
        return sum(1 for p in points if p.medium in media and p.virtual == virtual)

    known = ELECTRICITY_MEDIA | HEAT_WATER_MEDIA
    return Plan(
        electricity_meters=count(ELECTRICITY_MEDIA, False),
        electricity_virtual=count(ELECTRICITY_MEDIA, True),
        heat_water_meters=count(HEAT_WATER_MEDIA, False),
        heat_water_virtual=count(HEAT_WATER_MEDIA, True),
        other=sum(1 for p in points if p.medium not in known),
        zev_extra_virtual=extra,
        gateways=sum(1 for c in config.connections.values() if c.driver == "mbus"),
        already_professional=sum(1 for p in points if p.cloud_licence == Tier.PROFESSIONAL),
    )


def format_plan(p: Plan) -> str:
    """The planner's human-readable answer."""
    lines = ["Professional cloud licences needed (every metering point, virtual meters included):"]
    virt = p.electricity_virtual + p.zev_extra_virtual
    detail = f"{p.electricity_meters} meters + {virt} virtual"
    if p.zev_extra_virtual:
        detail += f" ({p.zev_extra_virtual} to add for the ZEV)"
    lines.append(f"  electricity           {p.electricity:5d}  ({detail})")
    lines.append(
        f"  heat/cold/water/gas   {p.heat_water:5d}  "
        f"({p.heat_water_meters} meters + {p.heat_water_virtual} virtual)"
    )
    if p.other:
        lines.append(f"  other                 {p.other:5d}")
    lines.append(f"  M-Bus gateways        {0:5d}  ({p.gateways} configured; they need none)")
    summary = f"{p.electricity} electricity + {p.heat_water} heat/water"
    if p.other:
        summary += f" + {p.other} other"
    lines.append(f"Total: {summary} = {p.total}")
    lines.append(
        f"Configured as professional: {p.already_professional}; still to license: {p.missing}"
    )
    return "\n".join(lines) + "\n"


def plan_main(argv: list[str]) -> int:
    """`edged license plan -c CONFIG [--zev --pv N]`: print the licences the site needs."""
    parser = argparse.ArgumentParser(
        prog="edged license plan",
        description="Count the Professional cloud licences a site needs, by energy type.",
    )
    parser.add_argument("-c", "--config", required=True, type=Path, help="main config file")
    parser.add_argument(
        "--zev",
        action="store_true",
        help="self-consumption community: add the rule of thumb's virtual meters",
    )
    parser.add_argument(
        "--pv",
        type=int,
        default=None,
        metavar="N",
        help="number of PV plants of the ZEV (default 1)",
    )
    args = parser.parse_args(argv)
    if args.pv is not None and not args.zev:
        parser.error("--pv only applies together with --zev")
    pv = 0
    if args.zev:
        pv = 1 if args.pv is None else args.pv
        if pv < 1:
            parser.error("--pv must be at least 1 (a ZEV has at least one PV plant)")
    try:
        config = load(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"edged license plan: {exc}\n")
        return 78
    sys.stdout.write(format_plan(plan(config, zev=args.zev, pv=pv)))
    return 0
