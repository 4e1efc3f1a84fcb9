"""The circuits page and ``GET /api/circuits``: load management as the controller reports it.

The data are the ``circuits`` of ``edged status --json`` (``edged/loadmgmt/controller.py``,
``Controller.status``); ``static/console.js`` rebuilds the same markup from the API every
second, so the two renderings below and in the script must stay alike.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from edged.web import api, pages
from edged.web import context as ctx

routes = web.RouteTableDef()
e = html.escape
PHASES = ("L1", "L2", "L3")


def _amps(value: Any) -> str:
    if value is None:
        return "-"
    return f"{float(value):g}"


def _phase_cells(values: Sequence[Any] | None) -> str:
    vals = list(values) if values is not None else [None, None, None]
    return "".join(f'<td class="num">{_amps(v)}</td>' for v in vals)


def _limit(c: dict[str, Any]) -> str:
    parts = []
    if c.get("max_current") is not None:
        parts.append(f"{c['max_current']:g} A per phase")
    if c.get("max_power") is not None:
        parts.append(f"{c['max_power']:g} W")
    return " and ".join(parts) or "-"


def _charger_row(ch: dict[str, Any]) -> str:
    note = f"refuses profiles: {ch['rejected']}" if ch.get("rejected") else ""
    return (
        f'<tr data-charger="{e(str(ch["charger"]))}"><td>{e(str(ch["charger"]))}</td>'
        f"<td>{e(str(ch.get('phases') or ''))}</td><td>{pages._state(str(ch['state']))}</td>"
        + _phase_cells(ch.get("per_phase"))
        + f'<td class="num">{_amps(ch.get("limit_sent"))}</td><td>{e(note)}</td></tr>'
    )


def circuit_section(c: dict[str, Any]) -> str:
    """One circuit: mode, limit, per-phase load and what is left, its chargers."""
    name = str(c["name"])
    parent = f' <span class="muted">in {e(str(c["parent"]))}</span>' if c.get("parent") else ""
    mode = str(c.get("mode") or "-")
    reason = str(c.get("reason") or "") if mode == "fail-safe" else ""
    meter = f"meter {e(str(c['meter']))}" if c.get("meter") else "no meter of its own"
    age = c.get("measured_age")
    if age is not None:
        meter += f", reading {age:g} s old"
    chargers = "".join(_charger_row(ch) for ch in c.get("chargers") or [])
    return (
        f'<section class="circuit" data-circuit="{e(name)}"><h2>{e(name)}{parent}</h2>'
        f'<p><span class="mode mode-{e(mode)}">{e(mode)}</span> '
        f'<span class="reason">{e(reason)}</span></p>'
        f'<p>limit <span class="limit">{e(_limit(c))}</span>; '
        f'<span class="meter muted">{meter}</span></p>'
        '<table class="phases"><thead><tr><th>A</th>'
        + "".join(f"<th>{p}</th>" for p in PHASES)
        + '</tr></thead><tbody><tr class="measured"><td>measured load</td>'
        + _phase_cells(c.get("measured"))
        + '</tr><tr class="available"><td>left for chargers</td>'
        + _phase_cells(c.get("available"))
        + "</tr></tbody></table>"
        '<table class="chargers"><thead><tr><th>charger</th><th>phases</th><th>state</th>'
        + "".join(f"<th>{p} (A)</th>" for p in PHASES)
        + "<th>limit on the charger (A)</th><th>note</th></tr></thead>"
        f"<tbody>{chargers}</tbody></table></section>"
    )


@routes.get("/api/circuits")
async def circuits_api(request: web.Request) -> web.Response:
    """Load management's circuits (an empty list when it does not run)."""
    backend = ctx.backend_of(request)
    return api.live(request, "circuits", lambda: {"circuits": backend.circuits()})


@routes.get("/circuits")
async def circuits_page(request: web.Request) -> web.Response:
    """Each circuit with its mode, load, what is left and what its chargers are given."""
    found = ctx.backend_of(request).circuits()
    inner = "".join(circuit_section(c) for c in found) or (
        "<p>no circuits: load management is not configured</p>"
    )
    body = f'<div id="circuits">{inner}</div>'
    return pages.page(request, "circuits", "Circuits", body)


def add_routes(router: web.UrlDispatcher) -> None:
    """Mount the page and its endpoint."""
    router.add_routes(routes)
