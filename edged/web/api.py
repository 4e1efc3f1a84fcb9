"""The REST API (JSON, documented in docs/web.md): the console's pages use it too.

Reads answer with the same data as ``edged status --json``; changes need the session's
CSRF token in ``X-CSRF-Token`` (and a login when a password is configured).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from edged.errors import EdgedError, LicenceError
from edged.web import context as server

routes = web.RouteTableDef()

FRESH = 1.0
"""Seconds a live answer is reused: browsers poll once a second and meters are read about as
often, while a thousand devices take some 40 ms to render and compress."""


def dumps(doc: Any) -> str:
    """Compact JSON."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def reply(doc: Any, status: int = 200) -> web.Response:
    """A JSON response."""
    return web.Response(text=dumps(doc), status=status, content_type="application/json")


def error(status: int, message: str) -> web.Response:
    """A JSON error ``{"error": …}``."""
    return reply({"error": message}, status)


def live(request: web.Request, key: str, build: Callable[[], Any]) -> web.Response:
    """A JSON answer shared by every client for ``FRESH`` seconds, gzipped when accepted."""
    now = time.monotonic()
    cache = request.app[server.LIVE_CACHE]
    hit = cache.get(key)
    if hit is None or now - hit[0] > FRESH:
        body = dumps(build()).encode()
        hit = (now, body, gzip.compress(body, compresslevel=1))
        cache[key] = hit
    headers = {"Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        body = hit[2]
    else:
        body = hit[1]
    return web.Response(body=body, content_type="application/json", headers=headers)


@routes.get("/api/session")
async def session(request: web.Request) -> web.Response:
    """Whether a password is needed, whether this session has logged in, its CSRF token."""
    auth = request.app[server.AUTH]
    s = server.session_of(request)
    return reply(
        {
            "password_required": auth.required,
            "authenticated": auth.allowed(s),
            "csrf": s.csrf if s is not None else None,
        }
    )


@routes.get("/api/status")
async def status(request: web.Request) -> web.Response:
    """The daemon's status, as ``edged status --json`` prints it."""
    backend = server.backend_of(request)
    return live(request, "status", backend.status)


@routes.get("/api/devices")
async def devices(request: web.Request) -> web.Response:
    """Every device with its state and last values (the live view)."""
    backend = server.backend_of(request)
    return live(request, "devices", lambda: {"devices": backend.status(values=True)["devices"]})


def _device(request: web.Request) -> dict[str, Any]:
    backend = server.backend_of(request)
    dev = request.match_info["device"]
    found: list[dict[str, Any]] = backend.status(device=dev)["devices"]
    if not found:
        raise web.HTTPNotFound(
            text=dumps({"error": f"no device {dev!r}"}), content_type="application/json"
        )
    return found[0]


@routes.get("/api/devices/{device}")
async def device(request: web.Request) -> web.Response:
    """One device with its last values."""
    return reply(_device(request))


@routes.get("/api/devices/{device}/history")
async def history(request: web.Request) -> web.Response:
    """The device's values of the last hour, one point a minute."""
    dev = _device(request)
    points = server.backend_of(request).history.of(dev["id"])
    return reply({"device": dev["id"], "interval": 60, "quantities": points})


@routes.post("/api/devices/{device}/reconnect")
async def reconnect(request: web.Request) -> web.Response:
    """Retry the device's connection now."""
    backend = server.backend_of(request)
    dev = request.match_info["device"]
    try:
        connection = await backend.reconnect(dev)
    except EdgedError as exc:
        return error(409, str(exc))
    backend.events.add("reconnect", {"device": dev, "connection": connection})
    return reply({"device": dev, "connection": connection})


@routes.post("/api/reload")
async def reload(request: web.Request) -> web.Response:
    """Reload the configuration (all or nothing)."""
    backend = server.backend_of(request)
    ok, notes = await backend.reload()
    backend.events.add("reload", {"applied": ok, "notes": notes})
    return reply({"applied": ok, "notes": notes}, 200 if ok else 409)


@routes.get("/api/licences")
async def licences(request: web.Request) -> web.Response:
    """What ``edged license show`` prints, as data."""
    desk = server.backend_of(request).licences
    return reply(await asyncio.to_thread(desk.show))


async def licence_file(request: web.Request) -> bytes | None:
    """The uploaded licence: a multipart/form field ``file``, or the raw body."""
    if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.post()
        upload = form.get("file")
        if isinstance(upload, FileField):
            data: bytes = upload.file.read(server.MAX_BODY + 1)
            return data
        return None
    return await request.read()


async def activate_licence(request: web.Request) -> dict[str, Any]:
    """Activate the uploaded licence file; LicenceError or ValueError say why not."""
    backend = server.backend_of(request)
    data = await licence_file(request)
    if not data:
        raise ValueError("no licence file in the request")
    lic = await asyncio.to_thread(backend.licences.activate, data)
    backend.events.add("licence_activated", lic)
    return lic


@routes.post("/api/licences")
async def activate(request: web.Request) -> web.Response:
    """Verify and install a licence file; the daemon re-admits devices at once."""
    try:
        return reply({"activated": await activate_licence(request)})
    except (LicenceError, ValueError) as exc:
        return error(422, f"refused: {exc}")


async def release_licence(request: web.Request, licence_id: str) -> str:
    """Release a licence and return the receipt."""
    backend = server.backend_of(request)
    receipt = await asyncio.to_thread(backend.licences.release, licence_id)
    backend.events.add("licence_released", {"id": licence_id})
    return receipt


@routes.post("/api/licences/{licence}/release")
async def release(request: web.Request) -> web.Response:
    """Drop a licence; the answer carries the receipt to send to the vendor."""
    lid = request.match_info["licence"]
    try:
        receipt = await release_licence(request, lid)
    except LicenceError as exc:
        return error(422, str(exc))
    return reply({"released": lid, "receipt": receipt})


@routes.get("/api/scans")
async def scans(request: web.Request) -> web.Response:
    """The buses that can be scanned and the recent scans."""
    jobs = server.backend_of(request).scans
    return reply({"buses": jobs.scannable(), "scans": [j.json() for j in jobs.jobs()]})


def start_scan(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    """Start a scan from ``{"connection", "first", "last"}``; ValueError/EdgedError say why not."""
    backend = server.backend_of(request)
    connection = body.get("connection")
    first, last = body.get("first", 0), body.get("last", 250)
    if not isinstance(connection, str):
        raise ValueError("connection: expected the name of a configured bus")
    for name, value in (("first", first), ("last", last)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: expected an integer address")
    if not 0 <= first <= last <= 10_000:
        raise ValueError(f"first/last: expected 0 <= first <= last, got {first}-{last}")
    job = backend.scans.start(connection, first, last)
    backend.events.add("scan", {"connection": connection, "first": first, "last": last})
    return job.json()


@routes.post("/api/scans")
async def scan(request: web.Request) -> web.Response:
    """Start scanning a configured bus; poll the job for progress."""
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        return reply(start_scan(request, body), 202)
    except (ValueError, EdgedError) as exc:  # json.JSONDecodeError is a ValueError
        return error(400 if isinstance(exc, ValueError) else 409, str(exc))


@routes.get("/api/scans/{job}")
async def scan_job(request: web.Request) -> web.Response:
    """One scan: state, progress and the meters found so far."""
    job = server.backend_of(request).scans.get(request.match_info["job"])
    if job is None:
        return error(404, "no such scan")
    return reply(job.json())


@routes.post("/api/scans/{job}/stop")
async def stop_scan(request: web.Request) -> web.Response:
    """Stop a running scan; the bus resumes polling."""
    backend = server.backend_of(request)
    try:
        job = await backend.scans.stop(request.match_info["job"])
    except EdgedError as exc:
        return error(409, str(exc))
    backend.events.add("scan_stopped", {"connection": job.connection, "done": job.done})
    return reply(job.json())


@routes.get("/api/events")
async def events(request: web.Request) -> web.Response:
    """Recent events: licence and maintenance changes, actions taken in the console."""
    return reply({"events": server.backend_of(request).events.recent()})


def add_routes(router: web.UrlDispatcher) -> None:
    """Mount the API."""
    router.add_routes(routes)
