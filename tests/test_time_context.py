"""A U-Net that reads the same slice of the steps around the scan it labels (``run --time-context``).

The channels after the scan's own are the neighbouring steps' slices, each scan normalised on its own; a step that is
missing (beyond the series' ends, an unaligned window, a caller that gives none) is the scan itself, which training
teaches by leaving neighbours out of a share of its copies. The model card carries the setting, so every reader of a
model (``segment_volume``, ``segment_series`` in process and on Dask, ``run``) feeds the same channels.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from core.errors import ReactomoError
from core.imaging.io import read_labels
from core.network.bundle import save_bundle
from core.network.inference import InferenceConfig, model_time_context, segment_volume, time_offsets
from core.network.train import augment_batch
from core.network.unet import UNetConfig, build_unet
from core.phases import DEFAULT_PHASES

CPU = dict(device="cpu", tile=256)


def _model(in_channels: int = 3, seed: int = 0) -> torch.nn.Module:
    """A random U-Net whose labels vary from pixel to pixel (no class wins everywhere by its bias alone)."""
    torch.manual_seed(seed)
    model = build_unet(UNetConfig(n_classes=len(DEFAULT_PHASES), width=4, depth=2, in_channels=in_channels)).eval()
    with torch.no_grad():
        model.head.bias.zero_()
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        first.weight[:, 1:] *= 30.0  # the channels after the first weigh much more: other steps change the labels
    return model


def _card(reach: int | None = 1) -> dict:
    norm = {"method": "bright-tail", "upper": 99.0, **({"time_context": reach} if reach is not None else {})}
    return {"class_codes": list(DEFAULT_PHASES.codes), "normalisation": norm}


def _scans(n: int = 3, shape=(6, 40, 48), seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(20000, 3000, shape)
    return [(base + rng.normal(0, 1500 * (t + 1), shape) + 800 * t).astype(np.float32) for t in range(n)]


def _probs(model, card, scan, **kw) -> np.ndarray:
    kept = {}
    segment_volume(model, card, scan, config=InferenceConfig(z_sigma=0.0, **CPU),
                   probabilities=lambda z0, z1, p: kept.__setitem__(z0, p), **kw)
    return np.concatenate([kept[z] for z in sorted(kept)])


# -------------------------------------------------------------------------------------------- the card and layout
def test_the_card_says_how_many_steps_a_model_reads_and_old_cards_read_none():
    assert model_time_context(_card(None)) == 0
    assert model_time_context(_card(2)) == 2
    assert model_time_context({"class_codes": [1]}) == 0
    assert time_offsets(2) == [-2, -1, 1, 2]
    for bad in (4, -1, True, "1", 1.0):
        with pytest.raises(ReactomoError, match="time context"):
            model_time_context(_card(bad))


def test_training_copies_leave_a_neighbour_out_by_putting_the_slice_itself_there():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5, 8, 8)).astype(np.float32)  # 3 slices of the scan, then steps -1 and +1
    y = rng.integers(0, 3, (200, 8, 8)).astype(np.int64)
    out, _ = augment_batch(x, y, rng=np.random.default_rng(1), transforms=(), time_channels=2, time_dropout=0.3)
    own = out[:, 1]
    gone = np.array([[np.array_equal(out[i, c], own[i]) for c in (3, 4)] for i in range(len(out))])
    assert 0.15 < gone.mean() < 0.45  # each neighbour on its own draw, about 30 % of them
    assert gone[:, 0].any() and gone[:, 1].any() and not gone.all(axis=1).all()
    kept = ~gone
    assert np.array_equal(out[:, 3][kept[:, 0]], x[:, 3][kept[:, 0]])
    assert np.array_equal(out[:, :3], x[:, :3])  # the scan's own slices are never touched
    none, _ = augment_batch(x, y, rng=np.random.default_rng(1), transforms=(), time_channels=2, time_dropout=0.0)
    assert np.array_equal(none, x)
    # a model without time channels draws exactly what it drew before (its training is unchanged)
    a, _ = augment_batch(x, y, rng=np.random.default_rng(3))
    b, _ = augment_batch(x, y, rng=np.random.default_rng(3), time_channels=0, time_dropout=0.5)
    assert np.array_equal(a, b)


# ------------------------------------------------------------------------------------------------- segment_volume
def test_the_network_reads_the_neighbours_and_the_scan_itself_where_none_is_given():
    model, card = _model(), _card(1)
    prev, scan, nxt = _scans()
    with_near = _probs(model, card, scan, neighbours=[prev, nxt])
    other = _probs(model, card, scan, neighbours=[nxt, prev])
    assert with_near.shape[0] == scan.shape[0]
    assert np.abs(with_near - other).max() > 1e-3  # the neighbours' channels reach the network, in their order
    # None in a place, or no list at all, is the scan itself in every place
    alone = _probs(model, card, scan, neighbours=[None, None])
    assert np.allclose(alone, _probs(model, card, scan, neighbours=[scan, scan]), atol=1e-6)
    res = segment_volume(model, card, scan, config=InferenceConfig(**CPU))
    assert np.allclose(alone, _probs(model, card, scan), atol=1e-6)
    assert any("steps before and after" in w for w in res.warnings)
    assert res.normalisation["time_context"] == {"reach": 1, "read": [False, False]}
    given = segment_volume(model, card, scan, config=InferenceConfig(**CPU), neighbours=[prev, None])
    assert given.normalisation["time_context"] == {"reach": 1, "read": [True, False]}
    assert not any("steps before and after" in w for w in given.warnings)


def test_each_neighbour_is_normalised_on_its_own():
    model, card = _model(), _card(1)
    prev, scan, nxt = _scans()
    # a neighbour whose grey values drifted by a gain and an offset reads the same once normalised on its own
    a = _probs(model, card, scan, neighbours=[prev, nxt])
    b = _probs(model, card, scan, neighbours=[prev * 1.3 + 2000, nxt])
    assert np.allclose(a, b, atol=2e-3)


def test_bad_neighbours_are_refused_in_one_sentence():
    model, card = _model(), _card(1)
    prev, scan, nxt = _scans()
    with pytest.raises(ReactomoError, match=r"needs 2 neighbouring scans \(steps -1, \+1\); got 1\.$"):
        segment_volume(model, card, scan, config=InferenceConfig(**CPU), neighbours=[prev])
    with pytest.raises(ReactomoError, match=r"step \+1 has shape .*aligned scans of one shape\.$"):
        segment_volume(model, card, scan, config=InferenceConfig(**CPU), neighbours=[prev, nxt[:, :-1]])
    with pytest.raises(ReactomoError, match="list of scans"):
        segment_volume(model, card, scan, config=InferenceConfig(**CPU), neighbours=prev)
    # a card whose time context does not fit the network's channels
    with pytest.raises(ReactomoError, match="re-save the model with its card"):
        segment_volume(_model(in_channels=2), card, scan, config=InferenceConfig(**CPU))


# -------------------------------------------------------------------------------------------------- segment_series
def _series(tmp_path: Path, scans: list[np.ndarray]) -> list[Path]:
    folder = tmp_path / "scans"
    folder.mkdir()
    paths = []
    for t, s in enumerate(scans):
        p = folder / f"t{t:02d}.tif"
        tifffile.imwrite(p, s.astype(np.uint16), photometric="minisblack")
        paths.append(p)
    return paths


def _bundle(tmp_path: Path, model, reach: int) -> Path:
    cfg = model.config
    return save_bundle(tmp_path / "models" / "near", model, config=cfg, phases=DEFAULT_PHASES,
                       normalisation={"method": "bright-tail", "upper": 99.0, "time_context": reach},
                       training={}, provenance={}, metrics={}, seed=0)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_series_feeds_each_step_its_neighbours_in_process_and_on_dask(small_demo_dir, tmp_path, workers):
    from core.imaging.io import discover_scans
    from core.segmentation.series import segment_series

    paths = [Path(v.path) for v in discover_scans(small_demo_dir / "scans")][:3]  # an aligned series
    model = _model()
    bundle = _bundle(tmp_path, model, 1)
    out = tmp_path / "seg"
    res = segment_series(bundle, paths, out, postprocess=None, partial_volume=[], temporal=False, workers=workers,
                         inference=InferenceConfig(**CPU))
    assert len(res.done) == 3
    record = json.loads((out / "segmentation.json").read_text())
    assert record["time_context"] == {"reach": 1, "steps_read_alone": [], "reason": None}
    card = json.loads((bundle / "card.json").read_text())
    cfg = InferenceConfig(**CPU)
    # the middle step reads both neighbours; the first reads itself before it, the last itself after it
    for i, near in ((0, [None, paths[1]]), (1, [paths[0], paths[2]]), (2, [paths[1], None])):
        want = segment_volume(model, card, paths[i], config=cfg, neighbours=near).labels
        assert np.array_equal(read_labels(res.steps[i].out_path), want), i
    alone = segment_volume(model, card, paths[1], config=cfg, neighbours=[None, None]).labels
    assert len(np.unique(alone)) > 1
    assert not np.array_equal(read_labels(res.steps[1].out_path), alone)


def test_an_unaligned_series_reads_each_step_alone_and_says_why(tmp_path):
    from core.segmentation.series import segment_series

    scans = _scans(n=3, shape=(12, 64, 64))
    # a structure the alignment check can lock on, moved by 6 voxels at the last step
    yy, xx = np.mgrid[:64, :64]
    blobs = (np.sin(yy / 3.0) * np.cos(xx / 4.0) * 8000).astype(np.float32)
    scans = [s + blobs[None] for s in scans]
    scans[2] = scans[1].copy()
    scans[2] = np.roll(scans[2], 6, axis=2)
    paths = _series(tmp_path, scans)
    model = _model()
    bundle = _bundle(tmp_path, model, 1)
    out = tmp_path / "seg"
    segment_series(bundle, paths, out, postprocess=None, partial_volume=[], temporal=False,
                   inference=InferenceConfig(**CPU))
    record = json.loads((out / "segmentation.json").read_text())["time_context"]
    assert 1 in record["steps_read_alone"] and 2 in record["steps_read_alone"]
    assert "shifted" in record["reason"] and "network" in record["reason"]


def test_a_card_with_a_bad_time_context_is_refused_before_anything_is_written(tmp_path):
    from core.segmentation.series import segment_series

    paths = _series(tmp_path, _scans(n=2, shape=(4, 32, 32)))
    bundle = _bundle(tmp_path, _model(), 1)
    card = json.loads((bundle / "card.json").read_text())
    card["normalisation"]["time_context"] = 7
    (bundle / "card.json").write_text(json.dumps(card))
    out = tmp_path / "seg"
    with pytest.raises(ReactomoError, match="time context is 7"):
        segment_series(bundle, paths, out, postprocess=None, partial_volume=[])
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------------ run
def test_run_trains_on_the_neighbouring_steps_and_records_them(small_demo_dir, tmp_path, capsys):
    from core.cli import main

    meta = json.loads((small_demo_dir / "dataset.json").read_text())
    k = meta["label_step"]
    out = tmp_path / "run"
    assert main(["run", "--scans", str(small_demo_dir / "scans"), "--scribbles", str(small_demo_dir / "scribbles.tif"),
                 "--label-step", str(k), "--out", str(out), "--epochs", "1", "--time-context", "1",
                 "--partial-volume", "none", "--no-temporal"]) == 0
    said = capsys.readouterr().out
    assert f"the U-Net also reads steps {k - 1}, {k + 1} beside step {k}" in said
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["time_context"] == 1
    assert run["unet"]["config"]["in_channels"] == 3
    assert run["unet"]["train"]["time_channels"] == 2 and run["unet"]["train"]["time_dropout"] == 0.2
    assert run["unet"]["time_context"]["training"] == [{"step": k, "steps": [k - 1, k + 1], "reason": None}]
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["normalisation"]["time_context"] == 1
    assert run["segmentation"]["time_context"]["reach"] == 1
    # the folder of segmentations segmented again from the CLI, with the model alone, gives the same labels
    again = tmp_path / "again"
    assert main(["-q", "segment", "--model", str(out / "model"), "--scans", str(small_demo_dir / "scans"),
                 "--out", str(again), "--partial-volume", "none", "--no-temporal"]) == 0
    for a in sorted((out / "segmentations").glob("*.tif")):
        assert np.array_equal(read_labels(a), read_labels(again / a.name)), a.name


def test_a_bad_time_context_is_refused_before_anything_is_written(small_demo_dir, tmp_path, capsys):
    from core.cli import main

    meta = json.loads((small_demo_dir / "dataset.json").read_text())
    out = tmp_path / "run"
    assert main(["-q", "run", "--scans", str(small_demo_dir / "scans"), "--scribbles",
                 str(small_demo_dir / "scribbles.tif"), "--label-step", str(meta["label_step"]), "--out", str(out),
                 "--time-context", "4"]) == 2
    assert "time context must be 0 to 3 steps on each side; got 4" in capsys.readouterr().err
    assert not out.exists()
