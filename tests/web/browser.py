"""Debian's headless chromium driven by Selenium through Debian's chromedriver.

No browser is downloaded at test time: `make test` and `.ci/run` install the packages
``chromium`` and ``chromium-driver`` through apt. Without the background-networking flags
chromium tries to reach update and field-trial servers, which a closed network refuses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


@contextmanager
def chromium(tmp: Path) -> Iterator[WebDriver]:
    """A fresh headless chromium with its own profile directory under ``tmp``."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tmp / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    options.add_argument(f"--user-data-dir={profile}")
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, predicate: Callable[[WebDriver], Any], timeout: float = 30.0) -> Any:
    """Poll ``predicate(driver)`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate(driver)
        except Exception as exc:  # an element replaced while being read: try again
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    page = driver.find_element(By.TAG_NAME, "body").text[:2000]
    raise AssertionError(
        f"page condition not met in {timeout} s (last {last!r}) at {driver.current_url}:\n{page}"
    )


def text(driver: WebDriver, css: str) -> str:
    """The visible text of the first element matching ``css``."""
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def row_cells(driver: WebDriver, table: str, key_attr: str, key: str) -> list[str]:
    """The cell texts of the row ``tr[key_attr=key]`` in a table (empty when absent)."""
    rows = driver.find_elements(By.CSS_SELECTOR, f'#{table} tr[{key_attr}="{key}"]')
    return [str(td.text) for td in rows[0].find_elements(By.TAG_NAME, "td")] if rows else []


def screenshot(driver: WebDriver, path: Path) -> Path:
    """Save a PNG of the page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path)), path
    assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path
