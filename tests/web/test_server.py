"""The server's own life: a port it cannot bind leaves the daemon running, with a log line."""

from __future__ import annotations

import logging
import socket

import pytest

from edged.metrics import Metrics
from edged.web.server import WebServer


async def test_a_taken_port_is_logged_and_serve_returns(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = WebServer(Metrics())
        with caplog.at_level(logging.ERROR, logger="edged.web"):
            await server.serve("127.0.0.1", port)  # returns instead of raising
    assert server.port is None
    assert "web server unavailable" in caplog.text and str(port) in caplog.text
