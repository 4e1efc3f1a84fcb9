"""Helpers to run the real daemon and simulators as processes in end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from tests.licences import grant_capacity


class Proc:
    """A child process whose combined output goes to a log file we can search."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.log = log
        self.args = args
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=full_env)

    def text(self) -> str:
        """Everything the process printed so far."""
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str | Callable[[str], bool], timeout: float = 20.0) -> None:
        """Wait until the output contains needle (or the predicate is true)."""
        deadline = time.monotonic() + timeout
        pred = needle if callable(needle) else (lambda t: needle in t)
        while time.monotonic() < deadline:
            if pred(self.text()):
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.args[:4]} exited {self.proc.returncode}:\n{self.text()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {needle!r} in:\n{self.text()[-3000:]}")

    def signal(self, sig: int) -> None:
        """Send a signal."""
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# The checkout's root: the launcher below (tools/licensing/trusting.py) lives there.
ROOT = Path(__file__).resolve().parent.parent
# Environment for edged child processes: the launcher must be importable whatever the cwd.
# (No environment variable makes edged trust the TEST key; the launcher does it in code.)
TRUST = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def edged(*args: str) -> list[str]:
    """Command line of the edged CLI in this interpreter, trusting the TEST licence key.

    It runs through the checkout's launcher ``tools.licensing.trusting``, which hands the
    test key to the licence store in code; the installed ``edged`` never trusts it.
    """
    return [sys.executable, "-m", "tools.licensing.trusting", *args]


def modbus_sim_cmd(port: int, *, meters: int = 2, profile: str = "eastron_sdm630") -> list[str]:
    """`edged sim modbus` serving ``meters`` units (ids 1..meters) of a profile on one port."""
    return edged(
        "sim",
        "modbus",
        "--profile",
        profile,
        "--count",
        str(meters),
        "--units-per-port",
        str(meters),
        "--port",
        str(port),
    )


def modbus_body(port: int, count: int = 2, poll: float = 0.5) -> str:
    """A Modbus TCP connection ``panel`` to a simulator with ``count`` SDM630 meters m1..mN."""
    devices = "".join(
        f"""
[[devices]]
id = "m{i + 1}"
connection = "panel"
address = {i + 1}
profile = "eastron_sdm630"
poll_interval = {poll}
cloud_licence = "professional"
"""
        for i in range(count)
    )
    return (
        f"""
[connections.panel]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = {port}
timeout = 0.5
"""
        + devices
    )


def write_config(
    tmp: Path,
    body: str,
    *,
    mqtt_port: int,
    capacity: int | None,
    gateway: str = "gw-test",
) -> Path:
    """A config file with gateway, mqtt, control socket and licence dir; body adds the rest.

    ``capacity`` is the licence the test grants: a capacity licence of that many devices
    (gateway included) in the licence directory, or None for no licence at all.
    """
    data = tmp / "data"
    lic = tmp / "licences"
    cfg = tmp / "edged.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [gateway]
        id = "{gateway}"
        data_dir = "{data}"

        [mqtt]
        host = "127.0.0.1"
        port = {mqtt_port}
        backoff_initial = 0.2
        backoff_max = 1.0

        [control]
        socket = "{tmp}/control.sock"

        [metrics]
        enabled = false

        [licensing]
        directory = "{lic}"

        [logging]
        level = "info"
        """)
        + textwrap.dedent(body)
    )
    if capacity:
        grant_capacity(lic, capacity)
    return cfg


def start_daemon(cfg: Path, log: Path, env: Mapping[str, str] | None = None) -> Proc:
    """`edged run -c cfg` as a child process trusting the TEST key; its output goes to log."""
    return Proc(edged("run", "-c", str(cfg)), log, env={**TRUST, **(env or {})})


async def run_edged(*args: str) -> tuple[int, str, str]:
    """Run an `edged` command without blocking the loop; returns code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *edged(*args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **TRUST},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
