"""A headless Debian chromium driven by Selenium for the report pages' browser tests (marker ``browser``).

Skips (with the reason) when chromium, chromedriver or selenium is absent; ``.ci/run`` installs them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def skip_reason() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists() and not shutil.which(Path(path).name):
            return f"{path} is absent (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


@pytest.fixture(scope="module")
def chromium():
    """A headless chromium WebDriver with the browser console log readable (``driver.get_log('browser')``)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,1800"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def console_problems(driver) -> list[dict]:
    """Browser log entries at WARNING or worse (JS errors, failed loads)."""
    return [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "WARNING")]


def keep_screenshot(driver, tmp_path_factory, name: str):
    """Save a screenshot of the page as a test artifact (in the pytest tmp dir; its path is printed)."""
    shot = tmp_path_factory.mktemp("artifacts") / name
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000  # a blank page is a few kB
    print(f"screenshot: {shot}")
    return shot
