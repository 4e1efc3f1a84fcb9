"""Fixtures of the web tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Proc, edged


@pytest.fixture
def mbus_sim(tmp_path: Path) -> Iterator[int]:
    """`edged sim mbus` with 4 meters (primary 1-4) behind a TCP converter at 2400 baud."""
    sim = Proc(
        edged("sim", "mbus", "--tcp-port", "0", "--slaves", "4", "--baud", "2400"),
        tmp_path / "mbus-sim.log",
    )
    try:
        sim.wait_for(lambda t: "primary   4" in t, timeout=20)
        where = re.search(r"at 2400 baud on tcp 127\.0\.0\.1:(\d+)", sim.text())
        assert where, sim.text()
        yield int(where.group(1))
    finally:
        assert sim.stop() == 0


def mbus_body(port: int) -> str:
    """One M-Bus behind a TCP converter with one configured meter (heat-1 at address 1)."""
    return f"""
[connections.plant-room]
driver = "mbus"
transport = "tcp"
host = "127.0.0.1"
port = {port}
baudrate = 2400
timeout = 0.3

[[devices]]
id = "heat-1"
connection = "plant-room"
address = 1
poll_interval = 2
cloud_licence = "professional"
"""
