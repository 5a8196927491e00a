"""Pore-space descriptors (core.analysis.pores): analytic shapes, porosities, bootstrap and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from core.errors import ReactomoError
from core.analysis.pores import (
    bootstrap_ci,
    connected_porosity,
    equivalent_diameters,
    local_thickness,
    pore_size_table,
    porosity,
    size_distribution,
)


def _ball(radius: int, pad: int = 3, centre_shift=(0, 0, 0)) -> np.ndarray:
    n = radius + pad
    z, y, x = np.mgrid[-n:n + 1, -n:n + 1, -n:n + 1]
    return (z - centre_shift[0]) ** 2 + (y - centre_shift[1]) ** 2 + (x - centre_shift[2]) ** 2 < radius**2


def _brute_force(mask: np.ndarray) -> np.ndarray:
    dt = ndi.distance_transform_edt(mask)
    pts = np.argwhere(mask)
    out = np.zeros(mask.shape)
    for p in pts:
        d2 = ((pts - p) ** 2).sum(1)
        out[tuple(p)] = 2 * dt[tuple(pts[d2 < np.rint(dt[tuple(pts.T)] ** 2)].T)].max()
    return out


@pytest.mark.parametrize("radius", [6, 10])
def test_ball_has_its_diameter_everywhere(radius):
    ball = _ball(radius)
    lt = local_thickness(ball, voxel_size_um=2.75)
    assert lt.dtype == np.float32
    assert lt[ball].min() >= (2 * radius - 1) * 2.75 - 1e-4
    assert lt[ball].max() <= 2 * radius * 2.75 + 1e-4
    c = tuple(s // 2 for s in ball.shape)
    assert lt[c] == pytest.approx(2 * radius * 2.75)
    assert (lt[~ball] == 0).all()


def test_cylinder_and_slab():
    yy, xx = np.mgrid[-9:10, -9:10]
    disc = yy**2 + xx**2 < 36
    cyl = np.broadcast_to(disc, (30, 19, 19)).copy()
    lt = local_thickness(cyl)
    assert np.abs(lt[cyl] - 12).max() <= 1.0
    slab = np.zeros((20, 12, 12), dtype=bool)
    slab[5:11] = True  # 6 layers
    lt = local_thickness(slab)
    assert np.abs(lt[slab] - 6).max() <= 1.0


def test_two_balls_joined_by_a_neck():
    big = _ball(8, pad=0)  # 17^3
    vol = np.zeros((17, 17, 40), dtype=bool)
    vol[:, :, :17] |= big
    small = _ball(4, pad=0)  # 9^3
    vol[4:13, 4:13, 28:37] |= small
    vol[7:10, 7:10, 14:30] = True  # neck 3 x 3
    lt = local_thickness(vol)
    assert np.abs(lt[:, :, :17][big] - 16).max() <= 1.0
    assert np.abs(lt[4:13, 4:13, 28:37][small] - 8).max() <= 1.0
    assert lt[8, 8, 22] <= 4.0
    np.testing.assert_allclose(lt, _brute_force(vol), atol=1e-4)


def test_matches_brute_force_on_random_structure_and_2d_disc():
    rng = np.random.default_rng(1)
    mask = ndi.gaussian_filter(rng.standard_normal((18, 18, 18)), 1.5) > 0.1
    np.testing.assert_allclose(local_thickness(mask), _brute_force(mask), atol=1e-4)
    yy, xx = np.mgrid[-12:13, -12:13]
    disc = yy**2 + xx**2 < 100
    lt = local_thickness(disc, voxel_size_um=2.0)
    assert lt[12, 12] == pytest.approx(40.0)
    assert np.abs(lt[disc] - 40).max() <= 2.0


def test_sampling_step_only_lowers_values():
    rng = np.random.default_rng(2)
    mask = ndi.gaussian_filter(rng.standard_normal((24, 24, 24)), 2) > 0
    exact = local_thickness(mask)
    coarse = local_thickness(mask, sampling_step=1.0)
    assert (coarse <= exact + 1e-4).all()
    assert (coarse[mask] >= 2.0).all()


def _opening_thickness(mask: np.ndarray) -> np.ndarray:
    """PoreSpy's definition with whole-voxel radii, by morphological openings (its method='dt'): the largest integer r
    such that the voxel lies within distance < r of a voxel whose distance transform is >= r (diameter 2r)."""
    dt = ndi.distance_transform_edt(mask)
    out = np.zeros(mask.shape)
    for r in range(1, int(dt.max()) + 1):
        seeds = dt >= r
        covered = ndi.distance_transform_edt(~seeds) < r
        out[covered & mask] = 2 * r
    return out


@pytest.mark.parametrize("shape,sigma", [((40, 44, 48), 2.5), ((90, 96), 3.0)])
def test_whole_voxel_radii_equal_the_opening_definition(shape, sigma):
    """sampling_step=1 is PoreSpy's local thickness (method 'bf' or 'dt'), computed here by openings: voxel for voxel."""
    rng = np.random.default_rng(7)
    mask = ndi.gaussian_filter(rng.standard_normal(shape), sigma) > 0.3
    np.testing.assert_array_equal(local_thickness(mask, sampling_step=1.0), _opening_thickness(mask).astype(np.float32))


def test_random_2d_structure_matches_brute_force():
    rng = np.random.default_rng(3)
    mask = ndi.gaussian_filter(rng.standard_normal((40, 46)), 1.5) > 0.0
    np.testing.assert_allclose(local_thickness(mask), _brute_force(mask), atol=1e-4)


def test_fast_distance_transform_equals_scipy():
    from core.analysis.pores import _squared_edt

    rng = np.random.default_rng(4)
    for shape in [(30, 41, 23), (57, 64)]:
        mask = ndi.gaussian_filter(rng.standard_normal(shape), 2) > 0.2
        ref = np.rint(ndi.distance_transform_edt(mask) ** 2).astype(np.int32)
        np.testing.assert_array_equal(_squared_edt(mask), ref.astype(np.float32))
        np.testing.assert_array_equal(_squared_edt(mask, use_edt=False), ref.astype(np.float32))


def test_concurrent_calls_from_threads_agree_with_serial():
    """The analysis runs in background threads: two at once must neither crash nor mix results."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    masks = [ndi.gaussian_filter(rng.standard_normal((32, 32, 32)), 2) > t for t in (0.0, 0.05, -0.05, 0.1)]
    serial = [local_thickness(m) for m in masks]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(local_thickness, masks))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


def test_equivalent_diameters_of_known_balls():
    vol = np.zeros((30, 30, 60), dtype=bool)
    b = _ball(6, pad=0)
    vol[2:15, 2:15, 2:15] = b
    vol[2:15, 2:15, 30:43] = b
    d = equivalent_diameters(vol, voxel_size_um=2.0)
    expected = np.cbrt(6 * b.sum() / np.pi) * 2.0
    np.testing.assert_allclose(d, [expected, expected])
    assert abs(expected - 24.0) < 1.0
    disc = np.zeros((10, 10), dtype=bool)
    disc[2:6, 2:6] = True
    np.testing.assert_allclose(equivalent_diameters(disc), [np.sqrt(4 * 16 / np.pi)])


def test_porosity_and_connected_porosity():
    labels = np.ones((10, 10, 10), dtype=np.uint8)
    labels[4:6, 4:6, 4:6] = 3  # enclosed: 8 voxels
    labels[0:2, 0:3, 0:3] = 3  # touches the boundary: 18 voxels
    labels[9, 9, :] = 0  # unlabelled
    assert porosity(labels) == pytest.approx(26 / 990)
    assert connected_porosity(labels) == pytest.approx(18 / 990)
    assert porosity(labels, codes=[3]) == 1.0
    assert np.isnan(porosity(np.zeros((3, 3), dtype=np.uint8)))


def test_bootstrap_ci_contains_median_and_narrows():
    rng = np.random.default_rng(3)
    widths = []
    for n in (200, 5000):
        vals = rng.lognormal(1.0, 0.5, n)
        lo, hi = bootstrap_ci(vals, n_boot=400)
        assert lo <= np.exp(1.0) <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2
    lo, hi = bootstrap_ci(rng.normal(size=300), stat=lambda v: float(np.mean(v)), n_boot=50)
    assert lo < hi


def test_size_distribution():
    d = size_distribution(np.arange(1, 101, dtype=float), bins=10)
    assert d["counts"].sum() == 100 and d["median"] == pytest.approx(50.5) and d["mean"] == pytest.approx(50.5)
    assert np.sum(d["density"] * np.diff(d["edges"])) == pytest.approx(1.0)
    assert np.isnan(size_distribution([])["median"])


def test_pore_size_table_rows_crop_and_all_solid():
    rng = np.random.default_rng(4)
    field = ndi.gaussian_filter(rng.standard_normal((24, 24, 24)), 2)
    pore = field > np.quantile(field, 0.7)
    labels = np.where(pore, 3, 1).astype(np.uint8)
    solid = np.ones_like(labels)
    rows = pore_size_table([(0, 0.0, labels), (1, 60.0, solid)], voxel_size_um=2.75, max_voxels=20**3, n_boot=50)
    r0, r1 = rows
    assert r0["subvolume"] and np.prod(r0["shape"]) <= 20**3
    assert 0 < r0["connected_porosity"] <= r0["porosity"] < 1 and r0["n_pores"] >= 1
    assert r0["lt_q1_um"] <= r0["lt_median_um"] <= r0["lt_q3_um"]
    assert r0["lt_median_ci_low"] <= r0["lt_median_um"] <= r0["lt_median_ci_high"]
    assert r0["eqd_mean_um"] > 0
    assert r1["porosity"] == 0 and r1["n_pores"] == 0 and np.isnan(r1["lt_median_um"])


def test_pore_size_distribution_of_known_balls_and_its_band():
    """Balls of radius 4 and 7 voxels (and more of each, so the bootstrap has pores to draw): the cumulative volume
    steps to exactly the small balls' share at 8 voxels and to 1 at 14; the bootstrap band brackets it."""
    vol = np.ones((20, 20, 100), dtype=np.uint8)
    small, big = _ball(4, pad=0), _ball(7, pad=0)
    for i, x in enumerate(range(2, 90, 18)):
        b = small if i % 2 == 0 else big
        n = b.shape[0]
        vol[2:2 + n, 2:2 + n, x:x + n][b] = 3
    row = pore_size_table([(0, 0.0, vol)], voxel_size_um=2.0, n_boot=200, max_voxels=None)[0]
    d = row["lt_distribution"]
    assert d["diameter_um"] == [16.0, 28.0]  # 2R x 2 µm
    share_small = 3 * small.sum() / (3 * small.sum() + 2 * big.sum())
    assert d["cdf"] == pytest.approx([share_small, 1.0])
    assert d["cdf_low"][0] < share_small < d["cdf_high"][0] and d["cdf_low"][1] == d["cdf_high"][1] == 1.0
    # equivalent diameters, by number of pores: 3 small and 2 big balls -> 60 % at the small diameter
    e = row["eqd_distribution"]
    assert e["diameter_um"] == pytest.approx([2 * 2.0 * np.cbrt(3 * small.sum() / (4 * np.pi)), 2 * 2.0 * np.cbrt(3 * big.sum() / (4 * np.pi))])
    assert e["cdf"] == pytest.approx([0.6, 1.0]) and e["cdf_low"][0] < 0.6 < e["cdf_high"][0]


@pytest.mark.parametrize(
    "call",
    [
        lambda: local_thickness(np.ones((4, 4), dtype=np.float32)),
        lambda: local_thickness(np.zeros((0, 4), dtype=bool)),
        lambda: local_thickness(np.ones((4, 4), dtype=bool)),
        lambda: local_thickness(np.zeros(5, dtype=bool)),
        lambda: local_thickness(np.zeros((4, 4), dtype=bool), voxel_size_um=-1),
        lambda: local_thickness(np.zeros((4, 4), dtype=bool), sampling_step=0),
        lambda: equivalent_diameters(np.zeros((4, 4), dtype=bool), connectivity=3),
        lambda: porosity(np.zeros((4, 4), dtype=float)),
        lambda: connected_porosity(np.zeros((4, 4), dtype=bool)),
        lambda: bootstrap_ci([1.0, 2.0], level=2),
        lambda: size_distribution([1.0, np.nan]),
        lambda: pore_size_table([(0, 0.0)]),
    ],
)
def test_bad_inputs_raise_one_sentence(call):
    with pytest.raises(ReactomoError) as err:
        call()
    msg = str(err.value)
    assert msg.endswith(".") and msg.replace("e.g. ", "").rstrip(".").count(". ") == 0


def test_no_pore_gives_zeros():
    assert (local_thickness(np.zeros((5, 5, 5), dtype=bool)) == 0).all()
    assert equivalent_diameters(np.zeros((5, 5), dtype=bool)).size == 0


def test_count_distribution_bins_many_values_without_bias():
    from core.analysis.pores import _count_distribution

    vals = np.random.default_rng(9).lognormal(2.0, 0.6, 10_000)
    d = _count_distribution(vals, n_boot=100, level=0.95, seed=0, max_points=400)
    x, cdf = np.array(d["diameter_um"]), np.array(d["cdf"])
    assert 100 < x.size <= 400 and np.all(np.diff(x) > 0) and cdf[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(cdf, [(vals <= v).mean() for v in x])  # exact at every stored diameter
    assert np.all(np.array(d["cdf_low"]) <= cdf + 1e-12) and np.all(cdf <= np.array(d["cdf_high"]) + 1e-12)
