"""The Ground truth step: project-level training, candidate/accept, threshold comparison, and its page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.errors import ReactomoError
from core.ground_truth import (
    accept_candidate,
    ground_truth_volume,
    labelled_steps,
    load_accepted,
    load_candidate,
    most_uncertain_window,
    threshold_comparison,
    train_candidate,
)
from core.labels import LabelStore, import_demo_scribbles

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def labelled_demo(demo_project):
    import_demo_scribbles(demo_project)
    return demo_project


def test_training_needs_labels(demo_project):
    with pytest.raises(ReactomoError, match="brushed labels"):
        train_candidate(demo_project)
    assert load_candidate(demo_project) is None


def test_one_phase_only_is_refused_and_nothing_is_stored(demo_project):
    step = demo_project.demo()["label_step"]
    ny, nx = demo_project.scans()[0].shape[1:]
    only_gypsum = np.zeros((ny, nx), np.uint8)
    only_gypsum[5:9, 5:20] = 1
    LabelStore(demo_project).set(step, 3, only_gypsum)
    with pytest.raises(ReactomoError, match="(?i)phase"):
        train_candidate(demo_project)
    assert load_candidate(demo_project) is None
    assert not (demo_project.root / "ground_truth" / "candidate").exists()


def test_candidate_accept_and_volume(labelled_demo):
    demo = labelled_demo.demo()
    assert labelled_steps(labelled_demo) == {demo["label_step"]: sorted(demo["label_slices"])}
    cand = train_candidate(labelled_demo)
    assert cand.step == demo["label_step"] and list(cand.slices) == sorted(demo["label_slices"])
    shape = labelled_demo.scans()[0].shape
    assert cand.labels.shape == (len(cand.slices), *shape[1:]) and cand.labels.dtype == np.uint8
    assert set(np.unique(cand.labels)) <= {1, 2, 3, 4}
    assert cand.uncertainty.dtype == np.float32 and 0 <= cand.uncertainty.min() <= cand.uncertainty.max() <= 1
    assert (cand.folder / "classifier.skops").exists() and cand.meta["forest_config"]["seed"] == 0
    assert labelled_demo.manifest["ground_truth"] == {}  # a candidate is not the ground truth yet
    # Brushed pixels keep their brushed phase in the full labelling (the forest fits what it was shown).
    brushed = LabelStore(labelled_demo).volume(cand.step)
    full = ground_truth_volume(cand, shape)
    mask = brushed > 0
    assert np.mean(full[mask] == brushed[mask]) > 0.95
    assert not full[[z for z in range(shape[0]) if z not in cand.slices]].any()

    acc = accept_candidate(labelled_demo)
    gt = labelled_demo.manifest["ground_truth"]
    assert gt["slices"] == list(cand.slices) and gt["folder"] == "ground_truth/accepted"
    np.testing.assert_array_equal(acc.labels, cand.labels)
    assert (acc.folder / "classifier.skops").exists()
    assert labelled_demo.status()[2].done
    assert load_accepted(labelled_demo).meta["created"] == cand.meta["created"]


def test_forest_beats_thresholds_against_the_demo_truth(labelled_demo):
    cand = train_candidate(labelled_demo)
    cmp = threshold_comparison(labelled_demo, cand, method="otsu")
    forest, thr = cmp["dice_truth"]["random forest"], cmp["dice_truth"]["threshold"]
    # Measured on this small demo (seed 3): forest gypsum/bassanite 0.926/0.750, multi-Otsu 0.811/0.546.
    assert forest[1] > thr[1] + 0.08 and forest[2] > thr[2] + 0.15
    assert cmp["labels"].shape == cand.labels.shape
    manual = threshold_comparison(labelled_demo, cand, method="ranges", ranges=[(3, 0, 20000), (1, 20000, 60000)])
    assert set(np.unique(manual["labels"])) <= {0, 1, 3}
    with pytest.raises(ReactomoError):
        threshold_comparison(labelled_demo, cand, method="ranges", ranges=[(1, 500, 100)])
    with pytest.raises(ReactomoError, match="not known"):
        threshold_comparison(labelled_demo, cand, method="kmeans")


def test_most_uncertain_window_finds_the_unsure_patch():
    u = np.zeros((100, 120), np.float32)
    u[60:80, 10:30] = 0.9
    y0, x0 = most_uncertain_window(u, window=20)
    assert (y0, x0) == (60, 10)
    assert most_uncertain_window(u, window=500) == (0, 0)


# ------------------------------------------------------------------------------------------------ the page
def _page(project_name: str | None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages/3_Ground_Truth.py"), default_timeout=120)
    if project_name:
        at.session_state["project_name"] = project_name
    return at


def test_page_without_labels_points_to_the_label_page(demo_project):
    at = _page("demo").run()
    assert not at.exception
    assert any("No slice has brushed labels" in i.value for i in at.info)


def test_page_train_inspect_compare_accept(labelled_demo):
    at = _page("demo").run()
    assert not at.exception
    train = next(b for b in at.button if b.label == "Train random forest")
    train.click().run()
    assert not at.exception, at.exception
    assert load_candidate(labelled_demo) is not None
    assert len(at.get("plotly_chart")) >= 6  # overlay, uncertainty, fractions, importance, histogram, threshold, dice
    assert any("mean Dice" in c.value for c in at.caption)
    at.radio(key="gt_thr_method").set_value("ranges").run()
    assert not at.exception
    assert at.slider(key="gt_range_1")
    next(b for b in at.button if b.label == "Accept as the project's ground truth").click().run()
    assert not at.exception
    assert labelled_demo.manifest["ground_truth"]["slices"]
    assert any("ground truth" in s.value for s in at.success)


def test_page_bad_settings_show_one_sentence(labelled_demo):
    at = _page("demo").run()
    at.multiselect(key="gt_groups").set_value([])
    next(b for b in at.button if b.label == "Train random forest").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "feature group" in at.error[0].value.lower()
    assert load_candidate(labelled_demo) is None
