"""3D in a real browser (issue 13): the page's view, meshed by the worker, appears and turns when dragged; the
exported HTML opens from file:// with no network request at all."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from conftest import SMALL_DEMO, browser_page, launch_streamlit, settle

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def _wait_for_drawing(frame_or_page, timeout_ms: int = 60_000) -> None:
    """vtk.js draws into a WebGL canvas; wait until it exists and has a size."""
    frame_or_page.wait_for_function(
        "() => { const c = document.querySelector('canvas'); return c && c.width > 100 && c.height > 100; }",
        timeout=timeout_ms)


def test_the_3d_view_appears_and_turns_when_dragged(tmp_path, monkeypatch):
    from core.imaging.synthetic import DemoConfig
    from core.network.inference import InferenceConfig
    from core.workflow.data import create_demo_project
    from core.workflow.segment import segment_project

    monkeypatch.delenv("REACTOMO_JOB_RUNNER", raising=False)  # the default: meshing runs in the worker process
    ws = tmp_path / "workspace"
    ws.mkdir()
    project = create_demo_project("demo", workspace=ws, config=DemoConfig(**SMALL_DEMO))
    segment_project(project, ROOT / "models" / "demo-unet", name="s1", steps=[1, 3], inference=InferenceConfig(tile=64))
    with launch_streamlit(ws, data_root=tmp_path, log_path=tmp_path / "streamlit.log") as url, \
            browser_page(height=1400) as page:
        page.goto(url)
        settle(page)
        page.goto(url + "/3d?project=demo")
        settle(page)
        frame_el = page.locator("iframe").first
        frame_el.wait_for(timeout=180_000)  # the worker starts, meshes the step, the page shows the cached view
        frame = frame_el.element_handle().content_frame()
        _wait_for_drawing(frame)
        page.wait_for_timeout(1500)
        settle(page)
        body = page.inner_text("body")
        assert "3D numbers" in body and "Traceback" not in body
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "3d.png"), full_page=True)
        before = _pixels(frame_el.screenshot())
        box = frame_el.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx + 180, cy + 60, steps=12)
        page.mouse.up()
        page.wait_for_timeout(1000)
        after = _pixels(frame_el.screenshot())
        assert before.shape == after.shape
        changed = (np.abs(before - after).sum(axis=2) > 30).mean()
        assert before.std() > 5, "the view is blank"
        assert changed > 0.05, f"only {changed:.1%} of the view changed when dragged"


def test_the_exported_html_opens_offline_with_no_request(tmp_path):
    import tifffile

    from core.imaging.synthetic import DemoConfig, make_demo
    from core.phases import DEFAULT_PHASES
    from core.render.surfaces import RenderConfig
    from core.workflow.render import render_labels

    exp = make_demo(DemoConfig(steps=2, shape=(16, 48, 48), seed=1, imaging="fast"))
    tifffile.imwrite(tmp_path / "seg.tif", exp.truth[1])
    result = render_labels(tmp_path / "seg.tif", tmp_path / "r", RenderConfig(max_triangles=20_000), voxel_size_um=2.75,
                           phases=DEFAULT_PHASES)
    with browser_page(height=900) as page:
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(result.html.as_uri())
        _wait_for_drawing(page)
        page.wait_for_timeout(1500)
        shot = _pixels(page.screenshot())
    outside = [u for u in requests if not u.startswith(("file:", "data:", "blob:"))]
    assert outside == [], f"the offline view fetched {outside}"
    assert shot.std() > 5, "the offline view is blank"
