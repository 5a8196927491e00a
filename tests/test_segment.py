"""Tiled, batched inference of whole scans (core.network.inference): tiling is exact, matches MONAI, writes atomically.

Fast (CPU, a few seconds): tiny networks on small arrays, plus one run of the shipped model on a small demo scan.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy.ndimage import distance_transform_edt

from core.errors import ReactomoError
from core.imaging.io import open_volume, read_labels, write_volume
from core.errors import JobCancelled
from core.imaging.normalise import apply_normalisation, fit_normalisation
from core.network.inference import (
    InferenceConfig,
    SegmentResult,
    importance_map,
    load_model_cached,
    predict_slices,
    segment_volume,
    tile_starts,
)
from core.network.unet import UNetConfig, build_unet

ROOT = Path(__file__).resolve().parents[1]
CODES = [1, 2, 3, 4]
CPU = dict(device="cpu")


class Pointwise(torch.nn.Module):
    """A 1x1 convolution: every pixel's output depends on that pixel only, so tiling cannot change anything."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-3.0, -1.0, 1.0, 3.0]).view(4, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([-1.0, 0.5, 0.5, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these tiny convolutions only pay OpenMP's synchronisation on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_unet(UNetConfig(n_classes=4, width=4, depth=2)).eval()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    # smooth-ish texture so the tiny net's classes form regions rather than noise
    base = rng.normal(size=(3, 24, 33)).repeat(4, axis=1).repeat(4, axis=2)[:, :96, :130]
    return (base + 0.3 * rng.normal(size=base.shape)).astype(np.float32)


def card_for(codes=CODES, **extra):
    return {"class_codes": list(codes), "normalisation": {"method": "bright-tail", "upper": 99.0}, **extra}


def scan_from(images: np.ndarray) -> np.ndarray:
    return np.clip(20000 + 4000 * images, 1, 65535).astype(np.uint16)


# ------------------------------------------------------------------------------------------ grid and weights
@pytest.mark.parametrize("shape", [(64, 64), (96, 48), (7, 9)])
def test_importance_map_equals_monai(shape):
    from monai.data.utils import compute_importance_map

    ours = importance_map(shape, "gaussian")
    theirs = compute_importance_map(shape, mode="gaussian", sigma_scale=0.125).numpy()
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(importance_map(shape, "constant"), np.ones(shape, np.float32))


@pytest.mark.parametrize("size,tile,overlap", [(130, 64, 0.25), (96, 64, 0.5), (800, 256, 0.25), (256, 256, 0.25), (257, 64, 0.0)])
def test_tile_starts_equal_monai(size, tile, overlap):
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    interval = _get_scan_interval((size,), (tile,), 1, (overlap,))
    theirs = [s[0].start for s in dense_patch_slices((size,), (tile,), interval)]
    assert tile_starts(size, tile, overlap) == theirs
    assert tile_starts(size, tile, overlap)[-1] + tile == size


# ------------------------------------------------------------------------------------------ tiling is exact
def test_pointwise_model_tiled_equals_whole_everywhere(images):
    model = Pointwise()
    tiled = InferenceConfig(tile=32, overlap=0.25, **CPU)
    whole = InferenceConfig(tile=256, **CPU)
    p_tiled = predict_slices(model, images, config=tiled, class_codes=CODES, return_probabilities=True)
    p_whole = predict_slices(model, images, config=whole, class_codes=CODES, return_probabilities=True)
    np.testing.assert_allclose(p_tiled, p_whole, atol=1e-6)
    np.testing.assert_array_equal(
        predict_slices(model, images, config=tiled, class_codes=CODES),
        predict_slices(model, images, config=whole, class_codes=CODES),
    )


def test_unet_tiled_equals_whole_away_from_tile_borders(tiny, images):
    tile, overlap, rf = 64, 0.25, 12  # depth 2: receptive field radius 9 px, plus margin
    tiled = predict_slices(tiny, images, config=InferenceConfig(tile=tile, overlap=overlap, **CPU), class_codes=CODES)
    whole = predict_slices(tiny, images, config=InferenceConfig(tile=256, **CPU), class_codes=CODES)
    h, w = images.shape[1:]
    seams = np.zeros((h, w), bool)  # every tile edge inside the slice
    for y0 in tile_starts(h, tile, overlap):
        for x0 in tile_starts(w, tile, overlap):
            for y in (y0, y0 + tile - 1):
                if 0 < y < h - 1:
                    seams[y, x0 : x0 + tile] = True
            for x in (x0, x0 + tile - 1):
                if 0 < x < w - 1:
                    seams[y0 : y0 + tile, x] = True
    far = distance_transform_edt(~seams) > rf
    assert far.sum() > 1000
    assert (tiled == whole)[:, far].mean() >= 0.99
    assert (tiled == whole).mean() >= 0.9  # and close everywhere


def test_matches_monai_sliding_window(tiny, images):
    from monai.inferers import sliding_window_inference

    cfg = InferenceConfig(tile=64, overlap=0.25, batch_size=4, blend="gaussian", cpu_amp=False, **CPU)  # float32 like MONAI
    ours = predict_slices(tiny, images, config=cfg, class_codes=CODES)
    with torch.inference_mode():
        probs = sliding_window_inference(
            torch.from_numpy(images[:, None]), roi_size=(64, 64), sw_batch_size=4,
            predictor=lambda x: torch.softmax(tiny(x), dim=1), overlap=0.25, mode="gaussian",
        )
    theirs = np.asarray(CODES, np.uint8)[probs.argmax(1).numpy()]
    assert (ours == theirs).mean() >= 0.999
    blended = predict_slices(tiny, images, config=cfg, class_codes=CODES, return_probabilities=True)
    np.testing.assert_allclose(blended, probs.numpy(), atol=1e-5)


# ------------------------------------------------------------------------------------------ shapes and batches
@pytest.mark.parametrize("shape", [(2, 20, 37), (1, 70, 101), (2, 5, 3), (1, 64, 64)])
def test_odd_sizes_keep_the_shape(tiny, shape):
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    out = predict_slices(tiny, x, config=InferenceConfig(tile=50, overlap=0.3, **CPU), class_codes=CODES)
    assert out.shape == shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= set(CODES)


def test_batch_size_does_not_change_labels(tiny, images):
    one = predict_slices(tiny, images, config=InferenceConfig(tile=48, batch_size=1, **CPU), class_codes=CODES)
    eight = predict_slices(tiny, images, config=InferenceConfig(tile=48, batch_size=8, **CPU), class_codes=CODES)
    np.testing.assert_array_equal(one, eight)


def test_class_codes_map_outputs(tiny, images):
    a = predict_slices(tiny, images[:1], config=InferenceConfig(tile=64, **CPU), class_codes=CODES)
    b = predict_slices(tiny, images[:1], config=InferenceConfig(tile=64, **CPU), class_codes=[10, 20, 30, 40])
    np.testing.assert_array_equal(a * 10, b)
    with pytest.raises(ReactomoError, match="class codes"):
        predict_slices(tiny, images[:1], config=InferenceConfig(**CPU), class_codes=[1, 2, 3])


# ------------------------------------------------------------------------------------------ volumes
def test_crop_equals_predicting_the_crop(tiny, images):
    scan = scan_from(images)
    norm = fit_normalisation(scan)
    cfg = InferenceConfig(tile=48, slab=2, **CPU)
    r = segment_volume(tiny, card_for(), scan, config=cfg, z_range=(1, 3), region=(10, 90, 5, 120))
    assert r.shape == (2, 80, 115) and r.labels.shape == r.shape
    assert r.normalisation == {**norm, "rings": "keep"}  # fitted to this scan with the card's method, read as the card says
    expected = predict_slices(tiny, apply_normalisation(scan[1:3, 10:90, 5:120], norm), config=cfg, class_codes=CODES)
    np.testing.assert_array_equal(r.labels, expected)
    for bad in (dict(z_range=(2, 2)), dict(z_range=(0, 9)), dict(region=(0, 97, 0, 10)), dict(region=(5, 4, 0, 10))):
        with pytest.raises(ReactomoError, match="z_range|region"):
            segment_volume(tiny, card_for(), scan, config=cfg, **bad)


def test_writes_labels_file_atomically(tiny, images, tmp_path):
    scan_path = write_volume(tmp_path / "scan.tif", scan_from(images), voxel_size_um=2.75)
    out = tmp_path / "labels" / "scan_labels.tif"
    (tmp_path / "labels").mkdir()
    seen = []
    r = segment_volume(tiny, card_for(), scan_path, out, config=InferenceConfig(tile=64, slab=2, **CPU),
                       postprocess=lambda lab: lab, on_progress=lambda f, m: seen.append(f))
    assert r.labels is None and r.out_path == str(out)
    labels = read_labels(out, shape=images.shape, codes=CODES)
    counts = np.bincount(labels.ravel(), minlength=256)
    assert r.counts == {c: int(counts[c]) for c in CODES}
    assert sum(r.counts.values()) == labels.size
    assert seen == [0.5, 1.0]
    with open_volume(out) as v:
        assert v.voxel_size_um == pytest.approx(2.75)
    assert sorted(p.name for p in out.parent.iterdir()) == ["scan_labels.tif"]
    json.dumps(r.to_dict())
    # the file holds what an in-memory run returns
    again = segment_volume(tiny, card_for(), scan_path, config=InferenceConfig(tile=64, slab=3, **CPU))
    np.testing.assert_array_equal(again.labels, labels)


def test_disk_full_leaves_nothing(tiny, images, tmp_path, monkeypatch):
    def full(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile.TiffWriter, "write", full)
    out = tmp_path / "out.tif"
    with pytest.raises(ReactomoError, match="No space left"):
        segment_volume(tiny, card_for(), scan_from(images), out, config=InferenceConfig(tile=64, **CPU))
    assert list(tmp_path.iterdir()) == []


def test_disk_full_midway_leaves_nothing(tiny, images, tmp_path):
    calls = []

    def postprocess(lab):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return lab

    with pytest.raises(ReactomoError, match="No space left"):
        segment_volume(tiny, card_for(), scan_from(images), tmp_path / "out.tif",
                       config=InferenceConfig(tile=64, slab=1, **CPU), postprocess=postprocess)
    assert list(tmp_path.iterdir()) == []


def test_should_stop_cancels_without_a_file(tiny, images, tmp_path):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1

    out = tmp_path / "out.tif"
    with pytest.raises(JobCancelled):
        segment_volume(tiny, card_for(), scan_from(images), out, config=InferenceConfig(tile=64, slab=1, **CPU),
                       should_stop=stop)
    assert list(tmp_path.iterdir()) == []


def test_warnings(tiny, images):
    r = segment_volume(tiny, {"class_codes": CODES, "provenance": {"scan_dtype": "float32"}}, scan_from(images),
                       config=InferenceConfig(tile=256, **CPU))
    assert any("uint16" in w and "float32" in w for w in r.warnings)
    assert not any("smaller than" in w for w in r.warnings)  # whole slices are the default, not a doubt
    assert any("no normalisation method" in w for w in r.warnings)
    assert not segment_volume(tiny, card_for(), scan_from(images), config=InferenceConfig(tile=64, **CPU)).warnings


def test_constant_scan_is_refused(tiny):
    with pytest.raises(ReactomoError, match="constant"):
        segment_volume(tiny, card_for(), np.full((2, 32, 32), 1000, np.uint16), config=InferenceConfig(**CPU))


@pytest.mark.parametrize(
    "bad",
    [dict(tile=8), dict(tile=256.0), dict(overlap=0.9), dict(overlap=-0.1), dict(batch_size=0), dict(blend="mean"),
     dict(slab=0), dict(device=""), dict(amp="yes"), dict(tile=True), dict(tta="rot"), dict(tta=None),
     dict(z_sigma=-0.5), dict(z_sigma=3.5), dict(z_sigma=float("nan")), dict(z_sigma=True), dict(z_sigma="0.7")],
)
def test_bad_config_is_refused(bad):
    with pytest.raises(ReactomoError):
        InferenceConfig(**bad)


def test_config_round_trip():
    cfg = InferenceConfig(tile=128, overlap=0.5, blend="constant")
    assert InferenceConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ReactomoError, match="Unknown"):
        InferenceConfig.from_dict({"tiles": 3})
    with pytest.raises(ReactomoError, match="Unknown device"):
        segment_volume(Pointwise(), card_for(), np.ones((1, 8, 8), np.uint16), config=InferenceConfig(device="tpu"))


# ------------------------------------------------------------------------------------------ test-time augmentation
def test_pointwise_model_is_unchanged_by_test_time_augmentation(images):
    """A per-pixel model gives the same probabilities mirrored or not: averaging the passes must map each back."""
    model = Pointwise()
    plain = predict_slices(model, images, config=InferenceConfig(**CPU), class_codes=CODES, return_probabilities=True)
    for mode in ("flips", "dihedral"):
        for tile in (256, 32):  # whole slices, and overlapping tiles
            got = predict_slices(model, images, config=InferenceConfig(tta=mode, tile=tile, **CPU), class_codes=CODES,
                                 return_probabilities=True)
            np.testing.assert_allclose(got, plain, atol=1e-5)


@pytest.mark.parametrize("mode,symmetries", [
    ("flips", [lambda a: a[..., ::-1], lambda a: a[..., ::-1, :], lambda a: a[..., ::-1, ::-1]]),
    ("dihedral", [lambda a: a[..., ::-1], lambda a: a[..., ::-1, :], lambda a: np.swapaxes(a, -1, -2)]),
])
def test_test_time_augmentation_makes_the_labels_follow_a_mirrored_scan(tiny, images, mode, symmetries):
    """A U-Net is not mirror-symmetric, so a mirrored slice gets other labels; averaged over the passes, the labels of
    a mirrored (or, with "dihedral", transposed) slice are the mirrored labels, and they differ from a single pass."""
    sq = np.ascontiguousarray(images[:, :96, :96])
    cfg = InferenceConfig(tta=mode, **CPU)
    probs = predict_slices(tiny, sq, config=cfg, class_codes=CODES, return_probabilities=True)
    for sym in symmetries:
        moved = predict_slices(tiny, np.ascontiguousarray(sym(sq)), config=cfg, class_codes=CODES, return_probabilities=True)
        np.testing.assert_allclose(moved, sym(probs), atol=1e-5)
    single = predict_slices(tiny, sq, config=InferenceConfig(**CPU), class_codes=CODES, return_probabilities=True)
    assert np.abs(single - probs).max() > 1e-3
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_test_time_augmentation_reaches_the_cli_and_the_run_record():
    from core.cli import build_parser
    from core.workflow.run import RunConfig

    args = build_parser().parse_args(["segment", "--model", "m", "--scans", "s", "--out", "o", "--tta", "flips"])
    from core.cli import _inference_from

    assert _inference_from(args).tta == "flips"
    assert RunConfig(scans="s", scribbles="x", label_step=0, out="o", tta="dihedral").tta == "dihedral"


# ------------------------------------------------------------------------------------------ averaging over slices
UNIT = {"method": "bright-tail", "centre": 0.0, "scale": 1.0}  # grey value = the network's input


def averaged_by_hand(probs: np.ndarray, sigma: float) -> np.ndarray:
    """sum_d w_d p[clamp(z + d)], the Gaussian weights truncated at ceil(2.5 sigma) and normalised."""
    r = int(np.ceil(2.5 * sigma))
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    w /= w.sum()
    nz = probs.shape[0]
    return np.stack([sum(w[d + r] * probs[min(max(z + d, 0), nz - 1)] for d in range(-r, r + 1)) for z in range(nz)])


def test_slice_averaging_labels_the_argmax_of_the_neighbours_weighted_probabilities():
    """Each slice predicted once, slab by slab: the labels are the argmax of the Gaussian-weighted probabilities of
    its neighbours (the nearest slice repeated at the scan's ends), whatever the slab, and a z_range reads the
    neighbours beyond it; with z_sigma 0 every slice is labelled on its own."""
    rng = np.random.default_rng(4)
    vol = (rng.normal(size=(9, 12, 16)).repeat(3, axis=1).repeat(3, axis=2) * 0.4).astype(np.float32)
    model = Pointwise()
    probs = predict_slices(model, vol, config=InferenceConfig(**CPU), class_codes=CODES, return_probabilities=True)
    alone = np.asarray(CODES, np.uint8)[probs.argmax(1)]
    for sigma in (0.7, 1.5):
        expected = np.asarray(CODES, np.uint8)[averaged_by_hand(probs, sigma).argmax(1)]
        assert (expected != alone).mean() > 0.02  # the averaging changes labels here
        for slab in (1, 2, 3, 8, 64):
            got = segment_volume(model, card_for(), vol, config=InferenceConfig(z_sigma=sigma, slab=slab, **CPU),
                                 normalisation=UNIT)
            np.testing.assert_array_equal(got.labels, expected)
        part = segment_volume(model, card_for(), vol, config=InferenceConfig(z_sigma=sigma, slab=2, **CPU),
                              normalisation=UNIT, z_range=(3, 6), region=(3, 30, 0, 40))
        np.testing.assert_array_equal(part.labels, expected[3:6, 3:30, 0:40])
    off = segment_volume(model, card_for(), vol, config=InferenceConfig(z_sigma=0, slab=2, **CPU), normalisation=UNIT)
    np.testing.assert_array_equal(off.labels, alone)


def test_slice_averaging_removes_noise_that_is_independent_from_slice_to_slice():
    """A rock continuous in z scanned with independent noise in every slice: the averaged labels agree with the
    truth more often than slice-by-slice labels, and the redraw hook and the cleaning get the averaged slabs."""
    rng = np.random.default_rng(5)
    truth2d = (rng.normal(size=(10, 10)).repeat(6, axis=0).repeat(6, axis=1) > 0)
    truth = np.repeat(truth2d[None], 12, axis=0)
    grey = np.where(truth, 0.35, -0.35) + 0.45 * rng.normal(size=truth.shape)  # Pointwise: classes 2 (<0) and 3 (>0)
    model = Pointwise()
    want = np.where(truth, 3, 2)
    seen = []
    scores = {}
    for sigma in (0.0, 0.7):
        r = segment_volume(model, card_for(), grey.astype(np.float32), config=InferenceConfig(z_sigma=sigma, slab=4, **CPU),
                           normalisation=UNIT, redraw=lambda lab, g: (seen.append(g.shape), lab)[1])
        scores[sigma] = float((r.labels == want).mean())
    assert scores[0.7] > scores[0.0] + 0.03, scores
    assert all(s == (4, 60, 60) for s in seen) and len(seen) == 6


def test_slice_averaging_reaches_the_cli_and_the_run_record():
    from core.cli import _inference_from, build_parser
    from core.workflow.run import RunConfig

    parser = build_parser()
    assert _inference_from(parser.parse_args(["segment", "--model", "m", "--scans", "s", "--out", "o"])).z_sigma == 0.7
    args = parser.parse_args(["segment", "--model", "m", "--scans", "s", "--out", "o", "--z-sigma", "0"])
    assert _inference_from(args).z_sigma == 0.0
    args = parser.parse_args(["segment", "--model", "m", "--scans", "s", "--out", "o", "--z-sigma", "9"])
    with pytest.raises(ReactomoError, match="z_sigma"):
        _inference_from(args)
    assert RunConfig(scans="s", scribbles="x", label_step=0, out="o").z_sigma == 0.7


# ------------------------------------------------------------------------------------------ the shipped model
def test_shipped_model_segments_a_demo_scan(tmp_path):
    from core.segmentation.metrics import dice_per_phase
    from core.imaging.synthetic import DemoConfig, make_demo

    exp = make_demo(DemoConfig(steps=3, shape=(8, 128, 128), seed=5))
    step = exp.label_step
    model, card = load_model_cached(ROOT / "models" / "demo-unet")
    again, _ = load_model_cached(ROOT / "models" / "demo-unet")
    assert again is model
    r = segment_volume(model, card, exp.scans[step], tmp_path / "t.tif", config=InferenceConfig(tile=96, overlap=0.25, **CPU))
    labels = read_labels(tmp_path / "t.tif", shape=exp.scans[step].shape)
    dice = dice_per_phase(labels, exp.truth[step], codes=card["class_codes"])
    assert np.nanmean(list(dice.values())) > 0.75
    assert isinstance(r, SegmentResult) and r.mvoxel_per_s > 0 and r.device == "cpu"


def test_caller_model_is_untouched_and_folding_is_exact(images):
    import core.network.inference as seg

    torch.manual_seed(1)
    model = build_unet(UNetConfig(n_classes=4, width=4, depth=2))
    with torch.no_grad():  # non-trivial running statistics, so the folding has something to fold
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    cfg = InferenceConfig(tile=64, cpu_amp=False, **CPU)  # float32: exactness of the folding
    folded = predict_slices(model, images, config=cfg, class_codes=CODES, return_probabilities=True)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert n_bn == 6 and sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == n_bn
    monkey = pytest.MonkeyPatch()
    monkey.setattr(seg, "_FUSE_BN", False)
    monkey.setattr(seg, "_CHANNELS_LAST", False)
    try:
        plain = predict_slices(model, images, config=cfg, class_codes=CODES, return_probabilities=True)
    finally:
        monkey.undo()
    np.testing.assert_allclose(folded, plain, atol=1e-4)


def test_cpu_bfloat16_agrees_closely(tiny, images):
    fp32 = predict_slices(tiny, images, config=InferenceConfig(tile=64, **CPU), class_codes=CODES)
    bf16 = predict_slices(tiny, images, config=InferenceConfig(tile=64, cpu_amp=True, **CPU), class_codes=CODES)
    assert (fp32 == bf16).mean() >= 0.95


def test_refuses_to_write_over_the_scan(tiny, images, tmp_path):
    scan_path = write_volume(tmp_path / "scan.tif", scan_from(images))
    with pytest.raises(ReactomoError, match="scan itself"):
        segment_volume(tiny, card_for(), scan_path, scan_path, config=InferenceConfig(**CPU))
    with pytest.raises(ReactomoError, match="does not end in .tif"):
        segment_volume(tiny, card_for(), scan_path, tmp_path / "labels.png", config=InferenceConfig(**CPU))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.tif"]


def test_model_cache_loads_once_across_threads():
    from concurrent.futures import ThreadPoolExecutor

    from core.network.inference import clear_model_cache

    clear_model_cache()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: load_model_cached(ROOT / "models" / "demo-unet"), range(4)))
    assert len({id(m) for m, _ in got}) == 1
    clear_model_cache()
    assert load_model_cached(ROOT / "models" / "demo-unet")[0] is not got[0][0]


# ------------------------------------------------------------------------------- neighbouring slices (2.5D)
def test_context_slices_are_the_neighbours_clamped_at_the_ends():
    from core.network.inference import context_slices

    vol = np.arange(5)[:, None, None] * np.ones((5, 2, 3), np.int32)
    stack = context_slices(vol, [0, 2, 4], 3)
    assert stack.shape == (3, 3, 2, 3)
    assert [list(stack[i, :, 0, 0]) for i in range(3)] == [[0, 0, 1], [1, 2, 3], [3, 4, 4]]
    assert context_slices(vol, [1], 1).shape == (1, 2, 3)
    with pytest.raises(ReactomoError, match="odd number"):
        context_slices(vol, [1], 2)


def test_a_network_fed_neighbouring_slices_segments_a_volume_slab_by_slab_as_in_one_piece(tmp_path):
    from core.network.inference import context_slices

    torch.manual_seed(3)
    net = build_unet(UNetConfig(in_channels=3, n_classes=4, width=4, depth=2)).eval()
    rng = np.random.default_rng(5)
    scan = np.clip(20000 + 4000 * rng.normal(size=(7, 4, 24, 33)).repeat(4, 2).repeat(4, 3).reshape(28, 96, 132)[:7],
                   1, 65535).astype(np.uint16)
    cfg = InferenceConfig(tile=256, slab=2, cpu_amp=False, **CPU)
    r = segment_volume(net, card_for(), scan, config=cfg)
    norm = r.normalisation
    from core.imaging.normalise import apply_normalisation

    whole = predict_slices(net, apply_normalisation(context_slices(scan, range(7), 3), norm), config=cfg, class_codes=CODES)
    np.testing.assert_array_equal(r.labels, whole)  # slab borders read their neighbours: no seam
    # a z range still sees the slices just outside it
    part = segment_volume(net, card_for(), scan, config=cfg, z_range=(2, 5), normalisation=norm)
    np.testing.assert_array_equal(part.labels, whole[2:5])
    with pytest.raises(ReactomoError, match=r"\(n, 3, y, x\)"):
        predict_slices(net, apply_normalisation(scan[:2], norm), config=cfg, class_codes=CODES)


def test_the_model_cache_is_bounded(tmp_path):
    """Issue 16: every cache has a limit; a server where many models are checked keeps the newest few loaded."""
    import shutil

    from core.network import inference

    inference.clear_model_cache()
    folders = []
    for k in range(inference.CACHE_MODELS + 2):
        folders.append(tmp_path / f"m{k}")
        shutil.copytree(ROOT / "models" / "demo-unet", folders[-1])
    first = load_model_cached(folders[0])[0]
    assert load_model_cached(folders[0])[0] is first  # a hit
    for f in folders[1:]:
        load_model_cached(f)
    assert len(inference._CACHE) == inference.CACHE_MODELS
    assert load_model_cached(folders[0])[0] is not first  # the oldest was dropped, so it is loaded again
    inference.clear_model_cache()
