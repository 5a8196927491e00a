"""The Ground truth step: project-level training, candidate/accept, threshold comparison, and its page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.errors import ReactomoError
from core.workflow.ground_truth import (
    HeldOutForest,
    accept_candidate,
    ground_truth_volume,
    held_out_forest,
    held_out_labels,
    labelled_steps,
    load_accepted,
    load_candidate,
    most_uncertain_window,
    threshold_comparison,
    threshold_wins,
    train_candidate,
)
from core.phases import DEFAULT_PHASES
from core.workflow.labels import LabelStore, import_demo_scribbles

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


def test_the_pore_and_inert_phase_edges_are_redrawn_nearer_the_truth_and_said(labelled_demo):
    """The forest's pore and celestite edges are redrawn from the scan (core.labelling.partial_volume), pores first,
    in the stored labels the U-Net learns, as `run` does; the recorded counts are the stored ones, the redrawn phases
    are nearer the truth's area than the forest's, and the page's sentence names them."""
    from core.imaging.io import read_labels
    from core.workflow.ground_truth import partial_volume_sentence

    cand = train_candidate(labelled_demo)
    pores, grains = cand.meta["partial_volume"]
    assert [pores["code"], grains["code"]] == [3, 4]  # the pores first, then the inert phase
    demo = labelled_demo.demo()
    truth = read_labels(Path(labelled_demo.root) / demo["truth"][cand.step])
    for info in (pores, grains):
        code = info["code"]
        assert info["applied"]
        true_n = int(sum((truth[z] == code).sum() for z in cand.slices + cand.extra_slices))  # every slice labelled
        assert abs(info["after"] - true_n) < abs(info["before"] - true_n), (info, true_n)  # nearer the truth
    assert cand.extra_slices  # the default labels more slices for the U-Net, redrawn the same way
    # the last redraw's count is what is stored
    assert grains["after"] == int((cand.labels == 4).sum()) + int((cand.extra_labels == 4).sum())
    sentence = partial_volume_sentence(cand, labelled_demo.phases())
    assert sentence.startswith("Edges redrawn from the scan by partial volume")
    assert f"{grains['after']:,}" in sentence and "pore " in sentence and "celestite " in sentence
    assert demo["label_step"] == cand.step
    # the phase around each edge is read from beyond its band (the default), and the sentence says how much moved
    assert pores["matrix"] == grains["matrix"] == [1, 2]
    moved = pores["matrix_relabelled"] + grains["matrix_relabelled"]
    assert moved > 0 and f"{moved:,} px of gypsum or bassanite were given the label found just beyond the band" in sentence
    # the forest read the scans as the project says (a new project removes their rings), and the page says so
    from core.imaging.rings import RINGS
    from core.workflow.ground_truth import rings_sentence

    assert cand.meta["rings"] == RINGS == labelled_demo.rings()
    said = rings_sentence(cand, labelled_demo)
    assert said.startswith("The forest read the scans with their ring artefacts removed") and "changed" not in said
    labelled_demo.set_rings("keep")
    assert rings_sentence(cand, labelled_demo).endswith("train the forest again so that it reads the scans as the "
                                                        "network will.")


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


# ------------------------------------------------------------------------------------------------ threshold vs forest
HELD = "on the held-out scribbles"


def test_threshold_wins_on_one_phase_names_it_with_both_values():
    forest = {1: 0.97, 2: 0.90, 3: 0.91, 4: 0.80}
    thresh = {1: 0.85, 2: 0.60, 3: 0.93, 4: 0.40}
    wins, sentence = threshold_wins(forest, thresh, phases=DEFAULT_PHASES, reference=HELD)
    assert wins == [3]
    assert sentence == ("The threshold beats the forest on pore (Dice 0.93 vs 0.91) on the held-out scribbles: brush more "
                        "pore pixels near its edges, or check the forest's features.")


def test_threshold_wins_nowhere_ties_and_undefined_phases_included():
    forest = {1: 0.97, 2: 0.90, 3: 0.93, 4: float("nan")}
    thresh = {1: 0.85, 2: 0.60, 3: 0.93, 4: 0.99}  # a tie is no win; a phase the forest was not scored on neither
    assert threshold_wins(forest, thresh, phases=DEFAULT_PHASES, reference=HELD) == ([], None)
    assert threshold_wins({3: 0.9}, {3: None}, phases=DEFAULT_PHASES, reference=HELD) == ([], None)


def test_threshold_wins_on_several_phases_skips_unjudged_ones_and_shows_close_values():
    forest = {1: 0.911, 2: 0.50, 3: 0.70, 4: 0.10}
    thresh = {1: 0.913, 2: 0.55, 3: 0.90, 4: 0.90}
    wins, sentence = threshold_wins(forest, thresh, phases=DEFAULT_PHASES, reference="against the demo's known truth",
                                    skip=[4])
    assert wins == [1, 2, 3]
    assert sentence.startswith("The threshold beats the forest on gypsum (Dice 0.913 vs 0.911), bassanite (0.55 vs 0.50) "
                               "and pore (0.90 vs 0.70) against the demo's known truth: brush more pixels of these phases")
    assert "celestite" not in sentence
    assert threshold_wins(forest, thresh, phases=DEFAULT_PHASES, reference=HELD, margin=0.1)[0] == [3, 4]
    with pytest.raises(ReactomoError, match="margin"):
        threshold_wins(forest, thresh, phases=DEFAULT_PHASES, reference=HELD, margin=-1)


def _two_phase_scan(n=16, size=40, seed=0):
    """Dark (code 3) left half, bright (code 1) right half, with noise; (z, y, x) float32."""
    rng = np.random.default_rng(seed)
    scan = np.where(np.arange(size) < size // 2, 0.2, 0.8)[None, None, :] + rng.normal(0, 0.05, (n, size, size))
    return scan.astype(np.float32)


def _strokes(size=40, *, dark=3, bright=1):
    s = np.zeros((size, size), np.uint8)
    s[5:8, 3:15] = dark
    s[30:33, 3:15] = dark
    s[5:8, 25:37] = bright
    s[30:33, 25:37] = bright
    return s


def test_held_out_labels_never_use_a_pixels_own_scribble():
    """Slice 9's scribbles swap the phases: a forest that saw them could copy them; the held-out one cannot."""
    scan = _two_phase_scan()
    zs = [3, 6, 9, 12]
    scribbles = np.stack([_strokes() if z != 9 else _strokes(dark=1, bright=3) for z in zs])
    held = held_out_labels(scan, scribbles, zs, phases=DEFAULT_PHASES, folds=4, n_jobs=1)
    assert isinstance(held, HeldOutForest) and held.by == "slice" and held.folds == 4 and held.unjudged == ()
    np.testing.assert_array_equal(held.scribbles, scribbles)  # every scribbled pixel got a held-out label
    assert not held.forest[scribbles == 0].any()
    i = zs.index(9)
    right = scribbles[i] > 0
    assert np.mean(held.forest[i][right] == scribbles[i][right]) < 0.05  # it follows the other slices' rule
    others = scribbles.copy()
    others[i] = 0
    assert np.mean(held.forest[others > 0] == others[others > 0]) > 0.75  # two of three training slices agree
    dice = held.dice(codes=[1, 3])
    assert 0.5 < dice[1] < 0.9 and 0.5 < dice[3] < 0.9
    assert "trained again 4 times" in held.describe() and "labelled slices" in held.describe()


def test_held_out_by_stroke_on_one_slice_and_when_nothing_can_be_held_out():
    scan = _two_phase_scan(n=4)
    one = _strokes()[None]
    held = held_out_labels(scan, one, [2], phases=DEFAULT_PHASES, n_jobs=1)
    assert held.by == "stroke" and held.folds == 2 and held.unjudged == ()
    assert np.mean(held.forest[one > 0] == one[one > 0]) > 0.95 and "brushed strokes" in held.describe()
    # one stroke per phase: nothing to hold out, so no score and a sentence that says what to do
    single = np.zeros_like(one)
    single[0, 5:8, 3:15], single[0, 5:8, 25:37] = 3, 1
    none = held_out_labels(scan, single, [2], phases=DEFAULT_PHASES, n_jobs=1)
    assert none.by == "none" and not none.scribbles.any() and "brush a second slice" in none.describe()
    # a phase brushed on one slice only cannot be judged by a forest that never saw it
    zs = [1, 2]
    two = np.stack([_strokes(), np.where(_strokes() == 1, 1, 0).astype(np.uint8)])
    two[0][two[0] == 3] = 4  # celestite (code 4) only on the first slice, gypsum on both
    part = held_out_labels(scan, two, zs, phases=DEFAULT_PHASES, n_jobs=1)
    assert part.by == "slice" and part.unjudged == (4,)
    with pytest.raises(ReactomoError, match="folds"):
        held_out_labels(scan, one, [2], folds=1)
    with pytest.raises(ReactomoError, match="do not fit"):
        held_out_labels(scan, one, [7])


def test_threshold_comparison_judges_on_an_honest_reference(labelled_demo, monkeypatch):
    cand = train_candidate(labelled_demo)
    held = held_out_forest(labelled_demo, cand)
    assert held.by == "slice" and held.scribbles.shape == cand.labels.shape
    codes = list(labelled_demo.phases().codes)
    resub = HeldOutForest("slice", 1, held.scribbles, np.where(held.scribbles > 0, cand.labels, 0).astype(np.uint8))
    # the stored forest on its own training scribbles is near perfect: that is why it is not the reference
    assert sum(resub.dice(codes=codes).values()) > sum(held.dice(codes=codes).values())
    cmp = threshold_comparison(labelled_demo, cand, method="otsu", held_out=held)
    assert set(cmp["dice_held_out"]) == {"random forest", "threshold"}
    # on the demo the known truth is the reference of the verdict
    f, t = cmp["dice_truth"]["random forest"], cmp["dice_truth"]["threshold"]
    assert cmp["verdict"]["reference"] == "against the demo's known truth"
    assert cmp["verdict"]["phases"] == [c for c in codes if t[c] > f[c]]
    assert (cmp["verdict"]["sentence"] is None) == (not cmp["verdict"]["phases"])
    # without a known truth, the held-out scribbles are
    monkeypatch.setattr(type(labelled_demo), "demo", lambda self: None)
    cmp = threshold_comparison(labelled_demo, cand, method="otsu", held_out=held)
    assert "dice_truth" not in cmp and cmp["verdict"]["reference"] == "on the held-out scribbles"
    f, t = cmp["dice_held_out"]["random forest"], cmp["dice_held_out"]["threshold"]
    assert cmp["verdict"]["phases"] == [c for c in codes if t[c] > f[c]]
    # and without either, no verdict
    bare = threshold_comparison(labelled_demo, cand, method="otsu")
    assert bare["verdict"] == {"reference": None, "phases": [], "sentence": None}
    with pytest.raises(ReactomoError, match="HeldOutForest"):
        threshold_comparison(labelled_demo, cand, method="otsu", held_out={"not": "it"})


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
    # the verdict: judged against the demo's truth, the held-out scribbles explained, as core says
    cand = load_candidate(labelled_demo)
    verdict = threshold_comparison(labelled_demo, cand, method="otsu", held_out=held_out_forest(labelled_demo, cand))["verdict"]
    if verdict["sentence"]:
        assert [w.value for w in at.warning if "beats the forest" in w.value] == [verdict["sentence"]]
    else:
        assert any("at least as well as the threshold" in c.value for c in at.caption)
    assert any("Held-out scribbles: the forest was trained again" in c.value for c in at.caption)
    assert any("held out" in t.get("name", "") for c in at.get("plotly_chart")
               for t in __import__("json").loads(c.proto.spec)["data"])
    at.radio(key="gt_thr_method").set_value("ranges").run()
    assert not at.exception
    grey = at.slider(key="gt_range_1")
    # the demo's scans are uint16 (grey values in thousands): whole numbers, not "8258.00" (a user's walk)
    assert grey.proto.format == "%.0f" and grey.proto.step == 1.0
    assert all(float(v).is_integer() for v in grey.value)
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


def test_a_forest_trained_before_more_labels_is_stale_and_cannot_be_accepted(labelled_demo):
    """Issue 16: after more slices were labelled the page still offered the old forest for acceptance."""
    from core.workflow.ground_truth import staleness

    cand = train_candidate(labelled_demo)
    assert staleness(labelled_demo, cand) is None
    store = LabelStore(labelled_demo)
    free = next(z for z in range(labelled_demo.scans()[0].shape[0]) if z not in cand.slices)
    strokes = np.zeros(labelled_demo.scans()[0].shape[1:], np.uint8)
    strokes[5:8, 5:8] = 1
    edit = store.paint(cand.step, free, strokes)
    why = staleness(labelled_demo, cand)
    assert why and f"z {free}" in why and "Train it again" in why
    with pytest.raises(ReactomoError, match="Train the forest again before accepting"):
        accept_candidate(labelled_demo)
    assert labelled_demo.manifest["ground_truth"] == {}
    store.revert(edit)  # the same slices again, but a stroke changed on one of them: stale too
    z = cand.slices[0]
    strokes = np.zeros_like(strokes)
    strokes[0, 0] = 4 if store.get(cand.step, z)[0, 0] != 4 else 1
    store.paint(cand.step, z, strokes)
    assert "changed after this forest was trained" in staleness(labelled_demo, cand)


def test_a_labelling_kept_from_an_earlier_redraw_default_is_said_on_the_page_and_in_the_cli(labelled_demo, capsys):
    """A candidate stored before the pores' edges were redrawn by default (celestite alone, 2026-12-06) or before any
    redraw is a valid labelling, still acceptable, but the user is told that the workflow now redraws more, and how
    to catch up; a current candidate says nothing of the kind."""
    import json

    from core.cli import main
    from core.workflow.ground_truth import GT_DIR, redraw_outdated

    cand = train_candidate(labelled_demo)
    phases = labelled_demo.phases()
    assert redraw_outdated(cand, phases) == ""
    meta_path = Path(labelled_demo.root) / GT_DIR / "candidate" / "meta.json"
    current = meta_path.read_text()
    # made before the band read the phase around each edge from beyond it: the same phases, no matrix
    meta = json.loads(current)
    for info in meta["partial_volume"]:
        del info["matrix"], info["matrix_relabelled"]
    meta_path.write_text(json.dumps(meta))
    band = redraw_outdated(load_candidate(labelled_demo), phases)
    assert band.startswith("This labelling was made with an earlier default for the phase around a redrawn edge")
    assert "now re-reads the gypsum and bassanite labels within each edge's band from beyond it" in band
    meta_path.write_text(current)
    meta = json.loads(current)
    meta["partial_volume"] = [i for i in meta["partial_volume"] if i["code"] == 4]  # as stored before the change
    meta_path.write_text(json.dumps(meta))
    old = load_candidate(labelled_demo)
    sentence = redraw_outdated(old, phases)
    assert "were those of celestite;" in sentence and "now redraws pore, celestite" in sentence
    assert "Train the forest again" in sentence
    at = _page("demo").run()
    assert not at.exception
    assert [i.value for i in at.info if "earlier default" in i.value] == [sentence]
    # still acceptable (nothing about it is wrong), and the CLI says the same sentence when it is accepted
    assert main(["ground-truth", "demo", "--accept-only"]) == 0
    assert sentence in capsys.readouterr().out
    assert load_accepted(labelled_demo).meta["partial_volume"] == meta["partial_volume"]
    train = AppTest.from_file(str(ROOT / "pages/4_Train.py"), default_timeout=120)
    train.session_state["project_name"] = "demo"
    train.run()
    assert not train.exception
    assert [i.value for i in train.info if "earlier default" in i.value] == [
        sentence.replace("This labelling", "The accepted ground truth").replace(
            "Train the forest again", "Train the forest again on the Ground truth page and accept it")]
    # a labelling from before any redraw names no phase as redrawn
    del meta["partial_volume"]
    meta_path.write_text(json.dumps(meta))
    assert "were those of no phase;" in redraw_outdated(load_candidate(labelled_demo), phases)


def test_the_forest_reads_the_neighbouring_steps_and_says_so_on_the_page_and_in_the_cli(labelled_demo, capsys):
    """With a time context the candidate's forest reads the aligned steps around the labelled one (its features name
    them), the labelling records what was read, the held-out check judges that same forest, and the page and
    `ground-truth` say it in one sentence; with 0 it reads the labelled step alone and says nothing."""
    from core.cli import main
    from core.labelling.forest import load_forest
    from core.workflow.ground_truth import time_context_sentence

    scans = labelled_demo.scans()
    cand = train_candidate(labelled_demo, time_context=1)
    k = cand.step
    tc = cand.meta["time_context"]
    want = [t for t in (k - 1, k + 1) if 0 <= t < len(scans)]
    assert tc["applied"] and tc["steps"] == want and tc["offsets"] == [t - k for t in want]
    names = load_forest(cand.folder / "classifier.skops").feature_names
    assert any(n.endswith(" [step +1]") for n in names) == (k + 1 < len(scans))
    sentence = time_context_sentence(cand, scans)
    assert sentence.startswith("The forest also read ") and all(scans[t].name in sentence for t in want)
    held = held_out_forest(labelled_demo, cand)  # trains forests on the same features: no mismatch
    assert held.scribbles.any() and (held.forest[held.scribbles > 0] > 0).all()
    import core.workflow.ground_truth as gtmod

    keep = gtmod._FEATURE_MEMORY
    try:  # the path that keeps only the brushed pixels' features gives the same held-out labels
        gtmod._FEATURE_MEMORY = 0
        again = held_out_forest(labelled_demo, cand)
    finally:
        gtmod._FEATURE_MEMORY = keep
    np.testing.assert_array_equal(again.forest, held.forest)
    at = _page("demo").run()
    assert not at.exception and sentence in [c.value for c in at.caption]
    alone = train_candidate(labelled_demo, time_context=0)
    assert alone.meta["time_context"]["applied"] is False and time_context_sentence(alone, scans) == ""
    assert not any("[step" in n for n in load_forest(alone.folder / "classifier.skops").feature_names)
    capsys.readouterr()
    assert main(["ground-truth", "demo", "--forest-time-context", "1"]) == 0
    assert sentence in capsys.readouterr().out
    assert main(["ground-truth", "demo", "--forest-time-context", "5"]) == 2
    assert "0 to 3 steps" in capsys.readouterr().err


def test_a_labelling_read_beside_other_scans_is_stale_and_one_from_before_reads_the_step_alone(labelled_demo, monkeypatch):
    import json

    import core.workflow.ground_truth as gtmod
    from core.workflow.ground_truth import GT_DIR, staleness, time_context_sentence

    cand = train_candidate(labelled_demo, time_context=1)
    assert staleness(labelled_demo, cand) is None and cand.meta["time_context"]["names"]
    meta_path = Path(labelled_demo.root) / GT_DIR / "candidate" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["time_context"]["names"] = ["t_other"] * len(meta["time_context"]["names"])  # scans replaced since
    meta_path.write_text(json.dumps(meta))
    moved = load_candidate(labelled_demo)
    assert "have changed since. Train it again" in staleness(labelled_demo, moved)
    with pytest.raises(ReactomoError, match="have changed since"):
        held_out_forest(labelled_demo, moved)
    # a labelling stored before the time context existed: no sentence, the held-out check reads the step alone
    del meta["time_context"]
    meta_path.write_text(json.dumps(meta))
    old = load_candidate(labelled_demo)
    assert time_context_sentence(old, labelled_demo.scans()) == "" and staleness(labelled_demo, old) is None
    # (its forest read the neighbours, so the held-out check, on the step alone, trains its own forests: it works)
    monkeypatch.setattr(gtmod, "_FEATURE_MEMORY", 0)  # and through the path that keeps only the brushed pixels
    held = held_out_forest(labelled_demo, old)
    assert held.scribbles.any()
