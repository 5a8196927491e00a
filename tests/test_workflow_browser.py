"""The whole workflow in a real browser, as a new user walks it (issue 16): load the demo, brush, forest and accept, a
short training, segment every step, evaluate, the 3D view, the analysis's verdict, the HTML report; a screenshot of
every page (artifacts/screenshots/walk-*.png, a CI artefact). The same model through `python -m core segment` and
`analyze` gives the same numbers as the pages did: one core behind both."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import browser_page, launch_streamlit, settle

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"


def _nav(page, name: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=name, exact=True).click()
    settle(page)


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.mouse.move(5, 5)
    page.wait_for_timeout(400)
    page.screenshot(path=str(SHOTS / f"walk-{name}.png"), full_page=True)


def _no_traceback(page) -> str:
    body = page.inner_text("body")
    assert "Traceback" not in body and "Something went wrong" not in body, body[-2000:]
    return body


def test_the_whole_workflow_in_the_browser_and_the_cli_agrees(tmp_path, monkeypatch):
    monkeypatch.delenv("REACTOMO_JOB_RUNNER", raising=False)  # the default: jobs run in the worker process
    ws = tmp_path / "workspace"
    ws.mkdir()
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("REACTOMO_MODELS", str(models))
    with launch_streamlit(ws, data_root=tmp_path, log_path=tmp_path / "streamlit.log") as url, \
            browser_page(height=1600) as page:
        page.set_default_timeout(120_000)
        # 1. a project with the demo experiment (made by the worker)
        page.goto(url)
        settle(page)
        page.get_by_role("button", name="Load demo experiment").click()
        page.get_by_text(re.compile(r"Data — 10 steps of 40×256×256")).wait_for(timeout=300_000)
        settle(page)
        _no_traceback(page)
        _shot(page, "home")
        _nav(page, "Data")
        page.get_by_text("Slice viewer").wait_for()
        _no_traceback(page)
        _shot(page, "data")

        # 2. brush a stroke, then the demo's scribbles (a few strokes of every phase)
        _nav(page, "Label")
        page.locator("canvas.dc-canvas").first.wait_for()
        page.get_by_text("bassanite (2)").click()
        settle(page)
        box = page.locator("canvas.dc-canvas").first.bounding_box()
        x0, y0 = box["x"] + 0.3 * box["width"], box["y"] + 0.4 * box["height"]
        page.mouse.move(x0, y0)
        page.mouse.down()
        for i in range(1, 11):
            page.mouse.move(x0 + 8 * i, y0 + 2 * i, steps=2)
        page.mouse.up()
        page.get_by_text(re.compile(r"Saved [\d,]+ px of bassanite")).wait_for()
        settle(page)
        page.get_by_role("button", name="Import the demo's scribbles").click()
        page.get_by_text("Imported the demo's scribbles").first.wait_for()
        settle(page)
        _no_traceback(page)
        _shot(page, "label")

        # 3. the forest's ground truth, accepted
        _nav(page, "Ground truth")
        page.get_by_role("button", name="Train random forest").click()
        page.get_by_role("button", name="Accept as the project's ground truth").wait_for(timeout=180_000)
        page.get_by_role("button", name="Accept as the project's ground truth").click()
        page.get_by_text("is the project's ground truth").first.wait_for()
        settle(page)
        _no_traceback(page)
        _shot(page, "ground-truth")

        # 4. a short training (15 epochs, about half a minute here), in the worker
        _nav(page, "Train")
        page.get_by_role("spinbutton", name="Max epochs").fill("15")
        page.get_by_role("textbox", name="Model name").fill("walk-unet")
        page.get_by_role("button", name="Start training").click()
        page.get_by_text("Last run").wait_for(timeout=420_000)
        settle(page)
        assert (models / "walk-unet" / "card.json").exists()
        _no_traceback(page)
        _shot(page, "train")

        # 5. segment every step with it
        _nav(page, "Segment")
        page.get_by_role("textbox", name="Segmentation name").fill("walk")
        page.get_by_role("button", name="Start segmentation").click()
        page.get_by_text(re.compile(r"Segmentation 'walk' finished: 10 steps segmented")).wait_for(timeout=420_000)
        settle(page)
        _no_traceback(page)
        _shot(page, "segment")

        # 6. evaluate against the demo's known truth
        _nav(page, "Evaluate")
        page.get_by_text("Confusion matrix").first.wait_for()
        settle(page)
        body = _no_traceback(page)
        assert "known truth" in body
        _shot(page, "evaluate")

        # 7. the 3D view of a step (meshed by the worker, drawn by vtk.js)
        _nav(page, "3D")
        frame_el = page.locator("iframe").first
        frame_el.wait_for(timeout=300_000)
        frame_el.element_handle().content_frame().wait_for_function(
            "() => { const c = document.querySelector('canvas'); return c && c.width > 100 && c.height > 100; }",
            timeout=120_000)
        page.wait_for_timeout(1500)
        settle(page)
        _no_traceback(page)
        _shot(page, "3d")

        # 8. the analysis and its verdict
        _nav(page, "Analysis")
        page.get_by_role("button", name="Run the analysis").click()
        page.get_by_text(re.compile("Steps inside the band|The last analysis")).first.wait_for(timeout=300_000)
        settle(page)
        body = _no_traceback(page)
        assert "The last analysis" not in body, body[:2000]
        assert re.search(r"\d of 5 checks fail|All 5 checks pass", body), body[:3000]
        _shot(page, "analysis")

        # 9. the HTML report
        page.get_by_role("tab", name="Exports").click()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download the HTML report").click()
        report = tmp_path / download.value.suggested_filename
        download.value.save_as(report)
        text = report.read_text(encoding="utf-8")
        assert "<h1>demo: analysis report</h1>" in text and str(ws) not in text

    # the same model and scans through the CLI: the same volumes and the same tables
    from core.workflow.paths import analysis_folder, segmentation_folder
    from core.workflow.project import open_project

    project = open_project("demo", workspace=ws)
    scans = project.scan_path(0).parent
    cli = tmp_path / "cli"
    env = {"REACTOMO_WORKSPACE": str(ws), "REACTOMO_DATA_ROOT": str(tmp_path)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "core", "-q", *a], cwd=ROOT, check=True,  # noqa: E731
                                    env={**__import__("os").environ, **env}, capture_output=True, text=True)
    run("segment", "--model", str(models / "walk-unet"), "--scans", str(scans), "--out", str(cli / "seg"),
        "--voxel-size", str(project.voxel_size_um()), "--interval", str(project.interval_s()))
    ui_volumes = (segmentation_folder(project, "walk") / "phase_volumes.csv").read_text().splitlines()
    cli_volumes = (cli / "seg" / "phase_volumes.csv").read_text().splitlines()
    strip = lambda lines: [",".join(c for i, c in enumerate(r.split(",")) if i != 2) for r in lines]  # noqa: E731
    assert strip(cli_volumes) == strip(ui_volumes)  # every voxel count and volume (the scan path column aside)
    run("analyze", "--segmentations", str(cli / "seg"), "--out", str(cli / "analysis"),
        "--voxel-size", str(project.voxel_size_um()), "--interval", str(project.interval_s()))
    for table in ("molar_evolution.csv", "pore_check.csv", "inert.csv"):
        assert (cli / "analysis" / table).read_bytes() == (analysis_folder(project, "walk") / table).read_bytes(), table
