"""Real browser: Debian's headless Chromium driven by Playwright against `streamlit run` on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("REACTOMO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SHOTS = ROOT / "artifacts" / "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    ws = tmp / "workspace"
    ws.mkdir()
    port = _free_port()
    env = {**os.environ, "REACTOMO_WORKSPACE": str(ws), "REACTOMO_DATA_ROOT": str(tmp)}
    log = open(tmp / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"streamlit did not start: {(tmp / 'streamlit.log').read_text()[-2000:]}")
    yield {"url": url, "workspace": ws, "log": tmp / "streamlit.log"}
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1500, "height": 2000})
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        yield pg
        context.close()
        browser.close()


def _settle(pg) -> None:
    pg.wait_for_selector('[data-testid="stApp"]')
    pg.wait_for_timeout(300)
    pg.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=120_000)


def test_load_demo_and_browse_data_page(server, page):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(server["url"])
    _settle(page)
    page.get_by_role("button", name="Load demo experiment").click()
    page.get_by_text("Open Data").wait_for(timeout=180_000)
    _settle(page)
    assert (server["workspace"] / "demo" / "project.json").exists()
    body = page.inner_text("body")
    assert "Data" in body and "steps of" in body
    page.screenshot(path=str(SHOTS / "home.png"), full_page=True)

    page.get_by_text("Open Data").click()
    page.get_by_text("Slice viewer").wait_for()
    _settle(page)
    page.locator(".js-plotly-plot").first.wait_for()
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=60_000)
    text = page.inner_text("body")
    assert "Project demo" in text.replace("**", "")
    assert "Grey values over time" in text
    assert "Traceback" not in text
    page.screenshot(path=str(SHOTS / "data.png"), full_page=True)

    # A reload keeps the open project (it lives in the URL and the workspace, not only in the session).
    page.reload()
    page.get_by_text("Slice viewer").wait_for()
    _settle(page)
    assert "Project demo" in page.inner_text("body").replace("**", "")


def test_bad_path_shows_one_sentence_not_a_traceback(server, page):
    page.goto(server["url"] + "/data")
    _settle(page)
    page.get_by_text("Open scans").first.click()
    page.get_by_label("Path on the server").fill("/etc")
    page.get_by_role("button", name="Open scans").click()
    err = page.locator('[data-testid="stAlert"]').filter(has_text="outside the allowed data root")
    err.wait_for()
    assert "Traceback" not in page.inner_text("body")
    page.screenshot(path=str(SHOTS / "data_error.png"), full_page=True)
