"""core.imaging.tomography (the simulated scanner of the benchmark family) and the demo's ``imaging="tomography"``."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ReactomoError
from core.imaging.synthetic import DemoConfig, make_demo
from core.imaging.tomography import ScanPhysics, Tomograph, scan_volume

N = 64


def _radius() -> np.ndarray:
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2.0
    return np.hypot(yy, xx), yy


def test_projection_conserves_mass_at_every_angle():
    rng = np.random.default_rng(0)
    img = rng.random((2, N, N)).astype(np.float32)
    sino = Tomograph((N, N), n_angles=37).project(img)
    assert sino.shape[:2] == (2, 37)
    np.testing.assert_allclose(sino.sum(axis=2), np.broadcast_to(img.sum(axis=(1, 2))[:, None], (2, 37)), rtol=1e-4)


def test_fbp_recovers_a_disc_and_an_empty_background():
    rad, _ = _radius()
    disc = (rad < 20).astype(np.float32)[None] * 0.01
    tomo = Tomograph((N, N), n_angles=96)
    rec = tomo.fbp(tomo.project(disc))[0]
    assert abs(rec[rad < 15].mean() - 0.01) < 0.0002
    assert abs(rec[(rad > 24) & (rad < 30)].mean()) < 0.0002
    # a square filling the slice (corners included) comes back flat, without cupping from the projector
    flat = tomo.fbp(tomo.project(np.full((1, N, N), 0.01, np.float32)))[0]
    assert abs(flat[8:-8, 8:-8].mean() - 0.01) < 1e-4 and flat[8:-8, 8:-8].std() < 2e-4


def test_a_miscalibrated_column_leaves_a_half_ring_at_its_radius():
    tomo = Tomograph((N, N), n_angles=N)
    sino = np.zeros((1, N, tomo.n_det), np.float32)
    sino[0, :, (tomo.n_det - 1) // 2 + 20] = 1.0  # a column 20 bins right of the axis, over 180 degrees
    rec = np.abs(tomo.fbp(sino)[0])
    rad, yy = _radius()
    ring = np.abs(rad - 20) < 1.5
    lower, upper = rec[ring & (yy > 0)].mean(), rec[ring & (yy < 0)].mean()
    assert lower > 5 * upper  # half a ring: one half-plane only
    assert lower > 20 * rec[np.abs(rad - 10) < 1.5].mean()


def test_photon_noise_falls_as_one_over_the_square_root_of_the_photons():
    tomo = Tomograph((N, N), n_angles=N)
    att = np.full((4, N, N), 1.0 / N, np.float32)
    std = [scan_volume(att, tomo, ScanPhysics(photons=p, beam_profile=1.0), rng=np.random.default_rng(1))[:, 16:48, 16:48].std()
           for p in (1e4, 4e4)]
    assert 1.8 < std[0] / std[1] < 2.2


def test_the_beam_profile_makes_top_and_bottom_noisier():
    tomo = Tomograph((N, N), n_angles=N)
    att = np.full((9, N, N), 1.0 / N, np.float32)
    rec = scan_volume(att, tomo, ScanPhysics(photons=1e4, beam_profile=0.25), rng=np.random.default_rng(2))
    std = rec[:, 16:48, 16:48].std(axis=(1, 2))
    assert std[0] > 1.6 * std[4] and std[-1] > 1.6 * std[4]


def test_bad_shapes_are_refused_in_one_sentence():
    with pytest.raises(ReactomoError, match="at least 4"):
        Tomograph((2, 64), n_angles=10)
    with pytest.raises(ReactomoError, match="attenuation map has shape"):
        scan_volume(np.zeros((2, 10, 10)), Tomograph((N, N), n_angles=8), ScanPhysics(), rng=np.random.default_rng(0))
    with pytest.raises(ReactomoError, match="Unknown reconstruction filter"):
        Tomograph((N, N), n_angles=8).filter(np.zeros((1, 8, 95)), window="cosine")


def test_demo_scanned_by_the_tomograph_has_the_asked_noise_and_keeps_its_truth():
    cfg = DemoConfig(steps=2, shape=(12, 96, 96), seed=3, imaging="tomography", noise_grey=800.0, ring_grey=0.0,
                     noise_gradient=1.0, grain_offset_grey=0.0, texture_grey=0.0, drift_gain=0.0, drift_offset_grey=0.0,
                     cupping=0.0)
    exp = make_demo(cfg)
    scan, truth = exp.scans[0].astype(np.float64), exp.truth[0]
    assert scan.dtype == np.float64 and exp.scans[0].dtype == np.uint16 and exp.scans[0].shape == cfg.shape
    # far from every edge, gypsum's spread is the photon noise the config asked for
    from scipy import ndimage as ndi

    inner = ndi.binary_erosion(truth == 1, iterations=3)
    assert 600 < scan[inner].std() < 1000
    # phases keep their grey order: pore < gypsum < celestite
    med = [np.median(scan[ndi.binary_erosion(truth == c, iterations=1)]) for c in (3, 1, 4)]
    assert med[0] < med[1] < med[2]
    assert abs(med[1] - cfg.grey_gypsum) < 600


def test_tomography_settings_are_validated():
    with pytest.raises(ReactomoError, match="imaging"):
        DemoConfig(imaging="xray").validate()
    with pytest.raises(ReactomoError, match="n_angles"):
        DemoConfig(n_angles=5).validate()
    with pytest.raises(ReactomoError, match="label_step"):
        DemoConfig(steps=4, label_step=4).validate()
