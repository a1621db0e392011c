"""Headless Chromium (Debian's chromium and chromedriver) driven by Selenium, against a real
`gunicorn 'console_app:create_app()'`; every test leaves a screenshot in artifacts/console/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ROOT, Gunicorn, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = ROOT / "artifacts" / "console"


class Console(Gunicorn):
    """gunicorn 'console_app:create_app()', as deployed (gunicorn.conf.py's console settings)."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        super().__init__("console_app:create_app()", "/login", env, port, log_path)


@pytest.fixture(scope="module")
def console_url(migrated: str, base_env: dict[str, str], tmp_path_factory) -> Iterator[str]:
    process = Console({**os.environ, **base_env}, free_port(),
                      tmp_path_factory.mktemp("console") / "console.log")
    yield process.url
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver "
                    "(scripts/bootstrap.sh test installs them)", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1360,900", "--lang=en-US"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager never downloads a browser or a driver.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def screenshot(driver, name: str) -> Path:  # type: ignore[no-untyped-def]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def full_page_screenshot(driver, name: str) -> Path:  # type: ignore[no-untyped-def]
    """The whole page, not only the window: the viewport is stretched to the page's height
    for the picture (Chrome DevTools' device metrics), then put back."""
    width = driver.execute_script("return window.innerWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": min(max(height, 600), 4000), "deviceScaleFactor": 1,
        "mobile": False})
    try:
        return screenshot(driver, name)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
