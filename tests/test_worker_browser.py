"""The whole path in a real browser: a segmentation started on the Segment page runs in the worker, and killing the
web server mid-job does not stop it (issue 12)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import SMALL_DEMO, browser_page, launch_streamlit, settle

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"


def test_a_segmentation_started_in_the_browser_survives_the_server(tmp_path, monkeypatch):
    from core.workflow.data import create_demo_project
    from core.workflow.jobs import list_jobs
    from core.imaging.synthetic import DemoConfig

    monkeypatch.delenv("REACTOMO_JOB_RUNNER", raising=False)  # the default: the worker process
    ws = tmp_path / "workspace"
    ws.mkdir()
    project = create_demo_project("demo", workspace=ws, config=DemoConfig(**SMALL_DEMO))
    with launch_streamlit(ws, data_root=tmp_path, log_path=tmp_path / "streamlit.log") as url, browser_page() as page:
        page.goto(url)  # a fresh server answers its very first deep link with "page not found"
        settle(page)
        page.goto(url + "/segment?project=demo")
        settle(page)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "segment.png"), full_page=True)
        page.get_by_role("button", name="Start segmentation").click()
        deadline = time.monotonic() + 60
        while not list_jobs(project.root, kind="segment") and time.monotonic() < deadline:
            time.sleep(0.05)
        server_pid = url.proc.pid
        url.proc.kill()  # the web server dies as soon as the job is queued (the worker is still starting)
        url.proc.wait()
        jobs = list_jobs(project.root, kind="segment")
        assert jobs and jobs[0].runner == "worker", "the page queued no job for the worker"
        assert jobs[0].is_active  # not finished when the server died
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            rec = list_jobs(project.root, kind="segment")[0]
            if not rec.is_active:
                break
            time.sleep(0.3)
        assert rec.status == "done", rec.error
        assert rec.pid not in (None, server_pid)  # run by the worker, not by the server that was killed
        assert rec.result["done"] == list(range(SMALL_DEMO["steps"]))
        assert project.manifest["segmentations"][rec.params["name"]]["status"] == "done"
