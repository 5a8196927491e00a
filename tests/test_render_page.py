"""The 3D page (AppTest): a render job started from the page, its cached result shown with the 3D numbers, side by
side views, and the sentences for bad choices."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.workflow.jobs import list_jobs

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages" / "7_3D.py")


def _page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["project_name"] = "demo"
    return at


def _segment(project, steps=(1, 3)):
    from core.network.inference import InferenceConfig
    from core.workflow.segment import segment_project

    return segment_project(project, ROOT / "models" / "demo-unet", name="s1", steps=list(steps),
                           inference=InferenceConfig(tile=64))


def _wait(project, n: int = 1, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = list_jobs(project.root, kind="render")
        if len(jobs) >= n and not any(j.is_active for j in jobs):
            return jobs
        time.sleep(0.3)
    pytest.fail("the render job did not finish in time")


def _text(at: AppTest) -> str:
    return " ".join(str(e.value) for e in [*at.markdown, *at.caption, *at.info, *at.error, *at.subheader])


def test_without_a_segmentation_the_page_says_what_to_do_first(demo_project):
    at = _page().run()
    assert not at.exception
    assert any("no segmented step yet" in i.value for i in at.info)


def test_the_page_renders_a_step_in_the_worker_and_shows_it_with_its_numbers(demo_project):
    _segment(demo_project)
    at = _page().run()
    assert not at.exception
    jobs = _wait(demo_project)  # the page queued the job itself (threads here; the worker process by default)
    assert jobs[0].status == "done", jobs[0].error
    assert jobs[0].params["name"] == "s1" and jobs[0].params["step"] in (1, 3)
    at.run()
    assert not at.exception and not at.error
    text = _text(at)
    assert "3D numbers" in text and "Block z" in text and "triangles: bassanite" in text and "Method." in text
    # one column per phase, one row per number (narrow: no sideways scrolling)
    table = next(d.value for d in at.dataframe if "Specific surface (mm²/mm³)" in d.value.index)
    assert set(table.columns) == {"bassanite", "pore"} and all(int(v) >= 0 for v in table.loc["Objects"])
    assert table.loc["Volume (mm³)"].str.fullmatch(r"\d+\.\d{5}").all()
    # the numbers' names whole (a user's walk read "Specific surface (mm²/mm³"): the index column is set wide
    frame = next(d for d in at.dataframe if "Specific surface (mm²/mm³)" in d.value.index)
    assert json.loads(frame.proto.columns)["_index"]["width"] == "large"
    assert len(at.get("iframe")) == 1  # the interactive view
    # the same settings again: straight from the cache, no new job
    at.run()
    assert len(list_jobs(demo_project.root, kind="render")) == 1


def test_two_steps_side_by_side_are_rendered_one_after_the_other(demo_project):
    _segment(demo_project)
    at = _page().run()
    _wait(demo_project, 1)
    at.radio(key="r3_compare").set_value("Two steps side by side").run()
    assert not at.exception
    jobs = _wait(demo_project, 2)
    assert sorted(j.params["step"] for j in jobs) == [1, 3] and all(j.status == "done" for j in jobs)
    at.run()
    assert not at.exception and len(at.get("iframe")) == 2
    table = next(d.value for d in at.dataframe if "Objects" in d.value.index)
    assert set(table.columns) == {f"demo, step {k} · {p}" for k in (1, 3) for p in ("bassanite", "pore")}


def test_no_phase_chosen_is_one_sentence_and_starts_nothing(demo_project):
    _segment(demo_project)
    at = _page()
    at.session_state["r3_phases"] = []
    at.run()
    assert not at.exception
    assert any("Pick at least one phase" in e.value for e in at.error)
    assert list_jobs(demo_project.root, kind="render") == []


def test_numbers_over_time_are_computed_in_the_worker_and_shown_as_a_chart_table_and_csv(demo_project):
    _segment(demo_project, steps=(0, 1, 3))
    at = _page().run()
    _wait(demo_project)  # the view's own job first
    at.run()
    assert not at.exception
    go = next(b for b in at.button if b.label.startswith("Compute for all 3 steps"))
    go.click().run()
    assert not at.exception and not at.error
    deadline = time.monotonic() + 120
    while any(j.is_active for j in list_jobs(demo_project.root, kind="render-numbers")):
        assert time.monotonic() < deadline, "the numbers over time did not finish in time"
        time.sleep(0.3)
    (job,) = list_jobs(demo_project.root, kind="render-numbers")
    assert job.status == "done", job.error
    at.run()
    assert not at.exception and not at.error
    table = next(d.value for d in at.dataframe if "Step" in d.value.columns)
    assert sorted(set(table["Step"])) == [0, 1, 3] and set(table["Phase"]) == {"bassanite", "pore"}
    # minutes and plain decimals, as on the chart and the other pages (a user walk saw seconds and "6.198e-03")
    times = demo_project.times_s()
    assert [float(x) for x in table["Time (min)"]] == [round(times[k] / 60, 1) for k in table["Step"]]
    assert all("e" not in v for v in table["Volume (mm³)"] if v != "–")
    assert any("over time" in str(c.proto.spec) for c in at.get("plotly_chart"))
    assert "Method." in _text(at) and "3 steps" in _text(at)
    at.selectbox(key="r3_over_metric").set_value("objects").run()
    assert not at.exception
    assert not any(b.label.startswith("Compute for all") for b in at.button)  # shown from the cache, no new job


def test_a_bad_block_is_one_sentence_on_the_page_and_queues_nothing(demo_project):
    """A user's walk: a box in µm with z0 above z1 queued a failing job about every second, forever, and the page
    never said why; a box one voxel thick crashed the meshing."""
    _segment(demo_project)
    for box, said in (((40.0, 10.0), "z range 14-4 is reversed; give z0 below z1"),
                      ((20.0, 21.0), "z range 7-8 is 1 voxel thick; a 3D view needs at least 2 voxels")):
        at = _page()
        at.session_state["r3_mode"] = "Box in µm"
        at.session_state["r3_um0"], at.session_state["r3_um1"] = box
        at.run()
        assert not at.exception
        assert any(said in e.value for e in at.error), [e.value for e in at.error]
        assert list_jobs(demo_project.root, kind="render") == []


def test_a_view_whose_job_failed_says_why_and_is_queued_again_only_when_asked(demo_project):
    import shutil

    from core.errors import ReactomoError
    from core.workflow.jobs import start_job
    from core.workflow.paths import render_folder

    _segment(demo_project)
    at = _page().run()  # queues the view's job; it and its result are replaced below by a job that failed
    jobs = _wait(demo_project)
    params = jobs[0].params
    for j in jobs:
        shutil.rmtree(demo_project.root / "jobs" / j.id)
    shutil.rmtree(render_folder(demo_project, "s1"))

    def fail(job):
        raise ReactomoError("The block holds no voxel of the chosen phases (a test's failure).")

    failed = start_job(demo_project.root, "render", fail, params=params, title="3D view (test)")
    failed.wait(30)
    assert [j.status for j in list_jobs(demo_project.root, kind="render")] == ["failed"]
    for _ in range(3):  # reruns of the page (a fragment's tick, a widget) queue nothing new
        at.run()
        assert not at.exception
    assert len(list_jobs(demo_project.root, kind="render")) == 1
    assert any("with these settings failed: The block holds no voxel" in e.value for e in at.error)
    next(b for b in at.button if b.label == "Try again").click().run()
    assert len(list_jobs(demo_project.root, kind="render")) == 2


def test_a_box_in_um_is_placed_with_the_segmentations_voxel_size_not_a_changed_projects(demo_project):
    """A user's walk: after the Data page's voxel size changed, the box in µm was converted with the new one while the
    meshes keep the segmentation's."""
    from core.workflow.render import voxel_size

    _segment(demo_project)
    used = voxel_size(demo_project, "s1")
    demo_project.set_voxel_size(used * 2)
    assert voxel_size(demo_project, "s1") == used
    at = _page()
    at.session_state["r3_mode"] = "Box in µm"
    at.run()
    assert not at.exception
    z1 = next(n for n in at.number_input if n.key == "r3_um1")
    assert z1.max == pytest.approx(16 * used)  # the small demo's 16 slices at the segmentation's voxel size


def test_a_segmentation_of_one_step_offers_no_second_step_and_nothing_over_time(demo_project):
    """A user's walk: with one segmented step the page offered "Two steps side by side" (the same scene twice), a
    bare-dot step slider and "Compute for all 1 steps"."""
    _segment(demo_project, steps=(2,))
    at = _page().run()
    assert not at.exception, at.exception
    assert "Two steps side by side" not in at.radio(key="r3_compare").options
    assert not [s for s in at.select_slider if s.key == "r3_step"]
    assert any("the only step segmented" in m.value for m in at.markdown)
    assert not any(b.label.startswith("Compute for all") for b in at.button)
    assert any("has one segmented step, so there is nothing to follow over time" in c.value for c in at.caption)
    _wait(demo_project, 1)  # the one view's render job, started by the page, ends before the project is removed
