"""Each step's split between the reactant and the product matched to the network's expected split before the steps
are labelled together (core.segmentation.temporal.matched_offsets, segment_series(match_volumes=...))."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import ReactomoError
from core.imaging.io import read_labels
from core.network.inference import InferenceConfig
from core.segmentation.series import read_series_record, segment_series
from core.segmentation.temporal import (allowed_transitions, describe, free_classes, matched_offsets,
                                        most_probable_histories, pair_histogram)

MODEL = Path(__file__).resolve().parents[1] / "models" / "demo-unet"
FAST = InferenceConfig(tile=64, overlap=0.25, batch_size=8, device="cpu")
CODES = [1, 2, 3, 4]  # gypsum, bassanite, pore, celestite
G, B, P, C = range(4)


def _stored(pb: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
    """Stored probabilities (uint8, 255 = 1; last plane the network's class) of voxels whose bassanite probability is
    ``pb`` and gypsum the rest, except where ``other`` names another class (given all of it)."""
    n = pb.size
    probs = np.zeros((4, n), dtype=np.float64)
    probs[B] = pb
    probs[G] = 1.0 - pb
    if other is not None:
        probs[:, other >= 0] = 0.0
        probs[other[other >= 0], np.flatnonzero(other >= 0)] = 1.0
    q = np.rint(probs * 255).astype(np.uint8)
    given = probs.argmax(axis=0).astype(np.uint8)
    return np.concatenate([q, given[None]])[None, :, None, :]  # (1 slice, C + 1, 1 row, n)


def test_the_offset_makes_the_labels_hold_the_expected_product():
    rng = np.random.default_rng(0)
    pb = rng.beta(2.0, 5.0, 20000)  # a scarce product: most voxels lean to the reactant, many only a little
    block = _stored(pb)
    hist = pair_histogram(block, G, B)
    offsets, rec = matched_offsets(hist[None])
    q = block[0, :, 0].astype(np.float64) / 255.0
    lr = np.log(np.clip(q[B], 1e-4, 1)) - np.log(np.clip(q[G], 1e-4, 1))
    expected = q[B].sum() / (q[G] + q[B]).sum() * pb.size
    assert rec["network_voxels"] == [int(np.count_nonzero(lr > 0))]
    assert rec["expected_voxels"] == [int(round(expected))]
    assert rec["network_voxels"][0] < 0.5 * expected  # the argmax gives far less than the sum says
    labelled = int(np.count_nonzero(lr + offsets[0] > 0))
    largest_cell = int(hist.max())  # voxels of one stored probability pair move together
    assert abs(labelled - expected) <= largest_cell
    assert offsets[0] > 0 and rec["offsets"] == [round(float(offsets[0]), 4)]


def test_a_plentiful_product_gets_a_negative_offset_and_a_balanced_step_almost_none():
    rng = np.random.default_rng(1)
    plenty, _ = matched_offsets(pair_histogram(_stored(rng.beta(5.0, 2.0, 20000)), G, B)[None])
    assert plenty[0] < 0  # a scarce reactant at a late step: the reactant's share goes up
    balanced, _ = matched_offsets(pair_histogram(_stored(rng.uniform(0, 1, 20000)), G, B)[None])
    assert abs(balanced[0]) < 0.1


def test_histograms_of_slabs_add_up_and_count_only_the_pairs_voxels():
    rng = np.random.default_rng(2)
    pb = rng.uniform(0, 1, 1000)
    other = np.where(rng.uniform(size=1000) < 0.3, rng.choice([P, C], 1000), -1)
    block = _stored(pb, other)
    whole = pair_histogram(block, G, B)
    assert whole.shape == (256, 256) and whole.sum() == int(np.count_nonzero(other < 0))
    parts = pair_histogram(block[..., :400], G, B) + pair_histogram(block[..., 400:], G, B)
    assert np.array_equal(parts, whole)
    with pytest.raises(ReactomoError, match="uint8"):
        pair_histogram(block.astype(np.float32), G, B)


def test_a_step_without_either_phase_gets_no_offset_and_bad_histograms_are_refused():
    offsets, rec = matched_offsets(np.zeros((2, 256, 256), dtype=np.int64))
    assert offsets.tolist() == [0.0, 0.0] and rec["expected_voxels"] == [0, 0] and rec["network_voxels"] == [0, 0]
    with pytest.raises(ReactomoError, match="256, 256"):
        matched_offsets(np.zeros((2, 255, 256)))
    with pytest.raises(ReactomoError, match="256, 256"):
        matched_offsets(-np.ones((1, 256, 256)))


def test_the_offset_reaches_the_histories_but_never_moves_a_free_phase():
    allowed = allowed_transitions(CODES, 1, [2, 3])
    free = free_classes(CODES, 1, [2, 3])
    # one step, three voxels: gypsum at 60 %, gypsum at 90 %, celestite at 50 % (bassanite 40 %)
    p = np.array([[[0.60, 0.90, 0.10], [0.40, 0.10, 0.40], [0.0, 0.0, 0.0], [0.0, 0.0, 0.50]]], dtype=np.float32)
    assert most_probable_histories(p, allowed, free).tolist() == [[G, G, C]]
    bias = np.zeros((1, 4), dtype=np.float32)
    bias[0, B] = 1.0  # e^1 = 2.7: 0.40 * 2.7 > 0.60, 0.10 * 2.7 < 0.90
    assert most_probable_histories(p, allowed, free, log_bias=bias).tolist() == [[B, G, C]]
    bias[0, B] = 10.0  # however large, a voxel the network gave to the free phase keeps it
    assert most_probable_histories(p, allowed, free, log_bias=bias)[0, 2] == C
    # without free classes the offset is simply added to the evidence of every step
    two = np.stack([p[0], p[0]])
    b2 = np.array([[0, 1.0, 0, 0], [0, 0, 0, 0]], dtype=np.float32)
    out = most_probable_histories(two[:, :3] / two[:, :3].sum(axis=1, keepdims=True), allowed[:3, :3], log_bias=b2[:, :3])
    assert out[:, 0].tolist() == [B, B]  # bassanite at step 0 must stay bassanite: 2.7 * 0.4 * 0.4 > 0.6 * 0.6
    with pytest.raises(ReactomoError, match="offsets"):
        most_probable_histories(p, allowed, free, log_bias=np.zeros((2, 4)))
    with pytest.raises(ReactomoError, match="offsets"):
        most_probable_histories(p, allowed, free, log_bias=np.full((1, 4), np.nan))


def test_describe_says_the_volumes_were_matched_or_why_not():
    base = {"applied": True, "changed_voxels": [5], "allowed": "gypsum may become bassanite"}
    text = describe({**base, "volumes_matched": {"applied": True, "product": "bassanite", "network_voxels": [10, 200],
                                                 "expected_voxels": [40, 150], "offsets": [0.5, -0.2]}})
    assert "Each step's bassanite was first matched to the network's expected volume" in text
    assert "+30 voxels at step 0" in text and "\u221250 at step 1" in text
    text = describe({**base, "volumes_matched": {"applied": False, "reason": "the phase table names no single product"}})
    assert text.endswith("Volumes not matched: the phase table names no single product.")


@pytest.fixture(scope="module")
def scans(small_demo_dir):
    return sorted((small_demo_dir / "scans").glob("*.tif"))


def test_a_series_labelled_together_with_matched_volumes_moves_each_step_toward_its_expected_product(scans, tmp_path):
    plain = segment_series(MODEL, scans, tmp_path / "plain", inference=FAST, postprocess=None, partial_volume=[],
                           temporal=True, match_volumes=False)
    matched = segment_series(MODEL, scans, tmp_path / "matched", inference=FAST, postprocess=None, partial_volume=[],
                             temporal=True, match_volumes=True)
    rec = read_series_record(tmp_path / "matched")
    info = rec["temporal"]["volumes_matched"]
    assert rec["settings"]["match_volumes"] is True and "match_volumes" not in read_series_record(tmp_path / "plain")["settings"]
    assert "volumes_matched" not in read_series_record(tmp_path / "plain")["temporal"]
    n = len(scans)
    assert info["applied"] is True and info["product"] == "bassanite"
    assert len(info["network_voxels"]) == len(info["expected_voxels"]) == len(info["offsets"]) == n
    gap = np.array(info["expected_voxels"]) - np.array(info["network_voxels"])
    moved = np.array([o.counts[2] for o in matched.steps]) - np.array([o.counts[2] for o in plain.steps])
    k = int(np.argmax(np.abs(gap)))  # the step the matching had most to do on moved that way
    assert gap[k] != 0 and np.sign(moved[k]) == np.sign(gap[k])
    for o in matched.steps:  # the record's counts are the files'
        assert o.counts[2] == int(np.count_nonzero(read_labels(o.out_path) == 2))
    assert "first matched to the network's expected volume" in describe(rec["temporal"])


def test_cli_segment_match_volumes_says_it_and_records_it(scans, tmp_path, capsys):
    from core.cli import main

    folder = scans[0].parent
    assert main(["segment", "--model", str(MODEL), "--scans", str(folder), "--out", str(tmp_path / "seg"), "--tile", "64",
                 "--temporal", "--match-volumes"]) == 0
    out = capsys.readouterr().out
    assert "first matched to the network's expected volume" in out
    assert read_series_record(tmp_path / "seg")["settings"]["match_volumes"] is True
    # without labelling the steps together there is nothing to match, and the settings do not claim it
    assert main(["segment", "--model", str(MODEL), "--scans", str(folder), "--out", str(tmp_path / "alone"), "--tile",
                 "64", "--no-temporal", "--match-volumes"]) == 0
    assert "match_volumes" not in read_series_record(tmp_path / "alone")["settings"]
