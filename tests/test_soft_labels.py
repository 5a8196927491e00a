"""Soft labels at the reactant/product boundary (core.network.train.soft_split, draw_soft, TrainConfig.soft_labels):
the forest's split computed and stored exactly, labels drawn at the frequency of that split and only in its band, the
patches aligned with the labels', a real training that uses them (and one that ignores them bit for bit when off),
`run --soft-labels` recorded in the model card and refused out of range."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_args
from core.cli import main
from core.errors import ReactomoError
from core.network.bundle import read_card
from core.network.train import (NO_SOFT, SOFT_SCALE, TrainConfig, _patches_like, draw_soft, make_patches, soft_split,
                                train_unet)
from core.network.unet import UNetConfig, build_unet
from core.phases import DEFAULT_PHASES

CODES = tuple(DEFAULT_PHASES.codes)  # gypsum 1, bassanite 2, pore 3, celestite 4


def test_the_split_is_the_products_share_of_the_pair():
    p = np.zeros((1, 4, 1, 4), np.float32)
    p[0, :, 0, 0] = [0.6, 0.2, 0.2, 0.0]  # q = 0.2 / 0.8 = 0.25
    p[0, :, 0, 1] = [0.1, 0.9, 0.0, 0.0]  # q = 0.9
    p[0, :, 0, 2] = [0.0, 0.0, 1.0, 0.0]  # no gypsum or bassanite at all: no split
    p[0, :, 0, 3] = [0.3, 0.3, 0.2, 0.2]  # brushed: kept
    keep = np.array([[[False, False, False, True]]])
    q = soft_split(p, CODES, (1, 2), keep=keep)
    assert q.dtype == np.uint8 and q.tolist() == [[[round(0.25 * SOFT_SCALE), round(0.9 * SOFT_SCALE), NO_SOFT, NO_SOFT]]]
    # planes in another order (the forest's classes): the same split
    assert soft_split(p[:, ::-1], CODES[::-1], (1, 2), keep=keep).tolist() == q.tolist()
    # a pair the forest has no plane for gives no split anywhere
    assert (soft_split(p[:, 1:], CODES[1:], (1, 2)) == NO_SOFT).all()
    with pytest.raises(ReactomoError, match="must be \\(slices, 4 classes, y, x\\)"):
        soft_split(p[0], CODES, (1, 2))


def test_labels_are_drawn_at_the_forests_split_inside_the_band_only():
    n = 200_000
    y = np.zeros((1, 1, n), np.int64)  # class index 0 (gypsum) everywhere ...
    y[0, 0, n // 2:] = 1  # ... and 1 (bassanite) in the second half
    y[0, 0, :1000] = 2  # and some pore, which never moves
    soft = np.full(y.shape, round(0.3 * SOFT_SCALE), np.uint8)
    soft[0, 0, 1000:2000] = round(0.1 * SOFT_SCALE)  # outside the band [0.2, 0.8]: kept
    soft[0, 0, 2000:3000] = NO_SOFT  # brushed: kept
    before = y.copy()
    out = draw_soft(y, soft, band=0.2, pair=(0, 1), rng=np.random.default_rng(1))
    assert (y == before).all()  # the input is not modified
    assert (out[0, 0, :1000] == 2).all() and (out[0, 0, 1000:3000] == 0).all()
    drawn = out[0, 0, 3000:]
    assert set(np.unique(drawn)) == {0, 1}
    assert drawn.mean() == pytest.approx(0.3, abs=0.005)  # bassanite at the forest's split, whatever the hard label
    # another epoch's draw differs pixel by pixel but not in frequency
    again = draw_soft(y, soft, band=0.2, pair=(0, 1), rng=np.random.default_rng(2))
    assert (again != out).any() and again[0, 0, 3000:].mean() == pytest.approx(0.3, abs=0.005)


def test_the_split_is_cut_into_the_same_patches_as_the_labels():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, (2, 40, 37)).astype(np.uint8)
    lab[1, :20] = 0  # patches with no label are dropped for both
    img = np.zeros(lab.shape, np.float32)
    extra = (lab * 50 + 7).astype(np.uint8)  # the labels, recoded: the patches must match cell by cell
    for p, ratio in ((16, 1.0), (16, 0.5), (64, 1.0)):
        _, y = make_patches(img, lab, patch_size=p, stride_ratio=ratio)
        e = _patches_like(lab, extra, patch_size=p, stride_ratio=ratio, fill=NO_SOFT)
        assert e.shape == y.shape
        assert (np.where(y > 0, e, 0) == np.where(y > 0, y * 50 + 7, 0)).all()
    # padding (a slice smaller than a patch) is "no split"
    e = _patches_like(lab, extra, patch_size=64, stride_ratio=1.0, fill=NO_SOFT)
    assert (e[:, 40:, :] == NO_SOFT).all()


def _problem(seed=0):
    """Gypsum and bassanite in bands with a soft boundary the forest is unsure of; pores as a dark block."""
    rng = np.random.default_rng(seed)
    lab = np.ones((4, 48, 48), np.uint8)
    lab[:, :, 24:] = 2
    lab[:, 4:14, 4:14] = 3
    lab[:, 30:40, 4:10] = 4
    img = np.select([lab == 1, lab == 2, lab == 3, lab == 4], [0.4, 0.5, 0.1, 0.9]).astype(np.float32)
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    soft = np.full(lab.shape, NO_SOFT, np.uint8)
    soft[:, :, 20:28] = round(0.5 * SOFT_SCALE)  # the forest's coin toss along the boundary
    return img, lab, soft


FAST = dict(patch_size=16, batch_size=8, max_epochs=2, augment=False, patience=0, average_epochs=0, cpu_amp=False)
TINY = UNetConfig(n_classes=len(DEFAULT_PHASES), width=4, depth=2)


def _train(config, img, lab, soft=None):
    torch.manual_seed(0)
    net = build_unet(TINY)
    return train_unet(net, img, lab, config=config, phases=DEFAULT_PHASES, device="cpu", soft=soft)


def test_a_real_training_draws_the_boundary_and_off_is_the_hard_training_bit_for_bit():
    img, lab, soft = _problem()
    hard = _train(TrainConfig(**FAST), img, lab)
    ignored = _train(TrainConfig(**FAST), img, lab, soft=soft)  # soft labels off: the split is not read
    assert hard.soft is None and ignored.soft is None
    assert all(torch.equal(hard.state_dict[k], ignored.state_dict[k]) for k in hard.state_dict)
    used = _train(TrainConfig(**FAST, soft_labels=0.2), img, lab, soft=soft)
    assert used.soft["applied"] and used.soft["codes"] == [1, 2] and used.soft["band"] == 0.2
    # the boundary band on the training slices, gypsum and bassanite only (the pore block lies outside it)
    n_train = 3  # val_fraction 0.2 of 4 slices holds one out
    assert used.soft["pixels"] == pytest.approx(n_train * 48 * 8, rel=0.5)
    assert 0 < used.soft["share"] < 1
    assert any(not torch.equal(hard.state_dict[k], used.state_dict[k]) for k in hard.state_dict)
    # asked for without the forest's split: trained on the hard labels, and it says why
    none = _train(TrainConfig(**FAST, soft_labels=0.2), img, lab)
    assert not none.soft["applied"] and "not at hand" in none.soft["reason"]
    with pytest.raises(ReactomoError, match="uint8 of the labels' shape"):
        _train(TrainConfig(**FAST, soft_labels=0.2), img, lab, soft=soft[:, :10])


@pytest.mark.parametrize("bad", [-0.1, 0.6, True])
def test_the_band_is_validated(bad):
    with pytest.raises(ReactomoError, match="soft_labels must be a number from 0.0 to 0.5"):
        TrainConfig(soft_labels=bad)


def test_run_records_the_soft_labels_and_refuses_a_bad_band(small_demo_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    assert main(run_args(small_demo_dir, bad, "--soft-labels", "0.7")) == 2
    err = capsys.readouterr().err
    assert "soft_labels must be a number from 0.0 to 0.5; got 0.7." in err and "Traceback" not in err
    assert not bad.exists()
    out = tmp_path / "run"
    assert main(run_args(small_demo_dir, out, "--soft-labels", "0.2")) == 0
    card = read_card(out / "model")
    soft = card["training"]["soft_labels"]
    assert card["training"]["config"]["soft_labels"] == 0.2
    assert soft["applied"] and soft["codes"] == [1, 2] and soft["pixels"] > 0 and 0 < soft["share"] < 1
    # the forest's split is kept for the scribbled slices only, so the default extra slices are left out
    run = json.loads((out / "run.json").read_text())
    assert run["extra_slices"]["count"] == 0 and run["random_forest"]["steps"][0]["extra_slices"] == []
