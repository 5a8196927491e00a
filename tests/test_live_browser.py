"""The Live page in a real browser (issue 14): started from the form, the watcher runs in the worker process while
scans land by rename; the status strip and the live charts update, and a screenshot is kept as a CI artefact."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from conftest import browser_page, launch_streamlit, settle

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"


def test_the_live_page_follows_scans_as_they_land(tmp_path, monkeypatch):
    from core.imaging.io import write_volume
    from core.imaging.synthetic import DemoConfig, make_demo
    from core.workflow.project import create_project

    monkeypatch.delenv("REACTOMO_JOB_RUNNER", raising=False)  # the default: the watcher runs in the worker process
    ws = tmp_path / "workspace"
    ws.mkdir()
    scans = tmp_path / "beamline"
    scans.mkdir()
    demo = make_demo(DemoConfig(steps=5, shape=(12, 64, 72), seed=5))
    create_project("beamtime", workspace=ws)
    for k in range(2):
        write_volume(scans / f"scan_{k:03d}.tif", demo.scans[k])

    def land() -> None:  # the reconstruction: write under a hidden name, then rename
        for k in range(2, 5):
            time.sleep(3)
            write_volume(scans / f".scan_{k:03d}.tif", demo.scans[k])
            os.replace(scans / f".scan_{k:03d}.tif", scans / f"scan_{k:03d}.tif")

    with launch_streamlit(ws, data_root=tmp_path, log_path=tmp_path / "streamlit.log") as url, \
            browser_page(height=2200) as page:
        page.goto(url)
        settle(page)
        page.goto(url + "/live?project=beamtime")
        settle(page)
        page.get_by_role("textbox", name="Scan folder on the server").fill(str(scans))
        page.get_by_role("spinbutton", name="Seconds between scans").fill("5")
        page.get_by_text("Renamed from a temporary name").click()
        page.get_by_role("button", name="Start watching").click()
        settle(page)
        feeder = threading.Thread(target=land, daemon=True)
        feeder.start()
        deadline = time.monotonic() + 180
        body = ""
        while time.monotonic() < deadline:
            page.wait_for_timeout(1500)
            body = page.inner_text("body")
            if "Last segmented\n\nscan_004.tif" in body.replace("\n\n\n", "\n\n") or (
                    "scan_004.tif" in body and "Molar evolution" in body and "Seconds per scan" in body):
                break
        assert "scan_004.tif" in body and "Molar evolution" in body, body[-2000:]
        assert "Traceback" not in body and "Seconds per scan" in body and "Next scan expected" in body
        page.wait_for_timeout(2500)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "live.png"), full_page=True)
        page.get_by_role("button", name="Stop watching").click()
        page.wait_for_timeout(3000)
        settle(page)
        assert "Start watching" in page.inner_text("body")  # stopped: the form is back, the run below it
