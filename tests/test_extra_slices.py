"""The U-Net also trained on the forest's labels of unscribbled slices (`run --extra-slices`):
which slices (never a scribbled one, never a held-out slice or its neighbour, spread over the stack), the forest
labelling them with the forest of the scribbles (the scribbled slices' labels unchanged), a real training whose epochs
draw as many patches as without them (and which differs from the one without), and `run` recording them, refusing a
bad count before writing anything."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_args
from core.cli import main
from core.errors import ReactomoError
from core.imaging.io import read_labels
from core.labelling.forest import ground_truth_from_scribbles
from core.network.train import TrainConfig, split_slices, train_unet
from core.network.unet import UNetConfig, build_unet
from core.phases import DEFAULT_PHASES
from core.workflow.run import ALL_SLICES, AUTO_SLICES, extra_slices


def test_the_slices_keep_away_from_the_scribbled_and_the_held_out_ones():
    scribbled, held = [5, 20, 33, 40], [20]
    every = extra_slices(48, scribbled, held, ALL_SLICES)
    assert not set(every) & {5, 19, 20, 21, 33, 40}
    assert len(every) == 48 - 6 and every == sorted(every)
    ten = extra_slices(48, scribbled, held, 10)
    assert len(ten) == 10 and set(ten) <= set(every)
    # spread over the whole stack, from the middle of equal shares: never the end slices first (often a scan's worst)
    assert every[0] < ten[0] <= every[4] and every[-5] <= ten[-1] < every[-1]
    assert extra_slices(48, scribbled, held, 1) == [every[len(every) // 2]]
    gaps = np.diff(ten)
    assert gaps.max() <= 2 * gaps.min() + 2  # evenly, not bunched
    assert extra_slices(48, scribbled, held, 0) == []
    assert extra_slices(48, scribbled, held, 1000) == every
    # auto: what 48 slices of 256 x 256 hold, so every slice of such a scan, three of 1024 x 1024, none of 2048 x 2048
    assert extra_slices(48, scribbled, held, AUTO_SLICES, plane_px=256 * 256) == every
    assert extra_slices(48, scribbled, held, AUTO_SLICES, plane_px=1024 * 1024) == extra_slices(48, scribbled, held, 3)
    assert extra_slices(48, scribbled, held, AUTO_SLICES, plane_px=2048 * 2048) == []
    for bad in (-3, True, 1.5, "3"):
        with pytest.raises(ReactomoError, match="count of 0 or more, all or auto"):
            extra_slices(48, scribbled, held, bad)


def test_extra_slices_beyond_the_memory_budget_are_refused_in_one_sentence_before_the_forest_runs(monkeypatch):
    from core.labelling.forest import check_extra_memory

    check_extra_memory(48, 256 * 256, what="--extra-slices")  # what auto takes always fits
    check_extra_memory(40, 1024 * 1024, what="--extra-slices")  # 2.7 GB: inside the default 4 GB
    with pytest.raises(ReactomoError, match=r"^2000 extra slices of 4,194,304 px would need about 536.9 GB to label "
                                            r"and train on, over the memory budget of 4.0 GB; ask for fewer with "
                                            r"--extra-slices \(auto fits\), or raise REACTOMO_MEMORY_BUDGET_GB.$"):
        check_extra_memory(2000, 2048 * 2048, what="--extra-slices")
    monkeypatch.setenv("REACTOMO_MEMORY_BUDGET_GB", "1")
    with pytest.raises(ReactomoError, match="over the memory budget of 1.0 GB"):
        check_extra_memory(40, 1024 * 1024, what="--extra-slices")


def _scan_and_scribbles():
    rng = np.random.default_rng(0)
    truth = np.ones((8, 40, 40), np.uint8)
    truth[:, :, 20:] = 2
    truth[:, 5:12, 5:12] = 3
    truth[:, 28:34, 3:9] = 4
    scan = np.select([truth == 1, truth == 2, truth == 3, truth == 4], [20000, 24000, 5000, 40000]).astype(np.float32)
    scan = (scan + rng.normal(0, 800, scan.shape)).clip(0, 65535).astype(np.uint16)
    scribbles = np.zeros_like(truth)
    for z in (2, 5):
        for code in (1, 2, 3, 4):
            ys, xs = np.nonzero(truth[z] == code)
            pick = rng.choice(len(ys), 12, replace=False)
            scribbles[z, ys[pick], xs[pick]] = code
    return scan, scribbles, truth


def test_the_forest_labels_the_extra_slices_and_leaves_the_scribbled_ones_as_they_were():
    scan, scribbles, truth = _scan_and_scribbles()
    alone = ground_truth_from_scribbles(scan, scribbles, n_jobs=1)
    more = ground_truth_from_scribbles(scan, scribbles, n_jobs=1, also=[0, 7, 5], keep_probabilities=True)
    assert alone.slices == (2, 5) and more.slices == (0, 2, 5, 7)  # ascending, a scribbled one not twice
    assert (more.labels[[2, 5]] == alone.labels[[2, 5]]).all()  # the same forest, the same labels
    assert more.fractions == alone.fractions  # the scribbled slices' share, as before
    assert more.uncertainty.shape == (4, 40, 40) and more.probabilities.shape == (4, 4, 40, 40)
    for z in (0, 7):  # labelled in full, and right on this easy scan
        assert (more.labels[z] > 0).all() and (more.labels[z] == truth[z]).mean() > 0.9
    assert not more.labels[[1, 3, 4, 6]].any()  # nothing else
    with pytest.raises(ReactomoError, match="must lie in 0-7; got 8"):
        ground_truth_from_scribbles(scan, scribbles, n_jobs=1, also=[8])


def test_the_scribbled_slices_are_labelled_and_let_go_before_any_extra_slice_is_computed(monkeypatch):
    """Their kept features and the extra slices' features never add up: the extra slices' planes are computed
    only once every scribbled slice is labelled (one thread here, so the order is exact), and every slice's
    labels, uncertainty and probabilities still land at its place among the ascending slices."""
    import core.labelling.forest as forest

    scan, scribbles, _ = _scan_and_scribbles()
    events = []
    real_features, real_predict = forest.volume_features, forest.predict_forest
    monkeypatch.setattr(forest, "volume_features",
                        lambda vol, zs, **kw: events.append(("features", tuple(zs))) or real_features(vol, zs, **kw))
    monkeypatch.setattr(forest, "predict_forest",
                        lambda f, st, **kw: events.append(("predict", st.z)) or real_predict(f, st, **kw))
    more = ground_truth_from_scribbles(scan, scribbles, n_jobs=1, also=[0, 7, 3], keep_probabilities=True)
    first_extra = next(i for i, e in enumerate(events) if e[0] == "features" and set(e[1]) & {0, 3, 7})
    assert sorted(e[1] for e in events[:first_extra] if e[0] == "predict") == [2, 5]
    monkeypatch.undo()
    alone = ground_truth_from_scribbles(scan, scribbles, n_jobs=1, keep_probabilities=True)
    assert more.slices == (0, 2, 3, 5, 7)
    np.testing.assert_array_equal(more.probabilities[[1, 3]], alone.probabilities)
    np.testing.assert_array_equal(more.uncertainty[[1, 3]], alone.uncertainty)


FAST = dict(patch_size=16, stride_ratio=1.0, batch_size=4, max_epochs=2, augment=False, patience=0, average_epochs=0,
            cpu_amp=False)
TINY = UNetConfig(n_classes=len(DEFAULT_PHASES), width=4, depth=2)


def _train(img, lab, extra=None, seen=None):
    torch.manual_seed(0)
    net = build_unet(TINY)
    return train_unet(net, img, lab, config=TrainConfig(**FAST), phases=DEFAULT_PHASES, device="cpu", extra=extra,
                      on_progress=(lambda f, m: seen.append(m)) if seen is not None else None)


def test_a_real_training_draws_its_epoch_from_every_slice_at_the_same_cost():
    scan, _, truth = _scan_and_scribbles()
    img = (scan.astype(np.float32) - 20000) / 10000
    own, more = [0, 3, 6, 7], [1, 2, 4, 5]
    seen_alone, seen_more = [], []
    alone = _train(img[own], truth[own], seen=seen_alone)
    wider = _train(img[own], truth[own], extra=(img[more], truth[more]), seen=seen_more)
    # as many batches per epoch with the extra slices as without: they add choice, not cost
    assert seen_alone == seen_more and seen_alone[-1].endswith(f"batch {len(seen_alone) // 2}/{len(seen_alone) // 2}")
    assert any(not torch.equal(alone.state_dict[k], wider.state_dict[k]) for k in alone.state_dict)
    again = _train(img[own], truth[own], extra=(img[more], truth[more]))
    assert all(torch.equal(wider.state_dict[k], again.state_dict[k]) for k in wider.state_dict)  # seeded
    with pytest.raises(ReactomoError, match="extra training slices must be images of shape"):
        _train(img[own], truth[own], extra=(img[more][:, :20], truth[more][:, :20]))
    # the training slices give no patch: refused, even with extra slices to draw from (an epoch would train nothing)
    with pytest.raises(ReactomoError, match="No training patch holds a labelled pixel"):
        only_val = np.zeros_like(truth[own])
        val = split_slices(len(own), val_fraction=0.2, seed=0)[1]
        only_val[val] = truth[own][val]
        _train(img[own], only_val, extra=(img[more], truth[more]))
    with pytest.raises(ReactomoError, match="give no extra slices with them"):
        torch.manual_seed(0)
        train_unet(build_unet(TINY), img[own], truth[own], config=TrainConfig(**FAST, soft_labels=0.2),
                   phases=DEFAULT_PHASES, device="cpu", extra=(img[more], truth[more]))


def test_run_trains_on_the_extra_slices_and_records_them(small_demo_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert main(run_args(small_demo_dir, out, "--extra-slices", "3")) == 0
    run = json.loads((out / "run.json").read_text())
    step = run["random_forest"]["steps"][0]
    scribbled, more = step["slices"], step["extra_slices"]
    held = [scribbled[i] for i in split_slices(len(scribbled), val_fraction=0.25, seed=0)[1]]
    assert len(more) == 3 and not set(more) & set(scribbled)
    assert not {z + d for z in held for d in (-1, 0, 1)} & set(more)
    assert run["config"]["extra_slices"] == 3 and run["extra_slices"]["count"] == 3
    gt = read_labels(out / "ground_truth.tif")
    assert all(gt[z].all() for z in more)  # the forest labelled them in full, and they are kept with the others
    # with the U-Net reading the steps around too, the extra slices get the same channels as the scribbled ones
    timed = tmp_path / "timed"
    import core.imaging.normalise as normalise

    fitted = []  # the real normalisation, counted: each step the U-Net reads is fitted once, not once per batch of slices
    real_fit = normalise.fit_normalisation
    monkeypatch.setattr(normalise, "fit_normalisation", lambda vol, **kw: fitted.append(1) or real_fit(vol, **kw))
    assert main(run_args(small_demo_dir, timed, "--extra-slices", "2", "--time-context", "1")) == 0
    # the label step's own (one normalisation for the model) and its two neighbours', each once, for the scribbled
    # slices and the extra ones alike (before: the neighbours fitted again for the extra slices)
    assert len(fitted) == 3
    run = json.loads((timed / "run.json").read_text())
    assert len(run["random_forest"]["steps"][0]["extra_slices"]) == 2
    assert run["unet"]["config"]["in_channels"] == 3 and run["unet"]["time_context"]["reach"] == 1


@pytest.mark.parametrize("more, sentence", [
    (["--extra-slices", "-1"], "--extra-slices must be a count of 0 or more, all or auto; got '-1'."),
    (["--extra-slices", "some"], "--extra-slices must be a count of 0 or more, all or auto; got 'some'."),
    (["--extra-slices", "2", "--soft-labels", "0.2"], "Extra slices and soft labels do not go together (the forest's "
                                                      "split is kept for the scribbled slices only); give "
                                                      "--extra-slices 0 with --soft-labels."),
])
def test_run_refuses_a_bad_request_before_writing(small_demo_dir, tmp_path, capsys, more, sentence):
    out = tmp_path / "run"
    assert main(run_args(small_demo_dir, out, *more)) == 2
    err = capsys.readouterr().err
    assert sentence in err and "Traceback" not in err
    assert not out.exists()


def test_the_dashboards_ground_truth_labels_them_and_the_train_page_trains_on_them(workspace, tmp_path):
    """The Ground truth page's forest labels the extra slices (kept beside the scribbled ones through accepting), and
    the Train page's training takes those away from its held-out slices, as `run` does."""
    from core.imaging.synthetic import DemoConfig
    from core.network.bundle import read_card
    from core.workflow.data import create_demo_project
    from core.workflow.ground_truth import (accept_candidate, extra_slices_sentence, load_accepted, train_candidate)
    from core.workflow.labels import import_demo_scribbles
    from core.workflow.train import train_project_model

    project = create_demo_project("p", workspace=workspace, config=DemoConfig(steps=3, shape=(16, 64, 64), seed=3))
    import_demo_scribbles(project)
    none = train_candidate(project, extra_slices=0)
    assert none.extra_slices == () and none.extra_labels is None and extra_slices_sentence(none) == ""
    cand = train_candidate(project)  # the default: auto, so every unscribbled slice of a 16 x 64 x 64 scan
    assert cand.slices == none.slices and not set(cand.extra_slices) & set(cand.slices)
    assert len(cand.extra_slices) == 16 - len(cand.slices)
    assert cand.extra_labels.shape == (len(cand.extra_slices), 64, 64) and cand.extra_labels.all()
    assert f"also labelled {len(cand.extra_slices)} unscribbled slices" in extra_slices_sentence(cand)
    accepted = accept_candidate(project)
    assert accepted.extra_slices == cand.extra_slices and (accepted.extra_labels == cand.extra_labels).all()
    config = TrainConfig(patch_size=32, max_epochs=1, augment=False, val_fraction=0.25, average_epochs=0)
    path = train_project_model(project, name="m1", unet_config=UNetConfig(width=4, depth=2), train_config=config,
                               device="cpu", models_root=tmp_path / "models")
    prov = read_card(path)["provenance"]
    s = load_accepted(project).slices
    held = [s[i] for i in split_slices(len(s), val_fraction=0.25, seed=0)[1]]
    assert prov["extra_slices"] == [z for z in cand.extra_slices if min(abs(z - h) for h in held) > 1]
    assert 0 < len(prov["extra_slices"]) < len(cand.extra_slices)


def test_the_ground_truth_command_takes_the_same_setting_and_refuses_a_bad_one(demo_project, workspace, capsys):
    from core.workflow.ground_truth import load_candidate
    from core.workflow.project import open_project

    assert main(["-q", "labels", "demo", "--import-demo"]) == 0
    assert main(["ground-truth", "demo", "--extra-slices", "many"]) == 2
    err = capsys.readouterr().err
    assert "--extra-slices must be a count of 0 or more, all or auto; got 'many'." in err and "Traceback" not in err
    assert load_candidate(open_project("demo", workspace=workspace)) is None  # nothing written
    assert main(["-q", "ground-truth", "demo", "--extra-slices", "2"]) == 0
    out = capsys.readouterr().out
    cand = load_candidate(open_project("demo", workspace=workspace))
    assert len(cand.extra_slices) == 2 and "also labelled 2 unscribbled slices" in out


def test_the_memory_estimate_counts_the_extra_slices_once_not_per_augmented_copy(monkeypatch):
    """The extra slices' patches are held once and drawn from; only an epoch's share is augmented. A training whose
    extra slices the old estimate multiplied by the augmentation copies now fits a budget it fits in; one over the
    budget is still refused before any patch is made."""
    from core.network.train import estimate_training_memory

    cfg = TrainConfig(**{**FAST, "augment": True, "augment_factor": 4})
    base = estimate_training_memory(cfg, width=4, data_bytes=10**6)
    assert estimate_training_memory(cfg, width=4, data_bytes=10**6, held_bytes=3 * 10**6) - base == pytest.approx(6e6)
    scan, _, truth = _scan_and_scribbles()
    img = (scan.astype(np.float32) - 20000) / 10000
    own = [0, 3, 6, 7]
    many = np.concatenate([img] * 20), np.concatenate([truth] * 20)  # 160 extra slices of 40 x 40
    per_slice = 40 * 40 * (4 + 1 + 8)  # the bytes train_unet counts per slice (patch 16, stride 1.0)
    now = estimate_training_memory(cfg, width=TINY.width, data_bytes=len(own) * per_slice, n_patches=len(own) * 9,
                                   held_bytes=len(many[0]) * per_slice)
    before = estimate_training_memory(cfg, width=TINY.width, data_bytes=(len(own) + len(many[0])) * per_slice,
                                      n_patches=len(own) * 9)
    assert before - now > 1e7  # the old count: every extra patch times the four copies

    def train(budget_bytes):
        monkeypatch.setenv("REACTOMO_MEMORY_BUDGET_GB", f"{budget_bytes / 1e9:.9f}")
        torch.manual_seed(0)
        return train_unet(build_unet(TINY), img[own], truth[own], config=cfg, phases=DEFAULT_PHASES, device="cpu",
                          extra=many)

    assert len(train((now + before) / 2).history) == FAST["max_epochs"]  # refused before, trains now
    with pytest.raises(ReactomoError, match="This training would need about"):
        train(now - 1e6)
