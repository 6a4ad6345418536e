"""Screenshots of the Dagster UI for the README, taken with headless Chromium.

Needs Debian's chromium and chromium-driver and `pip install selenium` (not project dependencies:
this is a documentation tool). Run against a platform started with `make up`:

    python docs/screenshots/take_screenshots.py http://127.0.0.1:3000
"""

import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

OUT = Path(__file__).resolve().parent
# (file name, UI path, things to click before the shot)
TARGETS: list[tuple[str, str, tuple[str, ...]]] = [
    ("asset-graph", "/asset-groups", ("aria:unfold_more",)),
    ("replay-backfill", "/overview/backfills", ()),
    ("replay-partitions", "/assets/historical_replay?view=partitions", ()),
    ("cost-by-account", "/assets/cost_by_account_daily", ()),
    ("audit-history", "/assets/p_route_minute?view=checks", ("Execution history",)),
    ("pipeline-health", "/assets/pipeline_health?view=events", ()),
]


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1900,1400",
        "--hide-scrollbars",
    ):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def dismiss_modal(driver: webdriver.Chrome) -> None:
    for label in ("Skip", "Dismiss", "Close"):
        try:
            driver.find_element(By.XPATH, f"//button[normalize-space()='{label}']").click()
            time.sleep(1)
        except NoSuchElementException:
            pass


def shot(driver: webdriver.Chrome, url: str, name: str, wait_s: float = 6, clicks: tuple[str, ...] = ()) -> None:
    driver.get(url)
    time.sleep(wait_s)
    dismiss_modal(driver)
    for text in clicks:
        # "aria:<label>" clicks every element with that aria-label (e.g. expand all asset groups).
        if text.startswith("aria:"):
            # Each click re-renders the page, so look the elements up again every time; groups
            # laid out after a refresh may need another pass.
            for _ in range(3):
                for _ in range(20):
                    found = driver.find_elements(By.CSS_SELECTOR, f"[aria-label='{text[5:]}']")
                    if not found:
                        break
                    # A script click reaches buttons that are off-screen or under another node.
                    driver.execute_script("arguments[0].closest('button, [role=button], div').click()", found[0])
                    time.sleep(1.5)
                # The graph fits itself to the window on load; the expanded state is remembered.
                driver.refresh()
                time.sleep(wait_s)
            continue
        try:
            driver.find_element(By.XPATH, f"//*[normalize-space()='{text}']").click()
            time.sleep(2)
        except NoSuchElementException:
            print(f"{name}: no element {text!r}", file=sys.stderr)
    driver.save_screenshot(str(OUT / f"{name}.png"))
    print(OUT / f"{name}.png")


def main() -> None:
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:3000"
    driver = browser()
    try:
        for name, path, clicks in TARGETS:
            shot(driver, base + path, name, clicks=clicks)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
