"""`make demo` shows readings from the simulated devices at the local broker within 10 s."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edged.demo import VAR

pytestmark = pytest.mark.slow


def free_base(count: int = 5) -> int:
    """A port with ``count`` free ports from it (asked of the kernel, then checked)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65535:
            continue
        ok = True
        for port in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise AssertionError("no run of free ports")


def readings_of(stdout: str) -> list[tuple[float, str]]:
    return [
        (float(m.group(1)), m.group(2))
        for m in re.finditer(r"^\+\s*([\d.]+)s (\S+)\s+seq=\d+", stdout, re.M)
    ]


def outbox_depth(var: Path) -> int:
    with sqlite3.connect(var / "outbox.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM records").fetchone()[0])


def test_two_demos_side_by_side_show_readings_and_leave_nothing_behind() -> None:
    first = free_base(10)
    second = first + 5
    demos = [
        subprocess.Popen(
            [sys.executable, "-m", "edged.demo", "--duration", "14", "--base-port", str(base)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for base in (first, second)
    ]
    outputs = [d.communicate(timeout=120)[0] for d in demos]
    for base, demo, out in zip((first, second), demos, outputs, strict=True):
        assert demo.returncode == 0, out
        readings = readings_of(out)
        devices = {dev for _, dev in readings}
        assert {"grid", "pv", "heat", "charger"} <= devices, out
        firsts = {dev: min(t for t, d in readings if d == dev) for dev in devices}
        assert all(t <= 10.0 for t in firsts.values()), firsts
        var = VAR.with_name(f"demo-{base}")
        log = (var / "logs" / "edged.log").read_text()
        assert "stopped" in log, log[-2000:]
        # The daemon stopped before the broker: what it flushed on the way out was published.
        assert outbox_depth(var) == 0, log[-2000:]
        shutil.rmtree(var)


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    base = free_base()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 4))  # the metrics port, once missed by the check
        holder.listen()
        res = subprocess.run(
            [sys.executable, "-m", "edged.demo", "--duration", "1", "--base-port", str(base)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert res.returncode != 0
    assert f"port {base + 4} on 127.0.0.1 is in use" in res.stderr


def test_ctrl_c_stops_the_daemon_before_the_broker() -> None:
    """A terminal's Ctrl-C hits the whole foreground process group, not only the demo."""
    base = free_base()
    demo = subprocess.Popen(
        [sys.executable, "-m", "edged.demo", "--base-port", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own group, which the test signals like a terminal
    )
    try:
        assert demo.stdout is not None
        seen = 0
        deadline = time.monotonic() + 60
        while seen < 8 and time.monotonic() < deadline:
            line = demo.stdout.readline()
            seen += bool(re.match(r"^\+\s*[\d.]+s \S+\s+seq=", line))
        assert seen >= 8, "no readings from the demo"
        os.killpg(demo.pid, signal.SIGINT)
        out = demo.communicate(timeout=60)[0]
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert demo.returncode == 0, out
    var = VAR.with_name(f"demo-{base}")
    log = (var / "logs" / "edged.log").read_text()
    assert "stopped" in log, log[-2000:]
    assert outbox_depth(var) == 0, log[-2000:]
    shutil.rmtree(var)
