"""The ``actions`` section of ``edged status`` as text (from the JSON status reply)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def format_lines(rules: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ``actions`` section of ``edged status`` as text lines."""
    if not rules:
        return []
    lines = ["actions:"]
    width = max(len(str(r.get("name"))) for r in rules)
    for r in rules:
        value = r.get("last_value")
        shown = "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        line = (
            f"  {str(r.get('name')).ljust(width)}  {r.get('state')} since {r.get('since')}"
            f"  last value {shown}  fired {r.get('fired', 0)}, cleared {r.get('cleared', 0)},"
            f" failed {r.get('failed', 0)}"
        )
        if r.get("last_error"):
            line += f"  (last error: {r['last_error']})"
        lines.append(line)
    return lines
