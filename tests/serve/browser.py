"""Drives the page of segfast serve in Debian's headless chromium through selenium: a page
launched in this process on a free port, and a browser that uploads, asks and reads back."""

import os
import shutil
import socket
import time
import urllib.request
from contextlib import contextmanager

import pytest

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def needs_browser():
    """Skips unless selenium, chromium and chromium-driver are installed; fails instead where
    SEGFAST_REQUIRE_BROWSER=1 (`.ci/run` installs them and sets it)."""
    missing = [name for name, found in (("chromium", CHROMIUM), ("chromedriver", DRIVER)) if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        why = f"no {', '.join(missing)} (apt-get install chromium chromium-driver; pip install selenium)"
        if os.environ.get("SEGFAST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SEGFAST_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(predictor):
    """The page over `predictor` at its URL, stopped afterwards."""
    from segfast.serve import launch

    port = free_port()
    app = launch(predictor, port=port, block=False)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(100):  # launch returns once the server answers; allow a slow start anyway
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        app.close()


@contextmanager
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = 60):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # Gradio re-renders components while a result arrives: an element found a moment ago can be
    # replaced under the condition, so a stale element means "look again", not failure
    ignored = (StaleElementReferenceException,)
    return WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=ignored).until(lambda d: condition(d))


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)
