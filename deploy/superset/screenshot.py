"""Render Superset pages in headless Chromium, save screenshots, report whether the charts drew.

Runs with Superset's own interpreter, which has Selenium and Pillow (the platform's does not):

    <cache>/superset/venv-*/bin/python deploy/superset/screenshot.py --base-url http://127.0.0.1:8088 \
        --user admin --password-file .state/secrets/superset_admin_password \
        --page /superset/dashboard/overview/=docs/screenshots/superset-overview.png

Needs Debian's chromium and chromium-driver. For each page it waits until no chart is loading,
then prints one JSON line: the file, how many ECharts canvases and tables drew, error messages
shown, and pixel statistics of the screenshot (to tell a blank page from a drawn one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Selenium must not phone home for usage statistics or driver downloads.
os.environ.setdefault("SE_AVOID_STATS", "true")
os.environ.setdefault("SE_OFFLINE", "true")

from PIL import Image  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)
# What the page shows while a chart is loading, and what a drawn chart leaves.
LOADING = "[data-test='loading-indicator'], .loading"
STATE_JS = """
const doc = document;
return {
  loading: doc.querySelectorAll(arguments[0]).length,
  charts: doc.querySelectorAll('.dashboard-component-chart-holder').length,
  canvases: doc.querySelectorAll('[_echarts_instance_] canvas').length,
  tables: doc.querySelectorAll('.dashboard-component-chart-holder table').length,
  numbers: doc.querySelectorAll('.superset-legacy-chart-big-number, .big_number, [class*="BigNumber"]').length,
  text: (doc.body || {}).innerText || '',
  height: Math.max(doc.documentElement.scrollHeight, (doc.body || {}).scrollHeight || 0),
  errors: Array.from(doc.querySelectorAll('[data-test="error-message"], .alert-danger, [role="alert"]'))
              .map((e) => e.innerText.slice(0, 300)),
};
"""


START_SIZE = (1600, 1200)


def browser(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def login(driver: webdriver.Chrome, base_url: str, user: str, password: str, timeout_s: float) -> None:
    driver.get(f"{base_url}/login/")
    wait = WebDriverWait(driver, timeout_s)
    wait.until(expected_conditions.presence_of_element_located((By.ID, "username"))).send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type='submit'], [data-test='login-button']").click()
    wait.until(lambda d: "/login" not in d.current_url)


def pixel_stats(path: Path) -> dict[str, float]:
    """Distinct colours and the share of pixels that differ from the most common (background) one."""
    image = Image.open(path).convert("RGB").resize((400, 300))
    colours = image.getcolors(maxcolors=400 * 300) or []
    background = max(colours)[0] if colours else 0
    return {"distinct_colours": len(colours), "non_background": 1 - background / (400 * 300)}


def page_state(driver: webdriver.Chrome) -> dict[str, object]:
    """Chart counts of the page, or of the dashboard it embeds (an iframe, maybe of another origin)."""
    driver.switch_to.default_content()
    frames = driver.find_elements(By.TAG_NAME, "iframe")
    if frames:
        driver.switch_to.frame(frames[0])
    try:
        return driver.execute_script(STATE_JS, LOADING)
    finally:
        driver.switch_to.default_content()


def shoot(driver: webdriver.Chrome, url: str, out: Path, timeout_s: float, settle_s: float) -> dict[str, object]:
    driver.get(url)
    deadline = time.monotonic() + timeout_s
    state: dict[str, object] = {}
    quiet_since = None
    while time.monotonic() < deadline:
        time.sleep(0.5)
        state = page_state(driver)
        drawn = state["charts"] and not state["loading"]
        quiet_since = (quiet_since or time.monotonic()) if drawn else None
        # Drawn, and nothing started loading again for a moment (filters apply after first render).
        if quiet_since and time.monotonic() - quiet_since >= settle_s:
            break
    # Grow the window to the whole dashboard (charts below the fold render when scrolled into view).
    viewport = driver.execute_script("return window.innerHeight")
    if state.get("height", 0) > viewport:
        size = driver.get_window_size()
        extra = size["height"] - viewport + 60  # browser chrome, and the portal's header
        driver.set_window_size(size["width"], min(int(state["height"]) + extra, 6000))
        time.sleep(settle_s)
        end = time.monotonic() + timeout_s / 2
        while time.monotonic() < end and (state := page_state(driver))["loading"]:
            time.sleep(0.5)
        time.sleep(settle_s)
        state = page_state(driver)
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))
    driver.set_window_size(*START_SIZE)
    return {"url": url, "file": str(out), "timed_out": time.monotonic() >= deadline, **state, **pixel_stats(out)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", type=Path, required=True)
    parser.add_argument("--page", action="append", required=True, help="PATH_OR_URL=OUTPUT.png, repeatable")
    parser.add_argument("--size", default="1600x1200")
    parser.add_argument("--timeout", type=float, default=90)
    parser.add_argument("--settle", type=float, default=2.0)
    args = parser.parse_args()
    global START_SIZE
    START_SIZE = tuple(int(v) for v in args.size.split("x"))
    driver = browser(*START_SIZE)
    try:
        login(driver, args.base_url, args.user, args.password_file.read_text().strip(), args.timeout)
        for page in args.page:
            path, _, out = page.rpartition("=")
            url = path if path.startswith("http") else args.base_url + path
            print(json.dumps(shoot(driver, url, Path(out), args.timeout, args.settle)), flush=True)
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
