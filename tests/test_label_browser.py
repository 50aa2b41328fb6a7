"""``comatch label`` in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium labels with the keyboard, reloads and undoes; the
decisions file then holds exactly those decisions.

Skipped, with the reason, where Selenium, ``chromium`` or ``chromedriver`` is missing;
``.ci/run`` installs them.
"""

from __future__ import annotations

import shutil
import threading

import pytest

from comatch.data.extra_labels import read_decisions, read_rows
from comatch.tools.trust.label import build_session, start_server

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(BROWSER is None or DRIVER is None,
                                reason="no headless browser: install Debian's chromium and chromium-driver "
                                "(apt-get install chromium chromium-driver)")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")
WAIT = 60  # seconds at most for a condition (the browser's start on a loaded machine)


@pytest.fixture()
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    yield driver
    driver.quit()


def test_labelling_with_the_keyboard_survives_a_reload_and_undo(tmp_path, browser):
    from test_label import train_folder_run

    run = train_folder_run(tmp_path)
    session = build_session(run, None, None, "cpu")
    server = start_server(session)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    labels = run / "labels.csv"
    rows = lambda: len(read_rows(labels))  # noqa: E731
    try:
        def load() -> None:
            browser.get(server.url)
            WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))

        def current() -> int:
            return int(browser.find_element(By.ID, "current").get_attribute("data-index"))

        def press(key: str, expect_rows: int, done: int) -> None:
            """Press ``key``; wait for the file's row and for the page to show the answer."""
            browser.find_element(By.TAG_NAME, "body").send_keys(key)
            WebDriverWait(browser, WAIT).until(lambda d: rows() == expect_rows)
            WebDriverWait(browser, WAIT).until(
                lambda d: d.find_element(By.ID, "progress").text == f"{done} of 12 labelled")

        load()
        assert browser.find_element(By.ID, "progress").text == "0 of 12 labelled"
        expected = {}
        first = current()
        press("2", 1, 1)  # the second class
        expected[session.items[first].path] = "b"
        second = current()
        assert second != first
        press("\n", 2, 2)  # accept the prediction
        expected[session.items[second].path] = session.items[second].predicted
        third = current()
        press("x", 3, 3)  # not one of my classes
        skipped = current()
        browser.find_element(By.TAG_NAME, "body").send_keys("s")  # skip: nothing recorded
        assert current() != skipped and rows() == 3
        load()  # a reload starts where it stopped
        assert browser.find_element(By.ID, "progress").text == "3 of 12 labelled"
        assert current() not in (first, second, third)
        press("u", 4, 2)  # undo takes back the exclusion
        assert current() == third
        assert read_decisions(labels) == expected
        assert [r[1] for r in read_rows(labels)] == ["b", expected[session.items[second].path], "exclude", "undo"]
    finally:
        server.shutdown()
        server.server_close()
