"""Sessions and CSRF tokens of the console."""

from __future__ import annotations

import base64

from edged.passwords import hash_password
from edged.web import auth
from edged.web.auth import Auth


async def test_tokens_belong_to_their_session_and_logins_survive_a_flood() -> None:
    a = Auth(hash_password("long enough password"))
    installer = a.new_session(authenticated=True)
    other = a.new_session()
    assert a.csrf_ok(installer, installer.csrf)
    assert not a.csrf_ok(installer, other.csrf)
    assert not a.csrf_ok(installer, "")
    assert not a.csrf_ok(None, installer.csrf)
    assert a.allowed(installer) and not a.allowed(other) and not a.allowed(None)
    for _ in range(auth.MAX_SESSIONS * 2):
        a.new_session()  # anyone may open sessions, e.g. GET /api/session in a loop
    assert a.session(installer.id) is installer
    assert a.session(other.id) is None  # unauthenticated ones are dropped first
    assert await a.check_password("long enough password")
    assert not await a.check_password("long enough passwort")
    basic = "Basic " + base64.b64encode(b"me:long enough password").decode()
    assert await a.basic_ok(basic)
    assert not await a.basic_ok("Basic !!!not-base64")
    assert not await a.basic_ok("Bearer x")
    assert await Auth(None).check_password("anything")  # no password configured
