"""The threshold baseline: manual grey ranges and multi-Otsu, their validation, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from core.cli import main
from core.errors import ReactomoError
from core.phases import BASSANITE, CELESTITE, GYPSUM, PORE
from core.labelling.threshold import BRIGHTNESS_ORDER, GreyRange, check_ranges, multi_otsu, otsu_ranges, otsu_thresholds, threshold_ranges


def _four_clusters(seed=0, dtype=np.uint16):
    """A 40 x 40 image: pore, gypsum, bassanite and celestite blocks with noise (grey rising in that order)."""
    rng = np.random.default_rng(seed)
    truth = np.empty((40, 40), np.uint8)
    truth[:20, :20], truth[:20, 20:], truth[20:, :20], truth[20:, 20:] = PORE, GYPSUM, BASSANITE, CELESTITE
    grey = {PORE: 1000.0, GYPSUM: 2000.0, BASSANITE: 3000.0, CELESTITE: 4000.0}
    img = np.vectorize(grey.get)(truth) + rng.normal(0, 60, truth.shape)
    return img.astype(dtype), truth


def test_ranges_label_half_open_intervals_and_leave_the_rest_unlabelled():
    img = np.array([[0, 10, 19, 20], [29, 30, 50, 99]], np.uint16)
    keep = img.copy()
    labels = threshold_ranges(img, [(PORE, 0, 20), (GYPSUM, 20, 30), (CELESTITE, 50, 99)])
    np.testing.assert_array_equal(labels, [[PORE, PORE, PORE, GYPSUM], [GYPSUM, 0, CELESTITE, 0]])
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(img, keep)
    vol = np.stack([img, img])  # any shape
    assert threshold_ranges(vol, [GreyRange(GYPSUM, 20, 30)]).shape == (2, 2, 4)
    nan = np.array([np.nan, 25.0], np.float32)
    np.testing.assert_array_equal(threshold_ranges(nan, [(GYPSUM, 20, 30)]), [0, GYPSUM])


def test_check_ranges_sorts_and_allows_touching_ranges():
    rs = check_ranges([(GYPSUM, 20, 30), (PORE, 0, 20), (GYPSUM, 40, 45)])
    assert [r.low for r in rs] == [0, 20, 40] and rs[0] == GreyRange(PORE, 0.0, 20.0)
    assert rs[0].to_dict() == {"code": PORE, "low": 0.0, "high": 20.0}


@pytest.mark.parametrize(
    "ranges, match",
    [
        ([(PORE, 0, 20), (GYPSUM, 15, 30)], r"pore \[0, 20\) and gypsum \[15, 30\) overlap"),
        ([(GYPSUM, 30, 20)], "inverted or empty"),
        ([(GYPSUM, 20, 20)], "inverted or empty"),
        ([(9, 0, 20)], "no phase has that code"),
        ([(GYPSUM, 0, float("inf"))], "not finite"),
        ([(GYPSUM, "a", 3)], "not numbers"),
        ([(GYPSUM, 1)], r"\(code, low, high\)"),
        ([(1.5, 0, 2)], "not a whole number"),
        ([], "at least one grey range"),
    ],
)
def test_bad_ranges_are_refused_with_a_sentence(ranges, match):
    with pytest.raises(ReactomoError, match=match):
        check_ranges(ranges)
    with pytest.raises(ReactomoError, match=match):
        threshold_ranges(np.zeros((3, 3), np.uint16), ranges)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_multi_otsu_maps_classes_to_phases_by_brightness(dtype):
    img, truth = _four_clusters(dtype=dtype)
    keep = img.copy()
    res = multi_otsu(img)
    np.testing.assert_array_equal(img, keep)
    assert (res.labels == truth).mean() > 0.99 and res.labels.dtype == np.uint8
    assert [r.code for r in res.ranges] == list(BRIGHTNESS_ORDER)
    assert res.ranges[0].low == pytest.approx(float(img.min())) and res.ranges[-1].high > float(img.max())
    for a, b in zip(res.ranges, res.ranges[1:]):
        assert a.high == b.low
    # the ranges reproduce the labels, so they can be edited as manual ranges
    np.testing.assert_array_equal(threshold_ranges(img, res.ranges), res.labels)


def test_multi_otsu_order_is_configurable_and_checked():
    img, truth = _four_clusters()
    swapped = multi_otsu(img, order=(PORE, BASSANITE, GYPSUM, CELESTITE)).labels
    assert (swapped[truth == GYPSUM] == BASSANITE).mean() > 0.99 and (swapped[truth == BASSANITE] == GYPSUM).mean() > 0.99
    three = multi_otsu(img, order=(PORE, GYPSUM, CELESTITE))
    assert set(np.unique(three.labels)) == {PORE, GYPSUM, CELESTITE}
    for order, match in [((PORE, PORE, GYPSUM), "repeats"), ((PORE, 9), "not in the phase table"), ((PORE,), "at least two")]:
        with pytest.raises(ReactomoError, match=match):
            multi_otsu(img, order=order)


def test_multi_otsu_thresholds_can_come_from_other_pixels():
    img, truth = _four_clusters()
    res = multi_otsu(img[:2], reference=img)
    np.testing.assert_array_equal(res.labels, multi_otsu(img).labels[:2])
    rs = otsu_ranges(img, bounds=(0, 65536))
    assert rs[0].low == 0 and rs[-1].high == 65536


def test_too_few_grey_values_are_refused():
    with pytest.raises(ReactomoError, match="fewer distinct grey values"):
        otsu_thresholds(np.array([[1, 2], [2, 1]], np.uint16), classes=4)
    with pytest.raises(ReactomoError, match="2 to 5 classes"):
        otsu_thresholds(np.arange(100, dtype=np.uint16), classes=7)


# ------------------------------------------------------------------------------------------------ the CLI
def _scan(tmp_path):
    img, truth = _four_clusters()
    vol = np.stack([img, img[::-1], img[:, ::-1]])
    tifffile.imwrite(tmp_path / "scan.tif", vol, photometric="minisblack")
    marks = np.zeros(vol.shape, np.uint8)
    marks[1, 3, 3] = PORE
    tifffile.imwrite(tmp_path / "marks.tif", marks, photometric="minisblack")
    return tmp_path / "scan.tif", tmp_path / "marks.tif", vol


def test_cli_threshold_otsu_and_ranges(tmp_path, capsys):
    scan, marks, vol = _scan(tmp_path)
    rc = main(["-q", "threshold", "--scan", str(scan), "--out", str(tmp_path / "otsu.tif"), "--otsu"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    labels = tifffile.imread(tmp_path / "otsu.tif")
    assert labels.shape == vol.shape and labels.dtype == np.uint8 and labels.min() > 0
    assert "celestite" in out
    rc = main(["-q", "threshold", "--scan", str(scan), "--out", str(tmp_path / "r.tif"), "--slices-from", str(marks),
               "--range", "3", "0", "1500", "--range", "1", "1500", "2500"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    labels = tifffile.imread(tmp_path / "r.tif")
    assert not labels[[0, 2]].any() and set(np.unique(labels[1])) == {0, PORE, GYPSUM}
    assert "unlabelled" in out


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--range", "3", "0", "1500", "--range", "1", "1400", "2500"], "overlap"),
        (["--range", "1", "2500", "1500"], "inverted"),
        (["--range", "x", "0", "1"], "whole-number code"),
        ([], "Choose one method"),
        (["--otsu", "--range", "1", "0", "5"], "Choose one method"),
        (["--otsu", "--order", "3,3,1,2"], "repeats"),
    ],
)
def test_cli_threshold_refuses_bad_input_and_writes_nothing(tmp_path, capsys, extra, match):
    scan, _, _ = _scan(tmp_path)
    out = tmp_path / "out.tif"
    rc = main(["-q", "threshold", "--scan", str(scan), "--out", str(out), *extra])
    _, err = capsys.readouterr()
    assert rc == 2 and err.startswith("error: ") and match in err and err.count("\n") == 1, err
    assert not out.exists()
