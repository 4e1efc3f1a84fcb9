"""Maintenance end warnings end to end: real daemon process, mosquitto, the licence CLI.

A maintenance licence (1-year term, signed with the TEST key) ends about five days from
now; with `[licensing] warn_days = [30, 7, 1]` the 7-day warning is due, once, as a log
line and as an event on `edged/<gateway>/events`.
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edged.licensing import RELEASE_VERSION
from edged.licensing.licence import Licence
from tests.conftest import Broker, Collector, subscribe
from tests.daemon import Proc, run_edged, start_daemon, write_config
from tests.licensing.issuing import issue_test_licence, store_trusting_test_key
from tests.licensing.licence_helpers import TEST_KEY

pytestmark = pytest.mark.slow

GW = "edged/gw-test"
DAY = 86400.0


def grant_maintenance(directory: Path, ends_in: float) -> Licence:
    """Activate a 1-year maintenance licence whose term ends ``ends_in`` seconds from now."""
    end = datetime.fromtimestamp(time.time() + ends_in, UTC)
    store = store_trusting_test_key(directory)
    years: int | None = 1
    days: float | None = None
    try:
        # Issued one calendar year before its end, as the vendor's 1-year term computes it.
        issued = end.replace(year=end.year - 1)
    except ValueError:  # the end falls on 29 February: the year before has no such day
        issued, years, days = end - timedelta(days=365), None, 365
    data = issue_test_licence(
        TEST_KEY,
        store.install_code,
        "maintenance",
        issued=issued.timestamp(),
        years=years,
        days=days,
        licence_id="L-E2E-MAINT",
    )
    return store.activate(data)


async def wait_log(daemon: Proc, needle: str, timeout: float = 20.0) -> None:
    """Wait (without blocking the loop) until the daemon's output contains needle."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while needle not in daemon.text():
        if daemon.proc.poll() is not None:
            raise AssertionError(f"daemon exited {daemon.proc.returncode}:\n{daemon.text()}")
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {needle!r} in:\n{daemon.text()}")
        await asyncio.sleep(0.05)


def configure(tmp_path: Path, broker: Broker, maintenance_ends_in: float) -> tuple[Path, Licence]:
    """A device-less config warning 30, 7 and 1 days ahead; capacity and maintenance licences."""
    cfg = write_config(tmp_path, "", mqtt_port=broker.port, capacity=3)
    licences = tmp_path / "licences"
    line = f'directory = "{licences}"'
    text = cfg.read_text()
    assert text.count(line) == 1
    cfg.write_text(text.replace(line, f"{line}\nwarn_days = [30, 7, 1]"))
    lic = grant_maintenance(licences, maintenance_ends_in)
    assert lic.valid_until is not None
    return cfg, lic


def maintenance_events(col: Collector) -> list[dict[str, Any]]:
    return [e for e in col.json(f"{GW}/events") if e.get("kind") == "maintenance"]


def maintenance_lines(daemon: Proc) -> list[str]:
    return [line for line in daemon.text().splitlines() if "maintenance licence" in line]


async def check_upgrade(licence_dir: Path, released: date) -> tuple[int, str, str]:
    """`edged license check-upgrade` for a feature release published on ``released``."""
    return await run_edged(
        "license",
        "check-upgrade",
        "9.0.0",
        "--date",
        released.isoformat(),
        "--kind",
        "feature",
        "--dir",
        str(licence_dir),
    )


async def test_daemon_warns_once_before_maintenance_ends_and_cli_checks_upgrades(
    tmp_path: Path, broker: Broker
) -> None:
    # Five days minus an hour: five days left when rounded up, however slow the start.
    cfg, lic = configure(tmp_path, broker, 5 * DAY - 3600)
    assert lic.valid_until is not None
    end = lic.valid_until
    end_date = datetime.fromtimestamp(end, UTC).date()

    async with subscribe(broker.port, f"{GW}/#") as col:
        daemon = start_daemon(cfg, tmp_path / "daemon.log")
        try:
            await col.wait_for(lambda c: bool(maintenance_events(c)), timeout=20)
            # A reload re-checks the licences at once: the warning already given is not repeated.
            daemon.signal(signal.SIGHUP)
            await wait_log(daemon, "reloaded config")
            await asyncio.sleep(1.0)
            assert daemon.proc.poll() is None
        finally:
            assert daemon.stop() == 0

    (event,) = maintenance_events(col)
    assert event["end"] == end
    assert event["days_left"] == 5
    assert event["ended"] is False
    (line,) = maintenance_lines(daemon)
    assert "WARNING" in line
    assert f"maintenance licence ends soon end={end_date.isoformat()} days_left=5" in line

    # A feature release published before the end is covered; one published after is not.
    code, out, err = await check_upgrade(tmp_path / "licences", end_date - timedelta(days=1))
    assert code == 0, out + err
    assert "covered by maintenance licence L-E2E-MAINT" in out
    code, out, err = await check_upgrade(tmp_path / "licences", end_date + timedelta(days=1))
    assert code == 1, out + err
    assert f"after maintenance ended {end_date.isoformat()}" in err


async def test_no_warning_before_the_first_configured_day(tmp_path: Path, broker: Broker) -> None:
    # 45 days left: the default warn_days (60, 30, 7, 1) would warn, the configured ones not yet.
    cfg, _ = configure(tmp_path, broker, 45 * DAY)
    async with subscribe(broker.port, f"{GW}/#") as col:
        daemon = start_daemon(cfg, tmp_path / "daemon.log")
        try:
            await wait_log(daemon, "mqtt connected")
            await col.wait_for(
                lambda c: any(t == f"{GW}/status" and p == b"online" for t, p, _ in c.messages)
            )
            daemon.signal(signal.SIGHUP)
            await wait_log(daemon, "reloaded config")
            await asyncio.sleep(1.0)
        finally:
            assert daemon.stop() == 0
    assert maintenance_lines(daemon) == []
    assert maintenance_events(col) == []
    # maintenance runs 45 more days: this release (published before) is covered
    assert "not covered by a licence" not in daemon.text()
    assert [e for e in col.json(f"{GW}/events") if e.get("kind") == "release_not_covered"] == []


async def test_daemon_on_an_uncovered_feature_release_logs_and_publishes_it(
    tmp_path: Path, broker: Broker
) -> None:
    # Issue 16 item 4: a capacity licence but no maintenance licence for this feature release.
    cfg = write_config(tmp_path, "", mqtt_port=broker.port, capacity=3)
    async with subscribe(broker.port, f"{GW}/#") as col:
        daemon = start_daemon(cfg, tmp_path / "daemon.log")
        try:
            await wait_log(daemon, "this release is not covered by a licence")
            await col.wait_for(
                lambda c: any(e.get("kind") == "release_not_covered" for e in c.json("/events"))
            )
        finally:
            assert daemon.stop() == 0
    (line,) = [ln for ln in daemon.text().splitlines() if "not covered by a licence" in ln]
    print(line)
    assert "WARNING" in line and f"version={RELEASE_VERSION} kind=feature" in line
    (event,) = [e for e in col.json(f"{GW}/events") if e.get("kind") == "release_not_covered"]
    print(event)
    assert event["version"] == RELEASE_VERSION
    assert "needs a maintenance licence or an upgrade licence" in event["reason"]
