"""Sessions, the console password and CSRF tokens.

Every visitor gets a session (a random id in an HttpOnly, SameSite=Strict cookie) with
its own CSRF token; every change must carry that token. With a ``password_hash``
configured a session must also have logged in: pages send it to the login form, the
REST API answers 401. ``/metrics`` and REST reads accept HTTP Basic auth with the same
password, for scrapers and scripts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from edged.passwords import verify_password

COOKIE = "edged_session"
IDLE = 12 * 3600.0
"""Seconds a session lives without a request."""
MAX_SESSIONS = 1000
"""Oldest sessions are forgotten beyond this many (a browser keeps its own one)."""


@dataclass
class Session:
    """One browser's session."""

    id: str
    csrf: str
    authenticated: bool = False
    seen: float = field(default_factory=time.monotonic)


class Auth:
    """The session table and the password check."""

    def __init__(self, password_hash: str | None) -> None:
        self.password_hash = password_hash
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        # One password check at a time: scrypt is deliberately expensive.
        self._check = asyncio.Lock()

    @property
    def required(self) -> bool:
        """True when a password is configured."""
        return self.password_hash is not None

    def session(self, sid: str | None) -> Session | None:
        """The live session of a cookie value, or None."""
        if not sid:
            return None
        s = self._sessions.get(sid)
        now = time.monotonic()
        if s is None or now - s.seen > IDLE:
            self._sessions.pop(sid, None)
            return None
        s.seen = now
        self._sessions.move_to_end(sid)
        return s

    def new_session(self, authenticated: bool = False) -> Session:
        """A fresh session (new id and token)."""
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), authenticated)
        self._sessions[s.id] = s
        if len(self._sessions) > MAX_SESSIONS:
            # Anyone can open sessions; a flood of them must not log the installer out.
            victim = next(
                (k for k, v in self._sessions.items() if not v.authenticated),
                next(iter(self._sessions)),
            )
            del self._sessions[victim]
        return s

    def drop(self, sid: str) -> None:
        """Forget a session (logout)."""
        self._sessions.pop(sid, None)

    def allowed(self, s: Session | None) -> bool:
        """True when this session may see and change things."""
        return not self.required or (s is not None and s.authenticated)

    @staticmethod
    def csrf_ok(s: Session | None, token: str | None) -> bool:
        """True when the token is the session's own."""
        return s is not None and bool(token) and hmac.compare_digest(s.csrf, str(token))

    async def check_password(self, password: str) -> bool:
        """True when the password matches the configured hash (off the event loop)."""
        if self.password_hash is None:
            return True
        async with self._check:
            return await asyncio.to_thread(verify_password, password, self.password_hash)

    async def basic_ok(self, header: str | None) -> bool:
        """True for an ``Authorization: Basic`` header carrying the password (any user)."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        _, sep, password = decoded.partition(":")
        return bool(sep) and await self.check_password(password)
