"""The one HTTP server of edged: console pages, the REST API and ``/metrics`` (aiohttp).

Security lives here, in middlewares every route passes: response headers (CSP without
inline script, no framing, no sniffing, no referrer), the session and its CSRF token
(every change needs it), the password when one is configured, and a count of every
request refused.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from edged.metrics import CONTENT_TYPE, Metrics
from edged.web import api, circuits, pages
from edged.web.auth import COOKIE, Auth, Session
from edged.web.backend import Backend
from edged.web.context import (
    AUTH,
    BACKEND,
    LIVE_CACHE,
    MAX_BODY,
    METRICS,
    NEW_SESSION,
    SESSION,
    TLS,
)
from edged.web.settings import WebConfig

log = logging.getLogger("edged.web")

STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _public(path: str) -> bool:
    return path in ("/login", "/api/session", "/favicon.ico") or path.startswith("/static/")


def _same_origin(request: web.Request) -> bool:
    """A browser's Origin (sent with every cross-site POST) must be this server."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


@web.middleware
async def _count_rejected(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            _rejected(request, exc.status)
        raise
    if response.status >= 400:
        _rejected(request, response.status)
    return response


def _rejected(request: web.Request, status: int) -> None:
    request.app[METRICS].count("web_rejected", "web")
    log.debug("request refused method=%s path=%s status=%d", request.method, request.path, status)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Session, password and CSRF checks in front of every route."""
    unrouted = request.match_info.http_exception
    if unrouted is not None:
        raise unrouted  # 404 / 405 before anything else is looked at
    auth = request.app[AUTH]
    session = auth.session(request.cookies.get(COOKIE))
    if session is not None:
        request[SESSION] = session
    path = request.path
    api_call = path.startswith("/api/")
    if request.method not in SAFE_METHODS:
        token = request.headers.get("X-CSRF-Token")
        if token is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            form = await request.post()
            field = form.get("csrf")
            token = field if isinstance(field, str) else None
        if not _same_origin(request) or not auth.csrf_ok(session, token):
            raise _refuse(api_call, 403, "missing or wrong CSRF token (reload the page)")
    if path == "/metrics":
        if not auth.allowed(session) and not await auth.basic_ok(
            request.headers.get("Authorization")
        ):
            raise web.HTTPUnauthorized(
                text="password required\n", headers={"WWW-Authenticate": 'Basic realm="edged"'}
            )
    elif not _public(path) and not auth.allowed(session):
        basic = request.method in SAFE_METHODS and await auth.basic_ok(
            request.headers.get("Authorization")
        )
        if not basic:
            if api_call:
                raise _refuse(True, 401, "log in first (POST /login) or use HTTP Basic auth")
            raise web.HTTPSeeOther("/login")
    if session is None and request.method == "GET" and (path == "/api/session" or _page(path)):
        # Pages (and the session call of scripts) get a session at once, so their changes
        # can carry its token.
        session = auth.new_session()
        request[SESSION] = session
        request[NEW_SESSION] = session
    response = await handler(request)
    fresh = request.get(NEW_SESSION)
    if fresh is not None:
        _set_cookie(request, response, fresh)
    return response


def _page(path: str) -> bool:
    return not path.startswith(("/api/", "/static/")) and path != "/metrics"


def _refuse(api_call: bool, status: int, message: str) -> web.HTTPException:
    cls = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden}[status]
    if api_call:
        return cls(text=api.dumps({"error": message}), content_type="application/json")
    return cls(text=message + "\n")


def _set_cookie(request: web.Request, response: web.StreamResponse, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        session.id,
        httponly=True,
        samesite="Strict",
        secure=request.app[TLS],
        path="/",
    )


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "max-age=3600"


async def _metrics(request: web.Request) -> web.Response:
    # Rendering walks every series; keep it off the loop.
    body = await asyncio.to_thread(request.app[METRICS].render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def build_app(
    metrics: Metrics, config: WebConfig | None = None, backend: Backend | None = None
) -> web.Application:
    """The aiohttp application: ``/metrics`` always, the console when a backend is given."""
    app = web.Application(
        middlewares=[_count_rejected, _guard], client_max_size=MAX_BODY, handler_args=None
    )
    app[METRICS] = metrics
    app[AUTH] = Auth(config.password_hash if config else None)
    app[TLS] = bool(config and config.tls)
    app[LIVE_CACHE] = {}
    app.on_response_prepare.append(_headers)
    app.router.add_get("/metrics", _metrics)
    if backend is not None:
        app[BACKEND] = backend
        api.add_routes(app.router)
        pages.add_routes(app.router)
        circuits.add_routes(app.router)
        app.router.add_static("/static/", STATIC, append_version=False)
    else:
        app.router.add_get("/", _metrics_only)
    return app


async def _metrics_only(request: web.Request) -> web.Response:
    return web.Response(text="edged metrics: /metrics\n")


class WebServer:
    """The running HTTP server (``port`` is the bound port once started)."""

    def __init__(
        self, metrics: Metrics, config: WebConfig | None = None, backend: Backend | None = None
    ) -> None:
        self.config = config
        self.backend = backend
        self.app = build_app(metrics, config, backend)
        self._runner: web.AppRunner | None = None
        self._history: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Listen (``host``/``port`` override the config; port 0: any free one) and return."""
        cfg = self.config
        host = host if host is not None else (cfg.address if cfg else "127.0.0.1")
        port = port if port is not None else (cfg.port if cfg else 9108)
        context = None
        if cfg is not None and cfg.tls_cert is not None and cfg.tls_key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, ssl_context=context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        if self.backend is not None:
            self._history = asyncio.create_task(self.backend.history.run(), name="web-history")
        log.info(
            "web server listening address=%s port=%s tls=%s password=%s",
            host,
            self.port,
            "yes" if context else "no",
            "yes" if cfg is not None and cfg.password_hash else "no",
        )

    async def serve(self, host: str | None = None, port: int | None = None) -> None:
        """Serve until cancelled (run it as a task); a port that cannot be bound is logged."""
        try:
            await self.start(host, port)
        except OSError as exc:
            # The daemon's job is the data path: it keeps running without its console.
            log.error("web server unavailable error=%s", exc)
            return
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening, end running scans and the history sampler."""
        if self._history is not None:
            self._history.cancel()
            await asyncio.gather(self._history, return_exceptions=True)
            self._history = None
        if self.backend is not None:
            await self.backend.scans.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
