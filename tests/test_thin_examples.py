"""Thin laths painted into training patches (core.network.train.paint_thin, thin_examples): the contrast and edge
blur measured against analytic scans, labels right by construction, nothing painted at another phase's edge, the
settings validated and recorded, and a real training run that uses them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from core.errors import ReactomoError
from core.network.train import ThinExamples, TrainConfig, _lath, augment_batch, paint_thin, thin_examples, train_unet
from core.network.unet import UNetConfig, build_unet
from core.phases import DEFAULT_PHASES

CODES = tuple(DEFAULT_PHASES.codes)  # gypsum 1, bassanite 2, pore 3, celestite 4


def _scan(sigma: float, *, contrast: float = 0.1, noise: float = 0.02, seed: int = 0):
    """Gypsum beside bassanite (``contrast`` brighter), a dark pore inside the gypsum; blurred by ``sigma``."""
    rng = np.random.default_rng(seed)
    lab = np.full((4, 128, 128), 1, np.uint8)
    lab[:, :, 64:] = 2
    lab[:, 40:80, 16:48] = 3
    grey = np.select([lab == 1, lab == 2, lab == 3], [0.4, 0.4 + contrast, 0.1]).astype(np.float32)
    img = np.stack([ndi.gaussian_filter(g, sigma) for g in grey]) + rng.normal(0, noise, grey.shape).astype(np.float32)
    return img, lab


@pytest.mark.parametrize("sigma", [0.6, 1.0, 1.4])
def test_the_contrast_and_the_edge_blur_are_measured_from_the_labelled_slices(sigma):
    img, lab = _scan(sigma)
    thin = thin_examples(img, lab, (1, 2), CODES, 0.5)
    assert thin is not None and (thin.a, thin.b) == (0, 1) and thin.p == 0.5
    assert thin.contrast == pytest.approx(0.1, abs=0.005)
    assert thin.sigma == pytest.approx(sigma, abs=0.15)  # from the gypsum-pore edge, the one with most contrast


def test_no_measure_without_interiors_of_both_phases():
    img, lab = _scan(0.8)
    lab[lab == 2] = 1  # no bassanite labelled
    assert thin_examples(img, lab, (1, 2), CODES, 0.5) is None


def test_a_lath_is_the_pixels_inside_its_rectangle():
    lath = _lath((40, 40), 20.0, 20.0, 0.0, 20.0, 1.0)  # along x, one pixel wide: row 20, x from 10 to 30
    assert lath.dtype == bool and lath.sum() == 21 and lath[20, 10:31].all()
    tilted = _lath((60, 60), 30.0, 30.0, 0.7, 30.0, 3.0)
    assert tilted.sum() == pytest.approx(30 * 3, rel=0.1)


def test_painted_laths_have_their_labels_right_by_construction():
    thin = ThinExamples(a=0, b=1, contrast=0.1, sigma=0.7, p=1.0)
    y = np.zeros((64, 64), np.int64)
    y[:, 48:] = 2  # a pore strip: no lath may come within the margin of it
    x = np.zeros((1, 64, 64), np.float32)
    rng = np.random.default_rng(3)
    painted = 0
    for _ in range(20):
        xp, yp = paint_thin(x, y, thin, rng=rng)
        changed = yp != y
        if not changed.any():
            continue
        painted += 1
        # only the host (index 0) became the other phase (index 1)
        assert set(np.unique(y[changed])) == {0} and set(np.unique(yp[changed])) <= {1}
        delta = xp[0] - x[0]
        # bassanite painted into gypsum is brighter, the added grey is the contrast times the painted pixels, and
        # every pixel that got grey enough to tell got the label (nothing faint is left labelled as the host)
        assert delta.min() >= -1e-6 and delta.sum() == pytest.approx(0.1 * changed.sum(), rel=0.01)
        blobs, n = ndi.label(delta > 0.005)
        assert all(changed[blobs == i].any() for i in range(1, n + 1))
        # nothing within the margin of the pore strip, in labels or grey
        assert not changed[:, 45:].any() and np.abs(delta[:, 48:]).max() < 0.01
        assert x.max() == 0 and (y[:, :48] == 0).all()  # the inputs are not modified
    assert painted >= 5


def test_a_patch_without_room_is_left_as_it_is():
    thin = ThinExamples(a=0, b=1, contrast=0.1, sigma=0.7, p=1.0)
    y = np.full((16, 16), 3, np.int64)
    x = np.ones((1, 16, 16), np.float32)
    xp, yp = paint_thin(x, y, thin, rng=np.random.default_rng(0))
    assert xp is x and yp is y


def test_augment_batch_paints_only_with_thin_given():
    x = np.zeros((8, 1, 48, 48), np.float32)
    y = np.zeros((8, 48, 48), np.int64)
    plain_x, plain_y = augment_batch(x, y, rng=np.random.default_rng(0), transforms=("flip",))
    assert (plain_y == 0).all() and (plain_x == 0).all()
    thin = ThinExamples(a=0, b=1, contrast=0.1, sigma=0.7, p=1.0)
    px, py = augment_batch(x, y, rng=np.random.default_rng(0), transforms=("flip",), thin=thin)
    assert (py == 1).any() and px.max() > 0.05


def test_the_setting_is_validated_and_round_trips():
    with pytest.raises(ReactomoError, match="thin_pair must be two different phase codes"):
        TrainConfig(thin_p=0.5, thin_pair=(2, 2))
    assert TrainConfig(thin_p=0.5).thin_pair == ()  # the phase table's reactant and product
    with pytest.raises(ReactomoError, match="thin_pair must be two different phase codes"):
        TrainConfig(thin_p=0.5, thin_pair=("a", 2))
    with pytest.raises(ReactomoError, match="thin_p must be a number from 0.0 to 1.0"):
        TrainConfig(thin_p=1.5, thin_pair=(1, 2))
    cfg = TrainConfig(thin_p=0.5, thin_pair=(1, 2))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_a_real_training_paints_and_records_what_it_painted():
    img, lab = _scan(0.8, noise=0.03)
    torch.manual_seed(0)
    net = build_unet(UNetConfig(n_classes=len(CODES), width=4, depth=2))
    cfg = TrainConfig(patch_size=32, batch_size=8, max_epochs=1, augment=True, augment_factor=2, patience=0,
                      thin_p=1.0)  # the pair from the phase table's roles: gypsum, bassanite
    r = train_unet(net, img, lab, config=cfg, phases=DEFAULT_PHASES)
    assert r.thin is not None and r.thin["codes"] == [1, 2] and r.thin["share"] == 1.0 and r.thin["painted"] is True
    assert r.thin["contrast"] == pytest.approx(0.1, abs=0.01) and 0.5 <= r.thin["edge_sigma_px"] <= 1.1
    off = train_unet(build_unet(UNetConfig(n_classes=len(CODES), width=4, depth=2)), img, lab,
                     config=TrainConfig(patch_size=32, batch_size=8, max_epochs=1, patience=0), phases=DEFAULT_PHASES)
    assert off.thin is None
    # a label step without one of the two phases: nothing painted, and the card says why
    no_bassanite = np.where(lab == 2, 1, lab).astype(np.uint8)
    r = train_unet(build_unet(UNetConfig(n_classes=len(CODES), width=4, depth=2)), img, no_bassanite, config=cfg,
                   phases=DEFAULT_PHASES)
    assert r.thin["painted"] is False and "too few interior pixels" in r.thin["reason"]


def test_the_edge_blur_is_measured_across_the_real_edges_even_when_edges_are_not_trained_on():
    img, lab = _scan(1.0, noise=0.01)
    torch.manual_seed(0)
    cfg = TrainConfig(patch_size=32, batch_size=8, max_epochs=1, augment=True, augment_factor=2, patience=0,
                      thin_p=1.0, edge_px=2)
    r = train_unet(build_unet(UNetConfig(n_classes=len(CODES), width=4, depth=2)), img, lab, config=cfg,
                   phases=DEFAULT_PHASES)
    assert r.thin["painted"] is True and r.thin["edge_sigma_px"] == pytest.approx(1.0, abs=0.15)


def test_grey_values_that_do_not_differ_paint_nothing():
    img, lab = _scan(0.8, contrast=0.0)
    assert thin_examples(img, lab, (1, 2), CODES, 0.5) is None


def test_thin_laths_without_augmented_copies_are_refused_in_a_sentence(tmp_path, capsys):
    with pytest.raises(ReactomoError, match="painted into the augmented copies"):
        TrainConfig(thin_p=0.5, augment_factor=1)
    with pytest.raises(ReactomoError, match="painted into the augmented copies"):
        TrainConfig(thin_p=0.5, augment=False)
    from core.cli import main

    img, lab = _scan(0.8)
    import tifffile

    tifffile.imwrite(tmp_path / "scan.tif", (img * 1000).astype(np.uint16), photometric="minisblack")
    tifffile.imwrite(tmp_path / "gt.tif", lab, photometric="minisblack")
    code = main(["train", "--scan", str(tmp_path / "scan.tif"), "--ground-truth", str(tmp_path / "gt.tif"),
                 "--out", str(tmp_path / "models" / "m"), "--no-augment", "--thin-examples", "0.5"])
    assert code == 2 and "painted into the augmented copies" in capsys.readouterr().err
    assert not (tmp_path / "models" / "m").exists()  # nothing made
