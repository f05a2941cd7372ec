"""The decision report renders in headless Chromium with every plot loaded.

Needs the Debian packages chromium and chromium-driver (.ci/run installs
them) and selenium; the test is skipped only when the browser is absent.
"""

import os
import shutil

import pytest
from test_decision import quickstart_config

from ernie_marketing.decision import synthetic
from ernie_marketing.decision.command import run_decide

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    """Return the index.html of a report on 1,500 generated customers."""
    folder = tmp_path_factory.mktemp("report")
    customers, truth = synthetic.generate(1500, seed=11)
    predictions = customers.merge(truth, on="customer_id")
    summary = run_decide(quickstart_config(budget=200.0), predictions,
                         str(folder / "decisions.csv"), str(folder / "report"),
                         train=customers, truth=truth)
    return summary["report"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.path.isfile(CHROMIUM) and os.path.isfile(CHROMEDRIVER)):
        pytest.skip(f"Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}); "
                    "apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking",
                 "--disable-component-update", "--no-first-run",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_report_renders_with_plots(report_page, browser):
    browser.get("file://" + report_page)
    assert browser.title == "Decisions"
    assert browser.execute_script("return document.readyState") == "complete"
    images = browser.execute_script(
        "return Array.from(document.images).map("
        "i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    sources = [src for src, _, _ in images]
    for name in ("uplift.png", "qini.png", "budget.png", "segments_0.png"):
        assert name in sources
    for src, complete, width in images:
        assert complete, src
        assert width > 0, src
    text = browser.find_element("tag name", "body").text
    assert "Policy values" in text
    assert "best possible" in text


def test_report_has_no_console_errors(report_page, browser):
    browser.get("file://" + report_page)
    errors = [entry for entry in browser.get_log("browser")
              if entry["level"] == "SEVERE"]
    assert errors == []


def test_report_loads_nothing_external(report_page):
    with open(report_page, encoding="utf-8") as f:
        page = f.read()
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page
    assert "@font-face" not in page
