"""Figures of a U-Net training run: loss curves and per-phase validation Dice."""

from __future__ import annotations

from core.charts import training_curves, validation_dice_curves
from core.phases import PhaseTable

HISTORY = [
    {"epoch": 1, "train_loss": 1.2, "val_loss": 1.1, "val_dice": {"pore": 0.4, "gypsum": 0.5, "bassanite": None}},
    {"epoch": 2, "train_loss": 0.8, "val_loss": 0.7, "val_dice": {"pore": 0.6, "gypsum": 0.7, "bassanite": None}},
    {"epoch": 3, "train_loss": 0.6, "val_loss": 0.75, "val_dice": {"pore": 0.7, "gypsum": 0.72, "bassanite": None}},
]


def _phases():
    return PhaseTable.from_dict([
        {"code": 1, "name": "pore", "colour": "#1b2631"},
        {"code": 2, "name": "gypsum", "colour": "#4c78a8"},
        {"code": 3, "name": "bassanite", "colour": "#f58518"},
    ])


def test_training_curves_have_both_losses_axes_and_best_epoch():
    fig = training_curves(HISTORY)
    names = [t.name for t in fig.data]
    assert names == ["training loss", "validation loss"]
    assert list(fig.data[1].y) == [1.1, 0.7, 0.75] and list(fig.data[0].x) == [1, 2, 3]
    assert fig.layout.xaxis.title.text == "epoch" and "loss" in fig.layout.yaxis.title.text
    assert any("best epoch 2" in (a.text or "") for a in fig.layout.annotations)


def test_training_curves_of_an_empty_or_nan_history_do_not_fail():
    assert len(training_curves([]).data) == 2
    fig = training_curves([{"epoch": 1, "train_loss": 1.0, "val_loss": float("nan")}])
    assert list(fig.data[1].y) == [None]


def test_dice_curves_one_line_per_phase_in_its_colour():
    phases = _phases()
    fig = validation_dice_curves(HISTORY, phases)
    assert [t.name for t in fig.data] == ["pore", "gypsum", "bassanite (not in validation)"]
    assert [t.line.color for t in fig.data] == [p.colour for p in phases]
    assert list(fig.data[1].y) == [0.5, 0.7, 0.72]
    assert "Dice" in fig.layout.yaxis.title.text and fig.layout.xaxis.title.text == "epoch"
    assert tuple(fig.layout.yaxis.range) == (0, 1.02)
