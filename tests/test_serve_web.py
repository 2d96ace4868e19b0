"""The web page in a real headless Chromium: type a line, watch the reply stream in and the
memory panel change, save a screenshot. Skipped when Chromium, its driver or selenium is
missing (test.sh installs Debian's chromium and chromium-driver where apt-get is available)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from malpyeong.serving import ServeConfig, SessionDefaults  # noqa: E402
from malpyeong.serving.server import Running  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)
# every state the last reply takes in the page, recorded as the DOM changes
WATCH = """
window.__replies = [];
new MutationObserver(() => {
  const bots = document.querySelectorAll('#chatbot [data-testid="bot"]');
  if (bots.length) window.__replies.push(bots[bots.length - 1].innerText);
}).observe(document.querySelector('#chatbot'), {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(300)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
def test_chat_streams_and_the_memory_panel_follows(tiny_llama, browser, tmp_path):
    cfg = ServeConfig(
        models={"tiny": str(tiny_llama)},
        port=0,
        web=True,
        sessions=tmp_path / "sessions",
        session_defaults=SessionDefaults(memory_tokens=24, summary_tokens=32, summarizer="extractive"),
    )
    with Running(cfg) as url:
        browser.get(f"{url}/web/")
        wait = WebDriverWait(browser, 300, poll_frequency=0.1)
        session = wait.until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#chat-session textarea").get_attribute("value")
        )
        panel = browser.find_element(By.ID, "memory-panel")
        before = panel.text
        assert "memory is empty" in before
        browser.execute_script(WATCH)
        line = "My name is Mina and I bake bread."
        browser.find_element(By.CSS_SELECTOR, "#chat-input textarea").send_keys(line)
        browser.find_element(By.ID, "chat-send").click()
        wait.until(lambda d: line in d.find_element(By.ID, "memory-panel").text)  # the turn is over
        time.sleep(0.5)
        replies = [r for r in browser.execute_script("return window.__replies") if r.strip()]
        final = browser.find_elements(By.CSS_SELECTOR, '#chatbot [data-testid="bot"]')[-1].text
        after = browser.find_element(By.ID, "memory-panel").text
        shot = tmp_path / "web.png"
        browser.save_screenshot(str(shot))
        if os.environ.get("MALPYEONG_SCREENSHOT"):  # docs/serving-web.png, from a real run
            shutil.copy(shot, os.environ["MALPYEONG_SCREENSHOT"])
        # the task tab: the made-up item of the first task, answered with its probabilities
        tab = [b for b in browser.find_elements(By.CSS_SELECTOR, "button[role='tab']") if b.text == "Task"]
        tab[0].click()
        wait.until(lambda d: d.find_element(By.ID, "task-run").is_displayed())
        browser.find_element(By.ID, "task-run").click()
        answered = wait.until(lambda d: "probs" in d.find_element(By.ID, "task-output").text or None)
    # streamed: the reply grew in several steps before it was whole
    grown = sorted({len(r) for r in replies})
    assert len(grown) >= 3 and final.strip() and len(replies[0]) < len(final)
    # the panel changed: the session, its turns, the user's line folded into the summary
    assert after != before and session in after and "2 turn(s)" in after and "Summary" in after
    assert answered
    assert shot.stat().st_size > 10_000 and Path(shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
