"""The console's pages: server-rendered HTML; ``static/console.js`` refreshes the live parts.

No inline script or style (the CSP forbids both): the page's data for the script are in
``data-`` attributes and the CSRF token in a ``<meta>`` tag; forms carry it as a field.
"""

from __future__ import annotations

import asyncio
import html
import json
from collections import Counter
from pathlib import Path
from string import Template
from typing import Any

from aiohttp import web

from edged.errors import EdgedError, LicenceError
from edged.web import api
from edged.web import context as ctx

TEMPLATES = Path(__file__).parent / "templates"
LAYOUT = Template((TEMPLATES / "layout.html").read_text(encoding="utf-8"))
LOGIN = Template((TEMPLATES / "login.html").read_text(encoding="utf-8"))
NAV = (
    ("/", "Dashboard"),
    ("/devices", "Devices"),
    ("/licences", "Licences"),
    ("/scan", "M-Bus scan"),
    ("/events", "Events"),
)
SHOWN_VALUES = 4
"""Values per device in the device list (the device page shows all)."""

routes = web.RouteTableDef()
e = html.escape


def _csrf(request: web.Request) -> str:
    s = ctx.session_of(request)
    return s.csrf if s is not None else ""


def page(
    request: web.Request,
    name: str,
    title: str,
    body: str,
    *,
    message: str = "",
    error: bool = False,
    status: int = 200,
    data: dict[str, str] | None = None,
    gateway: str | None = None,
) -> web.Response:
    """A whole page in the layout."""
    auth = request.app[ctx.AUTH]
    if gateway is None:
        backend = request.app.get(ctx.BACKEND)
        gateway = str(backend.status().get("gateway") or "") if backend else ""
    here = "/" + name.replace("dashboard", "")
    links: tuple[tuple[str, str], ...] = NAV
    backend = request.app.get(ctx.BACKEND)
    if backend is not None and backend.circuits():
        links = (*NAV[:2], ("/circuits", "Circuits"), *NAV[2:])
    nav = "".join(
        f'<a href="{href}"{" class=current" if href == here else ""}>{label}</a>'
        for href, label in links
    )
    logout = ""
    if auth.required and auth.allowed(ctx.session_of(request)):
        logout = (
            '<form method="post" action="/logout"><input type="hidden" name="csrf" '
            f'value="{e(_csrf(request))}"><button type="submit" id="logout">Log out</button></form>'
        )
    note = ""
    if message:
        note = f'<p class="message{" error" if error else ""}" id="message">{e(message)}</p>'
    attrs = "".join(f' data-{k}="{e(v)}"' for k, v in (data or {}).items())
    text = LAYOUT.substitute(
        title=e(title),
        gateway=e(gateway),
        csrf=e(_csrf(request)),
        page=e(name),
        data=attrs,
        nav=nav if name != "login" else "",
        logout=logout,
        message=note,
        body=body,
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _form(request: web.Request, action: str, inner: str, *, multipart: bool = False) -> str:
    enc = ' enctype="multipart/form-data"' if multipart else ""
    return (
        f'<form method="post" action="{e(action)}"{enc}>'
        f'<input type="hidden" name="csrf" value="{e(_csrf(request))}">{inner}</form>'
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _state(state: str) -> str:
    return f'<span class="state state-{e(state)}">{e(state)}</span>'


def _values_cell(values: dict[str, Any], limit: int | None = SHOWN_VALUES) -> str:
    items = list(values.items())
    shown = items if limit is None else items[:limit]
    text = ", ".join(f"{e(k)} {_fmt(v['value'])} {e(v['unit'] or '')}".strip() for k, v in shown)
    if limit is not None and len(items) > limit:
        text += f", … (+{len(items) - limit})"
    return text or '<span class="muted">no values yet</span>'


def device_rows(devices: list[dict[str, Any]]) -> str:
    """Table rows of the device list (the script rebuilds them from /api/devices)."""
    rows = []
    for d in devices:
        values = d.get("values") or {}
        ages = [v["age"] for v in values.values()]
        rows.append(
            f'<tr data-device="{e(d["id"])}"><td><a href="/devices/{e(d["id"])}">{e(d["id"])}</a>'
            f"</td><td>{e(d['driver'])}</td><td>{_state(d['state'])}</td>"
            f'<td class="values">{_values_cell(values)}</td>'
            f'<td class="num">{_fmt(min(ages) if ages else None)}</td>'
            f"<td>{e(d['last_error'] or '')}</td></tr>"
        )
    return "".join(rows)


DEVICE_TABLE = (
    '<table id="devices"><thead><tr><th>device</th><th>driver</th><th>state</th><th>last values'
    "</th><th>age (s)</th><th>last error</th></tr></thead><tbody>{rows}</tbody></table>"
)


def _cards(status: dict[str, Any]) -> str:
    lic = status.get("licence") or {}
    tier = status.get("tier") or {}
    outbox = status.get("outbox") or {}
    uplink = status.get("uplink") or {}
    states = Counter(d["state"] for d in status["devices"])
    cards = [
        ("gateway", "Gateway", status.get("gateway") or "-"),
        ("uplink", "Uplink", "connected" if uplink.get("connected") else "disconnected"),
        ("outbox", "Outbox depth", _fmt(outbox.get("depth"))),
        ("outbox-age", "Oldest record (s)", _fmt(outbox.get("oldest_age"))),
        ("tier", "Account tier", f"{tier.get('account_tier', '-')} ({tier.get('interval')} s)"),
        ("licence", "Licence used / total", f"{lic.get('used', '-')} / {lic.get('total', '-')}"),
        (
            "states",
            "Devices by state",
            ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none",
        ),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="label">{label}</div>'
            f'<div class="value" id="card-{key}">{e(str(value))}</div></div>'
            for key, label, value in cards
        )
        + "</div>"
    )


@routes.get("/")
async def dashboard(request: web.Request) -> web.Response:
    """Gateway, uplink, outbox, tier, licence use, devices by state, the live device list."""
    backend = ctx.backend_of(request)
    code = (await asyncio.to_thread(backend.licences.show))["install_code"]
    # Built after the await: concurrent visitors never hold a status document each.
    status = backend.status(values=True)
    body = (
        _cards(status)
        + f'<p class="muted">install code <code id="install-code">{e(code)}</code></p>'
        + "<h2>Devices</h2>"
        + DEVICE_TABLE.format(rows=device_rows(status["devices"]))
    )
    return page(request, "dashboard", "Dashboard", body, gateway=status.get("gateway") or "")


@routes.get("/devices")
async def devices(request: web.Request) -> web.Response:
    """Every device with state, last values and age, last error."""
    status = ctx.backend_of(request).status(values=True)
    body = DEVICE_TABLE.format(rows=device_rows(status["devices"]))
    return page(request, "devices", "Devices", body, gateway=status.get("gateway") or "")


def _device_page(
    request: web.Request, dev: dict[str, Any], message: str = "", error: bool = False
) -> web.Response:
    values = dev.get("values") or {}
    rows = "".join(
        f'<tr data-quantity="{e(k)}"><td>{e(k)}</td><td class="num">{_fmt(v["value"])}</td>'
        f'<td>{e(v["unit"] or "")}</td><td class="num">{_fmt(v["age"])}</td></tr>'
        for k, v in values.items()
    )
    body = (
        f"<p>driver {e(dev['driver'])}, connection {e(dev['connection'])}, state "
        f'<span id="device-state">{_state(dev["state"])}</span>, cloud licence '
        f'{e(dev["cloud_licence"])}, last error <span id="device-error">'
        f"{e(dev['last_error'] or '-')}</span></p>"
        + _form(
            request,
            f"/devices/{dev['id']}/reconnect",
            '<button type="submit" id="reconnect">Reconnect now</button>',
        )
        + '<h2>Last hour</h2><label>quantity <select id="chart-quantity"></select></label>'
        '<div id="chart"></div>'
        + '<h2>Values</h2><table id="values"><thead><tr><th>quantity</th><th>value</th>'
        f"<th>unit</th><th>age (s)</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return page(
        request,
        "device",
        dev["id"],
        body,
        message=message,
        error=error,
        data={"device": dev["id"]},
    )


@routes.get("/devices/{device}")
async def device(request: web.Request) -> web.Response:
    """One device: state, values, a chart of the last hour, a reconnect button."""
    return _device_page(request, api._device(request))


@routes.post("/devices/{device}/reconnect")
async def reconnect(request: web.Request) -> web.Response:
    """The reconnect button."""
    backend = ctx.backend_of(request)
    dev = api._device(request)
    try:
        connection = await backend.reconnect(dev["id"])
    except EdgedError as exc:
        return _device_page(request, dev, str(exc), error=True)
    backend.events.add("reconnect", {"device": dev["id"], "connection": connection})
    return _device_page(request, dev, f"reconnecting connection {connection}")


async def _licences_page(
    request: web.Request,
    message: str = "",
    error: bool = False,
    receipt: str | None = None,
    status: int = 200,
) -> web.Response:
    info = await asyncio.to_thread(ctx.backend_of(request).licences.show)
    rows = "".join(
        f'<tr data-licence="{e(lic["id"])}"><td>{e(lic["id"])}</td><td>{e(lic["kind"] or "?")}'
        f'</td><td class="num">{_fmt(lic["capacity"])}</td><td>{e(lic["status"])}</td>'
        f"<td>{e(lic['until'] or lic['version'] or '-')}</td><td>{e(lic['customer'] or '?')}</td>"
        f"<td>{e(lic['reason'])}</td><td>"
        + (
            _form(
                request,
                "/licences/release",
                f'<input type="hidden" name="licence" value="{e(lic["id"])}">'
                '<button type="submit" class="release">Release</button>',
            )
            if lic["status"] == "valid"
            else ""
        )
        + "</td></tr>"
        for lic in info["licences"]
    )
    table = (
        '<table id="licences"><thead><tr><th>id</th><th>kind</th><th>capacity</th><th>status</th>'
        "<th>until</th><th>customer</th><th>reason</th><th></th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if info["licences"]
        else "<p>no licences installed</p>"
    )
    m = info["maintenance"]
    maintenance = (
        "none"
        if m["until"] is None
        else (f"ended {m['until']}" if m["ended"] else f"until {m['until']}")
    )
    if m["warning"] and not m["ended"]:
        maintenance += f" (ends in {m['days_left']} days)"
    rel = info["release"]
    unlicensed = ", ".join(info["unlicensed"]) or "none"
    summary = (
        f'<p>install code <code id="install-code">{e(info["install_code"])}</code>, directory '
        f"<code>{e(info['directory'])}</code></p>"
        f"<p>capacity {info['capacity']} devices, gateway included; devices "
        f'<strong id="licence-use">{info["used"]} / {info["total"]}</strong> used; '
        f'unlicensed: <span id="unlicensed">{e(unlicensed)}</span></p>'
        f"<p>maintenance {e(maintenance)}; this release {e(rel['version'])} ({e(rel['kind'])}, "
        f"{e(rel['date'])}): {'covered' if rel['covered'] else 'not covered'} "
        f'<span class="muted">({e(rel["reason"])})</span></p>'
    )
    upload = "<h2>Activate a licence file</h2>" + _form(
        request,
        "/licences/activate",
        '<input type="file" name="file" id="licence-file" required> '
        '<button type="submit" id="activate">Activate</button>',
        multipart=True,
    )
    shown = ""
    if receipt is not None:
        shown = (
            "<h2>Release receipt</h2><p>Send this receipt to your licence administrator:</p>"
            f'<textarea class="receipt" id="receipt" readonly>{e(receipt)}</textarea>'
        )
    body = summary + shown + "<h2>Installed licences</h2>" + table + upload
    return page(request, "licences", "Licences", body, message=message, error=error, status=status)


@routes.get("/licences")
async def licences(request: web.Request) -> web.Response:
    """The licence table, capacity, maintenance, upload and release."""
    return await _licences_page(request)


@routes.post("/licences/activate")
async def activate(request: web.Request) -> web.Response:
    """Upload and activate a licence file."""
    try:
        lic = await api.activate_licence(request)
    except (LicenceError, ValueError) as exc:
        return await _licences_page(request, f"refused: {exc}", error=True, status=422)
    return await _licences_page(
        request, f"activated {lic['id']} ({lic['kind']}, capacity {lic['capacity']})"
    )


@routes.post("/licences/release")
async def release(request: web.Request) -> web.Response:
    """Release a licence and show the receipt for copying."""
    form = await request.post()
    lid = form.get("licence")
    if not isinstance(lid, str) or not lid:
        return await _licences_page(request, "no licence given", error=True, status=400)
    try:
        receipt = await api.release_licence(request, lid)
    except LicenceError as exc:
        return await _licences_page(request, str(exc), error=True, status=422)
    return await _licences_page(request, f"released {lid}", receipt=receipt)


def _scan_page(
    request: web.Request, job_id: str = "", message: str = "", error: bool = False
) -> web.Response:
    jobs = ctx.backend_of(request).scans
    buses = jobs.scannable()
    if not buses:
        form = "<p>no M-Bus connection is configured</p>"
    else:
        options = "".join(f'<option value="{e(b)}">{e(b)}</option>' for b in buses)
        form = _form(
            request,
            "/scan",
            f'<label>bus <select name="connection" id="scan-bus">{options}</select></label> '
            '<label>first <input type="number" name="first" id="scan-first" value="0" min="0" '
            'max="250"></label> <label>last <input type="number" name="last" id="scan-last" '
            'value="250" min="0" max="250"></label> '
            '<button type="submit" id="scan-start">Scan</button>',
        )
    job = jobs.get(job_id) if job_id else None
    progress = ""
    if job is not None:
        found = "".join(_found_row(f) for f in job.found)
        progress = (
            f'<h2>Scan of {e(job.connection)}</h2><p><progress id="scan-progress" '
            f'max="{job.total}" value="{job.done}"></progress> <span id="scan-state">'
            f"{e(job.state)} {job.done}/{job.total}</span></p>"
            + _form(
                request,
                "/scan/stop",
                f'<input type="hidden" name="job" value="{e(job.id)}">'
                '<button type="submit" id="scan-stop"'
                + ("" if job.state == "running" else " disabled")
                + ">Stop the scan</button>",
            )
            + '<table id="found"><thead><tr><th>address</th><th>secondary</th><th>manufacturer'
            f"</th><th>medium</th><th>note</th></tr></thead><tbody>{found}</tbody></table>"
        )
    note = "Scanning pauses the polling of that bus until the scan ends."
    body = f'<p class="muted">{note}</p>' + form + progress
    return page(
        request,
        "scan",
        "M-Bus scan",
        body,
        message=message,
        error=error,
        data={"job": job.id} if job else None,
    )


def _found_row(found: dict[str, Any]) -> str:
    return (
        f"<tr><td>{e(found['address'])}</td><td>{e(found.get('secondary', '-'))}</td>"
        f"<td>{e(found.get('manufacturer', '-'))}</td><td>{e(found.get('medium', '-'))}</td>"
        f"<td>{e(found.get('error', ''))}</td></tr>"
    )


@routes.get("/scan")
async def scan(request: web.Request) -> web.Response:
    """Start a scan of a configured bus; with ``?job=`` its progress and finds."""
    return _scan_page(request, request.query.get("job", ""))


@routes.post("/scan")
async def start_scan(request: web.Request) -> web.Response:
    """Start a scan (the form) and show its page."""
    form = await request.post()
    try:
        body = {
            "connection": form.get("connection"),
            "first": int(str(form.get("first", "0"))),
            "last": int(str(form.get("last", "250"))),
        }
        job = api.start_scan(request, body)
    except (ValueError, EdgedError) as exc:
        return _scan_page(request, message=str(exc), error=True)
    return web.Response(status=303, headers={"Location": f"/scan?job={job['id']}"})


@routes.post("/scan/stop")
async def stop_scan(request: web.Request) -> web.Response:
    """The stop button of a running scan."""
    form = await request.post()
    job_id = str(form.get("job", ""))
    backend = ctx.backend_of(request)
    try:
        job = await backend.scans.stop(job_id)
    except EdgedError as exc:
        return _scan_page(request, job_id, str(exc), error=True)
    backend.events.add("scan_stopped", {"connection": job.connection, "done": job.done})
    return _scan_page(request, job_id, f"scan of {job.connection} stopped")


@routes.get("/events")
async def events(request: web.Request) -> web.Response:
    """Licence, maintenance and console events."""
    rows = "".join(
        f"<tr><td>{e(ev['time'])}</td><td>{e(ev['kind'])}</td>"
        f"<td><code>{e(json.dumps(ev['details'], sort_keys=True))}</code></td></tr>"
        for ev in ctx.backend_of(request).events.recent()
    )
    body = (
        '<table id="events"><thead><tr><th>time</th><th>event</th><th>details</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
        if rows
        else "<p>no events since the start</p>"
    )
    return page(request, "events", "Events", body)


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    """The password form."""
    body = LOGIN.substitute(csrf=e(_csrf(request)))
    return page(request, "login", "Log in", body)


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    """Check the password; a new authenticated session on success."""
    auth = request.app[ctx.AUTH]
    form = await request.post()
    password = form.get("password")
    if not isinstance(password, str) or not await auth.check_password(password):
        request.app[ctx.METRICS].count("web_login_failed", "web")
        await asyncio.sleep(0.5)  # slows guessing without holding anything
        body = LOGIN.substitute(csrf=e(_csrf(request)))
        return page(
            request, "login", "Log in", body, message="wrong password", error=True, status=401
        )
    old = ctx.session_of(request)
    if old is not None:
        auth.drop(old.id)
    request[ctx.NEW_SESSION] = request[ctx.SESSION] = auth.new_session(authenticated=True)
    return web.Response(status=303, headers={"Location": "/"})


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    """Forget the session."""
    s = ctx.session_of(request)
    if s is not None:
        request.app[ctx.AUTH].drop(s.id)
    return web.Response(status=303, headers={"Location": "/login"})


def add_routes(router: web.UrlDispatcher) -> None:
    """Mount the pages."""
    router.add_routes(routes)
