"""core.metrics: confusion matrix and Dice on tiny arrays computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import core.metrics as metrics
from core.errors import ReactomoError
from core.metrics import confusion_matrix, dice_per_phase

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
