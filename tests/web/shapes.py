"""The REST shapes documented in docs/web.md, and a check of answers against them.

The documentation is the source: each ``### `METHOD /api/…` `` heading is followed by a
```json block whose values are type names (see docs/web.md, "REST API").
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "web.md"
_SECTION = re.compile(r"^### `([^`]+)`((?:(?!^### ).)*?)^```json\n(.*?)^```", re.M | re.S)
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "number": (int, float),
    "bool": (bool,),
    "null": (type(None),),
}


def documented() -> dict[str, Any]:
    """Shape per heading, e.g. ``"GET /api/status"``."""
    return {m.group(1): json.loads(m.group(3)) for m in _SECTION.finditer(DOC.read_text())}


def problems(value: Any, shape: Any, where: str = "$") -> list[str]:
    """Where ``value`` does not match ``shape`` (empty: it matches)."""
    if isinstance(shape, str):
        if shape == "any":
            return []
        for name in shape.split("|"):
            if name.startswith("[") and name.endswith("]"):  # "[number]|null": a list or null
                if isinstance(value, list) and not problems(value, [name[1:-1]], where):
                    return []
                continue
            types = _TYPES[name]
            if isinstance(value, bool) and bool not in types:
                continue  # a bool is no int here
            if isinstance(value, types):
                return []
        return [f"{where}: expected {shape}, got {type(value).__name__} {value!r:.60}"]
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [
            p for i, item in enumerate(value) for p in problems(item, shape[0], f"{where}[{i}]")
        ]
    if not isinstance(value, dict):
        return [f"{where}: expected an object, got {type(value).__name__}"]
    if set(shape) == {"*"}:
        return [p for k, v in value.items() for p in problems(v, shape["*"], f"{where}.{k}")]
    out = []
    for key, sub in shape.items():
        name = key.removesuffix("?")
        if name not in value:
            if not key.endswith("?"):
                out.append(f"{where}: missing key {name!r}")
            continue
        out.extend(problems(value[name], sub, f"{where}.{name}"))
    return out


def check(value: Any, endpoint: str) -> None:
    """Assert that an answer has the documented shape of the endpoint."""
    shape = documented()[endpoint]
    found = problems(value, shape)
    assert not found, f"{endpoint} does not match docs/web.md:\n" + "\n".join(found[:20])
