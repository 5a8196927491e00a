"""An ensemble of U-Nets trained apart, read as one network (issue 11: the seed-to-seed spread of one training).

The averaged network must give exactly the mean of its members' probabilities, survive a bundle round trip with every
member, train its members with their own seeds on one validation split, and reach `core run` end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import run_args
from core.cli import main
from core.errors import ReactomoError
from core.network.bundle import list_bundles, load_bundle, read_card, save_bundle
from core.network.inference import InferenceConfig, predict_slices
from core.network.train import TrainConfig, held_out, train_ensemble, train_unet
from core.network.unet import UNet, UNetConfig, UNetEnsemble, build_unet, members_of
from core.phases import DEFAULT_PHASES

CFG = UNetConfig(n_classes=4, width=4, depth=2)


def _pair() -> tuple[UNet, UNet]:
    torch.manual_seed(0)
    a = build_unet(CFG)
    torch.manual_seed(1)
    b = build_unet(CFG)
    return a.eval(), b.eval()


def test_the_ensemble_gives_the_mean_of_its_members_probabilities():
    a, b = _pair()
    ens = UNetEnsemble([a, b]).eval()
    x = torch.randn(3, 1, 24, 40)
    with torch.no_grad():
        mean = (torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2
        got = torch.softmax(ens(x), 1)
    assert got.shape == (3, 4, 24, 40)
    assert torch.allclose(got, mean, atol=1e-6)
    assert not torch.allclose(torch.softmax(a(x), 1), mean, atol=1e-3)  # the members differ, so averaging does something
    assert members_of(ens) == 2 and members_of(a) == 1 and ens.config == CFG


def test_an_ensemble_refuses_one_network_or_networks_of_different_configs():
    a, _ = _pair()
    with pytest.raises(ReactomoError, match="two or more U-Nets"):
        UNetEnsemble([a])
    with pytest.raises(ReactomoError, match="share one U-Net config"):
        UNetEnsemble([a, build_unet(UNetConfig(n_classes=4, width=8, depth=2))])


def _save(folder, model, **kw):
    return save_bundle(folder, model, config=CFG, phases=DEFAULT_PHASES, normalisation={}, training={}, provenance={},
                       metrics={}, seed=3, **kw)


def test_an_ensemble_bundle_keeps_every_member_and_labels_as_before(tmp_path):
    a, b = _pair()
    ens = UNetEnsemble([a, b]).eval()
    _save(tmp_path / "ens", ens, ensemble_seeds=[3, 4])
    _save(tmp_path / "one", a)
    card = read_card(tmp_path / "ens")
    assert card["ensemble"] == {"members": 2, "seeds": [3, 4]} and card["format_version"] == 2
    assert "ensemble" not in read_card(tmp_path / "one") and read_card(tmp_path / "one")["format_version"] == 1
    loaded, _ = load_bundle(tmp_path / "ens")
    assert isinstance(loaded, UNetEnsemble) and members_of(loaded) == 2
    images = np.random.default_rng(0).random((2, 40, 40), dtype=np.float32)
    cfg = InferenceConfig(cpu_amp=False)
    np.testing.assert_array_equal(predict_slices(loaded, images, config=cfg, class_codes=DEFAULT_PHASES.codes),
                                  predict_slices(ens, images, config=cfg, class_codes=DEFAULT_PHASES.codes))
    assert {s.name: s.members for s in list_bundles(tmp_path)} == {"ens": 2, "one": 1}


def test_a_damaged_ensemble_card_is_refused_in_one_sentence(tmp_path):
    a, b = _pair()
    folder = _save(tmp_path / "ens", UNetEnsemble([a, b]))
    card = json.loads((folder / "card.json").read_text())
    for bad, words in (({**card, "ensemble": {"members": 1}}, "must say how many networks it averages"),
                       ({k: v for k, v in card.items() if k != "ensemble"}, "unexpected")):
        (folder / "card.json").write_text(json.dumps(bad))
        with pytest.raises(ReactomoError, match=words):
            load_bundle(folder)
    with pytest.raises(ReactomoError, match="one integer per network"):
        _save(tmp_path / "bad", UNetEnsemble([a, b]), ensemble_seeds=[1])


def _data(n=4):
    rng = np.random.default_rng(5)
    labels = np.ones((n, 32, 32), np.uint8)
    labels[:, 8:16] = 2
    labels[:, 20:26, 4:30] = 3
    labels[:, 2:6, 2:6] = 4
    images = (labels.astype(np.float32) / 4 + rng.normal(0, 0.05, labels.shape)).astype(np.float32)
    return images, labels


TINY = TrainConfig(patch_size=16, stride_ratio=1.0, batch_size=8, max_epochs=2, patience=0, val_fraction=0.25,
                   seed=7, cpu_amp=False, average_epochs=0)


def test_one_member_is_exactly_a_single_training():
    images, labels = _data()
    one = train_ensemble(lambda: build_unet(CFG), images, labels, members=1, config=TINY, phases=DEFAULT_PHASES,
                         device="cpu")
    torch.manual_seed(TINY.seed)
    net = build_unet(CFG)
    train_unet(net, images, labels, config=TINY, phases=DEFAULT_PHASES, device="cpu")
    assert isinstance(one.model, UNet) and one.seeds == [7]
    for k, v in net.state_dict().items():
        assert torch.equal(v, one.model.state_dict()[k]), k


def test_members_train_with_their_own_seeds_on_one_validation_split():
    images, labels = _data()
    seen = []
    two = train_ensemble(lambda: build_unet(CFG), images, labels, members=2, config=TINY, phases=DEFAULT_PHASES,
                         device="cpu", on_epoch=lambda h: seen.append(h["member"]))
    assert isinstance(two.model, UNetEnsemble) and two.seeds == [7, 8] and seen == [1, 1, 2, 2]
    a, b = two.model.members
    assert not torch.equal(a.state_dict()["head.weight"], b.state_dict()["head.weight"])
    own = held_out(images, labels, TINY)[0]
    assert not np.array_equal(own, held_out(images, labels, replace(TINY, seed=8))[0])  # seed 8 alone: other slices
    np.testing.assert_array_equal(own, held_out(images, labels, replace(TINY, seed=8, split_seed=7))[0])  # the 2nd net's
    assert [r.history[-1]["epoch"] for r in two.members] == [2, 2]
    assert set(two.val_dice) == set(DEFAULT_PHASES.names) and all(v is None or 0 <= v <= 1 for v in two.val_dice.values())


def test_a_bad_number_of_members_is_refused():
    images, labels = _data()
    for bad in (0, 5, True, 1.5):
        with pytest.raises(ReactomoError, match="An ensemble holds 1 to 4 U-Nets"):
            train_ensemble(lambda: build_unet(CFG), images, labels, members=bad, config=TINY, phases=DEFAULT_PHASES)


def test_run_trains_two_networks_and_segments_with_their_average(small_demo_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(run_args(small_demo_dir, out, "--ensemble", "2", "--seed", "4", "--width", "8")) == 0
    said = capsys.readouterr().out
    assert "2 U-Nets (seeds 4 to 5, probabilities averaged)" in said and "net 2 epoch" in said
    assert "averaged network on the held-out slices: Dice" in said
    run = json.loads((out / "run.json").read_text())
    ens = run["unet"]["ensemble"]
    assert ens["members"] == 2 and ens["seeds"] == [4, 5] and len(ens["networks"]) == 2
    assert run["unet"]["val_dice"] == ens["val_dice_held_out"]
    card = read_card(out / "model")
    assert card["ensemble"]["seeds"] == [4, 5] and len(card["training"]["members"]) == 2
    model, _ = load_bundle(out / "model")
    assert isinstance(model, UNetEnsemble)
    assert card["unet"]["width"] == 8 and model.config.width == 8  # `run --width`
    assert len(list((out / "segmentations").glob("*.tif"))) == len(run["inputs"]["scans"])


def test_a_bad_ensemble_is_refused_before_anything_is_written(small_demo_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(run_args(small_demo_dir, out, "--ensemble", "0")) != 0
    assert "An ensemble holds 1 to 4 U-Nets; got 0." in capsys.readouterr().err
    assert not out.exists()
    assert main(run_args(small_demo_dir, out, "--width", "0")) == 2
    err = capsys.readouterr().err
    assert "U-Net width is 0; use an integer from 1 to" in err and "Traceback" not in err
    assert not out.exists()


def test_cli_train_saves_an_ensemble_and_refuses_a_bad_count(cli_files, capsys):
    tmp_path, scan, gt, _ = cli_files
    args = ["train", "--scan", str(scan), "--ground-truth", str(gt), "--patch", "24",
            "--epochs", "2", "--width", "4", "--depth", "2", "--no-augment"]
    assert main([*args, "--out", str(tmp_path / "models" / "bad"), "--ensemble", "9"]) != 0
    err = capsys.readouterr().err
    assert "An ensemble holds 1 to 4 U-Nets; got 9." in err and "Traceback" not in err
    assert not (tmp_path / "models" / "bad").exists()
    assert main([*args, "--out", str(tmp_path / "models" / "pair"), "--ensemble", "2", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert sum(line.startswith("net 2 epoch") for line in text.splitlines()) == 2
    assert "2 U-Nets (seeds 3, 4) averaged" in text
    card = read_card(tmp_path / "models" / "pair")
    assert card["ensemble"] == {"members": 2, "seeds": [3, 4]} and card["metrics"]["networks"] == 2
    assert main(["models", "--root", str(tmp_path / "models")]) == 0
    assert "pair" in (listed := capsys.readouterr().out) and "(2 networks averaged)" in listed


def test_a_stopped_ensemble_resumes_with_its_finished_network_kept_as_it_was(tmp_path):
    images, labels = _data()
    seen: list[tuple[int, int]] = []

    def stop() -> bool:  # the user presses Stop once network 2 has finished its first epoch
        return (2, 1) in seen

    first = train_ensemble(lambda: build_unet(CFG), images, labels, members=2, config=TINY, phases=DEFAULT_PHASES,
                           device="cpu", on_epoch=lambda h: seen.append((h["member"], h["epoch"])), should_stop=stop,
                           checkpoint_dir=tmp_path)
    assert first.cancelled and not first.members[0].cancelled and first.members[1].cancelled
    assert (tmp_path / "network1" / "last.json").is_file() and (tmp_path / "network2" / "last.json").is_file()
    again: list[tuple[int, int]] = []
    resumed = train_ensemble(lambda: build_unet(CFG), images, labels, members=2, config=TINY, phases=DEFAULT_PHASES,
                             device="cpu", on_epoch=lambda h: again.append((h["member"], h["epoch"])),
                             checkpoint_dir=tmp_path, resume=True)
    assert not resumed.cancelled and all(m == 2 for m, _ in again)  # network 1 is read back, not trained again
    assert [len(r.history) for r in resumed.members] == [2, 2]
    whole = train_ensemble(lambda: build_unet(CFG), images, labels, members=2, config=TINY, phases=DEFAULT_PHASES,
                           device="cpu")
    for k, v in whole.model.members[0].state_dict().items():
        assert torch.equal(v, resumed.model.members[0].state_dict()[k]), k
