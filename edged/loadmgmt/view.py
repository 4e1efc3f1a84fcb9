"""The circuits section of `edged status` (text), from the controller's status dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def format_circuits(circuits: object) -> list[str]:
    """Lines for `edged status`: each circuit, its mode and what its chargers get."""
    if not isinstance(circuits, Sequence) or not circuits:
        return []
    out = ["", "circuits"]
    for c in circuits:
        if not isinstance(c, Mapping):
            continue
        name = str(c.get("name"))
        if c.get("parent"):
            name += f" (in {c['parent']})"
        limits = []
        if c.get("max_current") is not None:
            limits.append(f"{c['max_current']:g} A")
        if c.get("max_power") is not None:
            limits.append(f"{c['max_power']:g} W")
        line = f"  {name:<20} {c.get('mode', '-'):<9} limit {' / '.join(limits) or '-'}"
        if c.get("measured") is not None:
            line += f", measured {_phases(c['measured'])} A"
            if c.get("measured_age") is not None:
                line += f" ({c['measured_age']:g} s ago)"
        if c.get("available") is not None:
            line += f", left for chargers {_phases(c['available'])} A"
        out.append(line)
        if c.get("mode") == "fail-safe" and c.get("reason"):
            out.append(f"    fail-safe: {c['reason']}")
        for ch in c.get("chargers") or []:
            if isinstance(ch, Mapping):
                out.append(_charger(ch))
    return out


def _charger(ch: Mapping[str, Any]) -> str:
    line = (
        f"    {ch.get('charger')!s:<18} {ch.get('phases')!s:<7} "
        f"{ch.get('state')!s:<9} {float(ch.get('allocated') or 0):5.1f} A"
    )
    if ch.get("limit_sent") is not None:
        line += f" (limit on the charger {float(ch['limit_sent']):g} A)"
    if ch.get("rejected"):
        line += f", refuses profiles: {ch['rejected']}"
    return line


def _phases(values: Sequence[float]) -> str:
    return "/".join(f"{v:g}" for v in values)
