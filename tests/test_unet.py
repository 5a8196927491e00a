"""The U-Net and model bundles: shapes for any size, validation, determinism, learning, and safe save/load."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from core.network.bundle import (
    CARD,
    WEIGHTS,
    check_bundle_name,
    delete_bundle,
    list_bundles,
    load_bundle,
    rename_bundle,
    save_bundle,
)
from core.errors import ReactomoError
from core.phases import DEFAULT_PHASES, Phase, PhaseTable
from core.network.unet import UNet, UNetConfig, build_unet, device_summary, select_device

torch.set_num_threads(2)
TINY = UNetConfig(n_classes=4, width=4, depth=3)


def _seeded(config: UNetConfig = TINY, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return build_unet(config)


# -- the network ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(17, 23), (32, 32), (1, 9), (1, 1), (5, 2), (8, 40)])
@pytest.mark.parametrize(("norm", "up"), [("batch", "transpose"), ("instance", "bilinear"), ("group", "transpose")])
def test_output_shape_any_size(hw, norm, up):
    net = _seeded(UNetConfig(in_channels=2, n_classes=3, width=4, depth=3, norm=norm, up=up)).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 2, *hw))
    assert out.shape == (2, 3, *hw)
    assert torch.isfinite(out).all()


def test_padding_is_cropped_back_consistently():
    # An image already a multiple of 4 is not padded; its logits must not depend on what padding would add.
    net = _seeded().eval()
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), net(x.clone()))
        assert net(x[..., :15, :13]).shape == (1, 4, 15, 13)


def test_bad_input_shape_refused():
    with pytest.raises(ReactomoError, match=r"needs \(N, 1, H, W\)"):
        _seeded()(torch.rand(1, 16, 16))
    with pytest.raises(ReactomoError, match=r"shape \(1, 3, 8, 8\)"):
        _seeded()(torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_classes=1), r"n_classes is 1; use an integer from 2"),
        (dict(width=0), r"width is 0"),
        (dict(depth=1), r"depth is 1"),
        (dict(depth=2.5), r"depth is 2.5"),
        (dict(in_channels=True), r"in_channels is True"),
        (dict(dropout=1.0), r"dropout is 1.0; use a number in \[0, 1\)"),
        (dict(norm="bach"), r"did you mean 'batch'"),
        (dict(up="bilinar"), r"did you mean 'bilinear'"),
        (dict(width=1024, depth=8), r"reduce the width or the depth"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ReactomoError, match=match):
        UNetConfig(**kwargs)


def test_config_round_trip_and_unknown_field():
    cfg = UNetConfig(n_classes=5, width=8, depth=3, dropout=0.1, norm="group", up="bilinear")
    assert UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert hash(cfg) == hash(UNetConfig.from_dict(cfg.to_dict()))
    with pytest.raises(ReactomoError, match=r"Unknown U-Net config field\(s\) \['colour'\]"):
        UNetConfig.from_dict({**cfg.to_dict(), "colour": 1})


def test_same_seed_same_output_different_seed_differs():
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        a, b, c = (_seeded(seed=s).eval()(x) for s in (7, 7, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def _disks(n: int, size: int = 24, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright noisy disks (class 1) on a dark noisy background (class 0): images (n, 1, s, s), labels (n, s, s)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        cy, cx = torch.randint(6, size - 6, (2,), generator=g)
        r = 3 + torch.randint(0, 3, (1,), generator=g)
        labels[i] = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).long()
    images = labels[:, None].float() + 0.3 * torch.randn(n, 1, size, size, generator=g)
    return images, labels


def test_a_few_steps_reduce_the_loss():
    net = _seeded(UNetConfig(n_classes=2, width=4, depth=3)).train()
    x, y = _disks(8, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ReactomoError, match=r"Unknown device 'cdua'.*did you mean 'cuda'"):
        select_device("cdua")
    if not torch.cuda.is_available():
        with pytest.raises(ReactomoError, match=r"no CUDA GPU is available"):
            select_device("cuda")
    assert device_summary(torch.device("cpu")).startswith("CPU (")


# -- bundles -------------------------------------------------------------------------------------------------
CARD_EXTRAS = dict(
    normalisation={"method": "fixed", "low": 0.1, "high": 0.9},
    training={"epochs": 3, "lr": 0.01},
    provenance={"scan": "demo/step_02.tif"},
    metrics={"dice_mean": 0.91, "dice": {"gypsum": 0.95}},
    seed=7,
)


def _save(folder, net=None, *, config=TINY, phases=DEFAULT_PHASES, **kw):
    net = net if net is not None else _seeded(config)
    return save_bundle(folder, net, config=config, phases=phases, **{**CARD_EXTRAS, **kw})


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_save_load_round_trip_identical_predictions(tmp_path, norm):
    cfg = UNetConfig(n_classes=4, width=4, depth=3, norm=norm, dropout=0.2)
    net = _seeded(cfg).train()
    with torch.no_grad():
        net(torch.rand(4, 1, 16, 16))  # move the BatchNorm running statistics off their defaults
    net.eval()
    folder = _save(tmp_path / "models" / "demo", net, config=cfg)
    loaded, card = load_bundle(folder, phases=DEFAULT_PHASES)
    assert not loaded.training
    x = torch.rand(2, 1, 19, 21)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    assert card["format"] == "reactomo.unet" and card["format_version"] == 1
    assert card["class_codes"] == list(DEFAULT_PHASES.codes)
    assert UNetConfig.from_dict(card["unet"]) == cfg
    assert PhaseTable.from_dict(card["phases"]) == DEFAULT_PHASES
    assert card["normalisation"] == CARD_EXTRAS["normalisation"] and card["metrics"] == CARD_EXTRAS["metrics"]
    assert set(card["versions"]) >= {"torch", "numpy", "reactomo"} and card["seed"] == 7
    # the processor too: another instruction set rounds the same convolutions differently
    assert card["versions"]["cpu"] and card["versions"]["cpu_capability"] == str(torch.backends.cpu.get_cpu_capability())
    assert sorted(os.listdir(folder)) == [CARD, WEIGHTS]
    assert sorted(os.listdir(folder.parent)) == ["demo"]  # no temporary folder left behind


def test_existing_bundle_not_overwritten_unless_asked(tmp_path):
    folder = _save(tmp_path / "m")
    with pytest.raises(ReactomoError, match=r"already exists.*overwrite=True"):
        _save(folder, seed=99)
    _save(folder, seed=99, overwrite=True)
    assert load_bundle(folder)[1]["seed"] == 99
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_save_refuses_mismatches(tmp_path):
    with pytest.raises(ReactomoError, match=r"3 output classes but the phase table has 4 phases"):
        _save(tmp_path / "a", config=UNetConfig(n_classes=3, width=4, depth=3))
    with pytest.raises(ReactomoError, match=r"do not fit the U-Net config"):
        _save(tmp_path / "b", _seeded(UNetConfig(n_classes=4, width=8, depth=3)))
    with pytest.raises(ReactomoError, match=r"cannot be written as JSON"):
        _save(tmp_path / "c", metrics={"dice": float("nan")})
    assert not any(tmp_path.iterdir())


def test_tampered_weights_refused(tmp_path):
    folder = _save(tmp_path / "m")
    raw = bytearray((folder / WEIGHTS).read_bytes())
    raw[-5] ^= 0x01
    (folder / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(ReactomoError, match=r"do not match their checksum.*changed or damaged"):
        load_bundle(folder)


def test_wrong_phase_table_refused(tmp_path):
    folder = _save(tmp_path / "m")
    three = PhaseTable(DEFAULT_PHASES.phases[:3])
    with pytest.raises(ReactomoError, match=r"trained for phases \[1 gypsum, 2 bassanite, 3 pore, 4 celestite\] but the project has \[1 gypsum, 2 bassanite, 3 pore\]"):
        load_bundle(folder, phases=three)
    renamed = PhaseTable(DEFAULT_PHASES.phases[:3] + (Phase(4, "anhydrite"),))
    with pytest.raises(ReactomoError, match=r"but the project has"):
        load_bundle(folder, phases=renamed)
    # A colour change alone does not need a new model.
    recoloured = PhaseTable(DEFAULT_PHASES.phases[:3] + (Phase(4, "Celestite", colour="#000000"),))
    load_bundle(folder, phases=recoloured)


def _rewrite_card(folder, **changes):
    card = json.loads((folder / CARD).read_text())
    card.update(changes)
    (folder / CARD).write_text(json.dumps(card))


def test_weights_not_fitting_config_refused(tmp_path):
    # Weights of a wider network with a consistent checksum, under the tiny config: caught by names/shapes.
    folder = _save(tmp_path / "m")
    wide = _seeded(UNetConfig(n_classes=4, width=8, depth=3))
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, str(folder / WEIGHTS))
    _rewrite_card(folder, weights_sha256=hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest())
    with pytest.raises(ReactomoError, match=r"do not fit the U-Net config.*wrong shape"):
        load_bundle(folder)
    # And a card whose config says depth 4 for depth-3 weights.
    folder2 = _save(tmp_path / "n")
    _rewrite_card(folder2, unet={**TINY.to_dict(), "depth": 4})
    with pytest.raises(ReactomoError, match=r"do not fit the U-Net config.*missing"):
        load_bundle(folder2)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(format_version=3), r"format_version 3, newer than the 2 this Reactomo reads; update Reactomo"),
        (dict(format="other.model"), r"format 'other.model', not 'reactomo.unet'"),
        (dict(format_version="1"), r"format_version '1'"),
        (dict(class_codes=[4, 3, 2, 1]), r"inconsistent"),
    ],
)
def test_bad_cards_refused(tmp_path, changes, match):
    folder = _save(tmp_path / "m")
    _rewrite_card(folder, **changes)
    with pytest.raises(ReactomoError, match=match):
        load_bundle(folder)


def test_missing_or_unreadable_card_refused(tmp_path):
    folder = _save(tmp_path / "m")
    (folder / CARD).write_text("{not json")
    with pytest.raises(ReactomoError, match=r"cannot be read"):
        load_bundle(folder)
    (folder / CARD).unlink()
    with pytest.raises(ReactomoError, match=r"is not a model bundle: it has no card.json"):
        load_bundle(folder)


def test_list_rename_delete(tmp_path):
    root = tmp_path / "models"
    assert list_bundles(root) == []
    _save(root / "beta")
    _save(root / "alpha", phases=PhaseTable(DEFAULT_PHASES.phases[:2]), config=UNetConfig(n_classes=2, width=4, depth=3))
    (root / "notes").mkdir()  # a folder without a card is not a model
    (root / ".alpha.x.tmp").mkdir()  # nor is a half-written one
    summaries = list_bundles(root)
    assert [s.name for s in summaries] == ["alpha", "beta"]
    assert summaries[0].n_classes == 2 and summaries[0].phases == ("gypsum", "bassanite")
    assert summaries[1].metrics["dice_mean"] == 0.91 and summaries[1].size_bytes > 0 and summaries[1].created

    new = rename_bundle(root, "beta", "gamma.v2")
    assert new == root / "gamma.v2" and load_bundle(new)[1]["name"] == "gamma.v2"
    with pytest.raises(ReactomoError, match=r"'alpha' already exists"):
        rename_bundle(root, "gamma.v2", "alpha")
    with pytest.raises(ReactomoError, match=r"no model called 'beta'.*\['alpha', 'gamma.v2'\]"):
        rename_bundle(root, "beta", "delta")

    gone = delete_bundle(root, "alpha")
    assert gone.parent == root / ".trash" and (gone / WEIGHTS).is_file()
    assert [s.name for s in list_bundles(root)] == ["gamma.v2"]
    _save(root / "alpha")
    assert delete_bundle(root, "alpha") != gone  # a second delete of the same name does not collide
    with pytest.raises(ReactomoError, match=r"no model called 'alpha'"):
        delete_bundle(root, "alpha")


@pytest.mark.parametrize("name", ["", "..", ".", "../x", "a/b", ".hidden", "sp ace", "a..b", "x" * 101, "é", "a\\b"])
def test_bad_names_refused(tmp_path, name):
    with pytest.raises(ReactomoError, match=r"is not allowed"):
        check_bundle_name(name)
    with pytest.raises(ReactomoError, match=r"is not allowed"):
        rename_bundle(tmp_path, name, "ok")
    with pytest.raises(ReactomoError, match=r"is not allowed"):
        delete_bundle(tmp_path, name)


def test_bad_name_refused_on_save(tmp_path):
    with pytest.raises(ReactomoError, match=r"is not allowed"):
        _save(tmp_path / "bad name")
    assert check_bundle_name("demo-unet_v2.1") == "demo-unet_v2.1"
