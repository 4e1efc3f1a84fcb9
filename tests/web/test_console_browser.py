"""The console in a real headless chromium against a real daemon and simulators.

Each test saves a screenshot of every page it visits under its temporary directory
(``screens/``). With ``EDGED_SCREENSHOT=path`` the dashboard shot is also written there
(that is how docs/console.png is made).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from edged.passwords import hash_password
from tests.conftest import Broker
from tests.daemon import modbus_body
from tests.licensing.issuing import issue_test_licence
from tests.licensing.licence_helpers import TEST_KEY
from tests.web.browser import chromium, row_cells, screenshot, text, wait
from tests.web.conftest import mbus_body
from tests.web.console import console, modbus_sim

pytestmark = pytest.mark.slow


def test_dashboard_shows_devices_with_changing_values_and_refuses_a_change_without_token(
    tmp_path: Path, broker: Broker
) -> None:
    screens = tmp_path / "screens"
    with (
        modbus_sim(tmp_path) as port,
        console(tmp_path, modbus_body(port, 3), mqtt_port=broker.port, capacity=3) as c,
        chromium(tmp_path) as b,
    ):
        b.get(c.url + "/")
        assert b.title.startswith("Dashboard")

        def online(b: object) -> bool:
            return all(
                "online" in row_cells(b, "devices", "data-device", d)  # type: ignore[arg-type]
                for d in ("m1", "m2")
            )

        wait(b, online)
        assert "unlicensed" in row_cells(b, "devices", "data-device", "m3")
        assert text(b, "#card-licence") == "3 / 3"
        assert text(b, "#card-gateway") == "gw-test"
        assert re.fullmatch(r"[A-Z0-9]{4}(-[A-Z0-9]{4}){3}", text(b, "#install-code"))
        assert "2 online" in text(b, "#card-states") and "1 unlicensed" in text(b, "#card-states")
        wait(b, lambda b: text(b, "#card-uplink") == "connected")
        first = row_cells(b, "devices", "data-device", "m1")[3]
        assert "energy_import" in first or "current_l1" in first, first
        # The page refreshes itself: the meter's values move without a reload.
        wait(b, lambda b: row_cells(b, "devices", "data-device", "m1")[3] not in ("", first))
        shot = screenshot(b, screens / "dashboard.png")
        if os.environ.get("EDGED_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["EDGED_SCREENSHOT"])

        b.get(c.url + "/devices")
        wait(b, lambda b: "online" in row_cells(b, "devices", "data-device", "m2"))
        screenshot(b, screens / "devices.png")

        b.get(c.url + "/devices/m1")
        wait(
            b,
            lambda b: b.find_elements(By.CSS_SELECTOR, '#values tr[data-quantity="energy_import"]'),
        )
        energy = row_cells(b, "values", "data-quantity", "energy_import")[1]
        wait(b, lambda b: row_cells(b, "values", "data-quantity", "energy_import")[1] != energy)
        wait(b, lambda b: b.find_elements(By.CSS_SELECTOR, "#chart svg polyline"))
        screenshot(b, screens / "device.png")
        b.find_element(By.ID, "reconnect").click()
        wait(b, lambda b: text(b, "#message") == "reconnecting connection panel")

        # The same button with its token taken out of the form is refused.
        b.execute_script(
            "document.querySelector('form[action$=\"/reconnect\"] input[name=csrf]').remove()"
        )
        b.find_element(By.ID, "reconnect").click()
        wait(b, lambda b: "CSRF" in b.find_element(By.TAG_NAME, "body").text)
        assert c.daemon.text().count("reconnecting connection=panel") == 1

        for name in ("licences", "scan", "events"):
            b.get(f"{c.url}/{name}")
            wait(b, lambda b: b.find_elements(By.TAG_NAME, "h1"))
            screenshot(b, screens / f"{name}.png")
        assert "reconnect" in text(b, "#events")


def test_licence_file_uploaded_in_the_page_licenses_the_surplus_device(
    tmp_path: Path, broker: Broker
) -> None:
    screens = tmp_path / "screens"
    with (
        modbus_sim(tmp_path) as port,
        console(tmp_path, modbus_body(port, 3), mqtt_port=broker.port, capacity=3) as c,
        chromium(tmp_path) as b,
    ):
        b.get(c.url + "/licences")
        assert text(b, "#licence-use") == "3 / 3" and text(b, "#unlicensed") == "m3"
        code = text(b, "#install-code")
        licence = tmp_path / "L-CAP-WEB.licence"
        licence.write_bytes(
            issue_test_licence(TEST_KEY, code, "capacity", capacity=10, licence_id="L-CAP-WEB")
        )
        screenshot(b, screens / "licences-before.png")

        # A file that is not a licence is refused with the reason, nothing changes.
        junk = tmp_path / "junk.licence"
        junk.write_text("not a licence\n")
        b.find_element(By.ID, "licence-file").send_keys(str(junk))
        b.find_element(By.ID, "activate").click()
        wait(b, lambda b: text(b, "#message").startswith("refused:"))

        b.find_element(By.ID, "licence-file").send_keys(str(licence))
        b.find_element(By.ID, "activate").click()
        wait(b, lambda b: text(b, "#message").startswith("activated L-CAP-WEB"))
        assert row_cells(b, "licences", "data-licence", "L-CAP-WEB")[3] == "valid"
        screenshot(b, screens / "licences-after.png")

        b.get(c.url + "/")
        wait(b, lambda b: "online" in row_cells(b, "devices", "data-device", "m3"), timeout=30)
        wait(b, lambda b: text(b, "#card-licence") == "4 / 13")
        screenshot(b, screens / "dashboard-licensed.png")

        b.get(c.url + "/licences")
        b.find_element(
            By.CSS_SELECTOR, '#licences tr[data-licence="L-CAP-WEB"] button.release'
        ).click()
        confirm = wait(b, lambda b: b.switch_to.alert)
        assert "Release licence L-CAP-WEB?" in confirm.text
        confirm.accept()
        wait(b, lambda b: text(b, "#message") == "released L-CAP-WEB")
        receipt = b.find_element(By.ID, "receipt").get_attribute("value") or ""
        assert "L-CAP-WEB" in receipt
        screenshot(b, screens / "licences-released.png")
        b.get(c.url + "/")
        wait(b, lambda b: "unlicensed" in row_cells(b, "devices", "data-device", "m3"))


def test_scan_shows_progress_and_the_meters_found(
    tmp_path: Path, broker: Broker, mbus_sim: int
) -> None:
    body = mbus_body(mbus_sim)
    with (
        console(tmp_path, body, mqtt_port=broker.port, capacity=5) as c,
        chromium(tmp_path) as b,
    ):
        b.get(c.url + "/scan")
        b.find_element(By.ID, "scan-first").clear()
        b.find_element(By.ID, "scan-first").send_keys("0")
        b.find_element(By.ID, "scan-last").clear()
        b.find_element(By.ID, "scan-last").send_keys("20")
        b.find_element(By.ID, "scan-start").click()
        wait(b, lambda b: "job=scan-" in b.current_url)
        seen: set[int] = set()

        def finished(b: object) -> bool:
            bar = b.find_element(By.ID, "scan-progress")  # type: ignore[attr-defined]
            seen.add(int(bar.get_attribute("value")))
            return str(text(b, "#scan-state")).startswith("done")  # type: ignore[arg-type]

        wait(b, finished, timeout=60)
        assert text(b, "#scan-state") == "done 21/21"
        # The bar moved while the page watched (the 16 silent addresses alone take ~5 s).
        assert any(0 < v < 21 for v in seen), seen
        rows = b.find_elements(By.CSS_SELECTOR, "#found tbody tr")
        found = [r.find_elements(By.TAG_NAME, "td") for r in rows]
        assert [f[0].text for f in found] == ["1", "2", "3", "4"]
        for f in found:
            assert re.fullmatch(r"[0-9A-F]{16}", f[1].text), f[1].text
            assert f[3].text.startswith("Heat"), f[3].text
        screenshot(b, tmp_path / "screens" / "scan.png")
        c.daemon.wait_for("resuming connection connection=plant-room")


def test_wrong_password_is_refused_and_the_right_one_opens_the_console(
    tmp_path: Path, broker: Broker
) -> None:
    stored = hash_password("gateway console 2026")
    with (
        modbus_sim(tmp_path) as port,
        console(
            tmp_path,
            modbus_body(port, 1),
            mqtt_port=broker.port,
            capacity=3,
            web=f'password_hash = "{stored}"',
        ) as c,
        chromium(tmp_path) as b,
    ):
        b.get(c.url + "/devices")
        wait(b, lambda b: b.current_url.endswith("/login"))
        screenshot(b, tmp_path / "screens" / "login.png")
        b.find_element(By.ID, "password").send_keys("gateway console 2025")
        b.find_element(By.ID, "login").click()
        wait(b, lambda b: text(b, "#message") == "wrong password")
        b.get(c.url + "/")
        assert b.current_url.endswith("/login")  # still locked out
        b.find_element(By.ID, "password").send_keys("gateway console 2026")
        b.find_element(By.ID, "login").click()
        wait(b, lambda b: b.title.startswith("Dashboard"))
        wait(b, lambda b: "online" in row_cells(b, "devices", "data-device", "m1"))
        screenshot(b, tmp_path / "screens" / "dashboard.png")
        b.find_element(By.ID, "logout").click()
        wait(b, lambda b: b.current_url.endswith("/login"))
