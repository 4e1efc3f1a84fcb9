"""What every handler reads from the application and the request (keys and accessors)."""

from __future__ import annotations

from aiohttp import web

from edged.metrics import Metrics
from edged.web.auth import Auth, Session
from edged.web.backend import Backend

MAX_BODY = 1024 * 1024
"""Largest request body (a licence file is a few kB)."""

METRICS = web.AppKey("metrics", Metrics)
AUTH = web.AppKey("auth", Auth)
BACKEND = web.AppKey("backend", Backend)
TLS = web.AppKey("tls", bool)
LIVE_CACHE = web.AppKey("live_cache", dict[str, tuple[float, bytes, bytes]])
"""Recent live answers: (monotonic time, JSON, gzipped JSON) by endpoint."""
SESSION = web.RequestKey("session", Session)
NEW_SESSION = web.RequestKey("new_session", Session)
"""A session the response must set as the cookie (a first visit, a login)."""


def session_of(request: web.Request) -> Session | None:
    """The request's session (made by the guard middleware)."""
    return request.get(SESSION)


def backend_of(request: web.Request) -> Backend:
    """The daemon behind the console; 404 on a metrics-only server."""
    backend = request.app.get(BACKEND)
    if backend is None:
        raise web.HTTPNotFound(text="not found; try /metrics\n")
    return backend
