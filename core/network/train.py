"""Training a 2D U-Net on labelled slices: patches, augmentation, the loop, early stopping, checkpoints.

The trainer is handed its network, data and callbacks (``on_epoch``, ``on_progress``, ``should_stop``); it never
talks to a UI. Labels are phase *codes* (``0`` = unlabelled, ignored by the loss); output class ``i`` of the
network is ``phases.codes[i]`` as in :mod:`core.network.bundle`.

Reproducibility: every random choice (split, patch order, augmentation) comes from generators seeded with
``config.seed`` and the epoch number, and deterministic torch algorithms are switched on during training, so the
same seed, data, initial weights and device give the same weights (also after a resume from a checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from scipy.ndimage import affine_transform
from safetensors.torch import load_file, save_file

from core.atomic import atomic_write_json
from core.errors import ReactomoError
from core.phases import PhaseTable
from core.network.unet import _did_you_mean, device_summary, select_device

__all__ = [
    "TrainConfig",
    "TrainResult",
    "make_patches",
    "augment_batch",
    "split_slices",
    "held_out",
    "estimate_training_memory",
    "check_training_memory",
    "memory_budget_bytes",
    "train_unet",
    "train_ensemble",
    "check_ensemble",
    "member_records",
    "EnsembleResult",
    "ENSEMBLE",
    "TRANSFORMS",
    "quality_warning",
    "dice_text",
    "MIN_PHASE_DICE",
    "MIN_MEAN_DICE",
]

log = logging.getLogger(__name__)

LOSSES = ("ce", "dice", "ce+dice")
OPTIMISERS = ("adam", "adamw", "sgd")
WEIGHTS = ("none", "balanced", "sqrt")
TRANSFORMS = ("flip", "rot90", "shear", "scale", "intensity")
# the default: geometry only. Measured on the demo (bench/bench_unet.py settings, full-truth ceiling, mean Dice over
# 10 steps): geometry 0.828; + intensity gain ±2 % / offset ±0.005 0.825; + gain ±5 % / offset ±0.02 0.803 -- an
# offset jitter near the gypsum-bassanite gap (~0.024 normalised) erases the cue that separates them.
GEOMETRY = ("flip", "rot90", "shear", "scale")
MAX_EPOCHS = 100
#: The weights kept are the average of this many epochs of lowest validation loss (TrainConfig.average_epochs; the
#: default since 2026-12-07, chosen on the accuracy family's tuning half with two seeds against the truth:
#: README, "Ablation on the tuning half", bench/results/weight-averaging-rules.txt).
AVERAGE_EPOCHS = 5
#: Epochs without a lower validation loss after which the learning rate is multiplied by LR_DROP_FACTOR
#: (TrainConfig.lr_drop_patience; 0 = a constant learning rate, the default: a drop after 3 such epochs was tried on the
#: accuracy family's tuning half, README "Ablation on the tuning half", bench/results/lr-drop-rules.txt).
LR_DROP_PATIENCE = 0
LR_DROP_FACTOR = 0.3
#: bfloat16 arithmetic for training on a CPU (TrainConfig.cpu_amp): None = where the CPU computes it natively (AVX-512
#: BF16 or AMX), False = float32. None is the default since 2026-12-07: on the accuracy family's tuning half, with two
#: seeds, it kept the scores against the truth (worst step -0.0008, worst phase -0.0007, extent error +0.18 points,
#: within the margins written first) and halved the training time (README, "Ablation on the tuning half",
#: bench/results/fast-training-rules.txt).
CPU_AMP: bool | None = None
#: Networks trained apart (seeds seed, seed + 1, ...; one validation split) whose class probabilities are averaged
#: (train_ensemble, core.network.unet.UNetEnsemble; `run --ensemble N`); 1 = a single network.
ENSEMBLE = 1
MAX_ENSEMBLE = 4
#: Share of the augmented training patches that get thin laths painted (TrainConfig.thin_p) in `run`, `train` and the
#: Train page when augmentation is on: 0.5 since 2026-12-08, chosen on the accuracy family's tuning half with seeds 1
#: and 2 by the rule written before they ran (bench/results/thin-examples-extent-rules.txt): the reaction extent's error
#: lower on 9 of 12 runs (mean -0.62 points), the Dice scores not lower (worst step -0.0001, worst phase -0.0010).
#: TrainConfig's own default stays 0 (a library config paints nothing unless asked).
THIN_EXAMPLES = 0.5
#: Soft labels at the reactant/product boundary for `run` (TrainConfig.soft_labels): the band of the forest's split
#: within which a pixel's label is drawn every epoch; 0 = off (hard labels).
SOFT_LABELS = 0.0
IGNORE = -1


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (their meaning in the study's words).

    Attributes
    ----------
    patch_size : int
        Side of the square training patches, pixels (8-1024).
    stride_ratio : float
        Step between patches as a fraction of the patch size: 1.0 = side by side, 0.5 = 50 % overlap (0.1-1).
    batch_size : int
    max_epochs : int
        At most 100.
    patience : int
        Stop when the validation loss has not improved for this many epochs (0 = never stop early).
    val_fraction : float
        Share of the labelled slices held out for validation (by slice when there are at least 2 slices, else a
        strip of the one slice); validation pixels never appear in a training patch. 0.05-0.5.
    augment : bool
    transforms : tuple of str
        Among ``"flip"``, ``"rot90"``, ``"shear"``, ``"scale"`` (geometry, applied to image and labels alike) and
        ``"intensity"`` (a random gain and offset of the normalised grey values, image only: it teaches the network
        the residual grey-value drift between time steps that the normalisation does not remove; off by default:
        on the demo it did not help, and a jitter as large as the gypsum-bassanite contrast hurts).
    augment_factor : int
        Each epoch sees every training patch this many times (1-8), the first time as is, then augmented.
    max_shear, max_scale : float
        Largest shear (tangent) and relative scale change of the affine augmentation.
    max_gain, max_offset : float
        Largest relative gain change and offset (in normalised units, where the bright tail is ~1) of the
        intensity augmentation.
    loss : {"ce", "dice", "ce+dice"}
    class_weights : {"none", "balanced", "sqrt"}
        ``"balanced"`` weighs the cross-entropy by inverse phase frequency in the training pixels (rare phases such
        as celestite count more), clipped to 0.1-10x the mean; ``"sqrt"`` (the default since 2026-12-06, chosen on the
        accuracy benchmark's tuning half: README, "Ablation on the tuning half") by its square root.
    edge_px : int
        The ground truth's labels within this many pixels of a boundary between two phases are left out of the
        training targets and the validation (0 = train on every label; see :func:`without_edges`).
    edge_codes : tuple of int
        Only boundaries that touch one of these phase codes count as edges (empty: every boundary).
    thin_p : float
        Share of the augmented patches (0-1) that get thin structures painted into them (see :func:`paint_thin`):
        laths of one phase of ``thin_pair`` inside the other's interiors, with the contrast and edge blur measured
        on the training slices, so that the network sees thin objects whose labels are right by construction
        (scribbles, and the forest taught by them, never show one). 0 = off.
    thin_pair : tuple of two int
        The two phase codes for ``thin_p``; empty (the default): the phase table's reactant and product.
    soft_labels : float
        Soft labels at the boundary of the pair ``thin_pair`` (the reactant and the product): with the forest's split
        of each pixel between the two (``soft`` of :func:`train_unet`), every epoch each training pixel labelled one
        of the two whose split ``q`` (the product's share) lies between ``soft_labels`` and ``1 - soft_labels`` is
        labelled product with probability ``q``, reactant otherwise: in expectation the cross-entropy against the
        forest's split as a soft target, where a hard label would teach its guess as certain (:func:`draw_soft`).
        The validation keeps the hard labels. 0 = off (0-0.5).
    time_channels : int
        The last this many input channels are the same slice at other time steps (a network that reads the steps
        around the scan, ``run --time-context``); 0 = none.
    average_epochs : int
        When 2 or more: the weights of this many epochs with the lowest validation loss are averaged into the model
        that is kept (weight averaging, as in stochastic weight averaging: a point in the middle of the low region the
        training visited rather than its single lowest epoch), the batch-norm statistics measured again on the training
        patches, and the average validated like an epoch (:attr:`TrainResult.averaged`). 0 or 1: the best epoch.
        Default :data:`AVERAGE_EPOCHS`.
    lr_drop_patience : int
        When the validation loss has not improved for this many epochs (counted from its last improvement or the last
        drop), the learning rate is multiplied by ``lr_drop_factor`` (as torch's ReduceLROnPlateau); 0 = a constant
        learning rate. Early stopping counts the same epochs, so choose it below ``patience``. Default
        :data:`LR_DROP_PATIENCE`.
    lr_drop_factor : float
        The factor of each drop (0.01-1). Default :data:`LR_DROP_FACTOR`.
    time_dropout : float
        In the augmented copies, each of those channels is replaced by the slice's own channel with this probability:
        what the network reads where a step is missing (a series' first and last step, a scan not yet arrived).
    optimizer : {"adam", "adamw", "sgd"}
    lr, weight_decay : float
    min_delta : float
        Improvement of the validation loss that counts as one.
    seed : int
    amp : bool
        Mixed precision (float16) on CUDA.
    cpu_amp : bool or None
        bfloat16 arithmetic on a CPU (about 2x faster per step on a CPU that computes it natively, with channels-last
        convolutions; ``bench/bench_unet.py --step-timing``); None = where native (:func:`core.network.inference.native_bfloat16`), False = float32. The
        precision used is in :attr:`TrainResult.precision`. Default :data:`CPU_AMP`.
    split_seed : int or None
        Seed of the choice of validation slices; None = ``seed``. The networks of an ensemble share one split (each
        with its own ``seed`` for the initial weights, patch order and augmentation), so slices held out from one are
        held out from all, and choices made after training are scored where none of them trained.
    """

    patch_size: int = 64
    stride_ratio: float = 1.0
    batch_size: int = 16
    max_epochs: int = 50
    patience: int = 10
    val_fraction: float = 0.2
    augment: bool = True
    transforms: tuple[str, ...] = GEOMETRY
    augment_factor: int = 2
    max_shear: float = 0.15
    max_scale: float = 0.15
    max_gain: float = 0.02
    max_offset: float = 0.005
    loss: Literal["ce", "dice", "ce+dice"] = "ce+dice"
    class_weights: Literal["none", "balanced", "sqrt"] = "sqrt"
    edge_px: int = 0
    edge_codes: tuple[int, ...] = ()
    thin_p: float = 0.0
    thin_pair: tuple[int, ...] = ()
    soft_labels: float = 0.0
    time_channels: int = 0
    time_dropout: float = 0.0
    average_epochs: int = AVERAGE_EPOCHS
    lr_drop_patience: int = LR_DROP_PATIENCE
    lr_drop_factor: float = LR_DROP_FACTOR
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    min_delta: float = 0.0
    seed: int = 0
    amp: bool = True
    cpu_amp: bool | None = CPU_AMP
    split_seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", tuple(self.transforms))
        object.__setattr__(self, "edge_codes", tuple(self.edge_codes))
        object.__setattr__(self, "thin_pair", tuple(self.thin_pair))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ReactomoError` naming the bad value and the accepted range."""

        def whole(name: str, lo: int, hi: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ReactomoError(f"{name} must be a whole number from {lo} to {hi}; got {v!r}.")

        def real(name: str, lo: float, hi: float) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not (lo <= float(v) <= hi):
                raise ReactomoError(f"{name} must be a number from {lo} to {hi}; got {v!r}.")

        whole("patch_size", 8, 1024)
        real("stride_ratio", 0.1, 1.0)
        whole("batch_size", 1, 1024)
        whole("max_epochs", 1, MAX_EPOCHS)
        whole("patience", 0, MAX_EPOCHS)
        real("val_fraction", 0.05, 0.5)
        whole("augment_factor", 1, 8)
        real("max_shear", 0.0, 0.5)
        real("max_scale", 0.0, 0.5)
        real("max_gain", 0.0, 0.5)
        real("max_offset", 0.0, 0.5)
        real("lr", 1e-6, 1.0)
        real("weight_decay", 0.0, 1.0)
        real("min_delta", 0.0, 1.0)
        whole("seed", 0, 2**31 - 1)
        if self.split_seed is not None:
            whole("split_seed", 0, 2**31 - 1)
        whole("edge_px", 0, 8)
        real("thin_p", 0.0, 1.0)
        real("soft_labels", 0.0, 0.5)
        whole("time_channels", 0, 6)
        whole("average_epochs", 0, 20)
        whole("lr_drop_patience", 0, MAX_EPOCHS)
        real("lr_drop_factor", 0.01, 1.0)
        real("time_dropout", 0.0, 1.0)
        if self.cpu_amp is not None and not isinstance(self.cpu_amp, bool):
            raise ReactomoError(f"cpu_amp must be true, false or none (where native); got {self.cpu_amp!r}.")
        if self.thin_pair and (len(self.thin_pair) != 2 or len(set(self.thin_pair)) != 2 or not all(
                isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 1 <= c <= 255 for c in self.thin_pair)):
            raise ReactomoError(f"thin_pair must be two different phase codes (reactant, product) or empty; got "
                                f"{list(self.thin_pair)}.")
        if self.thin_p and (not self.augment or self.augment_factor < 2):
            raise ReactomoError("Thin laths are painted into the augmented copies of the patches; switch augmentation "
                                "on with a factor of 2 or more, or paint no thin laths.")
        for c in self.edge_codes:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 1 <= c <= 255:
                raise ReactomoError(f"edge_codes must be phase codes from 1 to 255; got {c!r}.")
        for name, value, options in (("loss", self.loss, LOSSES), ("class_weights", self.class_weights, WEIGHTS),
                                     ("optimizer", self.optimizer, OPTIMISERS)):
            if value not in options:
                raise ReactomoError(f"Unknown {name} {value!r}; use one of {list(options)}{_did_you_mean(value, options)}.")
        for t in self.transforms:
            if t not in TRANSFORMS:
                raise ReactomoError(f"Unknown augmentation {t!r}; use some of {list(TRANSFORMS)}{_did_you_mean(t, TRANSFORMS)}.")

    @property
    def held_out_seed(self) -> int:
        """The seed of the validation split: ``split_seed``, else ``seed``."""
        return self.seed if self.split_seed is None else int(self.split_seed)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["transforms"] = list(self.transforms)
        d["edge_codes"] = [int(c) for c in self.edge_codes]
        d["thin_pair"] = [int(c) for c in self.thin_pair]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ReactomoError(f"Unknown training settings {sorted(unknown)}; known are {sorted(known)}.")
        return cls(**{k: (tuple(v) if k in ("transforms", "edge_codes", "thin_pair") else v) for k, v in d.items()})


@dataclass
class TrainResult:
    """What a training run gives back.

    Attributes
    ----------
    state_dict : dict of str to Tensor
        Weights of the best epoch (lowest validation loss), on the CPU; also loaded into the model.
    history : list of dict
        One dict per epoch: ``epoch`` (1-based), ``train_loss``, ``val_loss``, ``val_dice`` (phase name → Dice or
        None when the phase is absent from validation), ``seconds``, ``lr``.
    best_epoch : int
    stopped_early : bool
        Early stopping ended the run.
    cancelled : bool
        ``should_stop`` ended the run.
    seconds : float
        Wall time of this call.
    device : str
    averaged : dict or None
        With ``TrainConfig.average_epochs`` >= 2: ``epochs`` (those averaged), ``val_loss`` and ``val_dice`` of the
        averaged weights, and ``kept``: True when the model holds them, False (with a ``reason``) when they validated
        worse than the best epoch, whose weights are then kept; None without averaging (or when fewer than two epochs
        ran).
    thin : dict or None
        With ``TrainConfig.thin_p``: ``share``, ``codes``, ``painted`` and what the laths were made of (``contrast``
        in normalised grey, ``edge_sigma_px``) as measured on the training slices, or the ``reason`` none were
        painted; None when off.
    precision : str
        The arithmetic of the training: ``"float16"`` (CUDA), ``"bfloat16"`` (CPU, ``TrainConfig.cpu_amp``) or
        ``"float32"``.
    soft : dict or None
        With ``TrainConfig.soft_labels``: ``band``, ``codes`` (reactant, product), ``applied`` and ``pixels`` (training
        pixels whose label is drawn every epoch) with their ``share`` of the pair's training pixels, or the ``reason``
        none are; None when off.
    """

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    best_epoch: int
    stopped_early: bool
    cancelled: bool
    seconds: float
    device: str
    thin: dict[str, Any] | None = None
    averaged: dict[str, Any] | None = None
    precision: str = "float32"
    soft: dict[str, Any] | None = None

    @property
    def best(self) -> dict[str, Any]:
        return self.history[self.best_epoch - 1] if self.best_epoch else {}

    @property
    def kept(self) -> dict[str, Any]:
        """The validation of the weights kept: the averaged ones (``epochs``, ``val_loss``, ``val_dice``) or the best
        epoch's (no averaging, or an average that validated worse than the best epoch)."""
        return self.averaged if self.averaged and self.averaged.get("kept", True) else self.best

    @property
    def averaged_epochs(self) -> list[int]:
        """The epochs whose weights the model holds averaged (empty: the best epoch's weights)."""
        return list(self.averaged["epochs"]) if self.averaged and self.averaged.get("kept", True) else []


# ------------------------------------------------------------------------------------------------------- data
def _check_pairs(images: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``images`` ``(n, y, x)`` or ``(n, c, y, x)`` (c channels, e.g. neighbouring slices) and ``labels`` ``(n, y, x)``."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 2 and labels.ndim == 2:
        images, labels = images[None], labels[None]
    ok = labels.ndim == 3 and (
        (images.ndim == 3 and images.shape == labels.shape)
        or (images.ndim == 4 and images.shape[0] == labels.shape[0] and images.shape[2:] == labels.shape[1:])
    )
    if not ok:
        raise ReactomoError(f"Images {images.shape} and labels {labels.shape} must be (n, y, x) of the same shape, or "
                            "images (n, channels, y, x) with labels (n, y, x).")
    return images, labels


def _starts(n: int, patch: int, stride: int) -> list[int]:
    if n <= patch:
        return [0]
    s = list(range(0, n - patch + 1, stride))
    if s[-1] != n - patch:
        s.append(n - patch)  # the last patch ends at the border, so every pixel is covered
    return s


def make_patches(
    images: np.ndarray, labels: np.ndarray, *, patch_size: int, stride_ratio: float = 1.0, keep_empty: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Cut labelled slices into square patches.

    Parameters
    ----------
    images : ndarray, shape (n, y, x), float
        Normalised slices.
    labels : ndarray, shape (n, y, x), integer
        Phase codes, 0 = unlabelled.
    patch_size : int
        Patch side; slices smaller than this are padded (labels with 0).
    stride_ratio : float
        Step between patch origins as a fraction of ``patch_size`` (1.0 side by side, 0.5 half overlap); the last
        patch of a row/column is moved to end at the border.
    keep_empty : bool
        Keep patches without any labelled pixel (default: dropped).

    Returns
    -------
    x : ndarray, shape (m, 1, patch_size, patch_size), float32
    y : ndarray, shape (m, patch_size, patch_size), same dtype as ``labels``

    Examples
    --------
    >>> x, y = make_patches(np.zeros((2, 64, 64)), np.ones((2, 64, 64), np.uint8), patch_size=32, stride_ratio=0.5)
    >>> x.shape, y.shape
    ((18, 1, 32, 32), (18, 32, 32))
    """
    images, labels = _check_pairs(images, labels)
    if labels.dtype.kind not in "ui":
        raise ReactomoError(f"Labels must be integer phase codes; got {labels.dtype}.")
    p = int(patch_size)
    if p < 1 or not 0 < stride_ratio <= 1:
        raise ReactomoError(f"patch_size must be positive and stride_ratio in (0, 1]; got {patch_size}, {stride_ratio}.")
    stride = max(1, int(round(p * float(stride_ratio))))
    if images.ndim == 3:
        images = images[:, None]
    n, c, h, w = images.shape
    ph, pw = max(0, p - h), max(0, p - w)
    if ph or pw:
        images = np.pad(images, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect" if ph < h and pw < w else "edge")
        labels = np.pad(labels, ((0, 0), (0, ph), (0, pw)))
        h, w = h + ph, w + pw
    xs, ys = [], []
    for i in range(n):
        for y0 in _starts(h, p, stride):
            for x0 in _starts(w, p, stride):
                lab = labels[i, y0:y0 + p, x0:x0 + p]
                if keep_empty or lab.any():
                    xs.append(images[i, :, y0:y0 + p, x0:x0 + p])
                    ys.append(lab)
    if not xs:
        return np.zeros((0, c, p, p), np.float32), np.zeros((0, p, p), labels.dtype)
    return np.stack(xs).astype(np.float32), np.stack(ys)


SOFT_SCALE = 250  # a pixel's product share q is stored as round(250 q); 255 = no soft label (keeps its own)
NO_SOFT = 255


def soft_split(probabilities: np.ndarray, classes: Sequence[int], pair: Sequence[int],
               keep: np.ndarray | None = None) -> np.ndarray:
    """The product's share ``q = p_product / (p_reactant + p_product)`` of every pixel, as uint8 for :func:`train_unet`.

    ``probabilities``: float ``(n, C, y, x)`` (the forest's, planes in the order of ``classes``, phase codes);
    ``pair``: the (reactant, product) codes; ``keep``: bool ``(n, y, x)``, pixels whose label must stay as it is (the
    brushed ones). Returns uint8 ``(n, y, x)``: ``round(250 q)``, or :data:`NO_SOFT` where kept, where the pair has no
    probability, or where a class of the pair is not among ``classes``.
    """
    p = np.asarray(probabilities, dtype=np.float32)
    codes = [int(c) for c in classes]
    if p.ndim != 4 or p.shape[1] != len(codes):
        raise ReactomoError(f"The forest's probabilities must be (slices, {len(codes)} classes, y, x); got {p.shape}.")
    out = np.full((p.shape[0], *p.shape[2:]), NO_SOFT, dtype=np.uint8)
    if len(pair) != 2 or any(int(c) not in codes for c in pair):
        return out
    r, q = p[:, codes.index(int(pair[0]))], p[:, codes.index(int(pair[1]))]
    total = r + q
    ok = total > 1e-6
    out[ok] = np.rint(SOFT_SCALE * q[ok] / total[ok]).astype(np.uint8)
    if keep is not None:
        out[np.asarray(keep, dtype=bool)] = NO_SOFT
    return out


def draw_soft(y: np.ndarray, soft: np.ndarray, *, band: float, pair: tuple[int, int],
              rng: np.random.Generator) -> np.ndarray:
    """Class indices ``y`` with the pair's uncertain pixels drawn from the forest's split (a copy; ``y`` untouched).

    A pixel of class ``pair[0]`` or ``pair[1]`` (class indices) whose ``soft`` share ``q`` (:func:`soft_split`) lies in
    ``[band, 1 - band]`` becomes ``pair[1]`` with probability ``q``, else ``pair[0]``; every other pixel keeps its class.

    >>> y = np.zeros((1, 1, 4), np.int64); s = np.array([[[0, 125, 250, 255]]], np.uint8)
    >>> draw_soft(y, s, band=0.2, pair=(0, 1), rng=np.random.default_rng(0))[0, 0, [0, 2, 3]].tolist()
    [0, 0, 0]
    """
    ri, pi = int(pair[0]), int(pair[1])
    lo, hi = band * SOFT_SCALE, (1.0 - band) * SOFT_SCALE
    free = (soft != NO_SOFT) & (soft >= lo) & (soft <= hi) & ((y == ri) | (y == pi))
    out = y.copy()
    u = rng.random(int(free.sum()), dtype=np.float32) * SOFT_SCALE
    out[free] = np.where(u < soft[free], pi, ri)
    return out


def _patches_like(labels: np.ndarray, extra: np.ndarray, *, patch_size: int, stride_ratio: float, fill: int) -> np.ndarray:
    """``extra`` (same shape as ``labels``) cut into the patches :func:`make_patches` keeps for ``labels``."""
    p = int(patch_size)
    stride = max(1, int(round(p * float(stride_ratio))))
    n, h, w = labels.shape
    ph, pw = max(0, p - h), max(0, p - w)
    if ph or pw:
        labels = np.pad(labels, ((0, 0), (0, ph), (0, pw)))
        extra = np.pad(extra, ((0, 0), (0, ph), (0, pw)), constant_values=fill)
        h, w = h + ph, w + pw
    out = [extra[i, y0:y0 + p, x0:x0 + p] for i in range(n) for y0 in _starts(h, p, stride)
           for x0 in _starts(w, p, stride) if labels[i, y0:y0 + p, x0:x0 + p].any()]
    return np.stack(out) if out else np.zeros((0, p, p), extra.dtype)


def augment_batch(
    x: np.ndarray,
    y: np.ndarray,
    *,
    rng: np.random.Generator,
    transforms: tuple[str, ...] = GEOMETRY,
    max_shear: float = 0.15,
    max_scale: float = 0.15,
    max_gain: float = 0.02,
    max_offset: float = 0.005,
    thin: ThinExamples | None = None,
    time_channels: int = 0,
    time_dropout: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly flip, rotate by 90°, shear and scale every patch, image and labels alike, and jitter the image's
    gain and offset (new arrays).

    Parameters
    ----------
    x : ndarray, shape (m, c, p, p), float
    y : ndarray, shape (m, p, p), integer labels
    rng : numpy.random.Generator
    transforms : tuple of str
        Among ``"flip"``, ``"rot90"``, ``"shear"``, ``"scale"``, ``"intensity"``.
    max_shear, max_scale : float
    max_gain, max_offset : float
        ``"intensity"`` maps the image to ``x * g + o`` with ``g`` uniform in ``1 ± max_gain`` and ``o`` uniform in
        ``± max_offset`` (one draw per patch); labels are unchanged.
    thin : ThinExamples, optional
        Paint thin structures into a share of the patches first (:func:`paint_thin`; labels are class indices).
    time_channels, time_dropout :
        The last ``time_channels`` channels are other time steps' slices; each is replaced by the slice's own
        (centre) channel with probability ``time_dropout`` (a missing step).

    Returns
    -------
    x, y : ndarrays of the input shapes and dtypes
        Images are resampled linearly, labels with nearest neighbour, so labels keep their codes; the border is
        mirrored in both.
    """
    if x.ndim != 4 or y.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[1:]:
        raise ReactomoError(f"augment_batch needs x (m, c, p, p) and y (m, p, p); got {x.shape} and {y.shape}.")
    xo, yo = np.array(x, copy=True), np.array(y, copy=True)
    affine = any(t in transforms for t in ("shear", "scale"))
    for i in range(len(xo)):
        xi, yi = xo[i], yo[i]
        if thin is not None and rng.random() < thin.p:
            xi, yi = paint_thin(xi, yi, thin, rng=rng)
        if "flip" in transforms and rng.random() < 0.5:
            xi, yi = xi[..., ::-1], yi[..., ::-1]
        if "rot90" in transforms:
            k = int(rng.integers(4))
            xi, yi = np.rot90(xi, k, axes=(-2, -1)), np.rot90(yi, k, axes=(-2, -1))
        if affine:
            m = np.eye(2)
            if "scale" in transforms:
                m = m @ np.diag(1.0 + rng.uniform(-max_scale, max_scale, 2))
            if "shear" in transforms:
                s = rng.uniform(-max_shear, max_shear)
                m = m @ (np.array([[1.0, s], [0.0, 1.0]]) if rng.random() < 0.5 else np.array([[1.0, 0.0], [s, 1.0]]))
            c = (np.array(yi.shape) - 1) / 2.0
            offset = c - m @ c
            xi = np.stack([affine_transform(ch, m, offset=offset, order=1, mode="mirror") for ch in xi])
            yi = affine_transform(np.ascontiguousarray(yi), m, offset=offset, order=0, mode="mirror")
        if "intensity" in transforms:
            g = 1.0 + rng.uniform(-max_gain, max_gain)
            o = rng.uniform(-max_offset, max_offset)
            xi = xi * np.float32(g) + np.float32(o)
        if time_channels and time_dropout:
            own = (xi.shape[0] - time_channels) // 2
            gone = rng.random(time_channels) < time_dropout
            if gone.any():
                xi = np.array(xi, copy=True)
                xi[xi.shape[0] - time_channels:][gone] = xi[own]
        xo[i], yo[i] = xi, yi
    return xo, yo


@dataclass(frozen=True)
class ThinExamples:
    """What :func:`paint_thin` needs, measured once on the training slices: the two phases (class indices), the
    second's grey minus the first's (normalised units), the edge blur (Gaussian σ, pixels) and the share of patches."""

    a: int
    b: int
    contrast: float
    sigma: float
    p: float


_S4 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def _lath(shape: tuple[int, int], cy: float, cx: float, theta: float, length: float, width: float) -> np.ndarray:
    """The pixels whose centre lies in a rectangle of ``length`` × ``width`` pixels centred at (cy, cx), its long
    side at angle ``theta``: a lath on the pixel grid, as labels are."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    u = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
    v = -(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)
    return (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)


def paint_thin(x: np.ndarray, y: np.ndarray, thin: ThinExamples, *, rng: np.random.Generator, margin: int | None = None,
               n_max: int = 3, widths: tuple[float, float] = (1.0, 3.0),
               lengths: tuple[float, float] = (6.0, 30.0)) -> tuple[np.ndarray, np.ndarray]:
    """Paint 1 to ``n_max`` thin laths of one phase of the pair into the interior of the other (new arrays).

    Why: scribbles stay inside phases, so the forest's labels of thin objects (young laths of the product, the last
    remnants of the reactant) are wrong at exactly the scale where the reaction starts and ends, and a network taught
    by them learns that. A lath painted here has a label that is right by construction: it is a set of pixels (as a
    label is), its image is the patch's own (real noise, real texture) plus the two phases' contrast on those pixels,
    blurred as the scan's edges are, and exactly those pixels get its phase. Only where the host phase is labelled
    ``margin`` pixels around the lath (default: 2, or 2 σ of the blur where that is more), so no painted lath's grey
    reaches another phase or an unlabelled pixel.

    Parameters
    ----------
    x : ndarray (c, p, p), float
        One patch (every channel is changed alike: the laths are plates that cross the neighbouring slices).
    y : ndarray (p, p), int
        Its class indices.
    thin : ThinExamples
    rng : numpy.random.Generator
    """
    host, new, step = (thin.a, thin.b, thin.contrast) if rng.random() < 0.5 else (thin.b, thin.a, -thin.contrast)
    if margin is None:
        margin = max(2, math.ceil(2.0 * thin.sigma))
    inside = ndi.binary_erosion(y == host, structure=_S4, iterations=margin + 1)
    if not inside.any():
        return x, y
    where = np.argwhere(inside)
    paint = np.zeros(y.shape, bool)
    for _ in range(int(rng.integers(1, n_max + 1))):
        cy, cx = where[rng.integers(len(where))]
        lath = _lath(y.shape, float(cy), float(cx), float(rng.uniform(0.0, math.pi)), float(rng.uniform(*lengths)),
                     float(rng.uniform(*widths)))
        if not lath.any() or not inside[lath].all() or paint[ndi.binary_dilation(lath, structure=_S4, iterations=margin)].any():
            continue
        paint |= lath
    if not paint.any():
        return x, y
    delta = ndi.gaussian_filter(paint.astype(np.float32), thin.sigma, mode="mirror") * np.float32(step)
    y = y.copy()
    y[paint] = new
    return (x + delta[None]).astype(x.dtype, copy=False), y


def _reaction_pair(phases: PhaseTable) -> tuple[int, ...]:
    """(reactant, product) codes of the phase table, or () when it does not name exactly one of each."""
    reactant, product = phases.by_role("reactant"), phases.by_role("product")
    return (reactant[0].code, product[0].code) if len(reactant) == 1 and len(product) == 1 else ()


def thin_examples(images: np.ndarray, labels: np.ndarray, pair: tuple[int, int], codes: tuple[int, ...], p: float, *,
                  inner: int = 2, min_pixels: int = 50) -> ThinExamples | None:
    """Measure what :func:`paint_thin` needs on the training slices, or None where a phase has too few interior
    pixels to know its grey value.

    The contrast is the median grey of ``pair[1]``'s interiors minus ``pair[0]``'s (eroded by ``inner`` pixels);
    None when it is within three standard errors of zero (the phases cannot be told apart by grey value).
    The blur is the width of the scan's edges: around every boundary between the two phases of the slices whose
    contrast is largest (of those with interiors), the grey value against the signed distance to the boundary is
    fitted by an error function; its σ (clipped to 0.3-2 pixels) is the edge blur the painted laths get.
    """
    from scipy.optimize import least_squares
    from scipy.special import ndtr

    centre = images[:, images.shape[1] // 2] if images.ndim == 4 else images
    level: dict[int, float] = {}
    spread: dict[int, float] = {}
    for code in codes:
        inside = np.stack([ndi.binary_erosion(lab == code, structure=_S4, iterations=inner) for lab in labels])
        if inside.sum() >= min_pixels:
            grey = centre[inside]
            level[code] = float(np.median(grey))
            # standard error of that median (1.25 σ / √n, σ from the median absolute deviation)
            spread[code] = float(1.25 * 1.4826 * np.median(np.abs(grey - level[code])) / math.sqrt(grey.size))
    if pair[0] not in level or pair[1] not in level:
        return None
    contrast = level[pair[1]] - level[pair[0]]
    if abs(contrast) <= 3.0 * spread.get(pair[0], 0.0) + 3.0 * spread.get(pair[1], 0.0):
        return None  # the two phases' grey values do not differ: a painted lath would be invisible, its label noise
    # the edge blur, from the pair of touching phases with the largest contrast (the noise matters least there)
    sigma = 1.0
    pairs = sorted(((c1, c2) for c1 in level for c2 in level if c1 < c2), key=lambda q: -abs(level[q[0]] - level[q[1]]))
    for a, b in pairs:
        ds, gs = [], []
        for img, lab in zip(centre, labels):
            A, B = lab == a, lab == b
            if not A.any() or not B.any():
                continue
            out_a, out_b = ndi.distance_transform_edt(~A), ndi.distance_transform_edt(~B)
            sd = np.where(A, 0.5 - ndi.distance_transform_edt(A), out_a - 0.5)
            near = (A & (out_b <= 6)) | (B & (out_a <= 6))
            ds.append(sd[near])
            gs.append(img[near].astype(np.float64))
        d = np.concatenate(ds) if ds else np.empty(0)
        if np.count_nonzero(np.abs(d) <= 1) < 200:  # too little of an edge between these two
            continue
        g = np.concatenate(gs)
        xs, ys = [], []
        for lo in np.arange(-6.0, 6.0, 0.5):
            m = (d >= lo) & (d < lo + 0.5)
            if m.sum() > 20:
                xs.append(float(d[m].mean()))
                ys.append(float(np.median(g[m])))
        if len(xs) < 6:
            continue
        xs_, ys_ = np.array(xs), np.array(ys)
        fit = least_squares(lambda q: q[0] + q[1] * ndtr((xs_ - q[2]) / max(abs(q[3]), 1e-3)) - ys_,
                            [ys_[0], ys_[-1] - ys_[0], 0.0, 1.0]).x
        sigma = float(np.clip(abs(fit[3]), 0.3, 2.0))
        break
    return ThinExamples(a=codes.index(pair[0]), b=codes.index(pair[1]), contrast=float(contrast), sigma=sigma, p=float(p))


def split_slices(n: int, *, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and validation slices (at least one of each; needs ``n >= 2``)."""
    if n < 2:
        raise ReactomoError(f"Splitting by slice needs at least 2 slices; got {n}.")
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    val = sorted(int(i) for i in np.random.default_rng([seed, 7]).choice(n, n_val, replace=False))
    return [i for i in range(n) if i not in val], val


def held_out(images: np.ndarray, labels: np.ndarray, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """The part of the training pairs that :func:`train_unet` kept for validation and never trained on.

    Same split as training (same ``val_fraction`` and ``seed``): whole slices when there are two or more, else the
    right-hand strip of columns. Choices made after training (the cleaning) are scored here, so that a network that
    memorised its training pixels does not make them look right.

    Returns
    -------
    (images, labels, description)
        The held-out images and labels, and a few words naming them (e.g. ``"2 held-out slices of 7"``); all
        of them, said so, when the held-out part labels no pixel.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    _, _, xv, yv, split = _split(images, labels, config)
    if not np.any(yv):  # nothing labelled was held out: the training pixels are all there is
        return images, labels, "the labelled slices (the held-out part labels no pixel)"
    if split["by"] == "slice":
        n = len(split["val"])
        return xv, yv, f"{n} held-out slice{'s' if n != 1 else ''} of {images.shape[0]}"
    a, b = split["val_columns"]
    return xv, yv, f"the held-out columns {a}-{b} of the one labelled slice"


def _split(images: np.ndarray, labels: np.ndarray, config: TrainConfig):
    """(train images, train labels, val images, val labels, description)."""
    n = images.shape[0]
    if n >= 2:
        tr, va = split_slices(n, val_fraction=config.val_fraction, seed=config.held_out_seed)
        return images[tr], labels[tr], images[va], labels[va], {"by": "slice", "train": tr, "val": va}
    # one slice: the right-hand strip (val_fraction of the columns) is validation, the rest training
    w = images.shape[-1]
    cut = w - max(1, int(round(w * config.val_fraction)))
    return (images[..., :cut], labels[..., :cut], images[..., cut:], labels[..., cut:],
            {"by": "region", "train_columns": [0, cut], "val_columns": [cut, w]})


# ------------------------------------------------------------------------------------------------------- loss
def _class_index(labels: np.ndarray, codes: tuple[int, ...]) -> np.ndarray:
    lut = np.full(256, IGNORE, dtype=np.int64)
    lut[list(codes)] = np.arange(len(codes))
    return lut[labels.astype(np.int64)]


def _weights(y: np.ndarray, k: int, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    counts = np.bincount(y[y >= 0].ravel(), minlength=k).astype(np.float64)
    present = counts > 0
    w = np.ones(k)
    w[present] = counts[present].sum() / (present.sum() * counts[present])
    if mode == "sqrt":  # half-way: rare phases count more, without pushing their edges into the others
        w[present] = np.sqrt(w[present])
    w = np.clip(w / w[present].mean(), 0.1, 10.0)
    return torch.tensor(w, dtype=torch.float32)


def _loss(logits: torch.Tensor, target: torch.Tensor, *, kind: str, weight: torch.Tensor | None) -> torch.Tensor:
    logits = logits.float()
    total = logits.new_zeros(())
    if kind in ("ce", "ce+dice"):
        total = total + F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
    if kind in ("dice", "ce+dice"):
        mask = (target >= 0).unsqueeze(1).float()
        prob = logits.softmax(1) * mask
        onehot = F.one_hot(target.clamp(min=0), logits.shape[1]).permute(0, 3, 1, 2).float() * mask
        inter = (prob * onehot).sum((0, 2, 3))
        denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        present = onehot.sum((0, 2, 3)) > 0
        dice = (2 * inter + 1.0) / (denom + 1.0)
        total = total + (1 - dice[present]).mean() if present.any() else total
    return total


# ------------------------------------------------------------------------------------------------ checkpoints
def _save_checkpoint(folder: Path, tag: str, model: torch.nn.Module, optimiser: torch.optim.Optimizer | None,
                     state: dict[str, Any]) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_meta: dict[str, Any] = {}
    if optimiser is not None:
        sd = optimiser.state_dict()
        for pid, st in sd["state"].items():
            for key, val in st.items():
                if torch.is_tensor(val):
                    tensors[f"opt.{pid}.{key}"] = val.detach().cpu().contiguous().clone()
                else:
                    opt_meta[f"{pid}.{key}"] = val
        opt_meta["param_groups"] = sd["param_groups"]
    tmp = folder / f".{tag}.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, folder / f"{tag}.safetensors")
    atomic_write_json(folder / f"{tag}.json", {**state, "optimizer": opt_meta})


def _load_checkpoint(folder: Path, tag: str, model: torch.nn.Module, optimiser: torch.optim.Optimizer | None) -> dict[str, Any]:
    tensors = load_file(str(folder / f"{tag}.safetensors"))
    state = json.loads((folder / f"{tag}.json").read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if optimiser is not None and state.get("optimizer"):
        meta = state["optimizer"]
        st: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, key = k.split(".", 2)
                st.setdefault(int(pid), {})[key] = v
        for k, v in meta.items():
            if k != "param_groups":
                pid, key = k.split(".", 1)
                st.setdefault(int(pid), {})[key] = v
        optimiser.load_state_dict({"state": st, "param_groups": meta["param_groups"]})
    return state


def _save_top(folder: Path, top: list[tuple[float, int, dict[str, torch.Tensor]]]) -> None:
    """The weights of the epochs kept for averaging, with their validation losses, written atomically."""
    tensors = {f"{epoch}.{k}": v.contiguous() for _, epoch, sd in top for k, v in sd.items()}
    tmp = folder / ".top.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"top": json.dumps([[loss, epoch] for loss, epoch, _ in top])})
    os.replace(tmp, folder / "top.safetensors")


def _load_top(folder: Path, epochs_done: int) -> list[tuple[float, int, dict[str, torch.Tensor]]]:
    """What :func:`_save_top` wrote, for the epochs a resumed history holds (none if the file is missing or unreadable)."""
    from safetensors import safe_open

    path = folder / "top.safetensors"
    if not path.is_file():
        return []
    try:
        with safe_open(str(path), framework="pt") as f:
            listed = json.loads((f.metadata() or {}).get("top", "[]"))
            keys = list(f.keys())
            out = []
            for loss, epoch in listed:
                if int(epoch) > epochs_done:
                    continue
                pre = f"{int(epoch)}."
                out.append((float(loss), int(epoch), {k[len(pre):]: f.get_tensor(k) for k in keys if k.startswith(pre)}))
    except (OSError, ValueError, RuntimeError) as exc:
        log.info("the weights kept for averaging in %s cannot be read (%s); averaging starts again", folder, exc)
        return []
    return sorted(out, key=lambda t: (t[0], t[1]))


# -------------------------------------------------------------------------------------------------- training
def _optimiser(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def _dice_per_class(pred: np.ndarray, target: np.ndarray, k: int) -> list[float | None]:
    out: list[float | None] = []
    for c in range(k):
        t, p = target == c, pred == c
        s = int(t.sum()) + int(p.sum())
        out.append(None if not t.any() else (2.0 * int((t & p).sum()) / s))
    return out


#: Environment variable with the memory budget of one training, in GB (default :data:`DEFAULT_MEMORY_BUDGET_GB`).
ENV_MEMORY_BUDGET = "REACTOMO_MEMORY_BUDGET_GB"
DEFAULT_MEMORY_BUDGET_GB = 4.0
#: Bytes per (pixel x first-level channel) of one batch in a training step: the activations kept for the backward
#: pass and their gradients over every level of the U-Net (float32). Peak resident memory of ``python -m core train``
#: on the demo (one epoch, width 16, depth 4, CPU, 2026-12-05) less the 0.39 GB of a tiny run: 50 B at patch 512 ×
#: 6 patches (1.25 GB), 88 B at patch 128 × batch 16 (0.37 GB); rounded up to 100 B so the check errs on the safe side.
_BYTES_PER_PIXEL_CHANNEL = 100.0


def memory_budget_bytes() -> float:
    """The configured budget of one training (``REACTOMO_MEMORY_BUDGET_GB``, default 4 GB), in bytes."""
    raw = os.environ.get(ENV_MEMORY_BUDGET, "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_MEMORY_BUDGET_GB
    except ValueError:
        raise ReactomoError(f"{ENV_MEMORY_BUDGET} is {raw!r}; give a number of GB such as 4.") from None
    if not gb > 0:
        raise ReactomoError(f"{ENV_MEMORY_BUDGET} is {raw!r}; give a positive number of GB such as 4.")
    return gb * 1e9


def estimate_training_memory(config: TrainConfig, *, width: int, in_channels: int = 1, data_bytes: int = 0,
                             n_patches: int | None = None, held_bytes: int = 0) -> float:
    """Peak memory of one training in bytes, estimated before it starts.

    ``patch² × batch × width × 100 B`` for the network (the activations of every level kept for the backward pass,
    and their gradients; a U-Net's levels halve the side and double the channels, so the first level dominates),
    plus the patches (``data_bytes`` of images and labels, times the augmentation copies), the patches that are
    only drawn from (``held_bytes``: extra slices, held once and copied once when joined to the others, never
    augmented all at once: an epoch augments only as many patches as ``data_bytes`` gives) and 0.5 GB for the
    libraries. The factor was measured as peak resident memory of ``python -m core train`` on this machine; it is
    meant to refuse settings that cannot fit, not to predict to the megabyte. ``n_patches`` (when known) caps the
    batch: a batch never holds more patches than there are.
    """
    p, b = int(config.patch_size), int(config.batch_size)
    if n_patches is not None:
        b = max(1, min(b, int(n_patches)))
    network = float(p) * p * b * int(width) * _BYTES_PER_PIXEL_CHANNEL
    inputs = float(p) * p * b * int(in_channels) * 4 * 4
    return network + inputs + 2.0 * float(data_bytes) * max(1, int(config.augment_factor)) + 2.0 * float(held_bytes) + 0.5e9


def check_training_memory(config: TrainConfig, *, width: int, in_channels: int = 1, data_bytes: int = 0,
                          n_patches: int | None = None, held_bytes: int = 0) -> float:
    """Refuse, with the estimate in the sentence, a training whose memory estimate exceeds the budget.

    Returns the estimate in bytes. Called by every trainer (CLI, pages, ``run``) before the first epoch.
    """
    need = estimate_training_memory(config, width=width, in_channels=in_channels, data_bytes=data_bytes,
                                    n_patches=n_patches, held_bytes=held_bytes)
    budget = memory_budget_bytes()
    if need > budget:
        raise ReactomoError(
            f"This training would need about {need / 1e9:.1f} GB of memory (patch {config.patch_size} × batch "
            f"{config.batch_size} × width {width}), more than the {budget / 1e9:g} GB budget of this server; use a "
            f"smaller patch or batch, or ask the administrator to raise {ENV_MEMORY_BUDGET}.")
    return need


def train_unet(
    model: torch.nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    config: TrainConfig = TrainConfig(),
    phases: PhaseTable,
    device: str | torch.device = "auto",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    soft: np.ndarray | None = None,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrainResult:
    """Train ``model`` on labelled slices, with early stopping on the validation loss.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(N, 1, H, W)`` float to ``(N, len(phases), H, W)`` logits; trained in place, and left holding the
        best epoch's weights.
    images : ndarray, shape (n, y, x), float
        Normalised slices (see :mod:`core.imaging.normalise`); not modified.
    labels : ndarray, shape (n, y, x), uint8
        Phase codes of ``phases`` (0 = unlabelled, not used); not modified.
    config : TrainConfig
    phases : PhaseTable
        Output class ``i`` is ``phases.codes[i]``.
    device : str or torch.device
        ``"auto"`` (CUDA if available, with mixed precision when ``config.amp``), ``"cpu"``, ``"cuda"``.
    on_epoch : callable, optional
        Called after every epoch with the history dict of that epoch.
    on_progress : callable, optional
        ``on_progress(fraction, message)`` after every batch.
    should_stop : callable, optional
        Polled after every batch; returning True ends the run after saving, with the best weights so far.
    checkpoint_dir : path-like, optional
        Folder for ``best``/``last`` checkpoints (``.safetensors`` weights + ``.json`` state).
    resume : bool
        Continue from ``checkpoint_dir/last`` when it exists (epoch count, history, optimiser, best weights).
    soft : ndarray, shape (n, y, x), uint8, optional
        The forest's split of each pixel between the reactant and the product (:func:`soft_split`), for
        ``config.soft_labels``; ignored when that is 0.
    extra : (images, labels), optional
        More labelled slices to train on, never validated on (e.g. the forest's labels of a step's unscribbled
        slices), with ``images``' channels. Each epoch then draws as many patches as the training part of ``images``
        gives, afresh from both (seeded by ``config.seed`` and the epoch), so an epoch costs what it costs without
        them. Not with ``config.soft_labels``.

    Returns
    -------
    TrainResult

    Raises
    ------
    ReactomoError
        Shapes that do not match, codes outside the phase table, no labelled pixel, or a checkpoint of
        another configuration.
    """
    t_start = time.perf_counter()
    if not isinstance(config, TrainConfig):
        raise ReactomoError(f"train_unet needs a TrainConfig; got {type(config).__name__}.")
    images, labels = _check_pairs(images, labels)
    if labels.dtype.kind not in "ui" or (labels.size and (labels.min() < 0 or labels.max() > 255)):
        raise ReactomoError(f"Labels must be uint8 phase codes; got {labels.dtype}.")
    bad = sorted(set(np.unique(labels).tolist()) - {0, *phases.codes})
    if bad:
        raise ReactomoError(f"The labels hold codes {bad} that are not in the phase table (codes {list(phases.codes)}).")
    if not labels.any():
        raise ReactomoError("The labels mark no pixel (every value is 0); label some slices first.")
    if extra is not None:
        ex_img, ex_lab = _check_pairs(*extra)
        if ex_img.shape[1:] != images.shape[1:] or ex_lab.dtype.kind not in "ui" or \
                sorted(set(np.unique(ex_lab).tolist()) - {0, *phases.codes}):
            raise ReactomoError(f"The extra training slices must be images of shape (n, {', '.join(map(str, images.shape[1:]))}) "
                                "with phase codes of the phase table.")
        if config.soft_labels:
            raise ReactomoError("Soft labels need the forest's split of every training slice; give no extra slices with them.")
        ex_lab = without_edges(ex_lab, config.edge_px, config.edge_codes or None) if config.edge_px else ex_lab
    whole_labels = labels  # the contrast and edge blur of thin laths are measured across the real edges
    if config.edge_px:  # never empties the labels: what is all edge is kept (see without_edges)
        labels = without_edges(labels, config.edge_px, config.edge_codes or None)
    k = len(phases)
    dev = select_device(str(device)) if not isinstance(device, torch.device) else device
    use_amp = bool(config.amp and dev.type == "cuda")
    if dev.type == "cpu":
        from core.network.inference import native_bfloat16

        use_amp = bool(native_bfloat16() if config.cpu_amp is None else config.cpu_amp)
    precision = ("bfloat16" if dev.type == "cpu" else "float16") if use_amp else "float32"

    unet_config = getattr(model, "config", None)
    if hasattr(unet_config, "width"):  # refused before any patch is made, with the estimate in the sentence
        n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
        n_extra = len(extra[0]) if extra is not None else 0
        p = config.patch_size
        chans = images.shape[1] if images.ndim == 4 else 1
        per_slice = max(h, p) * max(w, p) / config.stride_ratio ** 2  # pixels of its (overlapping) patches
        pixels = n * per_slice
        check_training_memory(config, width=unet_config.width, in_channels=chans,
                              data_bytes=int(pixels * (4 * chans + 1 + 8)), n_patches=math.ceil(pixels / p ** 2),
                              held_bytes=int(n_extra * per_slice * (4 * chans + 1 + 8)))
    n_in = images.shape[1] if images.ndim == 4 else 1
    if config.time_channels and (n_in - config.time_channels < 1 or (n_in - config.time_channels) % 2 == 0):
        raise ReactomoError(f"The images have {n_in} channels, too few or the wrong number for {config.time_channels} "
                            "channels of other time steps after the slice's own (an odd number of them).")
    tr_img, tr_lab, va_img, va_lab, split = _split(images, labels, config)
    x_tr, y_tr = make_patches(tr_img, tr_lab, patch_size=config.patch_size, stride_ratio=config.stride_ratio)
    soft_tr, soft_info, soft_pair = None, None, (0, 0)
    if config.soft_labels:
        pair = tuple(int(c) for c in config.thin_pair) or _reaction_pair(phases)
        soft_info = {"band": float(config.soft_labels), "codes": [int(c) for c in pair], "applied": False}
        if not pair or not all(c in phases.codes for c in pair):
            soft_info["reason"] = "the phase table names no single reactant and product"
        elif soft is None:
            soft_info["reason"] = "the forest's probabilities of the labelled slices are not at hand"
        else:
            soft = np.asarray(soft)
            if soft.dtype != np.uint8 or soft.shape != labels.shape:
                raise ReactomoError(f"The soft labels must be uint8 of the labels' shape {labels.shape}; got "
                                    f"{soft.dtype} {soft.shape}.")
            tr_soft = soft[split["train"]] if split["by"] == "slice" else \
                soft[..., split["train_columns"][0]:split["train_columns"][1]]
            soft_tr = _patches_like(tr_lab, tr_soft, patch_size=config.patch_size, stride_ratio=config.stride_ratio,
                                    fill=NO_SOFT)
            soft_pair = (phases.codes.index(pair[0]), phases.codes.index(pair[1]))
    n_epoch = len(x_tr)  # patches per epoch: those of the training slices (extra slices add choice, not cost)
    if not n_epoch:
        raise ReactomoError("No training patch holds a labelled pixel; label more slices or lower val_fraction.")
    if extra is not None and len(ex_img):
        x_ex, y_ex = make_patches(ex_img, ex_lab, patch_size=config.patch_size, stride_ratio=config.stride_ratio)
        x_tr, y_tr = np.concatenate([x_tr, x_ex]), np.concatenate([y_tr, y_ex])
        del x_ex, y_ex
    x_va, y_va = make_patches(va_img, va_lab, patch_size=config.patch_size, stride_ratio=1.0)
    if not len(x_tr):
        raise ReactomoError("No training patch holds a labelled pixel; label more slices or lower val_fraction.")
    yi_tr = _class_index(y_tr, phases.codes)
    yi_va = _class_index(y_va, phases.codes)
    weight = _weights(yi_tr, k, config.class_weights)
    if soft_tr is not None:
        lo, hi = config.soft_labels * SOFT_SCALE, (1.0 - config.soft_labels) * SOFT_SCALE
        in_pair = (yi_tr == soft_pair[0]) | (yi_tr == soft_pair[1])
        drawn = int(((soft_tr != NO_SOFT) & (soft_tr >= lo) & (soft_tr <= hi) & in_pair).sum())
        soft_info.update(applied=drawn > 0, pixels=drawn, share=round(drawn / max(1, int(in_pair.sum())), 6))
        if not drawn:
            soft_info["reason"] = "no training pixel of the pair is uncertain enough"
            soft_tr = None
        log.info("soft labels: %s", soft_info)
    thin = None
    pair = tuple(int(c) for c in config.thin_pair) or _reaction_pair(phases)
    thin_info: dict[str, Any] | None = None
    if config.thin_p:  # augmentation on with a factor >= 2 (TrainConfig.validate)
        thin_info = {"share": float(config.thin_p), "codes": [int(c) for c in pair], "painted": False}
        if not pair or not all(c in phases.codes for c in pair):
            thin_info["reason"] = "the phase table names no single reactant and product to paint"
        else:
            tr_whole = whole_labels[split["train"]] if split["by"] == "slice" else \
                whole_labels[..., split["train_columns"][0]:split["train_columns"][1]]
            thin = thin_examples(tr_img, tr_whole, pair, tuple(phases.codes), config.thin_p)
            if thin is None:
                thin_info["reason"] = ("the labels have too few interior pixels of one of the two phases, or the two "
                                       "do not differ in grey value")
            else:
                thin_info.update(painted=True, contrast=round(thin.contrast, 6), edge_sigma_px=round(thin.sigma, 3))
        log.info("thin laths: %s", thin_info)
    weight_dev = weight.to(dev) if weight is not None else None
    log.info("training on %d patches%s, validating on %d (%s split) on %s", len(x_tr),
             f" ({n_epoch} drawn each epoch)" if n_epoch < len(x_tr) else "", len(x_va), split["by"], dev)

    model.to(dev)
    if use_amp:  # with mixed precision, channels-last convolutions too (put back to the standard layout at the end)
        model.to(memory_format=torch.channels_last)
    optimiser = _optimiser(model, config)
    scaler = torch.amp.GradScaler("cuda") if use_amp and dev.type == "cuda" else None  # bfloat16 needs no scaling
    history: list[dict[str, Any]] = []
    best_loss, best_epoch, bad_epochs = math.inf, 0, 0
    lr_bad = 0  # epochs without improvement since the last improvement or learning-rate drop
    best_state = _cpu_state(model)
    top: list[tuple[float, int, dict[str, torch.Tensor]]] = []  # the lowest validation losses' weights (averaging)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fingerprint = hashlib.sha256(
        np.ascontiguousarray(images).tobytes() + np.ascontiguousarray(labels).tobytes()
        + (np.ascontiguousarray(soft).tobytes() if soft_tr is not None else b"")
        + (np.ascontiguousarray(ex_img).tobytes() + np.ascontiguousarray(ex_lab).tobytes() if extra is not None else b"")
    ).hexdigest()[:16]
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
        if resume and (ckpt / "last.json").exists():
            prev = json.loads((ckpt / "last.json").read_text())
            try:  # compared as settings: a checkpoint from before a new setting (with its default) still fits
                same = TrainConfig.from_dict(prev.get("config") or {}) == config
            except ReactomoError:
                same = False
            if not same or prev.get("data") != fingerprint:
                raise ReactomoError(f"The checkpoint in {ckpt} is from other settings or data; start without resume or use another folder.")
            _load_checkpoint(ckpt, "best", model, None)
            best_state = _cpu_state(model)
            state = _load_checkpoint(ckpt, "last", model, optimiser)
            history, best_loss, best_epoch, bad_epochs = state["history"], state["best_loss"], state["best_epoch"], state["bad_epochs"]
            lr_bad = int(state.get("lr_bad", 0))  # the learning rate itself comes back with the optimiser's state
            if config.average_epochs >= 2:
                top = _load_top(ckpt, len(history))
            log.info("resumed from %s at epoch %d", ckpt, len(history))

    factor = config.augment_factor if config.augment else 1
    n_batches = math.ceil(n_epoch * factor / config.batch_size)
    total_steps = max(1, (config.max_epochs - len(history)) * n_batches)
    step = 0
    stopped_early = cancelled = False
    averaged: dict[str, Any] | None = None
    det_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        for epoch in range(len(history) + 1, config.max_epochs + 1):
            if config.patience and bad_epochs >= config.patience:
                stopped_early = True
                break
            t0 = time.perf_counter()
            rng = np.random.default_rng([config.seed, epoch])
            yi_ep = yi_tr if soft_tr is None else draw_soft(yi_tr, soft_tr, band=config.soft_labels, pair=soft_pair,
                                                            rng=np.random.default_rng([config.seed, epoch, 7]))
            x_src = x_tr
            if n_epoch < len(x_tr):  # this epoch's share of all the training patches
                pick = np.sort(np.random.default_rng([config.seed, epoch, 11]).choice(len(x_tr), n_epoch, replace=False))
                x_src, yi_ep = x_tr[pick], yi_ep[pick]
            xs, ys = [x_src], [yi_ep]
            for _ in range(factor - 1):
                xa, ya = augment_batch(x_src, yi_ep, rng=rng, transforms=config.transforms,
                                       max_shear=config.max_shear, max_scale=config.max_scale,
                                       max_gain=config.max_gain, max_offset=config.max_offset, thin=thin,
                                       time_channels=config.time_channels, time_dropout=config.time_dropout)
                xs.append(xa)
                ys.append(ya)
            x_ep, y_ep = np.concatenate(xs), np.concatenate(ys)
            order = rng.permutation(len(x_ep))
            model.train()
            run_loss, run_n = 0.0, 0
            for b in range(n_batches):
                idx = order[b * config.batch_size:(b + 1) * config.batch_size]
                xb = torch.from_numpy(np.ascontiguousarray(x_ep[idx])).to(dev)
                yb = torch.from_numpy(np.ascontiguousarray(y_ep[idx])).to(dev)
                optimiser.zero_grad(set_to_none=True)
                with _autocast(dev, use_amp):
                    logits = model(_channels_last(xb) if use_amp else xb)
                loss = _loss(logits.float(), yb, kind=config.loss, weight=weight_dev)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimiser)
                    scaler.update()
                else:
                    loss.backward()
                    optimiser.step()
                run_loss += float(loss.detach()) * len(idx)
                run_n += len(idx)
                step += 1
                if on_progress is not None:
                    on_progress(min(1.0, step / total_steps), f"epoch {epoch}/{config.max_epochs}, batch {b + 1}/{n_batches}")
                if should_stop is not None and should_stop():
                    cancelled = True
                    break
            if cancelled and run_n == 0:
                break
            val_loss, dice = _validate(model, x_va, yi_va, k=k, kind=config.loss, weight=weight_dev, dev=dev,
                                       batch=config.batch_size, amp=use_amp)
            record = {
                "epoch": epoch,
                "train_loss": run_loss / max(run_n, 1),
                "val_loss": val_loss,
                "val_dice": {p.name: d for p, d in zip(phases, dice)},
                "seconds": time.perf_counter() - t0,
                "lr": float(optimiser.param_groups[0]["lr"]),
                "partial": cancelled,
            }
            history.append(record)
            if config.average_epochs >= 2 and not cancelled and math.isfinite(val_loss):
                top.append((val_loss, epoch, _cpu_state(model)))
                top.sort(key=lambda t: (t[0], t[1]))
                del top[config.average_epochs:]
                if ckpt is not None:  # kept beside the checkpoints, so a resumed run averages the same epochs
                    _save_top(ckpt, top)
            if val_loss < best_loss - config.min_delta:
                best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
                best_state = _cpu_state(model)
                if ckpt is not None:
                    _save_checkpoint(ckpt, "best", model, None, {"epoch": epoch, "val_loss": val_loss})
                lr_bad = 0
            else:
                bad_epochs += 1
                lr_bad += 1
                if config.lr_drop_patience and lr_bad >= config.lr_drop_patience and not cancelled:
                    for group in optimiser.param_groups:
                        group["lr"] *= config.lr_drop_factor
                    lr_bad = 0
                    log.info("validation loss not improved for %d epochs: learning rate now %.3g",
                             config.lr_drop_patience, optimiser.param_groups[0]["lr"])
            if ckpt is not None:
                _save_checkpoint(ckpt, "last", model, optimiser, {
                    "config": config.to_dict(), "data": fingerprint, "history": history, "best_loss": best_loss,
                    "best_epoch": best_epoch, "bad_epochs": bad_epochs, "lr_bad": lr_bad, "split": split})
            log.info("epoch %d: train %.4f, val %.4f", epoch, record["train_loss"], val_loss)
            if on_epoch is not None:
                on_epoch(dict(record))
            if cancelled:
                break
        else:
            stopped_early = False
        if not cancelled and config.patience and bad_epochs >= config.patience and len(history) < config.max_epochs:
            stopped_early = True
        if len(top) >= 2 and not cancelled:  # weight averaging over the epochs of lowest validation loss
            avg = {n: (torch.stack([t[2][n].float() for t in top]).mean(0).to(v.dtype) if v.is_floating_point()
                       else v.clone()) for n, v in top[0][2].items()}
            model.load_state_dict(avg)
            _remeasure_batch_norm(model, x_tr, dev=dev, batch=config.batch_size, amp=use_amp)
            val_loss, dice = _validate(model, x_va, yi_va, k=k, kind=config.loss, weight=weight_dev, dev=dev,
                                       batch=config.batch_size, amp=use_amp)
            averaged = {"epochs": sorted(t[1] for t in top), "val_loss": val_loss,
                        "val_dice": {p.name: d for p, d in zip(phases, dice)}, "kept": bool(val_loss <= best_loss)}
            if averaged["kept"]:
                best_state = _cpu_state(model)
            else:  # e.g. a short run still far from converged: its early epochs pull the average back
                averaged["reason"] = (f"the averaged weights' validation loss {val_loss:.4f} is above the best "
                                      f"epoch's {best_loss:.4f}, so the best epoch is kept")
            log.info("weights of epochs %s averaged: val %.4f (best epoch %d: %.4f)%s", averaged["epochs"], val_loss,
                     best_epoch, best_loss, "" if averaged["kept"] else "; the best epoch kept")
    finally:
        torch.use_deterministic_algorithms(det_before)
        model.to(memory_format=torch.contiguous_format)
    model.load_state_dict(best_state)
    return TrainResult(state_dict=best_state, history=history, best_epoch=best_epoch, stopped_early=stopped_early,
                       cancelled=cancelled, seconds=time.perf_counter() - t_start, device=device_summary(dev),
                       thin=thin_info, averaged=averaged, precision=precision, soft=soft_info)


def _autocast(dev: torch.device, enabled: bool):
    """Mixed precision as the training uses it: bfloat16 on a CPU, float16 on CUDA."""
    return torch.autocast(device_type=dev.type if dev.type in ("cpu", "cuda") else "cpu",
                          dtype=torch.bfloat16 if dev.type != "cuda" else torch.float16, enabled=enabled)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """A batch of images in the channels-last layout, the faster one for 3x3 convolutions (oneDNN, cuDNN)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights on the CPU in the standard layout (whatever layout training runs in)."""
    return {n: v.detach().cpu().clone(memory_format=torch.contiguous_format) for n, v in model.state_dict().items()}


def averaged_sentence(result: "TrainResult") -> str:
    """What weight averaging did, in one sentence (the CLI's and the run's line)."""
    a = result.averaged or {}
    epochs = ", ".join(str(e) for e in a.get("epochs", []))
    if a.get("kept", True):
        return (f"weights of epochs {epochs} averaged: validation loss {a.get('val_loss', float('nan')):.4f} (best epoch "
                f"{result.best_epoch}: {result.best.get('val_loss', float('nan')):.4f})")
    return f"weights of epochs {epochs} averaged and not kept: {a.get('reason', '')}"


@torch.no_grad()
def _remeasure_batch_norm(model: torch.nn.Module, x: np.ndarray, *, dev, batch: int, amp: bool) -> None:
    """The batch-norm layers' running statistics measured again, as a plain average over the patches ``x`` (averaged
    weights change every layer's input; the averaged statistics of the epochs do not describe it)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    model.train()
    try:
        for b in range(0, len(x), batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[b:b + batch])).to(dev)
            with _autocast(dev, amp):
                model(_channels_last(xb) if amp else xb)
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        model.eval()


@torch.no_grad()
def _validate(model, x, y, *, k, kind, weight, dev, batch, amp) -> tuple[float, list[float | None]]:
    model.eval()
    total, n = 0.0, 0
    inter, t_sum, p_sum = np.zeros(k), np.zeros(k), np.zeros(k)
    for b in range(0, len(x), batch):
        xb = torch.from_numpy(x[b:b + batch]).to(dev)
        yb = torch.from_numpy(y[b:b + batch]).to(dev)
        with _autocast(dev, amp):
            logits = model(_channels_last(xb) if amp else xb).float()
        total += float(_loss(logits, yb, kind=kind, weight=weight)) * len(xb)
        n += len(xb)
        pred = logits.argmax(1).cpu().numpy()
        t = yb.cpu().numpy()
        m = t >= 0
        for c in range(k):
            tc, pc = (t == c), (pred == c) & m
            inter[c] += (tc & pc).sum()
            t_sum[c] += tc.sum()
            p_sum[c] += pc.sum()
    dice = [None if t_sum[c] == 0 else float(2 * inter[c] / (t_sum[c] + p_sum[c])) for c in range(k)]
    return (total / n if n else math.nan), dice


# ------------------------------------------------------------------------------------------------------- quality
#: A model whose best validation Dice is under either bound is not called a success (pages, CLI, workflow).
MIN_PHASE_DICE = 0.5
MIN_MEAN_DICE = 0.8


def dice_text(v: float) -> str:
    """A Dice value as the training's sentences write it: two decimals, rounded down (0.499 reads 0.49, never "0.50 is
    under 0.5"), so a page that shows a mean beside :func:`quality_warning` shows the same number.

    >>> dice_text(0.579), dice_text(0.4999), dice_text(1.0)
    ('0.57', '0.49', '1.00')
    """
    return f"{math.floor(float(v) * 100 + 1e-9) / 100:.2f}"


def quality_warning(val_dice: Any, *, min_phase: float = MIN_PHASE_DICE, min_mean: float = MIN_MEAN_DICE) -> str | None:
    """One sentence when a model's validation Dice is poor, ``None`` when it is fine.

    Poor means: some phase under ``min_phase`` (default 0.5), or the mean over the phases under ``min_mean``
    (default 0.8). A phase whose Dice is ``None`` or NaN (absent from the validation patches) is left out of both
    checks; when every phase is, the sentence says that the quality is unknown.

    Parameters
    ----------
    val_dice : mapping of str to float or None
        Validation Dice per phase name, e.g. the ``val_dice`` of the best epoch (a model card's ``metrics``).
    min_phase, min_mean : float
        The bounds, 0-1.

    Returns
    -------
    str or None

    Raises
    ------
    ReactomoError
        If ``val_dice`` is not a mapping of phase names to numbers (or None), or a bound is outside 0-1.

    Examples
    --------
    >>> quality_warning({"gypsum": 0.97, "bassanite": 0.92, "pore": 0.93, "celestite": 0.85}) is None
    True
    >>> print(quality_warning({"gypsum": 0.97, "bassanite": 0.9, "pore": 0.93, "celestite": 0.41}))
    The validation Dice is poor: celestite 0.41 is under 0.5; brush more celestite, train longer or check the ground truth before using this model.
    """
    if not isinstance(val_dice, dict):
        raise ReactomoError(f"val_dice must map phase names to Dice values; got {type(val_dice).__name__}.")
    for name, bound in (("min_phase", min_phase), ("min_mean", min_mean)):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0 <= bound <= 1:
            raise ReactomoError(f"{name} must be a number from 0 to 1; got {bound!r}.")
    known: dict[str, float] = {}
    for name, v in val_dice.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ReactomoError(f"The validation Dice of {name} must be a number or None; got {v!r}.")
        if not math.isnan(float(v)):
            known[str(name)] = float(v)
    if not known:
        return ("No phase was in the validation patches, so the model's quality is unknown; label more slices or raise "
                "the validation share before using this model.")
    mean = sum(known.values()) / len(known)
    weak = sorted(((n, v) for n, v in known.items() if v < min_phase), key=lambda nv: nv[1])
    if not weak and mean >= min_mean:
        return None
    def _and(items: list[str]) -> str:
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    _f = dice_text

    parts = []
    if weak:
        parts.append(f"{_and([f'{n} {_f(v)}' for n, v in weak])} {'is' if len(weak) == 1 else 'are'} under {min_phase:g}")
    if mean < min_mean:
        low = min(known.items(), key=lambda nv: nv[1])
        parts.append(f"the mean {_f(mean)} is under {min_mean:g}" + ("" if weak else f" (lowest: {low[0]} {_f(low[1])})"))
    what = f"brush more {_and([n for n, _ in weak])}" if weak else "brush more labels"
    return (f"The validation Dice is poor: {', and '.join(parts)}; {what}, train longer or check the ground truth "
            "before using this model.")


def without_edges(labels: np.ndarray, px: int, codes: tuple[int, ...] | None = None) -> np.ndarray:
    """``labels`` (slices ``(n, y, x)``) with 0 (unlabelled, ignored by the loss) within ``px`` pixels of a boundary
    between two phases, in the slice plane (boundaries with unlabelled pixels do not count). With ``codes``, only
    boundaries with one of these phases on either side count (for example celestite's partial-volume rim alone).

    Why: scribbles stay inside the phases, so the random forest that turns them into ground truth never saw an edge;
    its labels are least trustworthy there (at a thin lath's surface it says gypsum, issue 11). Left out of the targets,
    the edges are placed by the network from what it learns inside the phases. Objects thinner than ``2 px + 1``
    (what an opening of radius ``px`` removes) keep every label: they are all edge, and without them the network
    never sees a young lath (measured on the tuning half: leaving them out lost early bassanite).
    """
    from scipy import ndimage

    if isinstance(px, bool) or not isinstance(px, (int, np.integer)) or not 0 <= px <= 8:
        raise ReactomoError(f"The edge width is {px!r} px; give a whole number from 0 (keep every label) to 8.")
    labels = np.asarray(labels)
    out = labels.copy()
    if px == 0:
        return out
    edge = np.zeros(labels.shape, bool)
    for axis in (-2, -1):
        a = np.moveaxis(labels, axis, -1)
        e = np.moveaxis(edge, axis, -1)
        diff = (a[..., 1:] != a[..., :-1]) & (a[..., 1:] > 0) & (a[..., :-1] > 0)
        if codes:
            diff &= np.isin(a[..., 1:], codes) | np.isin(a[..., :-1], codes)
        e[..., 1:] |= diff
        e[..., :-1] |= diff
    st = np.zeros((1, 3, 3), bool) if labels.ndim == 3 else np.zeros((3, 3), bool)
    st[..., :, :] = ndimage.generate_binary_structure(2, 1)
    if px > 1:
        edge = ndimage.binary_dilation(edge, structure=st, iterations=px - 1)
    # a thin object (a young lath two or three pixels across) is all edge: its labels are kept, or the network would
    # never see one; only the parts of a phase that survive an opening of radius px lose their rims
    thin = np.zeros(labels.shape, bool)
    for code in np.unique(labels):
        if code == 0:
            continue
        m = labels == code
        thin |= m & ~ndimage.binary_opening(m, structure=st, iterations=px)
    out[edge & ~thin] = 0
    return out


@dataclass
class EnsembleResult:
    """What :func:`train_ensemble` gives back.

    Attributes
    ----------
    model : torch.nn.Module
        The trained :class:`~core.network.unet.UNet` (one member) or :class:`~core.network.unet.UNetEnsemble`.
    members : list of TrainResult
        One per network, in order (fewer than asked when ``should_stop`` ended the training).
    seeds : list of int
        The seed of each network (``config.seed + i``).
    val_dice : dict of str to float or None
        Dice per phase of the averaged network on the held-out slices (the single network's own for one member).
    seconds : float
    """

    model: torch.nn.Module
    members: list[TrainResult]
    seeds: list[int]
    val_dice: dict[str, float | None]
    seconds: float

    @property
    def cancelled(self) -> bool:
        return any(r.cancelled for r in self.members)


def check_ensemble(members: Any, seed: int) -> int:
    """``members`` as the number of networks of an ensemble trained from ``seed``, or one sentence why not."""
    if isinstance(members, bool) or not isinstance(members, (int, np.integer)) or not 1 <= members <= MAX_ENSEMBLE:
        raise ReactomoError(f"An ensemble holds 1 to {MAX_ENSEMBLE} U-Nets; got {members!r}.")
    if seed + members - 1 > 2**31 - 1:
        raise ReactomoError(f"The seed {seed} leaves no room for {members} networks' seeds; give a seed below {2**31 - members}.")
    return int(members)


def train_ensemble(
    build: Callable[[], torch.nn.Module],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    members: int = ENSEMBLE,
    config: TrainConfig = TrainConfig(),
    phases: PhaseTable,
    device: str | torch.device = "auto",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    soft: np.ndarray | None = None,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> EnsembleResult:
    """Train ``members`` U-Nets on the same labelled slices and average them (:class:`UNetEnsemble`).

    Network ``i`` starts from ``torch.manual_seed(config.seed + i)`` and draws its patch order and augmentation from
    that seed, so the networks differ where one training differs from another run with another seed; every network
    holds out the same validation slices (``split_seed`` = ``config.held_out_seed``), so :func:`held_out` names slices
    none of them trained on. With ``members=1`` this is exactly :func:`train_unet` of a network built after
    ``torch.manual_seed(config.seed)``.

    Parameters
    ----------
    build : callable
        Returns a freshly initialised network (called once per member, after seeding torch).
    images, labels, config, phases, device, on_epoch, on_progress, should_stop, resume, soft, extra
        As for :func:`train_unet`; ``on_epoch`` gets the epoch's history dict with ``"member"`` (1-based) added, and
        ``on_progress`` the fraction of the whole ensemble.
    checkpoint_dir : path-like, optional
        Checkpoints of a single network go here; those of network ``i`` of an ensemble in ``network<i>/`` below it,
        so a resumed ensemble finds its finished networks finished (they are read back, not trained again) and goes
        on with the one that was interrupted.
    members : int
        1 to :data:`MAX_ENSEMBLE`.
    """
    from core.network.unet import UNetEnsemble

    check_ensemble(members, config.seed)
    t0 = time.perf_counter()
    nets: list[torch.nn.Module] = []
    results: list[TrainResult] = []
    seeds: list[int] = []
    for i in range(int(members)):
        cfg = config if members == 1 else replace(config, seed=config.seed + i, split_seed=config.held_out_seed)
        torch.manual_seed(cfg.seed)
        net = build()
        tell = (lambda h, i=i: on_epoch({**h, "member": i + 1})) if on_epoch else None
        if on_progress is None:
            said = None
        elif members == 1:
            said = on_progress
        else:
            said = (lambda f, m, i=i: on_progress((i + f) / members, f"network {i + 1} of {members}: {m}"))
        where = None if checkpoint_dir is None else Path(checkpoint_dir) / (f"network{i + 1}" if members > 1 else "")
        r = train_unet(net, images, labels, config=cfg, phases=phases, device=device, on_epoch=tell, on_progress=said,
                       should_stop=should_stop, checkpoint_dir=where, resume=resume, soft=soft, extra=extra)
        nets.append(net)
        results.append(r)
        seeds.append(cfg.seed)
        if r.cancelled:
            break
    model = nets[0] if len(nets) == 1 else UNetEnsemble(nets)
    if len(nets) == 1:
        dice = dict(results[0].kept.get("val_dice") or {})
    else:
        dice = _held_out_dice(model, images, labels, config, phases, device)
    return EnsembleResult(model, results, seeds, dice, time.perf_counter() - t0)


def member_records(trained: EnsembleResult) -> list[dict[str, Any]]:
    """Every network of an ensemble as the card and run.json keep it: seed, epochs, validation, averaging, history."""
    return [{"seed": sd, "best_epoch": r.best_epoch, "epochs": len(r.history), "val_dice": r.kept.get("val_dice"),
             "averaged": r.averaged, "seconds": round(r.seconds, 3), "history": r.history}
            for sd, r in zip(trained.seeds, trained.members)]


def _held_out_dice(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, config: TrainConfig,
                   phases: PhaseTable, device: str | torch.device) -> dict[str, float | None]:
    """Dice per phase of ``model``'s labels of the held-out slices (None where a phase is absent there)."""
    from core.network.inference import InferenceConfig, predict_slices

    xv, yv, _ = held_out(np.asarray(images), np.asarray(labels), config)
    dev = select_device(str(device)) if not isinstance(device, torch.device) else device
    pred = predict_slices(model, np.ascontiguousarray(xv, dtype=np.float32), config=InferenceConfig(device=str(dev)),
                          class_codes=phases.codes)
    from core.segmentation.metrics import dice_per_phase

    dice = dice_per_phase(pred, yv, codes=phases.codes)  # over the labelled pixels
    return {p.name: float(dice[p.code]) if (yv == p.code).any() else None for p in phases}
