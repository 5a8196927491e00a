"""Real browser: Debian's headless Chromium driven by Playwright against `streamlit run` on 127.0.0.1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import browser_page, launch_streamlit, settle

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    ws = tmp / "workspace"
    ws.mkdir()
    with launch_streamlit(ws, data_root=tmp, log_path=tmp / "streamlit.log") as url:
        yield {"url": url, "workspace": ws, "log": tmp / "streamlit.log"}


@pytest.fixture(scope="module")
def page(server):
    with browser_page(height=2000) as pg:
        # Streamlit runs the first session after a server start in its old pages/-folder mode until app.py's
        # st.navigation has run once, so a first visit straight to /data shows a "Page not found" dialog (the page
        # itself loads under it). Open the home page first, as every later visitor effectively does.
        pg.goto(server["url"])
        settle(pg)
        yield pg


def test_load_demo_and_browse_data_page(server, page):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(server["url"])
    settle(page)
    page.get_by_role("button", name="Load demo experiment").click()
    page.get_by_text("Open Data").wait_for(timeout=180_000)  # the project at once, the demo made by the worker:
    page.get_by_text(re.compile(r"Data — \d+ steps of")).wait_for(timeout=300_000)  # the checklist follows it
    settle(page)
    assert (server["workspace"] / "demo" / "project.json").exists()
    body = page.inner_text("body")
    assert "Data" in body and "steps of" in body
    page.screenshot(path=str(SHOTS / "home.png"), full_page=True)

    page.get_by_text("Open Data").click()
    page.get_by_text("Slice viewer").wait_for()
    settle(page)
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
    settle(page)
    assert "Project demo" in page.inner_text("body").replace("**", "")


def test_bad_path_shows_one_sentence_not_a_traceback(server, page):
    page.goto(server["url"] + "/data")
    settle(page)
    page.get_by_text("Open scans").first.click()
    box = page.get_by_label("Path on the server")
    err = page.locator('[data-testid="stAlert"]').filter(has_text="outside the allowed data root")
    seen = []
    # once (a clean-clone CI run on 2026-12-07; cause not found, the same test passed in the other runs and alone) the
    # submit got no answer in 60 s: tried twice, and what the page showed instead is kept for the failure message
    for _ in range(2):
        box.fill("/etc")
        page.get_by_role("button", name="Open scans").click()
        try:
            err.wait_for(timeout=45_000)
            break
        except Exception:
            seen.append({"path box": box.input_value(),
                         "alerts": page.locator('[data-testid="stAlert"]').all_inner_texts()})
    assert err.is_visible(), f"no 'outside the allowed data root' sentence; the page showed: {seen}"
    assert "Traceback" not in page.inner_text("body")
    page.screenshot(path=str(SHOTS / "data_error.png"), full_page=True)


def test_upload_tiffs_in_the_browser(server, page, tmp_path):
    import numpy as np
    import tifffile

    from core.workflow.project import create_project, open_project

    create_project("uploads", workspace=server["workspace"])
    rng = np.random.default_rng(1)
    files = []
    for i in range(2):
        p = tmp_path / f"t{i:03d}.tif"
        tifffile.imwrite(p, rng.integers(1000, 5000, size=(6, 32, 40), dtype=np.uint16))
        files.append(str(p))
    rgb = tmp_path / "colour.tif"
    tifffile.imwrite(rgb, rng.integers(0, 255, size=(6, 32, 40, 3), dtype=np.uint8), photometric="rgb")

    page.goto(server["url"] + "/data?project=uploads")
    settle(page)
    page.get_by_role("tab", name="Upload TIFFs").click()
    page.locator('input[type="file"]').set_input_files(files)
    page.get_by_text("t001.tif").wait_for()
    page.get_by_role("button", name="Add uploaded files as steps").click()
    page.get_by_text("Added 2 uploaded file(s).").wait_for()
    settle(page)
    scans = open_project("uploads", workspace=server["workspace"]).scans()
    assert [s.name for s in scans] == ["t000", "t001"] and scans[0].shape == (6, 32, 40)
    page.get_by_text("Slice viewer").wait_for()

    # A colour TIFF is refused with one sentence; the two good steps stay.
    page.get_by_text("Open scans").first.click()
    page.get_by_role("tab", name="Upload TIFFs").click()
    page.locator('input[type="file"]').set_input_files([str(rgb)])
    page.get_by_text("colour.tif").wait_for()
    page.get_by_role("button", name="Add uploaded files as steps").click()
    alert = page.locator('[data-testid="stAlert"]').filter(has_text="colour image")
    alert.wait_for()
    assert "'colour.tif'" in alert.inner_text() and ".upload-" not in alert.inner_text()
    assert "Traceback" not in page.inner_text("body")
    assert len(open_project("uploads", workspace=server["workspace"]).scans()) == 2
    assert not (server["workspace"] / "uploads" / "scans" / "colour.tif").exists()
    page.screenshot(path=str(SHOTS / "data_upload_error.png"), full_page=True)


def test_ground_truth_page_trains_and_sends_back_to_label(server, page):
    from core.workflow.data import create_demo_project
    from core.workflow.labels import import_demo_scribbles
    from core.workflow.project import open_project
    from core.imaging.synthetic import DemoConfig

    # The first test's button made the demo; made here too when this test runs alone.
    project = create_demo_project("demo", workspace=server["workspace"], if_missing=True,
                                  config=DemoConfig(steps=4, shape=(16, 64, 72), seed=3))
    import_demo_scribbles(project)
    page.goto(server["url"])  # a fresh server answers its very first deep link with "page not found"
    settle(page)
    page.goto(server["url"] + "/ground-truth?project=demo")
    settle(page)
    page.get_by_role("button", name="Train random forest").click()
    page.get_by_role("button", name="Accept as the project's ground truth").wait_for(timeout=180_000)
    settle(page)
    # the threshold comparison (held-out forests) renders last, seconds after the forest's own charts: wait for it
    page.get_by_text("mean Dice").first.wait_for(timeout=180_000)
    settle(page)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 7", timeout=60_000)
    text = page.inner_text("body")
    assert "Random-forest labelling" in text and "mean Dice" in text and "Traceback" not in text
    page.screenshot(path=str(SHOTS / "ground_truth.png"), full_page=True)
    page.get_by_role("button", name="Accept as the project's ground truth").click()
    page.get_by_text(re.compile(r"This labelling \(\d+ slices?\) is the project's ground truth")).wait_for()
    settle(page)
    assert open_project("demo", workspace=server["workspace"]).manifest["ground_truth"]["slices"]
    page.get_by_role("button", name="Label more where it is unsure").click()
    page.wait_for_function("location.pathname.endsWith('/label')", timeout=60_000)
    page.get_by_role("heading", name="Label").first.wait_for()
    settle(page)
    assert "Brush" in page.inner_text("body")
