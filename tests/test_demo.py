"""`make demo` shows readings from the simulated devices at the local broker within 10 s."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_shows_readings_within_ten_seconds() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "edged.demo", "--duration", "12"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    readings = [
        (float(m.group(1)), m.group(2))
        for m in re.finditer(r"^\+\s*([\d.]+)s (\S+)\s+seq=\d+", res.stdout, re.M)
    ]
    assert readings, res.stdout + res.stderr
    devices = {dev for _, dev in readings}
    assert {"grid", "pv", "heat", "charger"} <= devices, devices
    first = {dev: min(t for t, d in readings if d == dev) for dev in devices}
    assert all(t <= 10.0 for t in first.values()), first
