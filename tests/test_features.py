"""Per-pixel features: layout, names, analytic responses, 3D context, normalisation, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from core.errors import ReactomoError
from core.labelling.features import (
    DEFAULT_GROUPS,
    FEATURE_GROUPS,
    FeatureConfig,
    feature_names,
    guided_filter,
    image_features,
    intensity_reference,
    slice_features,
    volume_features,
)

ALL = FeatureConfig(groups=FEATURE_GROUPS)
RAW = dict(normalise="none", context_3d=False)  # grey values as they are: analytic answers stay simple


def _noise(shape, seed=0):
    return np.random.default_rng(seed).normal(1000.0, 50.0, shape).astype(np.float32)


# ------------------------------------------------------------------------------------------------ layout, config
def test_stack_layout_dtype_and_names():
    img = np.random.default_rng(0).integers(0, 4000, (40, 48), dtype=np.uint16)
    fs = image_features(img, config=ALL)
    s = len(ALL.sigmas)
    assert fs.data.shape == (1 + s + s + 2 * s + 4 + 2 + 2, 40, 48)
    assert fs.data.dtype == np.float32 and fs.data.flags.c_contiguous
    assert fs.names == feature_names(ALL) and len(set(fs.names)) == len(fs.names) == ALL.n_features
    assert fs.guide.shape == (40, 48) and fs.guide.dtype == np.float32
    assert fs.pixels().shape == (40 * 48, fs.n_features) and fs.pixels().flags.c_contiguous
    mask = np.zeros((40, 48), bool)
    mask[3, 5] = True
    np.testing.assert_array_equal(fs.pixels(mask)[0], fs.data[:, 3, 5])
    np.testing.assert_array_equal(fs.plane("intensity"), fs.data[0])
    with pytest.raises(ReactomoError, match="No feature is called"):
        fs.plane("nope")
    # the default groups, in the documented order
    assert FeatureConfig().groups == DEFAULT_GROUPS
    assert image_features(img).names == feature_names(FeatureConfig())


def test_config_hashes_and_round_trips_through_json():
    cfg = FeatureConfig(sigmas=[1, 2.5], groups=["intensity", "gradient"], context_3d=False)
    assert isinstance(cfg.sigmas, tuple) and hash(cfg) == hash(FeatureConfig(sigmas=(1, 2.5), groups=("intensity", "gradient"), context_3d=False))
    back = FeatureConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and hash(back) == hash(cfg)
    assert {cfg: 1}[back] == 1
    # the same selection in another order is the same config (and the same planes)
    assert FeatureConfig(groups=("edges", "intensity")) == FeatureConfig(groups=("intensity", "edges"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(groups=("intensity", "gradiant")), "did you mean 'gradient'"),
        (dict(groups=()), "No feature group"),
        (dict(groups=("edges", "edges")), "repeat"),
        (dict(sigmas=(2.0, 1.0)), "ascending"),
        (dict(sigmas=(0.0,)), "outside 0.3"),
        (dict(sigmas=(float("nan"),)), "not a number"),
        (dict(sigmas=()), "at least one scale"),
        (dict(normalise="volumes"), "did you mean 'volume'"),
        (dict(percentiles=(99.0, 1.0)), "Percentiles"),
        (dict(downsample_from=1), "downsample_from"),
    ],
)
def test_bad_configs_are_refused_with_a_sentence(kwargs, match):
    with pytest.raises(ReactomoError, match=match):
        FeatureConfig(**kwargs).validate()
    with pytest.raises(ReactomoError, match=match):
        image_features(np.zeros((8, 8), np.uint8), config=FeatureConfig(**kwargs))


def test_unknown_keys_in_a_saved_config_are_refused():
    with pytest.raises(ReactomoError, match="Unknown feature setting"):
        FeatureConfig.from_dict({"sigmas": [1.0], "colour": "red"})


# ------------------------------------------------------------------------------------------------ analytic answers
def test_constant_image_gives_constant_smoothing_and_zero_derivatives():
    img = np.full((32, 36), 7.0, np.float32)
    fs = image_features(img, config=FeatureConfig(groups=FEATURE_GROUPS, sigmas=(1.0, 3.0, 16.0), **RAW))
    for name, plane in zip(fs.names, fs.data):
        if name.startswith(("gradient", "hessian", "standard deviation")):
            np.testing.assert_allclose(plane, 0.0, atol=1e-4, err_msg=name)
        else:  # intensity, every Gaussian (also the downsampled sigma 16), mean/min/max, opening/closing, guided
            np.testing.assert_allclose(plane, 7.0, rtol=1e-5, err_msg=name)


def test_gradient_magnitude_of_a_ramp_is_its_slope_times_sigma():
    slope = 3.0
    img = (slope * np.arange(64, dtype=np.float32))[None, :].repeat(48, axis=0)
    fs = image_features(img, config=FeatureConfig(groups=("gradient",), sigmas=(1.0, 2.0), **RAW))
    for s in (1.0, 2.0):  # scale-normalised: |grad| * sigma, away from the mirrored borders
        plane = fs.plane(f"gradient magnitude sigma {s:g}")
        np.testing.assert_allclose(plane[:, 10:-10], slope * s, rtol=1e-4)


def test_hessian_eigenvalues_are_negative_on_a_bright_blob_and_positive_on_a_dark_one():
    yy, xx = np.mgrid[:41, :41]
    blob = np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / (2 * 3.0**2)).astype(np.float32)
    cfg = FeatureConfig(groups=("structure",), sigmas=(2.0,), **RAW)
    bright = image_features(100 * blob, config=cfg)
    dark = image_features(-100 * blob, config=cfg)
    hi, lo = "hessian largest eigenvalue sigma 2", "hessian smallest eigenvalue sigma 2"
    assert bright.plane(hi)[20, 20] < 0 and bright.plane(lo)[20, 20] < 0
    assert dark.plane(hi)[20, 20] > 0 and dark.plane(lo)[20, 20] > 0
    # a blob is round: both curvatures equal at its centre
    assert bright.plane(hi)[20, 20] == pytest.approx(bright.plane(lo)[20, 20], rel=1e-3)
    assert np.all(bright.plane(hi) >= bright.plane(lo))


def test_neighbourhood_and_morphology_of_a_single_bright_pixel():
    img = np.zeros((21, 21), np.float32)
    img[10, 10] = 9.0
    fs = image_features(img, config=FeatureConfig(groups=("neighbourhood", "morphology"), **RAW))
    np.testing.assert_array_equal(fs.plane("maximum 3x3")[9:12, 9:12], 9.0)
    assert fs.plane("maximum 3x3")[10, 12] == 0.0 and fs.plane("minimum 3x3").max() == 0.0
    assert fs.plane("mean 3x3")[9, 9] == pytest.approx(1.0)
    # grey opening removes a bright speck smaller than its 5x5 window; closing keeps it
    smoothed = ndi.gaussian_filter(img, 1.0, truncate=3.0)
    assert fs.plane("grey opening 5x5")[10, 10] < 0.05 * smoothed[10, 10]
    assert fs.plane("grey closing 5x5")[10, 10] == pytest.approx(smoothed[10, 10], rel=1e-5)


def test_guided_filter_keeps_a_strong_edge_and_smooths_weak_noise():
    rng = np.random.default_rng(1)
    step = np.zeros((40, 40), np.float32)
    step[:, 20:] = 1.0
    noisy = step + rng.normal(0, 0.01, step.shape).astype(np.float32)
    out = guided_filter(noisy, noisy, radius=2, eps=1e-3)
    box = ndi.uniform_filter(noisy, 5)
    # next to the edge the box filter mixes both sides, the guided filter does not
    assert abs(box[20, 19] - 0.0) > 0.15 and abs(out[20, 19] - 0.0) < 0.05
    # in flat regions the noise is reduced
    assert out[5:35, 3:15].std() < 0.6 * noisy[5:35, 3:15].std()


def test_large_scales_on_a_downsampled_image_match_full_resolution():
    rng = np.random.default_rng(2)
    img = ndi.gaussian_filter(rng.normal(0, 1, (160, 176)), 4).astype(np.float32)
    fs = image_features(img, config=FeatureConfig(groups=("intensity",), sigmas=(16.0,), **RAW))
    ref = ndi.gaussian_filter(img, 16.0, truncate=3.0)
    err = np.abs(fs.plane("gaussian 2D sigma 16") - ref)[24:-24, 24:-24]
    assert err.max() < 0.03 * (ref.max() - ref.min())


# ------------------------------------------------------------------------------------------------ 3D context, normalisation
def test_3d_context_averages_out_noise_that_is_independent_between_slices():
    vol = _noise((9, 48, 48))
    flat = FeatureConfig(groups=("intensity",), sigmas=(1.0,), normalise="none", context_3d=False)
    deep = FeatureConfig(groups=("intensity",), sigmas=(1.0,), normalise="none", context_3d=True)
    s2 = slice_features(vol, 4, config=flat).plane("gaussian 2D sigma 1").std()
    s3 = slice_features(vol, 4, config=deep).plane("gaussian 3D sigma 1").std()
    # a unit 3D Gaussian averages sqrt(2 sqrt(pi)) ~ 1.9 times more independent samples than the 2D one
    assert s3 < 0.65 * s2
    # mirrored ends: the first slice works and a constant volume stays constant
    const = np.full((5, 16, 16), 3.0, np.float32)
    np.testing.assert_allclose(slice_features(const, 0, config=deep).data, 3.0, rtol=1e-5)


def test_volume_normalisation_removes_a_gain_and_offset_drift():
    vol = _noise((6, 40, 40), seed=3)
    drifted = (1.07 * vol + 450.0).astype(np.float32)  # the demo's drift between steps, exaggerated
    a = volume_features(vol, [1, 4], config=FeatureConfig(groups=FEATURE_GROUPS))
    b = volume_features(drifted, [1, 4], config=FeatureConfig(groups=FEATURE_GROUPS))
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa.data, fb.data, atol=2e-3)
    lo, hi = intensity_reference(vol)
    assert a[0].reference == pytest.approx((lo, hi))
    np.testing.assert_allclose(a[0].guide, (vol[1] - lo) / (hi - lo), atol=1e-5)


def test_inputs_are_not_modified_and_results_do_not_depend_on_threads():
    vol = np.random.default_rng(4).integers(100, 5000, (7, 30, 34), dtype=np.uint16)
    keep = vol.copy()
    one = volume_features(vol, [0, 3, 6], config=ALL, n_jobs=1)
    two = volume_features(vol, [0, 3, 6], config=ALL, n_jobs=2)
    np.testing.assert_array_equal(vol, keep)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.data, b.data)
    assert [f.z for f in one] == [0, 3, 6]
    np.testing.assert_array_equal(slice_features(vol, 3, config=ALL, reference=one[1].reference).data, one[1].data)


def test_a_lazy_volume_gives_the_same_features_as_the_array(tmp_path):
    from core.imaging.io import open_volume, write_volume

    vol = np.random.default_rng(5).integers(100, 5000, (8, 24, 28), dtype=np.uint16)
    write_volume(tmp_path / "scan.tif", vol)
    cfg = FeatureConfig(normalise="none")
    with open_volume(tmp_path / "scan.tif") as v:
        lazy = slice_features(v, 2, config=cfg)
    np.testing.assert_array_equal(lazy.data, slice_features(vol, 2, config=cfg).data)


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_images_and_slices_are_refused():
    with pytest.raises(ReactomoError, match="2D"):
        image_features(np.zeros(10, np.uint16))
    with pytest.raises(ReactomoError, match="bool"):
        image_features(np.zeros((8, 8), bool))
    with pytest.raises(ReactomoError, match="numpy array"):
        image_features([[1, 2], [3, 4]])  # type: ignore[arg-type]
    with pytest.raises(ReactomoError, match="too small"):
        image_features(np.zeros((2, 8), np.uint16))
    vol = np.zeros((4, 8, 8), np.uint16)
    with pytest.raises(ReactomoError, match="outside the volume"):
        slice_features(vol, 4)
    with pytest.raises(ReactomoError, match="repeat"):
        volume_features(vol, [1, 1])
    with pytest.raises(ReactomoError, match="3D"):
        volume_features(np.zeros((8, 8), np.uint16), [0])
    nan = np.zeros((4, 8, 8), np.float32)
    nan[2, 3, 3] = np.nan
    with pytest.raises(ReactomoError, match="NaN"):
        slice_features(nan, 2)
    with pytest.raises(ReactomoError, match="reference"):
        slice_features(vol, 1, reference=(5.0, 5.0))
