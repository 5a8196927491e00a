"""The Segment and Evaluate pages: a background segmentation with the shipped model, QC viewer, scores and tables."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.errors import ReactomoError
from core.workflow.jobs import list_jobs

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "demo-unet"


@pytest.fixture
def shipped_models(monkeypatch):
    """The repo's own registry (models/demo-unet), as the app uses it without REACTOMO_MODELS."""
    monkeypatch.delenv("REACTOMO_MODELS", raising=False)
    return ROOT / "models"


def _page(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    at.session_state["project_name"] = "demo"
    return at


def _start(at: AppTest) -> AppTest:
    return next(b for b in at.button if b.label == "Start segmentation").click().run()


def _wait(project, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = list_jobs(project.root, kind="segment")
        if jobs and not jobs[0].is_active:
            return jobs[0]
        time.sleep(0.2)
    pytest.fail("the segmentation job did not finish in time")


def _table(at: AppTest, column: str):
    """The first st.dataframe holding ``column`` (AppTest does not expose a dataframe's key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _segment(project, name: str = "seg-a", steps=(1, 2)):
    from core.network.inference import InferenceConfig
    from core.workflow.segment import segment_project

    return segment_project(project, SHIPPED, name=name, steps=list(steps), inference=InferenceConfig(tile=64))


# ------------------------------------------------------------------------------------------------ Segment page
def test_a_model_of_two_networks_says_what_it_costs_and_segments(demo_project, tmp_path, monkeypatch):
    import copy

    from core.network.bundle import load_bundle, save_bundle
    from core.network.unet import UNetConfig, UNetEnsemble
    from core.phases import PhaseTable

    model, card = load_bundle(SHIPPED)
    root = tmp_path / "models"
    monkeypatch.setenv("REACTOMO_MODELS", str(root))
    save_bundle(root / "pair", UNetEnsemble([model, copy.deepcopy(model)]), config=UNetConfig.from_dict(card["unet"]),
                phases=PhaseTable.from_dict(card["phases"]), normalisation=card["normalisation"],
                training=card["training"], provenance=card["provenance"], metrics=card["metrics"], seed=card["seed"],
                cleaning=card.get("cleaning"))
    at = _page("pages/5_Segment.py").run()
    assert not at.exception, at.exception
    assert any("2 networks averaged" in c.value and "about 2× the time of one" in c.value for c in at.caption)
    at.multiselect(key="seg_steps").set_value([1])
    at.number_input(key="seg_tile").set_value(64)
    _start(at)
    assert not at.exception, at.exception
    job = _wait(demo_project)
    assert job.status == "done", job.error


def test_segment_two_steps_in_the_background_then_qc(demo_project, shipped_models):
    at = _page("pages/5_Segment.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="seg_model").value == "demo-unet"
    assert any("mean validation Dice" in c.value and "gypsum" in c.value for c in at.caption)
    assert at.text_input(key="seg_name").value.startswith("demo-unet-")
    assert at.multiselect(key="seg_steps").value == [0, 1, 2, 3]
    assert any("no segmentation yet" in i.value for i in at.info)

    at.multiselect(key="seg_steps").set_value([1, 2])
    at.number_input(key="seg_tile").set_value(64)
    at.text_input(key="seg_name").set_value("qc-run")
    _start(at)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    job = _wait(demo_project)
    assert job.status == "done", job.error
    assert job.params["steps"] == [1, 2] and job.params["inference"]["tile"] == 64
    # the cleaning the model carries (chosen from its ground truth when it was trained), never one tuned on the
    # internal standard; the page says where it comes from
    from core.network.bundle import read_card
    from core.segmentation.postprocess import cleaning_for

    expected, why = cleaning_for("auto", demo_project.phases(), read_card(shipped_models / "demo-unet"))
    assert job.params["postprocess"]["enabled"] is True
    assert job.params["postprocess"]["min_sizes"] == {str(c): v for c, v in expected.min_sizes.items()}
    assert job.params["postprocess"]["rim_px"] == expected.rim_px
    assert any(why in c.value and "never a tuning target" in c.value for c in at.caption)
    # where the cleaning came from is kept with the segmentation (untouched inputs: the model's own choice)
    from core.segmentation.series import read_series_record

    record = read_series_record(demo_project.root / "segmentations" / "qc-run")
    assert job.params["cleaning_source"] == why and record["cleaning_source"] == why

    at.run()
    assert not at.exception, at.exception
    assert any("Segmentation 'qc-run' finished: 2 steps segmented" in s.value for s in at.success)
    steps = _table(at, "Status")
    assert list(steps["Step"]) == [1, 2] and list(steps["Status"]) == ["done", "done"]
    charts = _charts(at)
    fractions = next(c for c in charts if c["layout"]["yaxis"]["title"]["text"] == "volume fraction (%)")
    assert fractions["layout"]["xaxis"]["title"]["text"] == "time (min)"
    assert [t["name"] for t in fractions["data"]] == list(demo_project.phases().names)
    assert fractions["data"][0]["x"] == [5.0, 10.0]  # steps 1 and 2 at 300 s and 600 s
    assert any(t["type"] == "image" for c in charts for t in c["data"])  # the slice with its labels
    assert any(c["layout"]["barmode"] == "group" for c in charts if "barmode" in c["layout"])  # cleaning before/after
    cleaning = _table(at, "Before")
    assert list(cleaning["Phase"]) == list(demo_project.phases().names)
    formats = json.loads(next(d for d in at.dataframe if "Before" in d.value.columns).proto.columns)
    assert formats["Before"]["type_config"]["format"] == "localized"  # 154,936 voxels, as the other pages count
    assert at.select_slider(key="qc_step").value == 1
    at.select_slider(key="qc_step").set_value(2)
    at.slider(key="qc_opacity").set_value(0.8).run()
    assert not at.exception and not at.error
    assert any(b.label == "Download phase_volumes.csv" for b in at.get("download_button"))


def test_a_cleaning_edited_on_the_page_is_recorded_as_set_by_hand(demo_project, shipped_models):
    at = _page("pages/5_Segment.py").run()
    at.multiselect(key="seg_steps").set_value([1])
    at.number_input(key="seg_tile").set_value(64)
    at.text_input(key="seg_name").set_value("by-hand")
    at.number_input(key="seg_min_2").set_value(37)
    assert at.number_input(key="seg_zsigma").value == 0.7  # the default averaging over slices, offered on the page
    at.number_input(key="seg_zsigma").set_value(0.0)
    _start(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = _wait(demo_project)
    assert job.status == "done", job.error
    assert job.params["postprocess"]["min_sizes"]["2"] == 37
    assert job.params["inference"]["z_sigma"] == 0.0
    from core.segmentation.series import read_series_record

    record = read_series_record(demo_project.root / "segmentations" / "by-hand")
    assert record["settings"]["inference"]["z_sigma"] == 0.0  # what the labels were made with, kept with them
    assert job.params["cleaning_source"].startswith("Set by hand on the Segment page, starting from: ")


@pytest.mark.parametrize("what", ["empty name", "no step"])
def test_bad_input_is_one_sentence_and_starts_nothing(demo_project, shipped_models, what):
    at = _page("pages/5_Segment.py").run()
    if what == "empty name":
        at.text_input(key="seg_name").set_value("  ")
    else:
        at.multiselect(key="seg_steps").set_value([])
    _start(at)
    assert not at.exception, at.exception
    assert len(at.error) == 1, [e.value for e in at.error]
    sentence = at.error[0].value
    assert "\n" not in sentence and sentence.endswith(".") and "Traceback" not in sentence
    assert {"empty name": "Give the segmentation a name", "no step": "at least one step"}[what] in sentence
    assert list_jobs(demo_project.root, kind="segment") == []


def test_the_page_offers_only_the_administrators_dask_schedulers(demo_project, shipped_models, monkeypatch):
    """Issue 12: a scheduler address typed in the page ran code in the server (Dask unpickles its workers' results).
    Now a page can only pick among the addresses the administrator set; the core refuses any other."""
    from core.segmentation.series import check_offered_scheduler
    from core.workflow.segment import segment_project

    monkeypatch.delenv("REACTOMO_DASK_SCHEDULERS", raising=False)
    at = _page("pages/5_Segment.py").run()
    assert at.radio(key="seg_sched").options == ["In the worker, one step after another", "Local cluster (Dask) with N workers"]
    assert not [t for t in at.text_input if t.key == "seg_address"] and not [s for s in at.selectbox if s.key == "seg_address"]
    assert any("REACTOMO_DASK_SCHEDULERS" in c.value for c in at.caption)
    # the project-level path (what the page's job calls) refuses an address nobody offered, before writing anything
    with pytest.raises(ReactomoError, match=r"^The Dask scheduler tcp://evil:8786 is not one the server's administrator offers"):
        segment_project(demo_project, SHIPPED, name="evil", steps=[0], scheduler="tcp://evil:8786")
    assert "evil" not in (demo_project.manifest.get("segmentations") or {})
    assert not (demo_project.root / "segmentations" / "evil").exists()

    monkeypatch.setenv("REACTOMO_DASK_SCHEDULERS", "tls://cluster-a:8786, not-an-address, tcp://cluster-b:8786")
    at = _page("pages/5_Segment.py").run()
    at.radio(key="seg_sched").set_value("address").run()
    assert at.selectbox(key="seg_address").options == ["tls://cluster-a:8786", "tcp://cluster-b:8786"]
    check_offered_scheduler("tls://cluster-a:8786")  # offered: accepted
    with pytest.raises(ReactomoError, match="the offered ones are tls://cluster-a:8786, tcp://cluster-b:8786"):
        check_offered_scheduler("tcp://cluster-c:8786")


def test_model_for_other_phases_is_refused(demo_project, tmp_path, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(SHIPPED, models / "other-phases")
    card_path = models / "other-phases" / "card.json"
    card = json.loads(card_path.read_text())
    card["name"] = "other-phases"
    card["phases"][2]["name"] = "void"
    card_path.write_text(json.dumps(card))
    monkeypatch.setenv("REACTOMO_MODELS", str(models))
    at = _page("pages/5_Segment.py").run()
    assert any("will be refused" in w.value for w in at.warning)
    at.multiselect(key="seg_steps").set_value([1])
    _start(at)
    assert not at.exception
    assert len(at.error) == 1 and "trained for phases" in at.error[0].value
    assert list_jobs(demo_project.root, kind="segment") == []


def test_running_job_shows_progress_steps_and_stops(demo_project, shipped_models):
    """A job already running (e.g. started before a reload) is found on disk: progress, ETA, step table, Stop."""
    from core.errors import JobCancelled
    from core.workflow.jobs import start_job

    def work(ctx):
        ctx.progress(0.25, "step 1 (t001.tif): slab 1 of 2")
        while not ctx.cancelled():
            time.sleep(0.05)
        raise JobCancelled()

    start_job(demo_project.root, "segment", work, params={"name": "live", "steps": [1, 2], "model_name": "demo-unet"},
              title="Segment live")
    at = _page("pages/5_Segment.py").run()
    assert not at.exception, at.exception
    assert any(s.value == "Segmentation in progress" for s in at.subheader)
    assert any(m.label == "Steps finished" and m.value == "0 / 2" for m in at.metric)
    assert list(_table(at, "Status")["Status"]) == ["pending", "pending"]
    assert next(b for b in at.button if b.label == "Start segmentation").disabled
    # the quality check below does not say "no segmentation yet: start one" while the first one runs (a user walk)
    assert [i.value for i in at.info if "segmentation" in i.value] == [
        "The first segmentation is running: its steps can be checked here as soon as they are written."]
    next(b for b in at.button if b.label == "Stop").click().run()
    job = _wait(demo_project)
    assert job.status == "cancelled"
    at.run()
    assert any("Segmentation 'live' was stopped; the steps done so far are kept." in w.value for w in at.warning)


# ------------------------------------------------------------------------------------------------ Evaluate page
def test_evaluate_without_segmentation_points_to_the_segment_page(demo_project):
    at = _page("pages/6_Evaluate.py").run()
    assert not at.exception
    assert any("no finished segmentation" in i.value for i in at.info)
    assert any('href="./segment"' in m.value for m in at.markdown)


def test_evaluate_metrics_confusion_comparison_and_dice_per_step(demo_project, shipped_models):
    from core.workflow.evaluate import evaluate_segmentation

    _segment(demo_project, "seg-a")
    _segment(demo_project, "seg-b", steps=(1,))
    at = _page("pages/6_Evaluate.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.radio(key="ev_ref").value == "demo truth"
    assert at.multiselect(key="ev_segs").value == ["seg-a", "seg-b"]
    assert at.selectbox(key="ev_step").value == 1  # the step both segmented

    expected = evaluate_segmentation(demo_project, "seg-a", reference="demo truth")
    assert at.selectbox(key="ev_detail").value == "seg-a"
    table = _table(at, "Kappa")
    assert list(table["Phase"]) == [*demo_project.phases().names, "average"]
    report = expected[1]
    want = [f"{report.per_phase[c]['dice']:.3f}" if not math.isnan(report.per_phase[c]["dice"]) else "–" for c in report.codes]
    assert list(table["Dice"]) == [*want, f"{report.average['dice']:.3f}"]
    assert "IoU" in table.columns and "Kappa" in table.columns

    cmp = _table(at, "Segmentation")
    assert list(cmp["Segmentation"]) == ["seg-a", "seg-b"]
    assert list(cmp.columns) == ["Segmentation", "Model", *demo_project.phases().names, "average"]
    assert cmp["average"][0] == f"{report.average['dice']:.3f}"

    charts = _charts(at)
    confusion = next(c for c in charts if c["data"][0]["type"] == "heatmap")
    assert confusion["layout"]["yaxis"]["title"]["text"] == "known truth phase"  # named after its reference
    assert all(len(t.split("<br>")[0]) <= 7 for row in confusion["data"][0]["text"] for t in row)  # fits its cell
    per_step = next(c for c in charts if c["layout"].get("yaxis", {}).get("title", {}).get("text") == "Dice (0-1)")
    assert per_step["layout"]["xaxis"]["title"]["text"] == "time (min)"

    at.selectbox(key="ev_metric").set_value("iou").run()
    assert not at.exception
    assert _table(at, "Segmentation")["average"][0] == f"{report.average['iou']:.3f}"
    labels = {b.label for b in at.get("download_button")}
    assert {"Download metrics (CSV)", "Download comparison (CSV)", "Download Dice per step (CSV)"} <= labels

    # pooled over the steps: offered when more than one step is shared, then the default view, equal to core's
    from core.segmentation.metrics import pool_reports

    assert len(at.selectbox(key="ev_step").options) == 1  # seg-b segmented step 1 only: no pooling
    at.multiselect(key="ev_segs").set_value(["seg-a"]).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="ev_step").value == "pooled" and len(at.selectbox(key="ev_step").options) == 3
    pooled = pool_reports([expected[s] for s in sorted(expected)])
    assert _table(at, "Segmentation")["average"][0] == f"{pooled.average['iou']:.3f}"
    assert list(_table(at, "Kappa")["IoU"])[-1] == f"{pooled.average['iou']:.3f}"
    assert pooled.average["iou"] != report.average["iou"]
    assert any(f"over all {len(expected)} shared steps pooled" in c.value for c in at.caption)
    assert any("Average over the phases present in the reference: " in c.value for c in at.caption)
    at.selectbox(key="ev_step").set_value(2).run()  # one step stays selectable
    assert not at.exception, at.exception
    assert _table(at, "Segmentation")["average"][0] == f"{expected[2].average['iou']:.3f}"


def test_evaluate_averages_only_the_phases_the_reference_holds(demo_project, shipped_models):
    """Step 0 of the demo has no bassanite yet: the page says so and averages the other phases only."""
    from core.workflow.evaluate import evaluate_segmentation

    _segment(demo_project, "seg-0", steps=(0, 1))
    expected = evaluate_segmentation(demo_project, "seg-0", reference="demo truth")
    code = demo_project.phases().by_name("bassanite").code
    first = expected[0]
    assert code not in first.averaged and first.counts[code]["n_true"] == 0
    others = [first.per_phase[c]["dice"] for c in first.averaged if not math.isnan(first.per_phase[c]["dice"])]
    assert first.average["dice"] == pytest.approx(sum(others) / len(others))

    at = _page("pages/6_Evaluate.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="ev_step").value == "pooled"  # the default view
    at.selectbox(key="ev_step").set_value(0).run()
    assert not at.exception, at.exception
    table = _table(at, "Kappa")
    assert "bassanite (absent from the reference)" in list(table["Phase"])
    assert list(table["Dice"])[-1] == f"{first.average['dice']:.3f}"
    assert any("Average over the phases present in the reference:" in c.value and "bassanite absent from it" in c.value
               for c in at.caption)


# ------------------------------------------------------------------------------------------------ real browser
@pytest.mark.browser
def test_browser_segment_and_evaluate_screenshots(tmp_path, monkeypatch):
    import threading

    from conftest import SMALL_DEMO, browser_page, launch_streamlit, settle
    from core.workflow.data import create_demo_project
    from core.workflow.segment import segment_project
    from core.imaging.synthetic import DemoConfig

    ws = tmp_path / "workspace"
    ws.mkdir()
    monkeypatch.setenv("REACTOMO_WORKSPACE", str(ws))
    monkeypatch.delenv("REACTOMO_MODELS", raising=False)
    # no file watcher: files changing elsewhere in the repo (an overflowing inotify queue) must not reload the app
    monkeypatch.setenv("STREAMLIT_SERVER_FILE_WATCHER_TYPE", "none")
    project = create_demo_project("demo", workspace=ws, config=DemoConfig(**SMALL_DEMO))
    shots = ROOT / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)

    def segment() -> None:  # while the server starts
        segment_project(project, SHIPPED, name="demo-unet-raw", steps=[0, 3], postprocess=None)  # no cleaning
        segment_project(project, SHIPPED, name="demo-unet-qc")  # every step; one tile per slice is fastest here

    worker = threading.Thread(target=segment)
    worker.start()
    with launch_streamlit(ws, data_root=tmp_path, log_path=tmp_path / "streamlit.log") as url, \
            browser_page(height=1750) as pg:
        pg.goto(f"{url}/?project=demo")  # a fresh server answers its first deep link with "page not found"
        settle(pg)
        worker.join(120)
        assert not worker.is_alive()
        pg.goto(f"{url}/segment?project=demo")
        pg.get_by_text("Quality check").first.wait_for()
        settle(pg)
        pg.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=60_000)
        pg.get_by_text("New segmentation").first.click()  # the settings, as a user sees them before a run
        pg.get_by_text("Start segmentation").first.wait_for()
        pg.set_viewport_size({"width": 1500, "height": 2500})
        pg.wait_for_timeout(800)
        text = pg.inner_text("body")
        assert "Traceback" not in text and "Phase volume fractions" in text and "mean validation Dice" in text
        pg.screenshot(path=str(shots / "segment.png"), full_page=True)
        pg.set_viewport_size({"width": 1500, "height": 1750})

        pg.goto(f"{url}/evaluate?project=demo")
        pg.get_by_text("Segmentations side by side").first.wait_for()
        settle(pg)
        pg.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=60_000)
        pg.wait_for_timeout(500)
        text = pg.inner_text("body")
        assert "Traceback" not in text and "Confusion matrix" in text
        pg.screenshot(path=str(shots / "evaluate.png"), full_page=True)


def test_a_poor_model_is_flagged_before_it_segments(demo_project, tmp_path, monkeypatch):
    from core.network.bundle import save_bundle
    from core.network.unet import UNetConfig, build_unet

    models = tmp_path / "models"
    monkeypatch.setenv("REACTOMO_MODELS", str(models))
    phases = demo_project.phases()
    ucfg = UNetConfig(width=4, depth=2, n_classes=len(phases))
    for name, dice in (("good", {"gypsum": 0.95, "bassanite": 0.9, "pore": 0.93, "celestite": 0.9}),
                       ("poor", {"gypsum": 0.9, "bassanite": 0.3, "pore": 0.9, "celestite": 0.9}), ("unscored", None)):
        save_bundle(models / name, build_unet(ucfg), config=ucfg, phases=phases, normalisation={"method": "bright-tail",
                    "centre": 0.0, "scale": 1.0, "upper": 99.0}, training={}, provenance={},
                    metrics={"val_dice": dice} if dice else {}, seed=0)
    at = _page("pages/5_Segment.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="seg_model").set_value("good").run()
    assert not any("poor" in w.value for w in at.warning)
    at.selectbox(key="seg_model").set_value("poor").run()
    assert any("bassanite 0.30 is under 0.5" in w.value and "check its labels" in w.value for w in at.warning), \
        [w.value for w in at.warning]
    # a model that carries no validation Dice: its quality is unknown, said as such (not a false reason)
    at.selectbox(key="seg_model").set_value("unscored").run()
    assert not at.exception
    assert any("carries no validation Dice" in w.value for w in at.warning), [w.value for w in at.warning]
    assert not any("No phase was in the validation" in w.value for w in at.warning)


def test_a_stored_cleaning_that_cannot_be_used_falls_back_to_the_study_with_a_warning(demo_project, tmp_path, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(SHIPPED, models / "broken-cleaning")
    card_path = models / "broken-cleaning" / "card.json"
    card = json.loads(card_path.read_text())
    card["name"], card["cleaning"] = "broken-cleaning", {"method": "lost its config"}
    card_path.write_text(json.dumps(card))
    monkeypatch.setenv("REACTOMO_MODELS", str(models))
    at = _page("pages/5_Segment.py").run()
    assert not at.exception, at.exception
    assert any("stored cleaning cannot be read" in w.value and "study's cleaning is filled in" in w.value
               for w in at.warning), [w.value for w in at.warning]
    # the study's cleaning fills the inputs: bassanite islands under 100 px, rim 2 px
    assert at.session_state["seg_clean"] is True and at.session_state["seg_min_2"] == 100 and at.session_state["seg_rim"] == 2



def test_steps_labelled_together_from_the_page_and_said_under_the_results(demo_project, shipped_models):
    at = _page("pages/5_Segment.py").run()
    at.number_input(key="seg_tile").set_value(64)
    at.text_input(key="seg_name").set_value("together")
    at.checkbox(key="seg_temporal").check()
    at.checkbox(key="seg_match").check()
    _start(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = _wait(demo_project)
    assert job.status == "done", job.error
    assert job.params["temporal"] is True and job.params["match_volumes"] is True
    from core.segmentation.series import read_series_record

    record = read_series_record(demo_project.root / "segmentations" / "together")
    assert record["settings"]["temporal"] is True and record["temporal"]["applied"] is True
    assert record["settings"]["match_volumes"] is True and record["temporal"]["volumes_matched"]["applied"] is True
    at.run()
    assert any("Steps labelled together:" in c.value and "voxels relabelled" in c.value
               and "first matched to the network's expected volume" in c.value for c in at.caption)
    # the cleaning's own before/after, and beside them what the step holds after the histories (its record's counts)
    step = int(at.select_slider(key="qc_step").value)
    assert (record["steps"][step].get("cleaning") or {}).get("before")  # the page cleans by default
    table = _table(at, "Before")
    final = record["steps"][step]["counts"]
    assert list(table["Final"]) == [int(final.get(str(c), 0)) for c in (1, 2, 3, 4)]
    assert any("\"Final\" is what the step holds now" in c.value for c in at.caption)
    # two steps only: no history to follow, and the page says why
    at.multiselect(key="seg_steps").set_value([1, 2])
    at.text_input(key="seg_name").set_value("two-steps")
    at.checkbox(key="seg_temporal").check()
    _start(at)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # this job, not the first one
        jobs = [j for j in list_jobs(demo_project.root, kind="segment") if j.params.get("name") == "two-steps"]
        if jobs and not jobs[0].is_active:
            break
        time.sleep(0.2)
    assert jobs and jobs[0].status == "done"
    at.run()  # the finished segmentation joins the list
    at.selectbox(key="qc_seg").set_value("two-steps")
    at.run()
    assert any("Steps labelled one by one:" in c.value and "segment every step again" in c.value for c in at.caption)


def test_evaluate_says_when_the_ground_truth_slices_are_the_models_training_slices(demo_project, tmp_path, monkeypatch):
    """A user walk found Evaluate scoring a network on its own training slices against the ground truth (mean Dice
    0.88) without a word; and a segmentation still running, chosen by default, showing as an error."""
    from core.network.train import TrainConfig
    from core.network.unet import UNetConfig
    from core.workflow.evaluate import training_overlap
    from core.workflow.ground_truth import accept_candidate, train_candidate
    from core.workflow.labels import import_demo_scribbles
    from core.workflow.segment import segment_project
    from core.workflow.train import train_project_model

    monkeypatch.setenv("REACTOMO_MODELS", str(tmp_path / "models"))
    import_demo_scribbles(demo_project)
    train_candidate(demo_project)
    gt = accept_candidate(demo_project)
    model = train_project_model(demo_project, name="tiny", unet_config=UNetConfig(n_classes=4, width=4, depth=2),
                                train_config=TrainConfig(patch_size=16, batch_size=8, max_epochs=1, augment=False,
                                                         patience=0), device="cpu", models_root=tmp_path / "models")
    segment_project(demo_project, model, name="own", steps=[gt.step])
    segment_project(demo_project, SHIPPED, name="shipped", steps=[gt.step])  # made from another demo: no overlap
    note = training_overlap(demo_project, "own")
    zs = ", ".join(f"z {z}" for z in gt.slices)
    assert note.startswith(f"The model of 'own' (tiny) was trained on {len(gt.slices)} of these {len(gt.slices)} "
                           f"ground-truth slices ({zs}): on them the Dice says how well it learned")
    assert training_overlap(demo_project, "shipped") == ""
    demo_project.update(lambda m: m["segmentations"]["shipped"].update(status="running"))  # as while it runs
    at = _page("pages/6_Evaluate.py").run()
    assert at.multiselect(key="ev_segs").value == ["own"]  # the running one is offered, not chosen
    assert at.multiselect(key="ev_segs").format_func("shipped") == "shipped · model demo-unet (still running)"
    at.radio(key="ev_ref").set_value("ground truth").run()
    assert not at.exception and not at.error
    assert [w.value for w in at.warning if "was trained on" in w.value] == [note]


def test_the_segment_page_starts_from_the_model_trained_last_in_this_project(demo_project, tmp_path, monkeypatch):
    """A user walk trained a model and found Segment offering the shipped one first."""
    import shutil

    registry = tmp_path / "models"
    for name in ("alpha", "mine", "zeta"):
        shutil.copytree(SHIPPED, registry / name)
    monkeypatch.setenv("REACTOMO_MODELS", str(registry))
    at = _page("pages/5_Segment.py").run()
    assert not at.exception and at.selectbox(key="seg_model").value == "alpha"  # nothing trained here: the first
    demo_project.update(lambda m: m.setdefault("models", []).extend([{"name": "mine"}, {"name": "gone"}]))
    at = _page("pages/5_Segment.py").run()
    assert not at.exception and at.selectbox(key="seg_model").value == "mine"  # "gone" left the registry


def test_a_training_stopped_by_hand_is_not_offered_first_and_says_so(demo_project, tmp_path, monkeypatch):
    """A user's walk stopped a training of 2 networks after the first; Segment then offered it first, and nothing
    said it was incomplete."""
    import json
    import shutil

    registry = tmp_path / "models"
    for name in ("done", "stopped"):
        shutil.copytree(SHIPPED, registry / name)
    card = json.loads((registry / "stopped" / "card.json").read_text())
    card["metrics"].update(cancelled=True, epochs=7, networks_asked=2)
    (registry / "stopped" / "card.json").write_text(json.dumps(card))
    monkeypatch.setenv("REACTOMO_MODELS", str(registry))
    demo_project.update(lambda m: m.setdefault("models", []).extend([{"name": "done"}, {"name": "stopped"}]))
    at = _page("pages/5_Segment.py").run()
    assert not at.exception and at.selectbox(key="seg_model").value == "done"  # the complete one, though older
    assert not any("stopped by hand" in w.value for w in at.warning)
    at.selectbox(key="seg_model").set_value("stopped").run()
    assert any("'stopped' was stopped by hand after 7 epochs, with 1 of the 2 networks asked for" in w.value
               for w in at.warning), [w.value for w in at.warning]


def test_the_quality_check_views_use_the_segmentations_voxel_size_not_a_changed_projects(demo_project, shipped_models):
    """A user's walk: after the Data page's voxel size changed, the slice view's µm axes were drawn with the new one
    while the segmentation was made (and its volumes computed) with the old one."""
    from core.workflow.paths import segmentation_voxel_size

    _segment(demo_project, steps=(1,))
    used = segmentation_voxel_size(demo_project, "seg-a")
    assert used == pytest.approx(demo_project.voxel_size_um())
    demo_project.set_voxel_size(used * 2)
    assert segmentation_voxel_size(demo_project, "seg-a") == pytest.approx(used)
    at = _page("pages/5_Segment.py").run()
    assert not at.exception, at.exception
    image = next(t for c in _charts(at) for t in c["data"] if t["type"] == "image")
    assert image["dx"] == pytest.approx(used) and image["dy"] == pytest.approx(used)
    assert any(f"Segmented at a voxel size of {used:g} µm" in c.value and f"{used * 2:g} µm" in c.value
               for c in at.caption)


def test_the_quality_check_shows_the_run_just_started_once_it_is_done(demo_project, shipped_models, monkeypatch):
    """A user's walk: with an earlier segmentation in the project, the run started on the page finished ("Segmentation
    'whole' finished") while the quality check kept showing the earlier one: the page's rerun after "Start" came before
    the job had listed the new run, and fell back to the last one listed."""
    import threading

    import core.workflow.worker as worker

    _segment(demo_project, name="seg-a", steps=(1,))
    go, real = threading.Event(), worker.job_function

    def held(*args, **kwargs):  # the job starts its work only when told (a worker takes seconds on a busy machine)
        fn = real(*args, **kwargs)

        def wait_then_run(*a, **k):
            assert go.wait(60)
            return fn(*a, **k)
        return wait_then_run

    monkeypatch.setattr(worker, "job_function", held)
    at = _page("pages/5_Segment.py").run()
    assert at.selectbox(key="qc_seg").value == "seg-a"
    at.multiselect(key="seg_steps").set_value([2])
    at.number_input(key="seg_tile").set_value(64)
    at.text_input(key="seg_name").set_value("seg-b")
    _start(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "seg-b" not in (demo_project.manifest.get("segmentations") or {})
    at.run()  # a rerun while the job has not listed its run yet
    go.set()
    job = _wait(demo_project)
    assert job.status == "done", job.error
    at.run()
    assert not at.exception
    assert any("Segmentation 'seg-b' finished" in s.value for s in at.success), [s.value for s in at.success]
    assert at.selectbox(key="qc_seg").value == "seg-b"
    at.selectbox(key="qc_seg").set_value("seg-a").run()  # and the user's own choice is kept afterwards
    at.run()
    assert at.selectbox(key="qc_seg").value == "seg-a"


def test_evaluate_scores_a_segmentation_of_a_z_range_and_says_so(demo_project, shipped_models):
    """A user's walk: a segmentation of z 12-16 was refused "covers a region of interest only" (it had none)."""
    from core.network.inference import InferenceConfig
    from core.workflow.segment import segment_project

    segment_project(demo_project, SHIPPED, name="part", steps=[1], inference=InferenceConfig(tile=64), use_roi=False,
                    z_range=(12, 16))
    at = _page("pages/6_Evaluate.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("'part' covers z 12-16 of the" in i.value and "scored there" in i.value for i in at.info)
    assert _table(at, "Kappa") is not None


def test_the_page_says_when_the_model_reads_ring_artefacts_otherwise_than_the_project(demo_project, shipped_models,
                                                                                     tmp_path):
    """A user's walk: the project set to remove ring artefacts, a model made before ring removal read them kept,
    unsaid, and labelled a ring arc bassanite before the reaction. The shipped model now removes them (rebuilt
    2026-12-08); a legacy card without the setting reads them kept."""
    import shutil

    from core.network.bundle import list_bundles

    shipped = next(b for b in list_bundles(shipped_models) if b.name == "demo-unet")
    assert shipped.rings == "remove"
    demo_project.set_rings("keep")
    at = _page("pages/5_Segment.py").run()
    assert not at.exception, at.exception
    said = [i.value for i in at.info if "ring artefacts" in i.value]
    assert len(said) == 1 and "'demo-unet' was trained on scans with their ring artefacts removed" in said[0]
    assert "the project is set to keep them" in said[0] and "subtracts the rings itself" in said[0]
    assert "never learned to ignore" not in said[0]
    demo_project.set_rings("remove")
    at.run()
    assert not any("ring artefacts" in i.value for i in at.info)
    # a model saved before the setting existed (no "rings" in its card) reads them kept: said, with the remedy
    legacy = tmp_path / "legacy-models"
    shutil.copytree(shipped_models, legacy)
    card_path = legacy / "demo-unet" / "card.json"
    card = json.loads(card_path.read_text())
    del card["normalisation"]["rings"]
    card_path.write_text(json.dumps(card))
    assert next(b for b in list_bundles(legacy) if b.name == "demo-unet").rings == "keep"
    import os

    os.environ["REACTOMO_MODELS"] = str(legacy)  # the page's registry (the fixture's env is restored after)
    try:
        at = _page("pages/5_Segment.py").run()
    finally:
        del os.environ["REACTOMO_MODELS"]
    assert not at.exception, at.exception
    said = [i.value for i in at.info if "ring artefacts" in i.value]
    assert len(said) == 1 and "their ring artefacts kept" in said[0] and "never learned to ignore" in said[0], said
def test_the_slice_of_a_region_of_interest_is_drawn_at_its_place_in_the_scan(demo_project, shipped_models):
    """A user's walk: the quality check of a segmentation of a region drew its x axis from 0 µm, not from where the
    region lies in the scan."""
    from core.network.inference import InferenceConfig
    from core.workflow.segment import segment_project

    demo_project.set_roi({"z": [2, 12], "y": [5, 50], "x": [8, 60]})
    segment_project(demo_project, SHIPPED, name="roi", steps=[1], inference=InferenceConfig(tile=64))
    at = _page("pages/5_Segment.py").run()
    assert not at.exception, at.exception
    vs = demo_project.voxel_size_um()
    image = next(t for c in _charts(at) for t in c["data"] if t["type"] == "image")
    assert image["x0"] == pytest.approx(8 * vs) and image["y0"] == pytest.approx(5 * vs)


def test_every_page_opens_on_the_newest_segmentation(demo_project, shipped_models):
    """A user's walk: Analysis and 3D opened on the first segmentation, Segment on the newest."""
    for name in ("a-first", "z-second", "m-newest"):  # the newest neither the first made nor the first in the alphabet
        _segment(demo_project, name=name, steps=(1,))
    for page, key in (("pages/5_Segment.py", "qc_seg"), ("pages/8_Analysis.py", "an_seg"), ("pages/7_3D.py", "r3_seg")):
        at = _page(page).run()
        assert not at.exception, (page, at.exception)
        assert at.selectbox(key=key).value == "m-newest", page


def test_a_segmentation_of_one_step_names_its_step_instead_of_a_slider_of_one_value(demo_project, shipped_models):
    """A user's walk: with one segmented step the quality check's "Step" was a bare dot with no track."""
    from core.network.inference import InferenceConfig
    from core.workflow.segment import segment_project

    segment_project(demo_project, SHIPPED, name="one", steps=[2], inference=InferenceConfig(tile=64))
    at = _page("pages/5_Segment.py").run()
    assert not at.exception, at.exception
    assert not [s for s in at.select_slider if s.key == "qc_step"]
    assert any("the only step segmented" in m.value and "t002" in m.value for m in at.markdown)
    fractions = next(c for c in _charts(at) if c["layout"]["yaxis"]["title"]["text"] == "volume fraction (%)")
    assert [t["type"] for t in fractions["data"]] == ["bar"]  # one step: its phases as bars, not a line of one point
