"""core.network.train.quality_warning: when a model's best validation Dice is too poor to call training a success."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ReactomoError
from core.network.train import MIN_MEAN_DICE, MIN_PHASE_DICE, quality_warning

GOOD = {"gypsum": 0.979, "bassanite": 0.923, "pore": 0.924, "celestite": 0.827}  # the study's best model


def test_the_study_model_is_fine():
    assert (MIN_PHASE_DICE, MIN_MEAN_DICE) == (0.5, 0.8)
    assert quality_warning(GOOD) is None


def test_a_phase_under_half_is_named_with_its_value():
    w = quality_warning({**GOOD, "celestite": 0.41})  # mean 0.807: only the phase is poor
    assert w == ("The validation Dice is poor: celestite 0.41 is under 0.5; brush more celestite, train longer "
                 "or check the ground truth before using this model.")


def test_several_weak_phases_and_a_poor_mean():
    w = quality_warning({"gypsum": 0.9, "bassanite": 0.2, "pore": 0.45, "celestite": 0.0})
    assert "celestite 0.00, bassanite 0.20 and pore 0.45 are under 0.5" in w  # weakest first
    assert "the mean 0.38 is under 0.8" in w and "gypsum" not in w.split(";")[0]


def test_a_poor_mean_alone_names_the_lowest_phase():
    w = quality_warning({"gypsum": 0.79, "bassanite": 0.7, "pore": 0.85})
    assert w.startswith("The validation Dice is poor: the mean 0.78 is under 0.8 (lowest: bassanite 0.70)")


@pytest.mark.parametrize("value, poor", [(0.5, False), (0.4999, True)])
def test_the_phase_bound_is_strict_and_values_are_rounded_down(value, poor):
    dice = {"gypsum": 1.0, "pore": 1.0, "celestite": value}  # mean >= 0.83
    w = quality_warning(dice)
    assert (w is not None) is poor
    if poor:
        assert "celestite 0.49 is under 0.5" in w  # never "0.50 is under 0.5"


def test_the_mean_bound():
    assert quality_warning({"a": 0.8, "b": 0.8}) is None
    assert quality_warning({"a": 0.8, "b": 0.7999}) is not None
    assert quality_warning({"a": 0.6, "b": 0.6}, min_mean=0.5) is None
    assert quality_warning({"a": 0.95, "b": 0.6}, min_phase=0.7) is not None


def test_phases_absent_from_validation_are_ignored():
    assert quality_warning({**GOOD, "celestite": None}) is None
    assert quality_warning({**GOOD, "celestite": float("nan")}) is None
    assert quality_warning({"gypsum": 0.95, "celestite": None, "pore": 0.3}) is not None
    for empty in ({}, {"gypsum": None, "pore": None}, {"pore": float("nan")}):
        w = quality_warning(empty)
        assert w is not None and w.startswith("No phase was in the validation patches"), empty


def test_numpy_values_are_numbers():
    assert quality_warning({k: np.float32(v) for k, v in GOOD.items()}) is None


@pytest.mark.parametrize("bad, match", [([0.9, 0.8], "map phase names"), ({"pore": "high"}, "number or None"),
                                        ({"pore": True}, "number or None")])
def test_bad_input_is_one_sentence(bad, match):
    with pytest.raises(ReactomoError, match=match):
        quality_warning(bad)
    with pytest.raises(ReactomoError, match="from 0 to 1"):
        quality_warning(GOOD, min_mean=2)


def test_cli_train_warns_on_stderr_and_still_exits_zero(cli_files, capsys):
    """A two-epoch, four-channel U-Net is poor: saved all the same, exit 0, the sentence on stderr."""
    from core.network.bundle import read_card
    from core.cli import main

    tmp_path = cli_files[0]
    out = tmp_path / "models" / "weak"
    rc = main(["train", "--scan", str(tmp_path / "scan.tif"), "--ground-truth", str(tmp_path / "gt.tif"), "--out", str(out),
               "--patch", "24", "--epochs", "1", "--width", "2", "--depth", "2", "--no-augment"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "Model saved to" in text
    want = quality_warning(read_card(out)["metrics"]["val_dice"])
    assert want is not None  # this run is poor by construction
    assert f"warning: {want}\n" in err and "Model saved" not in err
