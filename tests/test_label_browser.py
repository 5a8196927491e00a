"""The Label page in a real browser: draw a stroke with the mouse, see it counted and shown, reload, still there."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import SMALL_DEMO, browser_page, launch_streamlit, settle
from core.workflow.labels import LabelStore

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def label_server(tmp_path_factory):
    from core.workflow.data import create_demo_project
    from core.imaging.synthetic import DemoConfig

    tmp = tmp_path_factory.mktemp("label_browser")
    ws = tmp / "workspace"
    ws.mkdir()
    project = create_demo_project("demo", workspace=ws, config=DemoConfig(**SMALL_DEMO))
    with launch_streamlit(ws, data_root=tmp, log_path=tmp / "streamlit.log") as url:
        yield {"url": url, "workspace": ws, "project": project}


@pytest.fixture(scope="module")
def label_page(label_server):
    with browser_page(height=1700) as pg:
        yield pg


def _phase_row(pg, name: str, expect: tuple[int, int] | None = None) -> tuple[int, int]:
    """(labelled pixels, slices) of a phase, read from the counter table on the page.

    The row is waited for (after a reload the page can be drawn before its script run has begun); with `expect`, the
    row is read again until it shows those numbers or 30 s pass, and the last reading is returned.
    """
    row = pg.locator('[data-testid="stTable"] tr').filter(has_text=name).first
    found: tuple[int, int] | None = None
    for _ in range(60):
        row.wait_for()
        cells = row.locator("td").all_inner_texts()
        numbers = [c.replace(",", "").strip() for c in cells if re.fullmatch(r"[\d,.]+", c.replace(",", "").strip())]
        if len(numbers) >= 3:  # code, pixels, slices, share
            found = (int(numbers[1]), int(numbers[2]))
            if expect is None or found == expect:
                return found
        pg.wait_for_timeout(500)
    assert found is not None, f"the counter table never showed a row for {name}"
    return found


def test_draw_a_stroke_see_it_counted_and_keep_it_after_a_reload(label_server, label_page, tmp_path):
    pg, url, ws = label_page, label_server["url"], label_server["workspace"]
    demo = label_server["project"].demo()
    step_name = label_server["project"].scans()[demo["label_step"]].name
    z = demo["label_slices"][0]
    pg.goto(url)  # a fresh server answers its very first page request with the home page; warm it up there
    settle(pg)
    pg.goto(f"{url}/label?project=demo")
    settle(pg)
    pg.locator("canvas.dc-canvas").first.wait_for()
    assert _phase_row(pg, "bassanite", expect=(0, 0)) == (0, 0)
    assert "No labels yet for gypsum, bassanite, pore, celestite" in pg.inner_text("body")

    pg.get_by_text("bassanite (2)").click()
    settle(pg)
    canvas = pg.locator("canvas.dc-canvas").first
    box = canvas.bounding_box()
    x0, y0 = box["x"] + 0.25 * box["width"], box["y"] + 0.5 * box["height"]
    pg.mouse.move(x0, y0)
    pg.mouse.down()
    for i in range(1, 21):
        pg.mouse.move(x0 + i * 12, y0 + i * 2, steps=2)
    pg.mouse.up()
    pg.get_by_text(re.compile(r"Saved [\d,]+ px of bassanite")).wait_for()
    settle(pg)

    pixels, slices = _phase_row(pg, "bassanite")
    assert pixels > 20 and slices == 1
    assert (ws / "demo" / "labels" / step_name / f"z{z:05d}.tif").exists()
    text = pg.inner_text("body")
    assert "No labels yet for gypsum, pore, celestite" in text and "Traceback" not in text

    # The new, empty canvas shows the saved stroke in its background image (orange over grey).
    pg.wait_for_timeout(500)
    canvas = pg.locator("canvas.dc-canvas").first
    box = canvas.bounding_box()
    mid_x, mid_y = int(x0 + 10 * 12 - box["x"]), int(y0 + 10 * 2 - box["y"])
    r, g, b, _ = pg.locator("canvas.dc-background-canvas").first.evaluate(  # (the canvas is in a shadow root)
        "(c, [x, y]) => Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data)", [mid_x, mid_y]
    )
    assert r - b > 80, (r, g, b)

    pg.reload()
    settle(pg)
    pg.locator("canvas.dc-canvas").first.wait_for()
    assert _phase_row(pg, "bassanite", expect=(pixels, 1)) == (pixels, 1)
    assert f"this step: z {z}" in pg.inner_text("body")

    # The demo's scribbles come in on top, and every phase is then labelled.
    pg.get_by_role("button", name="Import the demo's scribbles").click()
    pg.get_by_text("Imported the demo's scribbles").first.wait_for()
    settle(pg)
    assert _phase_row(pg, "bassanite")[0] > pixels and _phase_row(pg, "celestite")[1] == len(demo["label_slices"])
    assert "No labels yet" not in pg.inner_text("body")

    # Export: the step's label volume downloads as a TIFF holding exactly what is stored.
    pg.get_by_text("Import or export labels (TIFF)").click()
    with pg.expect_download() as download:
        pg.get_by_role("button", name="Download label TIFF").click()
    target = tmp_path / download.value.suggested_filename
    download.value.save_as(target)
    assert target.name == f"demo_{step_name}_labels.tif"
    exported = tifffile.imread(target)
    store = LabelStore(label_server["project"])
    assert np.array_equal(exported, store.volume(demo["label_step"]))
    pg.get_by_text("Import or export labels (TIFF)").click()  # fold it again for the screenshot
    pg.mouse.move(5, 5)  # away from the canvas, so its toolbar is hidden in the screenshot
    pg.wait_for_timeout(500)
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / "label.png"), full_page=True)
