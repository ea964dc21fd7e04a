"""Fixtures for tests that drive the admin in a real headless Chromium.

Debian's ``chromium`` and ``chromedriver`` (installed by
``scripts/system-packages.sh``), driven by Selenium; a browser is never
downloaded. Under CI a missing browser fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("DJTASKS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DJTASKS_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
# Where the tests save their screenshots: a temporary directory, so a test
# run leaves the checkout as it was. The ones docs/admin.md and
# docs/periodic.md show are made with DJTASKS_SCREENSHOTS=docs/img.
SCREENSHOTS = Path(
    os.environ.get("DJTASKS_SCREENSHOTS", Path(tempfile.gettempdir()) / "djtasks-screenshots")
)


@pytest.fixture
def browser() -> Iterator[object]:
    """A headless Selenium Chrome driver on Debian's Chromium, 1400×1000."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        message = (f"Chromium ({CHROMIUM}) or ChromeDriver ({CHROMEDRIVER}) is missing: "
                   "run scripts/system-packages.sh")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def admin_user(django_user_model):  # type: ignore[no-untyped-def]
    return django_user_model.objects.create_superuser("admin", "admin@example.com", "admin")


@pytest.fixture
def admin_browser(browser, live_server, admin_user):  # type: ignore[no-untyped-def]
    """``browser`` logged into ``live_server``'s admin as the superuser
    ``admin`` (password ``admin``); ``browser.live_server_url`` is its root."""
    from selenium.webdriver.common.by import By

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("admin")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    browser.find_element(By.ID, "site-name")
    browser.live_server_url = live_server.url
    return browser


def screenshot(driver, name: str) -> Path:  # type: ignore[no-untyped-def]
    """Save a PNG of the page as docs/img/<name>.png (for docs/admin.md)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
