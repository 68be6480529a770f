"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``
packages, driven by Selenium) logs in on the live test server, opens every page, waits for the
plotly charts to be drawn (``.main-svg``), fails on any console error, and saves screenshots under
``tests/artifacts/``. Nothing is downloaded: the browser is the system one, plotly.min.js comes from
the installed ``plotly`` wheel.

Runs in CI; without Chromium it fails, saying what to install.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.browser.dashboard_seed import PASSWORD, seed, users

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BINARY", "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1440,1000", "--hide-scrollbars"]
INSTALL_HINT = "install it: apt-get install -y chromium chromium-driver"


@pytest.fixture(scope="module")
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            pytest.fail(f"{path} not found; the browser test needs Debian's Chromium: {INSTALL_HINT}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the selenium package is missing: pip install -r requirements/dev.txt")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()



def console_errors(driver) -> list[str]:
    return [f"{e['level']}: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def open_page(driver, url: str, *, name: str, min_charts: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    charts = driver.find_elements(By.CSS_SELECTOR, "[data-chart]")
    assert len(charts) >= min_charts, f"{name}: {len(charts)} chart containers, expected {min_charts}"
    if charts:
        WebDriverWait(driver, 30).until(
            lambda d: all(c.get_attribute("data-drawn") == "1" for c in d.find_elements(By.CSS_SELECTOR, "[data-chart]")),
            message=f"{name}: charts not drawn (plotly.min.js not served?)",
        )
        for chart in charts:
            assert chart.find_elements(By.CSS_SELECTOR, ".main-svg"), f"{name}: a chart has no .main-svg"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 4000)")
    driver.set_window_size(1440, max(900, int(height)))
    driver.save_screenshot(str(ARTIFACTS / f"dashboard-{name}.png"))
    driver.set_window_size(1440, 1000)
    errors = console_errors(driver)
    assert not errors, f"{name}: console errors: {errors}"


def test_dashboard_pages_in_headless_chromium(browser, live_server, dashboard_settings):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    assert shutil.which("chromium") or os.path.isfile(CHROMIUM)
    wait = WebDriverWait(browser, 30)
    _viewer, _staff = users()
    data = seed()
    base = live_server.url

    browser.get(f"{base}/dashboard/")  # anonymous: sent to the login page
    assert "/dashboard/login/" in browser.current_url
    wait.until(ec.presence_of_element_located((By.ID, "id_username"))).send_keys("operator")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-submit").click()
    wait.until(lambda d: "/login/" not in d.current_url and d.find_elements(By.CSS_SELECTOR, "nav.nav"))
    assert browser.current_url.rstrip("/").endswith("/dashboard")
    console_errors(browser)  # drain the login page's log

    pages = [
        ("overview", "/dashboard/", 1),
        ("alerts", "/dashboard/alerts/", 0),
        ("costs", "/dashboard/costs/", 1),
        ("models", "/dashboard/models/", 0),
        ("model-detail", "/dashboard/models/xgboost_classifier/", 3),
        ("drift", "/dashboard/drift/?model=xgboost_classifier", 2),
        ("runs", "/dashboard/runs/", 0),
        ("run-detail", f"/dashboard/runs/{data['ok_run'].pk}/", 1),
    ]
    for name, path, min_charts in pages:
        open_page(browser, base + path, name=name, min_charts=min_charts)

    # staff sees promote and rollback; acknowledging an alert works through the real form (CSRF)
    browser.get(f"{base}/dashboard/models/xgboost_classifier/")
    assert browser.find_elements(By.CSS_SELECTOR, ".promote-button")
    assert browser.find_elements(By.ID, "rollback-button")
    browser.get(f"{base}/dashboard/alerts/?kind=high_latency")
    wait.until(ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Acknowledge']"))).click()
    messages = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".messages")))
    assert "Acknowledged high_latency" in messages.text
    assert not console_errors(browser)
