"""Deciding on a charger's WebSocket upgrade request: who it is, its password, its protocol.

Everything here runs before the upgrade, so a refused charger gets a plain HTTP
status (404 unknown, 401 bad credentials, 400 no common subprotocol).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Sequence
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import NegotiationError
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from drivers.ocpp.passwords import verify_password
from drivers.ocpp.settings import SUBPROTOCOLS, ChargerSettings, OcppSettings

log = logging.getLogger("edged.ocpp")


def charge_point_id(path: str) -> str:
    """The charge point id: the last segment of the request path, URL-decoded."""
    segment = urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1]
    return unquote(segment)


def basic_credentials(headers: Headers) -> tuple[str, str] | None:
    """User and password of an ``Authorization: Basic`` header, or None."""
    value = headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class Gate:
    """The ``process_request`` and ``select_subprotocol`` hooks of the server."""

    def __init__(self, settings: OcppSettings):
        # Replaced as a whole when the charger list changes at reload (OcppDriver.update);
        # a hook never awaits between its reads, so it sees one list, old or new.
        self.settings = settings

    def charger(self, path: str) -> ChargerSettings | None:
        """The configured charger a request path names."""
        return self.settings.chargers.get(charge_point_id(path))

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """Refuse unknown chargers (404) and bad credentials (401) before the upgrade."""
        charger = self.charger(request.path)
        remote = connection.remote_address
        if charger is None:
            log.warning("unknown charger refused path=%s remote=%s", request.path[:100], remote)
            return connection.respond(HTTPStatus.NOT_FOUND, "Unknown charge point\n")
        if self.settings.auth == "basic" and not await self._password_ok(charger, request):
            log.warning(
                "charger refused: bad credentials device=%s remote=%s", charger.device_id, remote
            )
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="OCPP", charset="UTF-8"'
            return response
        return None

    async def _password_ok(self, charger: ChargerSettings, request: Request) -> bool:
        creds = basic_credentials(request.headers)
        if creds is None or charger.password_hash is None:
            return False
        user, password = creds
        if user != charger.charge_point_id or len(password) > 128:
            return False
        # scrypt is deliberately slow: keep it off the event loop.
        return await asyncio.to_thread(verify_password, password, charger.password_hash)

    def select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        """The preferred OCPP version both sides allow; none in common refuses the upgrade."""
        request = connection.request
        charger = self.charger(request.path) if request is not None else None
        allowed = charger.versions if charger is not None else ()
        for version, subprotocol in SUBPROTOCOLS.items():
            if version in allowed and subprotocol in offered:
                return Subprotocol(subprotocol)
        log.warning(
            "charger refused: no common OCPP version offered=%s allowed=%s",
            ",".join(offered)[:100],
            ",".join(allowed),
        )
        raise NegotiationError("no supported OCPP subprotocol offered")


def version_of(subprotocol: str | None) -> str:
    """The OCPP version of a negotiated subprotocol."""
    for version, name in SUBPROTOCOLS.items():
        if name == subprotocol:
            return version
    raise ValueError(f"not an OCPP subprotocol: {subprotocol!r}")
