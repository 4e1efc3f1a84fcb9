"""A real daemon with the console on, Modbus meters behind it, for the web tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port, wait_port
from tests.daemon import Proc, modbus_sim_cmd, start_daemon, write_config


@dataclass
class Console:
    """The running daemon and where its console is."""

    url: str
    port: int
    cfg: Path
    daemon: Proc
    licences: Path


@contextmanager
def modbus_sim(tmp: Path, meters: int = 3) -> Iterator[int]:
    """`edged sim modbus` with ``meters`` units on a free port."""
    port = free_port()
    sim = Proc(modbus_sim_cmd(port, meters=meters), tmp / "modbus-sim.log")
    try:
        wait_port(port, timeout=20)
        yield port
    finally:
        sim.stop()


@contextmanager
def console(
    tmp: Path, body: str, *, mqtt_port: int, capacity: int | None, web: str = ""
) -> Iterator[Console]:
    """`edged run` with ``[web]`` on a free loopback port (plus the ``web`` keys given)."""
    port = free_port()
    cfg = write_config(tmp, body, mqtt_port=mqtt_port, capacity=capacity)
    cfg.write_text(cfg.read_text() + f"\n[web]\nenabled = true\nport = {port}\n{web}\n")
    daemon = start_daemon(cfg, tmp / "daemon.log")
    try:
        daemon.wait_for("web server listening", timeout=30)
        yield Console(f"http://127.0.0.1:{port}", port, cfg, daemon, tmp / "licences")
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]


def poll(predicate, timeout: float = 30.0, every: float = 0.3):  # type: ignore[no-untyped-def]
    """Call ``predicate`` until it returns something true; that value (else AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")
