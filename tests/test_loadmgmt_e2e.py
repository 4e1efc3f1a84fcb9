"""Load management end to end: a real daemon, simulated grid meters and chargers in a loop.

What the chargers are limited to is measured at the simulators (their composite limit from
the profiles they hold), never taken from what edged says it did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Broker
from tests.daemon import run_edged
from tests.loadmgmt_harness import GARAGE, MAIN, ChargerSpec, Harness, Settings

pytestmark = pytest.mark.slow

# Both OCPP versions, a 1-phase charger, and a charger under the nested garage circuit.
CHARGERS = (
    ChargerSpec("cp01", "main", "1.6", 3, 1, 32),
    ChargerSpec("cp02", "main", "2.0.1", 1, 2, 32),
    ChargerSpec("cp03", "garage", "2.0.1", 3, 1, 32),
    ChargerSpec("cp04", "garage", "1.6", 3, 1, 32),
)
SAFE = 6.0


async def test_fail_safe_on_a_stale_meter_and_fallback_when_edged_dies(
    tmp_path: Path, broker: Broker
) -> None:
    h = Harness(
        tmp_path,
        broker.port,
        CHARGERS,
        (MAIN, GARAGE),
        Settings(safe_current=SAFE, lease=10.0, stale_after=3.0, min_interval=2.0),
    )
    h.base = {"main": [5.0, 5.0, 5.0], "garage": [2.0, 2.0, 2.0]}
    try:
        await h.start()
        for sim in h.sims.values():
            await sim.plug_in()

        # Shared: every car charges above the safe current on a leased limit, and once the
        # cars followed their limits (a response delay later) both circuits hold. (Right
        # after plug-in the cars draw their maximum until the first profile takes effect,
        # so edged may pause them for a moment: wait for the settled state.)
        def shared() -> bool:
            return (
                all((v or 0) > SAFE + 1 for v in h.limits().values())
                and all(max(s.drawn_current()) > SAFE for s in h.sims.values())
                and max(h.total("garage")) <= 32.0
                and max(h.total("main")) <= 63.0
            )

        await h.wait(shared, 60)
        assert all(not h.only_default_left(cid) for cid in h.sims)

        # Visible: `edged status` lists the circuits, their mode and each charger's share.
        cfg = str(tmp_path / "edged.toml")
        seen: dict[str, Any] = {}

        async def status_shows_sharing() -> bool:
            code, out, err = await run_edged("status", "-c", cfg)
            assert code == 0, err
            seen["text"] = out
            code, out, err = await run_edged("status", "--json", "-c", cfg)
            seen["circuits"] = {c["name"]: c for c in json.loads(out)["circuits"]}
            garage = seen["circuits"]["garage"]["chargers"]
            return "charging" in seen["text"] and all(ch["allocated"] > SAFE for ch in garage)

        for _ in range(20):
            if await status_shows_sharing():
                break
        assert "circuits" in seen["text"] and "garage (in main)" in seen["text"]
        circuits = seen["circuits"]
        assert circuits["main"]["mode"] == "normal"
        assert circuits["garage"]["parent"] == "main" and len(circuits["garage"]["chargers"]) == 2
        assert all(ch["allocated"] > SAFE for ch in circuits["garage"]["chargers"])

        # The grid meters stop answering: every charger at the safe current within 10 s.
        await h.stop_meters()
        await h.wait(lambda: all(v == SAFE for v in h.limits().values()), 10)
        await h.wait(lambda: all(max(s.drawn_current()) <= SAFE for s in h.sims.values()), 10)
        assert "mode=fail-safe" in h.daemon.text()  # type: ignore[union-attr]

        # Measured again: back to sharing.
        await h.start_meters()
        await h.wait(lambda: all((v or 0) > SAFE + 1 for v in h.limits().values()), 60)

        # edged dies: nothing renews the leases, every charger falls back to its default
        # profile (the safe current) on its own.
        h.kill_daemon()
        took = await h.wait(
            lambda: (
                all(h.only_default_left(cid) for cid in h.sims)
                and all(v == SAFE for v in h.limits().values())
            ),
            h.settings.lease + 15,
        )
        assert took > 0
        versions = {h.sims[c.id].config.version for c in CHARGERS}
        assert versions == {"1.6", "2.0.1"}
    finally:
        await h.stop()
