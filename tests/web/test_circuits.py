"""The circuits page and ``GET /api/circuits`` of a real daemon running load management.

A light closed loop of ``tests/loadmgmt_harness.py``: one circuit measured by a simulated grid
meter (Modbus TCP) and one simulated OCPP 1.6 charger, both served in this process; the
daemon is a real ``edged run`` with the console on. Selenium calls block, so the browser test
makes them in a thread while this event loop keeps the simulators running.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.conftest import Broker, free_port
from tests.daemon import start_daemon, write_config
from tests.loadmgmt_harness import MAIN, ChargerSpec, Harness, Settings
from tests.web.browser import chromium, screenshot, text, wait
from tests.web.shapes import check

pytestmark = pytest.mark.slow

CHARGER = ChargerSpec("cp01", "main", "1.6", 3, 1, 16)
SAFE = 6.0


class ConsoleHarness(Harness):
    """The harness's daemon with ``[web]`` on a free loopback port."""

    web_port = 0

    def start_daemon(self, *, first: bool = False) -> None:
        cfg = self.tmp / "edged.toml"
        if first:
            self.web_port = free_port()
            cfg = write_config(
                self.tmp,
                self.config(),
                mqtt_port=self.mqtt_port,
                capacity=1 + len(self.circuits) + len(self.chargers),
            )
            cfg.write_text(cfg.read_text() + f"\n[web]\nenabled = true\nport = {self.web_port}\n")
        self.daemon = start_daemon(cfg, self.tmp / "edged.log")
        self.daemon.wait_for("web server listening", 30)
        self.daemon.wait_for("edged started", 30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"


def harness(tmp: Path, broker: Broker) -> ConsoleHarness:
    h = ConsoleHarness(
        tmp, broker.port, (CHARGER,), (MAIN,), Settings(safe_current=SAFE, stale_after=3.0)
    )
    h.base = {"main": [5.0, 5.0, 5.0]}
    return h


async def circuits(http: aiohttp.ClientSession) -> list[dict[str, Any]]:
    async with http.get("/api/circuits") as r:
        assert r.status == 200, await r.text()
        doc = await r.json()
    check(doc, "GET /api/circuits")
    found: list[dict[str, Any]] = doc["circuits"]
    return found


async def test_api_circuits_has_the_documented_shape_with_load_management_running(
    tmp_path: Path, broker: Broker
) -> None:
    h = harness(tmp_path, broker)
    try:
        await h.start()
        await h.sims["cp01"].plug_in()
        async with aiohttp.ClientSession(h.url) as http:
            seen: dict[str, Any] = {}

            async def charging() -> bool:
                seen["main"] = (await circuits(http))[0]
                chargers = seen["main"]["chargers"]
                return seen["main"]["mode"] == "normal" and chargers[0]["state"] == "charging"

            deadline = asyncio.get_running_loop().time() + 60
            while not await charging():
                assert asyncio.get_running_loop().time() < deadline, seen
                await asyncio.sleep(0.5)
            main = seen["main"]
            assert main["name"] == "main" and main["max_current"] == 63.0
            assert main["meter"] == "meter-main" and len(main["measured"]) == 3
            ch = main["chargers"][0]
            assert ch["charger"] == "cp01" and ch["phases"] == "L1L2L3"
            assert ch["allocated"] > SAFE and ch["per_phase"] == [ch["allocated"]] * 3

            # The page is linked from the navigation and lists the circuit.
            async with http.get("/") as r:
                assert '<a href="/circuits"' in await r.text()
            async with http.get("/circuits") as r:
                page = await r.text()
            assert r.status == 200 and 'data-circuit="main"' in page
            assert 'data-charger="cp01"' in page

            # Blind: the same shape, with the reason.
            await h.stop_meters()
            deadline = asyncio.get_running_loop().time() + 30
            while (main := (await circuits(http))[0])["mode"] != "fail-safe":
                assert asyncio.get_running_loop().time() < deadline, main
                await asyncio.sleep(0.5)
            assert main["reason"], main
    finally:
        await h.stop()


async def test_circuits_page_shows_the_circuit_and_fail_safe_when_the_meter_stops(
    tmp_path: Path, broker: Broker
) -> None:
    screens = tmp_path / "screens"
    h = harness(tmp_path, broker)
    try:
        await h.start()
        await h.sims["cp01"].plug_in()
        with chromium(tmp_path) as b:

            def normal_and_charging(b: WebDriver) -> bool:
                return text(b, '[data-circuit="main"] .mode') == "normal" and "charging" in text(
                    b, '[data-circuit="main"] tr[data-charger="cp01"]'
                )

            def opened() -> None:
                b.get(h.url + "/")
                b.find_element(By.LINK_TEXT, "Circuits").click()
                wait(b, lambda b: b.title.startswith("Circuits"))
                assert "63 A per phase" in text(b, '[data-circuit="main"] .limit')
                wait(b, normal_and_charging, 60)
                screenshot(b, screens / "circuits.png")

            await asyncio.to_thread(opened)
            before = await asyncio.to_thread(text, b, '[data-circuit="main"] tr.measured')

            # The grid meter simulator stops: the open page turns to fail-safe by itself.
            await h.stop_meters()

            def fail_safe() -> str:
                wait(b, lambda b: text(b, '[data-circuit="main"] .mode') == "fail-safe", 30)
                reason = wait(b, lambda b: text(b, '[data-circuit="main"] .reason'), 10)
                wait(b, lambda b: "fail-safe" in text(b, 'tr[data-charger="cp01"]'), 30)
                screenshot(b, screens / "circuits-fail-safe.png")
                return str(reason)

            reason = await asyncio.to_thread(fail_safe)
            assert "meter" in reason, reason
            assert before.startswith("measured load")
    finally:
        await h.stop()
