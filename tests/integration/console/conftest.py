"""Fixtures of the console's browser tests: one headless Chromium per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.integration.console.browser import CHROMEDRIVER, CHROMIUM, ensure_chromium

#: The desktop width the console is laid out for; the phone shots resize to 390 px.
DESKTOP = (1280, 900)


@pytest.fixture(scope="session")
def chromium() -> None:
    ensure_chromium()


@pytest.fixture
def browser(chromium: None) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
