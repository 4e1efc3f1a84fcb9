"""The REST API and /metrics of a real daemon, over real HTTP (aiohttp client)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edged.passwords import hash_password
from tests.conftest import Broker
from tests.daemon import modbus_body
from tests.web.conftest import mbus_body
from tests.web.console import console, modbus_sim
from tests.web.shapes import check

pytestmark = pytest.mark.slow

SECURITY = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        assert r.status == 200, (url, r.status, await r.text())
        return await r.json()


async def wait_for(check_once, timeout: float = 30.0) -> Any:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await check_once()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {got!r}")
        await asyncio.sleep(0.3)


def client(url: str, **kwargs: Any) -> aiohttp.ClientSession:
    """A client that keeps cookies of an IP-address host (as browsers do)."""
    return aiohttp.ClientSession(url, cookie_jar=aiohttp.CookieJar(unsafe=True), **kwargs)


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_rest_answers_have_the_documented_shapes_and_metrics_parse(
    tmp_path: Path, broker: Broker
) -> None:
    # gateway + 2 licensed: m3 is unlicensed
    with (
        modbus_sim(tmp_path) as port,
        console(tmp_path, modbus_body(port, 3), mqtt_port=broker.port, capacity=3) as c,
    ):
        async with client(c.url) as http:
            session = await get(http, "/api/session")
            check(session, "GET /api/session")
            assert session["password_required"] is False and session["authenticated"] is True

            async def online() -> Any:
                s = await get(http, "/api/status")
                states = {d["id"]: d["state"] for d in s["devices"]}
                return s if states == {"m1": "online", "m2": "online", "m3": "unlicensed"} else None

            status = await wait_for(online)
            check(status, "GET /api/status")
            assert status["gateway"] == "gw-test" and status["licence"] == {"used": 3, "total": 3}

            devices = await get(http, "/api/devices")
            check(devices, "GET /api/devices")
            m1 = await get(http, "/api/devices/m1")
            check(m1, "GET /api/devices/ID")
            assert m1["values"]["energy_import"]["unit"] == "Wh"
            history = await get(http, "/api/devices/m1/history")
            check(history, "GET /api/devices/ID/history")
            assert history["quantities"], "the first sample is taken at start"
            licences = await get(http, "/api/licences")
            check(licences, "GET /api/licences")
            assert licences["unlicensed"] == ["m3"] and licences["capacity"] == 3
            scans = await get(http, "/api/scans")
            check(scans, "GET /api/scans")
            assert scans == {"buses": [], "scans": []}  # no M-Bus configured here
            circuits = await get(http, "/api/circuits")
            check(circuits, "GET /api/circuits")
            assert circuits == {"circuits": []}  # no load management here: no page link
            async with http.get("/") as r:
                assert 'href="/circuits"' not in await r.text()

            token = {"X-CSRF-Token": session["csrf"]}
            async with http.post("/api/devices/m1/reconnect", headers=token) as r:
                assert r.status == 200
                check(await r.json(), "POST /api/devices/ID/reconnect")
            async with http.post("/api/devices/m3/reconnect", headers=token) as r:
                assert r.status == 409 and "not served" in (await r.json())["error"]
            async with http.post("/api/reload", headers=token) as r:
                assert r.status == 200
                check(await r.json(), "POST /api/reload")
            events = await get(http, "/api/events")
            check(events, "GET /api/events")
            assert {"reconnect", "reload"} <= {e["kind"] for e in events["events"]}

            async with http.get("/metrics") as r:
                assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await r.text()
            got = families(text)
            for name in (
                "edged_devices",
                "edged_licence_used",
                "edged_licence_capacity",
                "edged_samples",
                "edged_poll",
                "edged_outbox_depth",
                "edged_uplink_connected",
                "process_resident_memory_bytes",
            ):
                assert name in got, name
            devices_by_state = {s.labels["state"]: s.value for s in got["edged_devices"].samples}
            assert devices_by_state["unlicensed"] == 1


async def test_changes_without_the_csrf_token_and_bad_requests_are_refused_and_counted(
    tmp_path: Path, broker: Broker
) -> None:
    with (
        modbus_sim(tmp_path) as port,
        console(tmp_path, modbus_body(port, 1), mqtt_port=broker.port, capacity=3) as c,
    ):
        async with client(c.url) as http, client(c.url) as other:
            token = (await get(http, "/api/session"))["csrf"]
            foreign = (await get(other, "/api/session"))["csrf"]
            for headers in ({}, {"X-CSRF-Token": "guess"}, {"X-CSRF-Token": foreign}):
                async with http.post("/api/reload", headers=headers) as r:
                    assert r.status == 403, headers
                    assert "CSRF" in (await r.json())["error"]
            # A form post from another site carries the browser's cookie but another Origin.
            evil = {"X-CSRF-Token": token, "Origin": "http://evil.example"}
            async with http.post("/api/reload", headers=evil) as r:
                assert r.status == 403
            async with http.post("/licences/activate", data={"csrf": "nope"}) as r:
                assert r.status == 403
            ok = {"X-CSRF-Token": token}
            async with http.post("/api/scans", data=b"{not json", headers=ok) as r:
                assert r.status == 400 and "error" in await r.json()
            async with http.post("/api/scans", json={"connection": 7}, headers=ok) as r:
                assert r.status == 400
            async with http.post("/api/scans", json={"connection": "panel"}, headers=ok) as r:
                assert r.status == 409  # a Modbus TCP connection is no bus to scan
                assert "no bus 'panel' that can be scanned" in (await r.json())["error"]
            async with http.post("/api/licences", data=b"garbage", headers=ok) as r:
                assert r.status == 422 and (await r.json())["error"].startswith("refused")
            async with http.post("/api/licences", data=b"x" * (2 << 20), headers=ok) as r:
                assert r.status == 413
            async with http.get("/api/devices/nobody") as r:
                assert r.status == 404
            async with http.post("/api/reload", headers=ok) as r:
                assert r.status == 200  # with its token the same change goes through
            async with http.get("/devices") as r:
                assert r.status == 200
                for name, value in SECURITY.items():
                    assert r.headers[name] == value
                csp = r.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
                cookie = r.headers.getall("Set-Cookie", [])
            assert not cookie  # the session already exists
            async with client(c.url) as fresh, fresh.get("/") as r:
                cookie = r.headers["Set-Cookie"]
                assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            async with http.get("/metrics") as r:
                text = await r.text()
            rejected = families(text)["edged_web_rejected"].samples
            assert sum(s.value for s in rejected if s.name.endswith("_total")) >= 10


async def test_password_is_required_for_pages_api_and_metrics(
    tmp_path: Path, broker: Broker
) -> None:
    stored = hash_password("s3cret console password")
    with (
        modbus_sim(tmp_path) as port,
        console(
            tmp_path,
            modbus_body(port, 1),
            mqtt_port=broker.port,
            capacity=3,
            web=f'password_hash = "{stored}"',
        ) as c,
    ):
        async with client(c.url) as http:
            async with http.get("/api/status") as r:
                assert r.status == 401
            async with http.get("/", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/login"
            async with http.get("/metrics") as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
            session = await get(http, "/api/session")
            assert session["password_required"] and not session["authenticated"]
            form = {"csrf": session["csrf"], "password": "wrong"}
            async with http.post("/login", data=form, allow_redirects=False) as r:
                assert r.status == 401 and "wrong password" in await r.text()
            async with http.get("/api/status") as r:
                assert r.status == 401
            form["password"] = "s3cret console password"
            async with http.post("/login", data=form, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/"
            status = await get(http, "/api/status")
            assert status["gateway"] == "gw-test"
            after = await get(http, "/api/session")
            assert after["authenticated"] and after["csrf"] != session["csrf"]  # new session
        password = "s3cret console password"
        basic = {"Authorization": aiohttp.encode_basic_auth("prometheus", password)}
        async with client(c.url, headers=basic) as scraper:
            async with scraper.get("/metrics") as r:
                assert r.status == 200
                text = await r.text()
            assert families(text)["edged_web_login_failed"].samples[0].value == 1
            async with scraper.post("/api/reload") as r:
                assert r.status == 403  # Basic auth reads; changes need a session and token
        wrong = {"Authorization": aiohttp.encode_basic_auth("prometheus", "guess")}
        async with client(c.url, headers=wrong) as scraper, scraper.get("/metrics") as r:
            assert r.status == 401


async def test_scan_through_the_api_pauses_the_bus_and_lists_the_meters(
    tmp_path: Path, broker: Broker, mbus_sim: int
) -> None:
    with console(tmp_path, mbus_body(mbus_sim), mqtt_port=broker.port, capacity=5) as c:
        async with client(c.url) as http:
            ok = {"X-CSRF-Token": (await get(http, "/api/session"))["csrf"]}
            assert (await get(http, "/api/scans"))["buses"] == ["plant-room"]
            for bad in ({"connection": "plant-room", "first": 5, "last": 2},
                        {"connection": "plant-room", "first": 0, "last": 300}):  # fmt: skip
                async with http.post("/api/scans", json=bad, headers=ok) as r:
                    if r.status == 202:  # 0-300 is refused by the driver, inside the job
                        job = await r.json()
                        done = await wait_for(lambda j=job: _finished(http, j["id"]))
                        assert done["state"] == "failed" and "0-250" in done["error"]
                    else:
                        assert r.status == 400
            body = {"connection": "plant-room", "first": 0, "last": 30}
            async with http.post("/api/scans", json=body, headers=ok) as r:
                assert r.status == 202
                job = await r.json()
            check(job, "GET /api/scans/ID")
            async with http.post("/api/scans", json=body, headers=ok) as r:
                assert r.status == 409 and "already being scanned" in (await r.json())["error"]
            # 27 silent addresses take seconds: the bus is still being scanned now.
            async with http.post("/api/devices/heat-1/reconnect", headers=ok) as r:
                assert r.status == 409 and "being scanned" in (await r.json())["error"]
            done = await wait_for(lambda: _finished(http, job["id"]), timeout=90)
            check(done, "GET /api/scans/ID")
            assert (done["state"], done["done"], done["total"]) == ("done", 31, 31)
            assert [f["address"] for f in done["found"]] == ["1", "2", "3", "4"]
            assert all(f["medium"].startswith("Heat") for f in done["found"])
            c.daemon.wait_for("resuming connection connection=plant-room")
            async with http.post("/api/devices/heat-1/reconnect", headers=ok) as r:
                assert r.status == 200
            # A whole bus takes minutes at 2400 baud: it can be stopped, and polling resumes.
            body = {"connection": "plant-room", "first": 0, "last": 250}
            async with http.post("/api/scans", json=body, headers=ok) as r:
                job = await r.json()
            async with http.post(f"/api/scans/{job['id']}/stop", headers=ok) as r:
                assert r.status == 200
                stopped = await r.json()
            check(stopped, "GET /api/scans/ID")
            assert stopped["state"] == "stopped" and stopped["done"] < 251
            async with http.post(f"/api/scans/{job['id']}/stop", headers=ok) as r:
                assert r.status == 409
            c.daemon.wait_for(lambda t: t.count("resuming connection connection=plant-room") == 2)


async def _finished(http: aiohttp.ClientSession, job: str) -> Any:
    j = await get(http, f"/api/scans/{job}")
    return j if j["state"] != "running" else None
