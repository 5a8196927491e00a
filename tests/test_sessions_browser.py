"""Several users on one server at once (issue 16): three browser sessions, two on the same project and one on
another, save at the same time; nothing crosses from one session to another and no write is lost."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from conftest import SMALL_DEMO, browser_page, launch_streamlit, settle

pytestmark = pytest.mark.browser


def _open_conditions(page, url: str, project: str) -> None:
    page.goto(f"{url}/data?project={project}")
    settle(page)
    page.get_by_text("Acquisition, phases and region of interest").click()
    page.get_by_role("textbox", name="Sample").wait_for()


def test_sessions_on_the_same_and_on_different_projects_keep_apart_and_lose_no_write(tmp_path):
    from core.imaging.synthetic import DemoConfig
    from core.workflow.data import create_demo_project
    from core.workflow.labels import LabelStore
    from core.workflow.project import open_project

    ws = tmp_path / "workspace"
    ws.mkdir()
    for name in ("alpha", "beta"):
        create_demo_project(name, workspace=ws, config=DemoConfig(**SMALL_DEMO))
    with launch_streamlit(ws, data_root=tmp_path, log_path=tmp_path / "streamlit.log") as url, \
            browser_page(height=1400) as first:
        browser = first.context.browser
        contexts = [browser.new_context(viewport={"width": 1500, "height": 1400}) for _ in range(2)]
        second, third = (c.new_page() for c in contexts)
        for pg in (first, second, third):
            pg.set_default_timeout(60_000)
            pg.goto(url)
            settle(pg)
        # first and second on alpha, third on beta; all three forms open before anyone saves
        _open_conditions(first, url, "alpha")
        _open_conditions(second, url, "alpha")
        _open_conditions(third, url, "beta")
        first.get_by_role("textbox", name="Sample").fill("alpha core A1")
        second.get_by_role("textbox", name="Temperature").fill("120 °C")
        third.get_by_role("textbox", name="Sample").fill("beta core B7")
        # the three saves at once (Playwright's sync pages belong to one thread: click in turn without waiting)
        for pg in (first, second, third):
            pg.get_by_role("button", name="Save conditions").click(no_wait_after=True)
        for pg in (first, second, third):
            pg.get_by_text("Saved the experiment conditions.").wait_for()
            settle(pg)
        # no lost write: the second form still showed alpha's old (empty) sample, and did not write it back
        assert open_project("alpha", workspace=ws).conditions() == {"sample": "alpha core A1", "temperature": "120 °C"}
        assert open_project("beta", workspace=ws).conditions() == {"sample": "beta core B7"}
        # no cross-talk: each session is still on its own project, also after a reload
        for pg, name in ((first, "alpha"), (second, "alpha"), (third, "beta")):
            pg.reload()
            settle(pg)  # (a reloaded page can be drawn before its script run has begun: wait for the project line)
            pg.locator('[data-testid="stSidebar"]').get_by_text(name, exact=True).first.wait_for()
            side = pg.locator('[data-testid="stSidebar"]').inner_text()
            assert f"Project:\n{name}" in side or f"Project: {name}" in side.replace("\n", " "), (name, side)
        # labels painted on the same project from two sessions' worth of writers at once: every stroke kept
        store = LabelStore(open_project("alpha", workspace=ws))
        shape = open_project("alpha", workspace=ws).scans()[0].shape

        def paint(z: int, code: int) -> None:
            import numpy as np

            strokes = np.zeros(shape[1:], np.uint8)
            strokes[4:8, 4:8] = code
            LabelStore(open_project("alpha", workspace=ws)).paint(1, z, strokes)

        threads = [threading.Thread(target=paint, args=(z, 1 + z % 4)) for z in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(z for _, z in store.slices()) == list(range(8))
        assert open_project("alpha", workspace=ws).conditions()["sample"] == "alpha core A1"  # untouched by them
        for c in contexts:
            c.close()
