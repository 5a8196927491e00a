"""core.segmentation.metrics: confusion matrix and Dice on tiny arrays computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import core.segmentation.metrics as metrics
from core.errors import ReactomoError
from core.segmentation.metrics import confusion_matrix, dice_per_phase

# truth/pred pairs, voxel by voxel: (1,1) (1,2) (2,2) (2,2) (3,1) and one unlabelled truth voxel (0,3)
TRUTH = np.array([[1, 1, 2], [2, 3, 0]], dtype=np.uint8)
PRED = np.array([[1, 2, 2], [2, 1, 3]], dtype=np.uint8)


def test_confusion_matrix_rows_are_truth_columns_are_prediction():
    m = confusion_matrix(PRED, TRUTH, codes=[1, 2, 3, 4])
    expected = np.array(
        [
            [1, 1, 0, 0],  # truth 1: one right, one called 2
            [0, 2, 0, 0],  # truth 2: both right
            [1, 0, 0, 0],  # truth 3: called 1
            [0, 0, 0, 0],  # truth 4: absent
        ]
    )
    np.testing.assert_array_equal(m, expected)
    assert m.dtype == np.int64
    assert m.sum() == 5  # the voxel whose truth is 0 is ignored


def test_confusion_matrix_follows_the_order_of_codes():
    m = confusion_matrix(PRED, TRUTH, codes=[2, 1])
    np.testing.assert_array_equal(m, [[2, 0], [1, 1]])


def test_confusion_matrix_ignores_truth_outside_codes_and_prediction_outside_codes():
    truth = np.array([1, 1, 5, 2], dtype=np.int32)
    pred = np.array([1, 0, 1, 9], dtype=np.int32)
    m = confusion_matrix(pred, truth, codes=[1, 2])
    np.testing.assert_array_equal(m, [[1, 0], [0, 0]])


def test_confusion_matrix_is_the_same_in_chunks(monkeypatch):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=(6, 7, 8)).astype(np.uint8)
    pred = rng.integers(1, 5, size=(6, 7, 8)).astype(np.uint16)
    whole = confusion_matrix(pred, truth, codes=[1, 2, 3, 4])
    monkeypatch.setattr(metrics, "_CHUNK", 17)
    np.testing.assert_array_equal(confusion_matrix(pred, truth, codes=[1, 2, 3, 4]), whole)
    # and against a direct count
    for i, t in enumerate([1, 2, 3, 4]):
        for j, p in enumerate([1, 2, 3, 4]):
            assert whole[i, j] == np.count_nonzero((truth == t) & (pred == p))


def test_dice_per_phase_by_hand():
    d = dice_per_phase(PRED, TRUTH, codes=[1, 2, 3, 4])
    # phase 1: TP 1, FP 1 (the true 3), FN 1 (called 2) -> 2/4
    assert d[1] == pytest.approx(0.5)
    # phase 2: TP 2, FP 1 (a true 1), FN 0 -> 4/5
    assert d[2] == pytest.approx(0.8)
    # phase 3: TP 0, FN 1; the prediction 3 sits on unlabelled truth and does not count -> 0
    assert d[3] == 0.0
    # phase 4: absent from both -> nan
    assert math.isnan(d[4])
    assert list(d) == [1, 2, 3, 4]


def test_dice_counts_an_unknown_prediction_as_a_miss():
    d = dice_per_phase(np.array([1, 0]), np.array([1, 1]), codes=[1])
    assert d[1] == pytest.approx(2 / 3)


def test_perfect_and_disjoint_predictions():
    truth = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    assert dice_per_phase(truth, truth, codes=[1, 2, 3, 4]) == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    shifted = np.array([[2, 3], [4, 1]], dtype=np.uint8)
    assert dice_per_phase(shifted, truth, codes=[1, 2, 3, 4]) == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}


@pytest.mark.parametrize(
    "pred, truth, codes, match",
    [
        (np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8), [1], "same shape"),
        (np.zeros(3, np.float32), np.zeros(3, np.uint8), [1], "integer"),
        (np.zeros(3, bool), np.zeros(3, np.uint8), [1], "integer"),
        (np.zeros(3, np.uint8), np.zeros(3, np.uint8), [], "empty"),
        (np.zeros(3, np.uint8), np.zeros(3, np.uint8), [0, 1], "1 to 255"),
        (np.zeros(3, np.uint8), np.zeros(3, np.uint8), [1, 1], "unique"),
        (np.zeros(3, np.uint8), np.zeros(3, np.uint8), [1.5], "whole numbers"),
    ],
)
def test_bad_inputs_raise_one_sentence_errors(pred, truth, codes, match):
    with pytest.raises(ReactomoError, match=match):
        confusion_matrix(pred, truth, codes=codes)
    with pytest.raises(ReactomoError, match=match):
        dice_per_phase(pred, truth, codes=codes)


def test_inputs_are_not_modified():
    truth, pred = TRUTH.copy(), PRED.copy()
    dice_per_phase(pred, truth, codes=[1, 2, 3, 4])
    np.testing.assert_array_equal(truth, TRUTH)
    np.testing.assert_array_equal(pred, PRED)


# --- phase_metrics: the 8 metrics of SPEC.md (+ precision) ----------------------------------------------------

import json  # noqa: E402
import warnings  # noqa: E402

from sklearn import metrics as skm  # noqa: E402

from core.segmentation.metrics import METRICS, MetricsReport, phase_metrics  # noqa: E402
from core.phases import DEFAULT_PHASES  # noqa: E402

CODES = list(DEFAULT_PHASES.codes)


def _random_pair(seed, shape=(7, 33, 29)):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 5, size=shape).astype(np.uint8)  # about 20 % unlabelled
    pred = truth.copy()
    wrong = rng.random(shape) < 0.35
    pred[wrong] = rng.integers(0, 6, size=int(wrong.sum()))  # 0 and 5 are codes outside CODES
    return pred, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phase_metrics_match_scikit_learn(seed):
    pred, truth = _random_pair(seed)
    report = phase_metrics(pred, truth, codes=CODES, names=DEFAULT_PHASES.names)
    keep = truth > 0
    t, p = truth[keep], pred[keep]
    assert report.absent == []
    for c in CODES:
        yt, yp = (t == c).astype(int), (p == c).astype(int)
        tn, fp, fn, tp = skm.confusion_matrix(yt, yp, labels=[0, 1]).ravel()
        assert report.counts[c] == {
            "tp": tp, "fp": fp, "tn": tn, "fn": fn, "n_true": int(yt.sum()), "n_pred": int(yp.sum())
        }
        s = report.per_phase[c]
        assert set(s) == set(METRICS)
        assert s["accuracy"] == pytest.approx(skm.accuracy_score(yt, yp))
        assert s["recall"] == pytest.approx(skm.recall_score(yt, yp))
        assert s["specificity"] == pytest.approx(skm.recall_score(yt, yp, pos_label=0))
        assert s["precision"] == pytest.approx(skm.precision_score(yt, yp))
        assert s["dice"] == pytest.approx(skm.f1_score(yt, yp))
        assert s["iou"] == pytest.approx(skm.jaccard_score(yt, yp))
        assert s["auc"] == pytest.approx(skm.roc_auc_score(yt, yp))
        assert s["auc"] == pytest.approx(skm.balanced_accuracy_score(yt, yp))
        assert s["kappa"] == pytest.approx(skm.cohen_kappa_score(yt, yp))
        assert s["volumetric_similarity"] == pytest.approx(1 - abs(int(fn) - int(fp)) / (2 * tp + fp + fn))
    for m in METRICS:
        assert report.average[m] == pytest.approx(np.mean([report.per_phase[c][m] for c in CODES]))
    np.testing.assert_array_equal(report.confusion, confusion_matrix(pred, truth, codes=CODES))
    np.testing.assert_array_equal(
        report.confusion, skm.confusion_matrix(t, p, labels=CODES)
    )  # sklearn's rows are truth too; predictions outside CODES fall out of both


def test_phase_metrics_is_the_same_in_chunks(monkeypatch):
    pred, truth = _random_pair(3, shape=(3, 10, 11))
    whole = phase_metrics(pred, truth, codes=CODES).to_dict()
    monkeypatch.setattr(metrics, "_CHUNK", 37)
    assert phase_metrics(pred, truth, codes=CODES).to_dict() == whole


def test_volumetric_similarity_by_hand():
    # truth 1 1 1 1 2 2 ; pred 1 1 2 2 2 2 -> phase 1: TP 2, FN 2, FP 0 -> VS = 1 - 2/6 = 2/3
    # phase 2: TP 2, FP 2, FN 0 -> VS = 1 - 2/6 = 2/3 ; Dice 4/6 for both
    truth = np.array([1, 1, 1, 1, 2, 2], dtype=np.uint8)
    pred = np.array([1, 1, 2, 2, 2, 2], dtype=np.uint8)
    r = phase_metrics(pred, truth, codes=[1, 2])
    assert r.per_phase[1]["volumetric_similarity"] == pytest.approx(2 / 3)
    assert r.per_phase[2]["volumetric_similarity"] == pytest.approx(2 / 3)
    # a prediction with the right volume but in the wrong place still has VS 1 (that is what VS measures)
    r = phase_metrics(np.array([2, 1, 1, 2], np.uint8), np.array([1, 2, 1, 2], np.uint8), codes=[1, 2])
    assert r.per_phase[1]["volumetric_similarity"] == 1.0
    assert r.per_phase[1]["dice"] == pytest.approx(0.5)


def test_perfect_prediction_scores_one_everywhere():
    _, truth = _random_pair(4, shape=(2, 9, 9))
    r = phase_metrics(truth, truth, codes=CODES)
    for c in CODES:
        assert r.per_phase[c] == {m: 1.0 for m in METRICS}
    assert r.average == {m: 1.0 for m in METRICS}


def test_phase_absent_from_truth_and_prediction_is_nan_except_accuracy_and_left_out_of_averages():
    truth = np.array([1, 1, 2, 2, 0], dtype=np.uint8)
    pred = np.array([1, 2, 2, 2, 4], dtype=np.uint8)  # 4 only on an unlabelled voxel: does not count
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division warnings
        r = phase_metrics(pred, truth, codes=[1, 2, 4])
    assert r.absent == [4]
    assert r.per_phase[4]["accuracy"] == 1.0
    assert all(math.isnan(r.per_phase[4][m]) for m in METRICS if m != "accuracy")
    assert r.average["dice"] == pytest.approx((r.per_phase[1]["dice"] + r.per_phase[2]["dice"]) / 2)
    assert r.average["accuracy"] == pytest.approx(0.75)  # the absent phase's 1.0 is not averaged in


def test_phase_absent_from_truth_but_predicted():
    truth = np.array([1, 1, 1, 2], dtype=np.uint8)
    pred = np.array([1, 3, 1, 2], dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = phase_metrics(pred, truth, codes=[1, 2, 3]).per_phase[3]
    assert math.isnan(s["recall"]) and math.isnan(s["auc"])
    assert s["precision"] == 0.0 and s["dice"] == 0.0 and s["iou"] == 0.0 and s["volumetric_similarity"] == 0.0
    assert s["specificity"] == pytest.approx(3 / 4) and s["accuracy"] == pytest.approx(3 / 4)
    assert s["kappa"] == pytest.approx(skm.cohen_kappa_score([0, 0, 0, 0], [0, 1, 0, 0]))  # 0


def test_phase_absent_from_prediction_only():
    truth = np.array([1, 1, 3, 2], dtype=np.uint8)
    pred = np.array([1, 1, 1, 2], dtype=np.uint8)
    s = phase_metrics(pred, truth, codes=[1, 2, 3]).per_phase[3]
    assert math.isnan(s["precision"])
    assert s["recall"] == 0.0 and s["dice"] == 0.0 and s["iou"] == 0.0 and s["volumetric_similarity"] == 0.0
    assert s["specificity"] == 1.0 and s["auc"] == 0.5 and s["kappa"] == 0.0
    assert s["precision"] != skm.precision_score([0, 0, 1, 0], [0, 0, 0, 0], zero_division=0)  # nan, not 0


def test_kappa_is_nan_when_chance_agreement_is_certain():
    # every counted voxel is phase 1 and predicted 1: pe == 1 for phase 1
    r = phase_metrics(np.array([1, 1, 1], np.uint8), np.array([1, 1, 1], np.uint8), codes=[1, 2])
    assert math.isnan(r.per_phase[1]["kappa"]) and math.isnan(r.per_phase[1]["specificity"])
    assert r.per_phase[1]["dice"] == 1.0 and r.absent == [2]


def test_report_rows_and_json():
    pred, truth = _random_pair(5, shape=(2, 8, 8))
    r = phase_metrics(pred, truth, codes=[1, 2, 3, 4, 7], names=["gypsum", "bassanite", "pore", "celestite", "x"])
    assert isinstance(r, MetricsReport)
    rows = r.rows()
    assert [row["phase"] for row in rows] == ["gypsum", "bassanite", "pore", "celestite", "x", "average"]
    assert list(rows[0]) == ["phase", "code", *METRICS]
    assert rows[-1]["code"] is None and rows[-1]["dice"] == r.average["dice"]
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["absent"] == [7] and d["per_phase"]["7"]["dice"] is None
    assert d["per_phase"]["1"]["dice"] == pytest.approx(r.per_phase[1]["dice"])
    assert d["confusion"] == r.confusion.tolist()
    assert phase_metrics(pred, truth, codes=[2]).names == ["phase 2"]


@pytest.mark.parametrize(
    "pred, truth, kwargs, match",
    [
        (np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8), {"codes": [1]}, "same shape"),
        (np.zeros(3, np.float64), np.ones(3, np.uint8), {"codes": [1]}, "integer"),
        (np.ones(3, np.uint8), np.ones(3, np.float32), {"codes": [1]}, "integer"),
        (np.ones(3, np.uint8), np.ones(3, np.uint8), {"codes": [0, 1]}, "1 to 255"),
        (np.ones(3, np.uint8), np.ones(3, np.uint8), {"codes": [1, 256]}, "1 to 255"),
        (np.ones(3, np.uint8), np.ones(3, np.uint8), {"codes": "12"}, "whole numbers"),
        (np.ones(3, np.uint8), np.ones(3, np.uint8), {"codes": [1, 2], "names": ["a"]}, "one name per code"),
        (np.ones(3, np.uint8), np.zeros(3, np.uint8), {"codes": [1]}, "No voxel of the truth"),
    ],
)
def test_phase_metrics_bad_inputs_raise_one_sentence_errors(pred, truth, kwargs, match):
    with pytest.raises(ReactomoError, match=match) as err:
        phase_metrics(pred, truth, **kwargs)
    msg = str(err.value)
    assert msg.endswith(".") and "\n" not in msg


def test_pooled_report_equals_scoring_all_steps_at_once():
    """Pooling per-step reports = scoring the concatenated volumes (a phase absent at one step, and a prediction
    outside the codes, included)."""
    from core.segmentation.metrics import pool_reports

    rng = np.random.default_rng(11)
    codes = [1, 2, 3]
    truths = [rng.choice([1, 3], size=(3, 9, 9)), rng.choice([1, 2, 3], size=(3, 9, 9)), rng.choice([1, 2, 3], size=(2, 9, 9))]
    preds = [np.where(rng.random(t.shape) < 0.8, t, rng.choice([1, 2, 3, 7], size=t.shape)) for t in truths]
    per_step = [phase_metrics(p, t, codes=codes, names=["a", "b", "c"]) for p, t in zip(preds, truths)]
    pooled = pool_reports(per_step)
    whole = phase_metrics(np.concatenate(preds), np.concatenate(truths), codes=codes, names=["a", "b", "c"])
    np.testing.assert_array_equal(pooled.confusion, whole.confusion)
    assert pooled.counts == whole.counts and pooled.names == ["a", "b", "c"]
    for c in codes:
        for m, v in whole.per_phase[c].items():
            assert pooled.per_phase[c][m] == pytest.approx(v, nan_ok=True)
    with pytest.raises(ReactomoError, match="no report to pool"):
        pool_reports([])
    other = phase_metrics(preds[0], truths[0], codes=[1, 3])
    with pytest.raises(ReactomoError, match="different phase codes"):
        pool_reports([per_step[0], other])


def test_average_is_over_the_phases_present_in_the_reference_only():
    """A step without bassanite (t = 0): its row keeps its real scores (the false detections give Dice 0), but the
    average is the mean of the phases the reference holds, and the report says which those are."""
    names = ["gypsum", "bassanite", "pore", "celestite"]
    truth = np.array([1, 1, 1, 1, 3, 3, 4, 4], np.uint8)  # no bassanite in the reference
    pred = np.array([1, 1, 2, 1, 3, 1, 4, 4], np.uint8)  # but one voxel predicted as bassanite
    r = phase_metrics(pred, truth, codes=[1, 2, 3, 4], names=names)
    assert r.per_phase[2]["dice"] == 0.0 and math.isnan(r.per_phase[2]["recall"])  # the row: its real scores
    assert r.averaged == [1, 3, 4] and r.absent == []
    for m in METRICS:
        want = [r.per_phase[c][m] for c in (1, 3, 4) if not math.isnan(r.per_phase[c][m])]
        assert r.average[m] == pytest.approx(sum(want) / len(want)), m
    assert r.average["dice"] == pytest.approx((0.75 + 2 / 3 + 1.0) / 3)  # gypsum 6/8, pore 2/3, celestite 1
    assert r.averaged_names() == ["gypsum", "pore", "celestite"]
    assert r.average_note() == ("Average over the phases present in the reference: gypsum, pore, celestite "
                                "(bassanite absent from it, not averaged).")
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))  # valid JSON: nan written as null
    assert d["averaged"] == [1, 3, 4] and d["per_phase"]["2"]["recall"] is None
    assert d["average"]["dice"] == pytest.approx(r.average["dice"])
    # pooled with a step that has bassanite: then it is present in the pooled reference and averaged
    later = phase_metrics(np.array([2, 2, 1], np.uint8), np.array([2, 2, 1], np.uint8), codes=[1, 2, 3, 4], names=names)
    assert later.averaged == [1, 2]
    pooled = metrics.pool_reports([r, later])
    assert pooled.averaged == [1, 2, 3, 4]
    assert pooled.average["dice"] == pytest.approx(np.mean([pooled.per_phase[c]["dice"] for c in (1, 2, 3, 4)]))
    full = phase_metrics(truth, truth, codes=[1, 3, 4])
    assert full.average_note() == "Average over the phases present in the reference: phase 1, phase 3, phase 4."


def test_evaluate_command_says_which_phases_are_averaged(tmp_path, capsys):
    from core.cli import main
    from core.imaging.io import write_labels

    truth = np.ones((2, 6, 6), np.uint8)
    truth[:, :3] = 3  # gypsum and pore only
    pred = truth.copy()
    pred[0, 0, :] = 2  # a few voxels called bassanite
    write_labels(tmp_path / "t.tif", truth)
    write_labels(tmp_path / "p.tif", pred)
    assert main(["evaluate", "--pred", str(tmp_path / "p.tif"), "--truth", str(tmp_path / "t.tif"), "--json"]) == 0
    out = capsys.readouterr().out
    d = json.loads(out)
    assert d["averaged"] == [1, 3] and "NaN" not in out
    ref = phase_metrics(pred, truth, codes=[1, 2, 3, 4])
    assert d["average"]["dice"] == pytest.approx((ref.per_phase[1]["dice"] + ref.per_phase[3]["dice"]) / 2)
    assert main(["evaluate", "--pred", str(tmp_path / "p.tif"), "--truth", str(tmp_path / "t.tif")]) == 0
    text = capsys.readouterr().out
    assert "Average over the phases present in the reference: gypsum, pore (bassanite, celestite absent from it" in text
