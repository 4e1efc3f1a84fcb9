"""Outbox limits follow from the outage the site must ride out (edged/outbox_sizing.py)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from edged import payload
from edged.outbox_sizing import (
    MAX_MB,
    MIN_MB,
    describe,
    site_rate,
    size_for,
    typical_record_bytes,
)
from tests.test_config import BASE, write

MB = 1024 * 1024


def test_a_fifty_meter_site_gets_a_day_of_records() -> None:
    rate = site_rate([60.0] * 50)  # Limited: one record per minute per meter
    size = size_for(rate=rate, record_bytes=500, outage_hours=24)
    assert size.derived
    assert size.max_records >= 50 * 60 * 24
    assert size.lasts_seconds >= 24 * 3600
    line, warning = describe(size, 24)
    assert warning is None and "keeps" in line


def test_the_byte_limit_is_clamped_and_says_so() -> None:
    busy = size_for(rate=site_rate([1.0] * 2000), record_bytes=500, outage_hours=24)
    assert busy.max_bytes == MAX_MB * MB
    assert busy.lasts_seconds < 24 * 3600
    _, warning = describe(busy, 24)
    assert warning is not None and "max_mb = " in warning
    idle = size_for(rate=site_rate([900.0]), record_bytes=500, outage_hours=24)
    assert idle.max_bytes == MIN_MB * MB


def test_explicit_limits_win() -> None:
    size = size_for(rate=10.0, record_bytes=500, max_mb=8, max_records=100)
    assert (size.max_bytes, size.max_records, size.derived) == (8 * MB, 100, False)
    assert math.isclose(size.lasts_seconds, 10.0)


def test_idle_site_lasts_forever() -> None:
    assert size_for(rate=0.0, record_bytes=500).lasts_seconds == math.inf


def test_typical_record_is_measured_with_the_encoder() -> None:
    assert typical_record_bytes(payload.encode) > 8 * 5  # eight values, some bytes each
    assert typical_record_bytes(lambda r: b"x") < typical_record_bytes(payload.encode)


def test_check_config_says_how_long_the_outbox_lasts(tmp_path: Path) -> None:
    def run(text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edged.cli", "check-config", "-c", str(write(tmp_path, text))],
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = run(BASE)
    assert ok.returncode == 0, ok.stderr
    assert "outbox:" in ok.stdout and "of uplink outage" in ok.stdout
    small = run(BASE + "\n[outbox]\nmax_mb = 1\nmax_records = 50\n")
    assert small.returncode == 0, small.stderr
    assert "keeps only" in small.stderr and "outbox.max_mb" in small.stderr
