"""U-Net training: patches, augmentation, the loop (loss, early stopping, seeds, split, resume, cancel),
normalisation against the demo's drift, the project trainer and the `train`/`models` commands. CPU, tiny."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.errors import ReactomoError
from core.imaging.normalise import apply_normalisation, fit_normalisation, percentile_stretch
from core.phases import DEFAULT_PHASES
from core.network.train import TrainConfig, augment_batch, make_patches, split_slices, train_unet
from core.network.unet import UNetConfig, build_unet

TINY = UNetConfig(n_classes=len(DEFAULT_PHASES), width=4, depth=2)


def _tiny_problem(n=3, size=32, seed=0):
    """Images whose labels follow the grey value: 4 flat-ish phases in blobs."""
    rng = np.random.default_rng(seed)
    codes = np.array(DEFAULT_PHASES.codes, dtype=np.uint8)
    lab = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        lab[i] = codes[(np.add.outer(np.arange(size) // 8, np.arange(size) // 8) + i) % len(codes)]
    img = lab.astype(np.float32) / 4 + rng.normal(0, 0.05, lab.shape).astype(np.float32)
    return img, lab


def _net(seed=0):
    torch.manual_seed(seed)
    return build_unet(TINY)


FAST = dict(patch_size=16, batch_size=8, max_epochs=3, augment=False, patience=0)


# ------------------------------------------------------------------------------------------------- patches
@pytest.mark.parametrize("ratio, per_axis", [(1.0, 4), (0.5, 7)])
def test_patches_count_and_shape(ratio, per_axis):
    img = np.zeros((2, 64, 64), np.float32)
    lab = np.ones((2, 64, 64), np.uint8)
    x, y = make_patches(img, lab, patch_size=16, stride_ratio=ratio)
    assert x.shape == (2 * per_axis**2, 1, 16, 16) and x.dtype == np.float32
    assert y.shape == (2 * per_axis**2, 16, 16) and y.dtype == np.uint8


def test_patches_cover_the_border_and_drop_unlabelled():
    img = np.arange(40 * 40, dtype=np.float32).reshape(1, 40, 40)
    lab = np.zeros((1, 40, 40), np.uint8)
    lab[0, -1, -1] = 2
    x, y = make_patches(img, lab, patch_size=16, stride_ratio=1.0)
    assert len(x) == 1 and x[0, 0, -1, -1] == img[0, -1, -1] and y[0, -1, -1] == 2
    small, ys = make_patches(np.ones((1, 10, 12)), np.ones((1, 10, 12), np.uint8), patch_size=16)
    assert small.shape == (1, 1, 16, 16) and (ys[0, 10:] == 0).all()  # padding is unlabelled


# ---------------------------------------------------------------------------------------------- augmentation
@pytest.mark.parametrize("transforms", [("flip",), ("rot90",), ("shear",), ("scale",), ("flip", "rot90", "shear", "scale")])
def test_augmentation_keeps_image_and_labels_aligned(transforms):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:32, :32]
    img = np.stack([((yy - 10 - 3 * i) ** 2 + (xx - 20) ** 2 < 60) * 1.0 + (xx > 26) * 1.0 for i in range(6)])
    img = img.astype(np.float32)[:, None]
    lab = (img[:, 0] > 0.5).astype(np.uint8) + 1  # codes 1 and 2 from a threshold
    xa, ya = augment_batch(img, lab, rng=rng, transforms=transforms, max_shear=0.3, max_scale=0.3)
    assert xa.shape == img.shape and ya.shape == lab.shape and ya.dtype == np.uint8
    assert set(np.unique(ya)) <= {1, 2}
    agree = ((xa[:, 0] > 0.5).astype(np.uint8) + 1) == ya
    assert agree.mean() > 0.97  # only interpolated edge pixels may differ
    if transforms in {("flip",), ("rot90",)}:
        assert agree.all()
    assert not np.shares_memory(xa, img) and (img[:, 0] > 0.5).sum() == (lab == 2).sum()  # inputs untouched


def test_intensity_augmentation_jitters_gain_and_offset_within_bounds_and_keeps_labels():
    rng = np.random.default_rng(2)
    img = rng.uniform(0.3, 1.0, (40, 1, 16, 16)).astype(np.float32)
    lab = rng.integers(1, 5, (40, 16, 16)).astype(np.uint8)
    xa, ya = augment_batch(img, lab, rng=rng, transforms=("intensity",), max_gain=0.1, max_offset=0.05)
    assert np.array_equal(ya, lab) and xa.dtype == np.float32
    for a, x in zip(xa[:, 0], img[:, 0]):  # each patch is an exact affine map of its input
        g, o = np.polyfit(x.ravel(), a.ravel(), 1)
        assert 0.9 - 1e-4 <= g <= 1.1 + 1e-4 and -0.05 - 1e-4 <= o <= 0.05 + 1e-4
        assert np.allclose(a, g * x + o, atol=1e-5)
    gains = [np.polyfit(x.ravel(), a.ravel(), 1)[0] for a, x in zip(xa[:, 0], img[:, 0])]
    assert np.std(gains) > 0.02  # really random, one draw per patch
    with pytest.raises(ReactomoError, match="max_gain"):
        TrainConfig(max_gain=0.9)


# ------------------------------------------------------------------------------------------------ the loop
def test_a_few_epochs_reduce_the_loss():
    img, lab = _tiny_problem()
    r = train_unet(_net(), img, lab, config=TrainConfig(**{**FAST, "max_epochs": 6, "lr": 0.01}), phases=DEFAULT_PHASES)
    losses = [h["train_loss"] for h in r.history]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]
    assert set(r.history[0]) >= {"epoch", "train_loss", "val_loss", "val_dice", "seconds", "lr"}
    assert set(r.history[0]["val_dice"]) == set(DEFAULT_PHASES.names)
    assert r.best_epoch >= 1 and "CPU" in r.device


def test_early_stopping_with_patience():
    img, lab = _tiny_problem()
    cfg = TrainConfig(**{**FAST, "max_epochs": 30, "patience": 2, "lr": 1e-6, "min_delta": 0.5})
    r = train_unet(_net(), img, lab, config=cfg, phases=DEFAULT_PHASES)
    assert r.stopped_early and len(r.history) == 3 and r.best_epoch == 1


def test_same_seed_gives_identical_weights():
    img, lab = _tiny_problem()
    cfg = TrainConfig(**{**FAST, "max_epochs": 2, "augment": True, "augment_factor": 2})
    a = train_unet(_net(5), img, lab, config=cfg, phases=DEFAULT_PHASES).state_dict
    b = train_unet(_net(5), img, lab, config=cfg, phases=DEFAULT_PHASES).state_dict
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_split_keeps_validation_slices_out_of_training():
    for n in (2, 3, 5, 10):
        tr, va = split_slices(n, val_fraction=0.2, seed=3)
        assert va and tr and not set(tr) & set(va) and sorted(tr + va) == list(range(n))
    # one slice: split by region; the validation strip's pixels are never in a training patch
    img, lab = _tiny_problem(n=1, size=40)
    seen = []
    r = train_unet(_net(), img, lab, config=TrainConfig(**{**FAST, "max_epochs": 1}), phases=DEFAULT_PHASES,
                   on_epoch=seen.append)
    assert len(seen) == 1 and r.history[0]["val_loss"] == r.history[0]["val_loss"]  # finite, not NaN
    from core.network.train import _split

    tr_img, _, va_img, _, info = _split(img, lab, TrainConfig(**FAST))
    assert info["by"] == "region" and info["train_columns"][1] == info["val_columns"][0]
    assert tr_img.shape[2] + va_img.shape[2] == 40 and va_img.shape[2] == 8
    tr_i, _, va_i, _, info = _split(*_tiny_problem(n=5), TrainConfig(**FAST))
    assert info["by"] == "slice" and not set(info["train"]) & set(info["val"]) and len(va_i) == 1


def test_checkpoint_resume_continues_the_epoch_count(tmp_path):
    img, lab = _tiny_problem()
    cfg2 = TrainConfig(**{**FAST, "max_epochs": 2})
    train_unet(_net(), img, lab, config=cfg2, phases=DEFAULT_PHASES, checkpoint_dir=tmp_path)
    assert {"best.safetensors", "best.json", "last.safetensors", "last.json"} <= {p.name for p in tmp_path.iterdir()}
    # a resume with more epochs continues at epoch 3 and ends where an uninterrupted run ends
    cfg4 = TrainConfig(**{**FAST, "max_epochs": 4})
    state = json.loads((tmp_path / "last.json").read_text())
    state["config"] = cfg4.to_dict()
    (tmp_path / "last.json").write_text(json.dumps(state))
    epochs = []
    r = train_unet(_net(), img, lab, config=cfg4, phases=DEFAULT_PHASES, checkpoint_dir=tmp_path, resume=True,
                   on_epoch=lambda h: epochs.append(h["epoch"]))
    assert epochs == [3, 4] and [h["epoch"] for h in r.history] == [1, 2, 3, 4]
    full = train_unet(_net(), img, lab, config=cfg4, phases=DEFAULT_PHASES)
    assert [h["train_loss"] for h in full.history] == pytest.approx([h["train_loss"] for h in r.history], rel=1e-5)


def test_should_stop_ends_early_with_a_result():
    img, lab = _tiny_problem()
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] >= 3

    r = train_unet(_net(), img, lab, config=TrainConfig(**{**FAST, "max_epochs": 50}), phases=DEFAULT_PHASES, should_stop=stop)
    assert r.cancelled and 1 <= len(r.history) < 50 and r.state_dict


def test_bad_training_input_is_refused():
    img, lab = _tiny_problem()
    with pytest.raises(ReactomoError, match="not in the phase table"):
        train_unet(_net(), img, np.full_like(lab, 9), config=TrainConfig(**FAST), phases=DEFAULT_PHASES)
    with pytest.raises(ReactomoError, match="no pixel"):
        train_unet(_net(), img, np.zeros_like(lab), config=TrainConfig(**FAST), phases=DEFAULT_PHASES)
    with pytest.raises(ReactomoError, match="max_epochs"):
        TrainConfig(max_epochs=101)
    with pytest.raises(ReactomoError, match="loss"):
        TrainConfig(loss="dic")
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


# ------------------------------------------------------------------------------------------ normalisation
def test_normalisation_is_robust_to_the_demo_drift():
    from core.imaging.synthetic import DemoConfig, make_demo

    d = make_demo(DemoConfig(steps=3, shape=(16, 64, 64), seed=3))
    steps = [0, d.label_step, 2]

    for code in (1, 4):  # gypsum, celestite
        def spread(transform):
            meds = [np.median(transform(d.scans[s])[d.truth[s] == code]) for s in steps]
            t0 = transform(d.scans[0])
            gap = np.median(t0[d.truth[0] == 4]) - np.median(t0[d.truth[0] == 1])
            return np.ptp(meds) / gap

        raw = spread(lambda v: v.astype(np.float64))
        norm = spread(lambda v: apply_normalisation(v, fit_normalisation(v)))
        stretch = spread(percentile_stretch)
        assert norm < raw / 2.5 and norm < stretch / 2.5, (code, raw, norm, stretch)
    v = d.scans[0].copy()
    out = apply_normalisation(v, fit_normalisation(v))
    assert out.dtype == np.float32 and out.shape == v.shape and (v == d.scans[0]).all()
    assert json.loads(json.dumps(fit_normalisation(v, method="matrix-peak")))["scale"] > 0
    with pytest.raises(ReactomoError, match="constant"):
        fit_normalisation(np.ones((4, 4)))


# ------------------------------------------------------------------------------------------- project model
def test_train_project_model_writes_a_loadable_bundle(workspace, tmp_path):
    from core.network.bundle import load_bundle
    from core.workflow.data import create_demo_project
    from core.workflow.ground_truth import accept_candidate, train_candidate
    from core.workflow.labels import import_demo_scribbles
    from core.imaging.synthetic import DemoConfig
    from core.workflow.train import train_project_model

    project = create_demo_project("p", workspace=workspace, config=DemoConfig(steps=3, shape=(16, 64, 64), seed=3))
    import_demo_scribbles(project)
    train_candidate(project)
    accept_candidate(project)
    epochs = []
    path = train_project_model(project, name="m1", unet_config=UNetConfig(width=4, depth=2),
                               train_config=TrainConfig(patch_size=32, max_epochs=2, augment=False),
                               device="cpu", models_root=tmp_path / "models", on_epoch=epochs.append)
    assert len(epochs) == 2
    model, card = load_bundle(path, phases=project.phases(), device="cpu")
    assert card["normalisation"]["scale"] > 0 and card["provenance"]["project"] == "p"
    assert set(card["metrics"]["val_dice"]) == set(project.phases().names)
    record = project.manifest["models"][-1]
    assert record["name"] == "m1" and record["slices"] == card["provenance"]["slices"]
    with pytest.raises(ReactomoError, match="already exists"):
        train_project_model(project, name="m1", models_root=tmp_path / "models")


# ---------------------------------------------------------------------------------------------------- CLI
def _cli(capsys, *argv):
    from core.cli import main

    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_train_writes_a_bundle_and_models_lists_it(cli_files, capsys):
    from core.network.bundle import load_bundle

    tmp, scan, gt, _ = cli_files
    out = tmp / "models" / "cli1"
    rc, text, err = _cli(capsys, "train", "--scan", str(scan), "--ground-truth", str(gt), "--out", str(out),
                         "--patch", "24", "--epochs", "2", "--width", "4", "--depth", "2", "--no-augment")
    assert rc == 0, err
    assert sum(line.startswith("epoch") for line in text.splitlines()) == 2
    model, card = load_bundle(out, phases=DEFAULT_PHASES, device="cpu")
    assert card["provenance"]["slices"] == [2, 5]
    rc, text, _ = _cli(capsys, "models", "--root", str(tmp / "models"))
    assert rc == 0 and "cli1" in text and "val Dice" in text


def test_cli_train_refuses_bad_input_and_writes_nothing(cli_files, capsys):
    from core.imaging.io import write_labels

    tmp, scan, gt, truth = cli_files
    bad_shape, empty, bad_codes = tmp / "shape.tif", tmp / "empty.tif", tmp / "codes.tif"
    write_labels(bad_shape, np.ones((8, 40, 48), np.uint8))
    write_labels(empty, np.zeros_like(truth))
    codes = np.zeros_like(truth)
    codes[3] = 9
    write_labels(bad_codes, codes)
    out = tmp / "models" / "bad"
    base = ["train", "--scan", str(scan), "--out", str(out), "--width", "4", "--depth", "2", "--epochs", "1"]
    for g, extra in ((bad_shape, []), (empty, []), (bad_codes, []), (gt, ["--epochs", "101"])):
        rc, _, err = _cli(capsys, *base[:-2], "--ground-truth", str(g), "--epochs", extra[1] if extra else "1")
        assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp / "models").exists()


def test_class_weights_balanced_sqrt_and_none():
    from core.network.train import _weights

    y = np.array([0] * 80 + [1] * 16 + [2] * 4)  # 80 %, 16 %, 4 %; class 3 absent
    assert _weights(y, 4, "none") is None
    bal, sq = _weights(y, 4, "balanced").numpy(), _weights(y, 4, "sqrt").numpy()
    # balanced: inverse frequency (a rare class counts more), sqrt: half-way, both ordered by rarity
    assert bal[2] > bal[1] > bal[0] and sq[2] > sq[1] > sq[0]
    assert bal[2] / bal[0] == pytest.approx(20.0, rel=1e-5)  # inverse frequency: 80 % / 4 %
    assert sq[2] / sq[0] == pytest.approx(np.sqrt(20.0), rel=1e-5)
    assert TrainConfig(class_weights="sqrt").class_weights == "sqrt"


def test_held_out_is_exactly_what_training_validated_on():
    """The cleaning is chosen on the held-out part: the slices (or the strip) train_unet never trained on."""
    from core.network.train import _split, held_out

    img, lab = _tiny_problem(n=5)
    cfg = TrainConfig(**FAST)
    _, _, va_img, va_lab, info = _split(img, lab, cfg)
    xv, yv, where = held_out(img, lab, cfg)
    assert np.array_equal(xv, va_img) and np.array_equal(yv, va_lab)
    assert xv.shape[0] == len(info["val"]) < 5 and where == f"{len(info['val'])} held-out slice of 5"
    one_img, one_lab = _tiny_problem(n=1, size=40)
    xv, yv, where = held_out(one_img, one_lab, cfg)
    assert xv.shape[-1] == 8 and "held-out columns 32-40" in where
    # a held-out part that labels nothing gives every slice back, and says so
    lab2 = lab.copy()
    lab2[info["val"]] = 0
    xv, yv, where = held_out(img, lab2, cfg)
    assert xv.shape[0] == 5 and "labels no pixel" in where


def test_without_edges_leaves_out_both_sides_of_a_phase_boundary_only():
    from core.network.train import TrainConfig, without_edges

    lab = np.zeros((2, 8, 10), np.uint8)
    lab[:, 1:, :] = 1
    lab[:, 1:, 4:7] = 2  # a lath 3 px wide
    lab[1, :, :] = 0
    lab[1, 2:6, 2:8] = 3  # a phase next to unlabelled pixels only
    one = without_edges(lab, 1)
    rows = slice(2, -1)  # away from the slice's border, where every object is cut (and counts as thin)
    assert (one[0, rows, 3] == 0).all() and (one[0, rows, 4] == 0).all() and (one[0, rows, 6] == 0).all()
    assert (one[0, rows, 7] == 0).all() and (one[0, 1:, 5] == 2).all()  # the lath's core is kept
    assert (one[0, 1:, :3] == 1).all() and (one[0, 1:, 8:] == 1).all()
    np.testing.assert_array_equal(one[1], lab[1])  # an edge against unlabelled pixels is not a phase boundary
    # at 2 px every object of this 10 px slice (the 3 px lath, 4 and 3 px of matrix beside it) is thinner than
    # 2 x 2 + 1: nothing is taken away
    np.testing.assert_array_equal(without_edges(lab, 2), lab)
    young = lab.copy()
    young[0, 1:, 4:7] = 1
    young[0, 1:, 4:6] = 2  # a lath 2 px wide: all edge, so all kept
    np.testing.assert_array_equal(without_edges(young, 1)[0, 1:, 4:6], young[0, 1:, 4:6])
    np.testing.assert_array_equal(without_edges(lab, 0), lab)
    for bad in (-1, 9, 1.5, True):
        with pytest.raises(ReactomoError, match="edge width"):
            without_edges(lab, bad)
        with pytest.raises(ReactomoError, match="edge_px"):
            TrainConfig(edge_px=bad)
    assert TrainConfig.from_dict({**TrainConfig(edge_px=1).to_dict()}).edge_px == 1
    assert TrainConfig.from_dict({k: v for k, v in TrainConfig().to_dict().items() if k != "edge_px"}).edge_px == 0


def test_without_edges_of_some_phases_only_touches_their_boundaries():
    from core.network.train import TrainConfig, without_edges

    lab = np.ones((1, 12, 20), np.uint8)
    lab[0, :, 3:8] = 2  # a gypsum/bassanite boundary at x = 2|3 and 7|8
    lab[0, :, 12:17] = 4  # a bright grain: boundaries at 11|12 and 16|17
    only = without_edges(lab, 1, (4,))
    rows = slice(2, -2)
    assert (only[0, rows, 11] == 0).all() and (only[0, rows, 12] == 0).all()  # both sides of the grain's rim
    assert (only[0, rows, 16] == 0).all() and (only[0, rows, 17] == 0).all()
    np.testing.assert_array_equal(only[0, :, :11], lab[0, :, :11])  # the other boundaries keep their labels
    every = without_edges(lab, 1)
    assert (every[0, rows, 2] == 0).all() and (every[0, rows, 3] == 0).all()
    cfg = TrainConfig.from_dict(TrainConfig(edge_px=1, edge_codes=[4]).to_dict())
    assert cfg.edge_codes == (4,)
    with pytest.raises(ReactomoError, match="edge_codes"):
        TrainConfig(edge_codes=(0,))


def test_training_away_from_the_edges_trains():
    img, lab = _tiny_problem()
    cfg = TrainConfig(**{**FAST, "max_epochs": 2, "edge_px": 1})
    r = train_unet(_net(), img, lab, config=cfg, phases=DEFAULT_PHASES)
    assert len(r.history) == 2 and np.isfinite(r.history[-1]["train_loss"])


def test_cli_train_intensity_augment_trains_with_the_grey_value_jitter_and_records_it(cli_files, capsys):
    """`train --intensity-augment` (and `run`, through the same option) adds the gain/offset jitter to the geometric
    transforms; the model card records it, so a result says how its network was taught."""
    from core.network.bundle import read_card
    from core.network.train import GEOMETRY

    tmp, scan, gt, _ = cli_files
    common = ["train", "--scan", str(scan), "--ground-truth", str(gt), "--patch", "24", "--epochs", "1",
              "--width", "4", "--depth", "2"]
    rc, _, err = _cli(capsys, *common, "--out", str(tmp / "models" / "jit"), "--intensity-augment")
    assert rc == 0, err
    assert tuple(read_card(tmp / "models" / "jit")["training"]["config"]["transforms"]) == GEOMETRY + ("intensity",)
    rc, _, err = _cli(capsys, *common, "--out", str(tmp / "models" / "plain"))
    assert rc == 0, err
    assert tuple(read_card(tmp / "models" / "plain")["training"]["config"]["transforms"]) == GEOMETRY


# ------------------------------------------------------------------------------------------------ weight averaging
def test_weight_averaging_keeps_the_mean_of_the_lowest_validation_epochs():
    """`average_epochs` K: the model kept holds the mean weights of the K epochs of lowest validation loss (not the
    best epoch's), with its own validation in `averaged`; the training trajectory itself is the same as without it."""
    from core.network.train import _validate, _class_index

    img, lab = _tiny_problem(n=3)
    cfg = dict(FAST, max_epochs=4, lr=0.01)
    plain = train_unet(_net(), img, lab, config=TrainConfig(**cfg, average_epochs=0), phases=DEFAULT_PHASES)  # best epoch
    avg = train_unet(_net(), img, lab, config=TrainConfig(**cfg, average_epochs=3), phases=DEFAULT_PHASES)
    assert [h["val_loss"] for h in avg.history] == [h["val_loss"] for h in plain.history]  # the same epochs
    lowest = sorted(range(1, 5), key=lambda e: (plain.history[e - 1]["val_loss"], e))[:3]
    assert avg.averaged["epochs"] == sorted(lowest) and avg.best_epoch == plain.best_epoch
    assert set(avg.averaged["val_dice"]) == set(DEFAULT_PHASES.names) and avg.kept is avg.averaged
    assert plain.averaged is None and plain.kept == plain.best
    conv = next(k for k in avg.state_dict if k.endswith("weight") and avg.state_dict[k].ndim == 4)
    assert not torch.equal(avg.state_dict[conv], plain.state_dict[conv])
    # the averaged weights' validation is what the kept model scores
    model = _net()
    model.load_state_dict(avg.state_dict)
    from core.network.train import _split, make_patches

    _, _, va_img, va_lab, _ = _split(img, lab, TrainConfig(**cfg))
    xv, yv = make_patches(va_img, va_lab, patch_size=16)
    loss, _ = _validate(model, xv, _class_index(yv, DEFAULT_PHASES.codes), k=len(DEFAULT_PHASES), kind="ce+dice",
                        weight=None, dev=torch.device("cpu"), batch=8, amp=False)
    assert loss == pytest.approx(avg.averaged["val_loss"], rel=0.05)


def test_batch_norm_statistics_are_measured_again_on_the_patches():
    from core.network.train import _remeasure_batch_norm

    model = _net()
    x = np.random.default_rng(0).normal(3.0, 2.0, (12, 1, 16, 16)).astype(np.float32)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    _remeasure_batch_norm(model, x, dev=torch.device("cpu"), batch=len(x), amp=False)
    hook.remove()
    want = seen[0].mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, want, atol=1e-5)
    assert bn.momentum == 0.1 and not model.training  # put back as it was


def test_weight_averaging_is_refused_out_of_range_and_reaches_the_cli(cli_files, capsys):
    from core.network.bundle import read_card

    with pytest.raises(ReactomoError, match="average_epochs must be a whole number from 0 to 20; got 21"):
        TrainConfig(average_epochs=21)
    tmp, scan, gt, _ = cli_files
    rc, text, err = _cli(capsys, "train", "--scan", str(scan), "--ground-truth", str(gt), "--patch", "24",
                         "--epochs", "3", "--width", "4", "--depth", "2", "--out", str(tmp / "models" / "avg"),
                         "--average-epochs", "2")
    assert rc == 0, err
    card = read_card(tmp / "models" / "avg")
    assert card["training"]["config"]["average_epochs"] == 2 and len(card["metrics"]["averaged_epochs"]) == 2
    assert card["metrics"]["averaging"]["kept"] is True
    assert card["metrics"]["averaging"]["epochs"] == card["metrics"]["averaged_epochs"]
    assert "averaged: validation loss" in text


def test_a_resumed_training_averages_the_same_epochs_as_an_uninterrupted_one(tmp_path):
    img, lab = _tiny_problem()
    cfg2 = TrainConfig(**{**FAST, "max_epochs": 2, "average_epochs": 3})
    train_unet(_net(), img, lab, config=cfg2, phases=DEFAULT_PHASES, checkpoint_dir=tmp_path)
    assert (tmp_path / "top.safetensors").is_file()
    cfg4 = TrainConfig(**{**FAST, "max_epochs": 4, "average_epochs": 3})
    state = json.loads((tmp_path / "last.json").read_text())
    state["config"] = cfg4.to_dict()
    (tmp_path / "last.json").write_text(json.dumps(state))
    resumed = train_unet(_net(), img, lab, config=cfg4, phases=DEFAULT_PHASES, checkpoint_dir=tmp_path, resume=True)
    full = train_unet(_net(), img, lab, config=cfg4, phases=DEFAULT_PHASES)
    assert resumed.averaged["epochs"] == full.averaged["epochs"]
    assert resumed.averaged["val_loss"] == pytest.approx(full.averaged["val_loss"], rel=1e-4)


def test_an_average_that_validates_worse_than_the_best_epoch_is_not_kept(monkeypatch, capsys):
    """A short run far from converged can average its poor early epochs in: the best epoch is kept then, and said."""
    import core.network.train as train_mod
    from core.network.train import averaged_sentence

    def spoiled(model, x, **kw):  # stands for an average worse than every epoch in it
        torch.manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 5.0)  # loud, confident and wrong
        model.eval()

    monkeypatch.setattr(train_mod, "_remeasure_batch_norm", spoiled)
    img, lab = _tiny_problem()
    cfg = dict(FAST, max_epochs=3, lr=0.01)
    plain = train_unet(_net(), img, lab, config=TrainConfig(**cfg, average_epochs=0), phases=DEFAULT_PHASES)
    r = train_unet(_net(), img, lab, config=TrainConfig(**cfg, average_epochs=3), phases=DEFAULT_PHASES)
    assert r.averaged["kept"] is False and "so the best epoch is kept" in r.averaged["reason"]
    assert r.kept == r.best and r.averaged_epochs == []
    assert all(torch.equal(r.state_dict[k], plain.state_dict[k]) for k in plain.state_dict)
    assert "averaged and not kept" in averaged_sentence(r)


def test_the_learning_rate_drops_after_epochs_without_improvement_and_resumes_where_it_was(tmp_path):
    """`lr_drop_patience` N: after N epochs without a lower validation loss the learning rate is multiplied by
    `lr_drop_factor`; the count starts again after each drop; a resumed training goes on at the dropped rate."""
    img, lab = _tiny_problem()
    # min_delta 0.5: no epoch after the first counts as an improvement
    cfg = dict(FAST, max_epochs=6, lr=1e-3, min_delta=0.5, average_epochs=0)
    const = train_unet(_net(), img, lab, config=TrainConfig(**cfg), phases=DEFAULT_PHASES)
    assert [h["lr"] for h in const.history] == pytest.approx([1e-3] * 6)
    drop = TrainConfig(**cfg, lr_drop_patience=2, lr_drop_factor=0.5)
    full = train_unet(_net(), img, lab, config=drop, phases=DEFAULT_PHASES)
    assert [h["lr"] for h in full.history] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])
    # the first epochs are the same training; the dropped rate changes what follows
    assert full.history[2]["train_loss"] == pytest.approx(const.history[2]["train_loss"], rel=1e-6)
    assert full.history[5]["train_loss"] != pytest.approx(const.history[5]["train_loss"], rel=1e-6)
    # interrupted after 4 epochs (one drop done, one bad epoch counted) and resumed: the same rates and losses
    first = TrainConfig(**{**cfg, "max_epochs": 4}, lr_drop_patience=2, lr_drop_factor=0.5)
    train_unet(_net(), img, lab, config=first, phases=DEFAULT_PHASES, checkpoint_dir=tmp_path)
    state = json.loads((tmp_path / "last.json").read_text())
    assert state["lr_bad"] == 1
    state["config"] = drop.to_dict()
    (tmp_path / "last.json").write_text(json.dumps(state))
    resumed = train_unet(_net(), img, lab, config=drop, phases=DEFAULT_PHASES, checkpoint_dir=tmp_path, resume=True)
    assert [h["lr"] for h in resumed.history] == pytest.approx([h["lr"] for h in full.history])
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in full.history], rel=1e-5)


def test_learning_rate_drop_is_refused_out_of_range_and_reaches_the_cli(cli_files, capsys):
    from core.network.bundle import read_card

    with pytest.raises(ReactomoError, match="lr_drop_factor must be a number from 0.01 to 1.0; got 0"):
        TrainConfig(lr_drop_factor=0)
    tmp, scan, gt, _ = cli_files
    args = ["train", "--scan", str(scan), "--ground-truth", str(gt), "--patch", "24", "--epochs", "2", "--width", "4",
            "--depth", "2"]
    rc, text, err = _cli(capsys, *args, "--out", str(tmp / "models" / "bad"), "--lr-drop", "-1")
    assert rc != 0 and "lr_drop_patience must be a whole number from 0 to 100; got -1." in err
    assert "Traceback" not in err and not (tmp / "models" / "bad").exists()
    rc, text, err = _cli(capsys, *args, "--out", str(tmp / "models" / "drop"), "--lr-drop", "3")
    assert rc == 0, err
    assert read_card(tmp / "models" / "drop")["training"]["config"]["lr_drop_patience"] == 3


def test_training_in_bfloat16_learns_records_its_precision_and_gives_standard_layout_weights():
    """`cpu_amp` True: forward and backward in bfloat16 with channels-last convolutions; the weights kept are float32 in
    the standard layout (saved and loaded like any other), and the training learns as in float32."""
    img, lab = _tiny_problem()
    cfg = dict(FAST, max_epochs=6, lr=0.01, average_epochs=0)
    f32 = train_unet(_net(), img, lab, config=TrainConfig(**cfg, cpu_amp=False), phases=DEFAULT_PHASES)
    model = _net()
    bf = train_unet(model, img, lab, config=TrainConfig(**cfg, cpu_amp=True), phases=DEFAULT_PHASES)
    assert f32.precision == "float32" and bf.precision == "bfloat16"
    # the arithmetic really changed: the same seed and data give other weights than in float32
    assert not all(torch.equal(v, f32.state_dict[k]) for k, v in bf.state_dict.items())
    assert all(v.dtype == f32.state_dict[k].dtype and v.is_contiguous() for k, v in bf.state_dict.items())
    assert all(p.is_contiguous() for p in model.parameters())  # the model is handed back in the standard layout
    losses = [h["train_loss"] for h in bf.history]
    assert losses[-1] < 0.8 * losses[0]  # it learns
    assert abs(bf.history[-1]["train_loss"] - f32.history[-1]["train_loss"]) < 0.1 * f32.history[0]["train_loss"]
    # and the same seed gives the same bfloat16 training twice
    again = train_unet(_net(), img, lab, config=TrainConfig(**cfg, cpu_amp=True), phases=DEFAULT_PHASES)
    assert all(torch.equal(again.state_dict[k], bf.state_dict[k]) for k in bf.state_dict)
    with pytest.raises(ReactomoError, match="cpu_amp must be true, false or none"):
        TrainConfig(cpu_amp="yes")


def test_cli_train_precision_reaches_the_card(cli_files, capsys):
    from core.network.bundle import read_card

    tmp, scan, gt, _ = cli_files
    rc, text, err = _cli(capsys, "train", "--scan", str(scan), "--ground-truth", str(gt), "--patch", "24", "--epochs",
                         "2", "--width", "4", "--depth", "2", "--out", str(tmp / "models" / "f32"),
                         "--train-precision", "float32")
    assert rc == 0, err
    card = read_card(tmp / "models" / "f32")
    assert card["training"]["config"]["cpu_amp"] is False and card["training"]["precision"] == "float32"
    assert "in float32." in text
