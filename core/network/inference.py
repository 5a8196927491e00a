"""Tiled, batched, bounded-memory U-Net inference of a whole scan.

A scan is read slab by slab (``InferenceConfig.slab`` z slices at a time); every XY slice is cut into square
tiles that overlap by ``overlap`` of their side, tiles of all the slab's slices are batched together through the
network, and the per-tile softmax probabilities are blended with an importance map (a Gaussian exactly like
MONAI's ``compute_importance_map(mode="gaussian", sigma_scale=0.125)``, or constant). The label of a voxel is the
argmax of its blended probabilities, mapped to the card's phase code. Only one slab's accumulators exist at a time,
and labels are streamed page by page into a temporary TIFF that is renamed onto the destination only once
complete, so memory does not grow with the scan and no half-written labels file ever carries the final name.

The tile grid is MONAI's (``sliding_window_inference``): starts every ``int(tile * (1 - overlap))`` pixels, the
last tile flush with the slice's edge; a slice narrower than a tile along an axis is covered by one tile that is
the slice rounded up to the network's size multiple, reflect-padded at the bottom/right.

Speed: the network runs as a private copy with batch norms folded into the convolutions and channels-last memory
format (together about 1.7x on a CPU, same labels); ``InferenceConfig(cpu_amp=True)`` adds bfloat16 on CPUs that
have it. On a CPU a tile at least as large as the slice is the fastest (no overlap is computed twice); measured
numbers are in bench/bench_segment.py's output.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import threading
from collections import OrderedDict
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile
import torch
import torch.nn.functional as F

from core.atomic import atomic_write_with
from core.errors import ReactomoError
from core.imaging.io import Volume, open_volume
from core.errors import JobCancelled
from core.imaging.normalise import apply_normalisation, fit_normalisation
from core.network.unet import select_device
from core.network.hardware import machine, native_bfloat16  # re-exported here, where they were first

__all__ = [
    "InferenceConfig",
    "SegmentResult",
    "importance_map",
    "tile_starts",
    "predict_slices",
    "segment_volume",
    "load_model_cached",
    "clear_model_cache",
    "machine",
    "native_bfloat16",
    "precision_of",
    "choose_model_cleaning",
    "context_slices",
    "input_channels",
    "model_time_context",
    "time_offsets",
    "z_kernel",
]

log = logging.getLogger(__name__)

_BLENDS = ("gaussian", "constant")
#: Test-time augmentation: the in-plane flips and transposes averaged in probability space (see InferenceConfig.tta).
TTA_MODES = ("none", "flips", "dihedral")
_SIGMA_SCALE = 0.125
_MAX_TILE = 4096
#: Convert the network and its input to channels-last memory format (faster 3x3 convolutions); a switch for
#: bench/bench_segment.py's ablation.
_CHANNELS_LAST = True
#: Fold batch norms into the preceding convolutions (see :func:`_fuse_conv_bn`); a switch for the same ablation.
_FUSE_BN = True


# --------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class InferenceConfig:
    """How a scan is cut into tiles and pushed through the network.

    Attributes
    ----------
    tile : int
        Side of the square tiles in pixels (16-4096), rounded up to the network's size multiple. A slice smaller
        than a tile along an axis gets one tile there (see the module docstring). A tile at least as large as the
        slice predicts every slice whole, which needs no overlap and is the fastest on a CPU.
    overlap : float
        Fraction of the tile side shared by neighbouring tiles, 0 to 0.75.
    batch_size : int
        Tiles per forward pass (1-1024); tiles of several slices are batched together.
    blend : {"gaussian", "constant"}
        Weight of a tile's pixels when overlapping tiles are averaged: MONAI's Gaussian (sigma = 0.125 x tile,
        lower weight near tile borders) or equal weights.
    slab : int
        Z slices read and predicted per step (1-1024); memory grows with it.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see :func:`core.network.unet.select_device`).
    amp : bool
        Mixed precision (float16 autocast) on CUDA; ignored on the CPU.
    cpu_amp : bool or None
        bfloat16 autocast on the CPU. ``None`` (the default) = on where the CPU computes bfloat16 natively
        (AVX-512 BF16 or AMX, :func:`native_bfloat16`), off elsewhere (where emulated bfloat16 is slower than
        float32). About 1.5x faster; labels differ from float32 on under 1 % of voxels, and Dice against the known
        truth of the benchmark family is unchanged (see bench/bench_segment.py and bench/bench_accuracy.py).
    tta : {"none", "flips", "dihedral"}
        Test-time augmentation: each tile is also predicted mirrored (``"flips"``: left-right, up-down and both, 4
        passes) or under the 8 symmetries of the square (``"dihedral"``: the flips and their transposes), each
        prediction is mapped back and the softmax probabilities are averaged. The network was trained with these
        same flips and 90° rotations, so each pass is an equally valid guess; averaging them lowers the variance
        of the labels near boundaries. Costs 4x or 8x the time.
    z_sigma : float
        Before the argmax, each slice's class probabilities are averaged with its neighbours' by a Gaussian of this
        standard deviation in slices (0 to 3; 0 = off, every slice labelled on its own). CT noise is independent
        from slice to slice while the rock is continuous, so the average of a few slices' independent guesses has
        less noise than one (the network sees one slice, or a few as channels). The neighbours are read beyond a
        ``z_range`` where the scan has them and replaced by the nearest slice beyond its ends; each slice is
        predicted once (a few slices' probabilities are kept between slabs), so it costs a few per cent of the
        time. The default 0.7 was chosen on the accuracy family's tuning half by Dice against the truth
        (bench/bench_accuracy.py; the README's ablation). :func:`predict_slices` labels the slices it is given each
        on its own.

    The defaults are the fastest settings that keep accuracy on the benchmark family: whole slices (a slice of up
    to 1024 x 1024 is one tile, so no overlap is computed twice; larger slices are tiled), 2 slices per forward
    pass, bfloat16 where it is native.
    """

    tile: int = 1024
    overlap: float = 0.25
    batch_size: int = 2
    blend: Literal["gaussian", "constant"] = "gaussian"
    slab: int = 8
    device: str = "auto"
    amp: bool = True
    cpu_amp: bool | None = None
    tta: str = "none"
    z_sigma: float = 0.7

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ReactomoError` naming the first bad field and what would work."""
        for name, low, high in (("tile", 16, _MAX_TILE), ("batch_size", 1, 1024), ("slab", 1, 1024)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= high:
                raise ReactomoError(f"Inference {name} is {v!r}; use an integer from {low} to {high}.")
        o = self.overlap
        if isinstance(o, bool) or not isinstance(o, (int, float)) or not math.isfinite(o) or not 0.0 <= o <= 0.75:
            raise ReactomoError(f"Inference overlap is {o!r}; use a fraction of the tile from 0 to 0.75, e.g. 0.25.")
        if self.blend not in _BLENDS:
            raise ReactomoError(f"Inference blend is {self.blend!r}; use 'gaussian' or 'constant'.")
        if not isinstance(self.device, str) or not self.device.strip():
            raise ReactomoError(f"Inference device is {self.device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'.")
        if not isinstance(self.amp, bool):
            raise ReactomoError(f"Inference amp is {self.amp!r}; use True or False.")
        if self.cpu_amp is not None and not isinstance(self.cpu_amp, bool):
            raise ReactomoError(f"Inference cpu_amp is {self.cpu_amp!r}; use True, False or None (where native).")
        if self.tta not in TTA_MODES:
            raise ReactomoError(f"Inference tta is {self.tta!r}; use 'none', 'flips' (4 passes) or 'dihedral' (8 passes).")
        zs = self.z_sigma
        if isinstance(zs, bool) or not isinstance(zs, (int, float)) or not math.isfinite(zs) or not 0.0 <= zs <= 3.0:
            raise ReactomoError(f"Inference z_sigma is {zs!r}; use a number of slices from 0 (off) to 3, e.g. 0.7.")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InferenceConfig":
        """Inverse of :meth:`to_dict`; unknown fields are refused rather than silently ignored."""
        if not isinstance(d, dict):
            raise ReactomoError(f"An inference config is a dict of fields; got {type(d).__name__}.")
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise ReactomoError(f"Unknown inference config field(s) {sorted(unknown)}; allowed fields are {sorted(allowed)}.")
        return cls(**d)


# ------------------------------------------------------------------------------------------------ the grid
def importance_map(shape: tuple[int, int], blend: str = "gaussian") -> np.ndarray:
    """Weights of a tile's pixels, float32 ``shape``; equal to MONAI's ``compute_importance_map``.

    ``"gaussian"``: the outer product of ``exp(-x**2 / (2 sigma**2))`` with ``x`` centred on the tile and
    ``sigma = 0.125 * side`` per axis, clamped below at ``max(min, 1e-3)``; ``"constant"``: ones.
    """
    if blend == "constant":
        return np.ones(shape, np.float32)
    if blend != "gaussian":
        raise ReactomoError(f"Blend {blend!r} is not known; use 'gaussian' or 'constant'.")
    m: torch.Tensor | None = None
    for i, n in enumerate(shape):
        # computed in torch float32 like MONAI, so the weights agree bit for bit
        x = torch.arange(start=-(n - 1) / 2.0, end=(n - 1) / 2.0 + 1, dtype=torch.float)
        x = torch.exp(x**2 / (-2 * (n * _SIGMA_SCALE) ** 2))
        m = x if m is None else m.unsqueeze(-1) * x[None]
    assert m is not None
    floor = max(float(m.min()), 1e-3)
    return torch.clamp(m, min=floor).numpy().astype(np.float32)


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of the tiles along one axis of ``size`` pixels (``tile <= size``), like MONAI's scan.

    Tiles start every ``max(int(tile * (1 - overlap)), 1)`` pixels (``tile`` when it equals ``size``) until one
    reaches the end; the last is moved back to end flush with the edge.
    """
    if tile >= size:
        return [0]
    step = max(int(tile * (1 - overlap)), 1)
    n = next(d for d in range(size) if d * step + tile >= size) + 1
    return [min(i * step, size - tile) for i in range(n)]


def _multiple(model: torch.nn.Module) -> int:
    cfg = getattr(model, "config", None)
    return int(getattr(cfg, "multiple", 1) or 1)


def _tile_shape(shape: tuple[int, int], tile: int, multiple: int) -> tuple[int, int]:
    """Effective tile (per axis): ``tile`` rounded up to ``multiple``, shrunk to the slice rounded up to it."""
    t = -(-tile // multiple) * multiple
    return tuple(min(t, -(-s // multiple) * multiple) for s in shape)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ prediction
@dataclass
class _Prepared:
    """A private inference copy of the network: eval mode, on the device, channels-last."""

    module: torch.nn.Module
    device: torch.device
    n_classes: int
    multiple: int
    amp: bool


def precision_of(config: "InferenceConfig", device: torch.device | str) -> str:
    """The arithmetic :func:`segment_volume` uses with ``config`` on ``device``: float16, bfloat16 or float32."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return "float16" if config.amp else "float32"
    if dev.type == "cpu":
        bf16 = native_bfloat16() if config.cpu_amp is None else config.cpu_amp
        return "bfloat16" if bf16 else "float32"
    return "float32"


def _prepare(model: torch.nn.Module, device: torch.device, *, amp: bool, cpu_amp: bool | None = False) -> _Prepared:
    if not isinstance(model, torch.nn.Module):
        raise ReactomoError(f"The model must be a torch.nn.Module such as a UNet; got {type(model).__name__}.")
    # A copy, so the caller's model keeps its device, mode, memory format and layers.
    module = copy.deepcopy(model).eval()
    if _FUSE_BN:
        module = _fuse_conv_bn(module)
    module = module.to(device)
    # channels_last speeds up the 3x3 convolutions with oneDNN (CPU) and cuDNN (CUDA).
    if _CHANNELS_LAST:
        module = module.to(memory_format=torch.channels_last)
    cfg = getattr(model, "config", None)
    n_classes = int(getattr(cfg, "n_classes", 0) or 0)
    if cpu_amp is None:
        cpu_amp = native_bfloat16()
    use_amp = bool(amp and device.type == "cuda") or bool(cpu_amp and device.type == "cpu")
    return _Prepared(module, device, n_classes, _multiple(model), use_amp)


def _fuse_conv_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` in a ``Sequential`` into the conv.

    The same function up to float rounding, one memory pass fewer per layer (about 20 % faster on a CPU).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in [m for m in module.modules() if isinstance(m, torch.nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if (type(conv) is torch.nn.Conv2d and type(bn) is torch.nn.BatchNorm2d and bn.track_running_stats
                    and bn.running_mean is not None and conv.padding_mode == "zeros"):
                seq[i] = fuse_conv_bn_eval(conv, bn)
                seq[i + 1] = torch.nn.Identity()
    return module


def _pad_to(x: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """Pad ``(n, 1, h, w)`` at the bottom/right to at least ``(th, tw)``: reflect, replicate when too small."""
    h, w = x.shape[-2:]
    ph, pw = max(th - h, 0), max(tw - w, 0)
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _blend_slab(
    prep: _Prepared, images: np.ndarray, *, config: InferenceConfig, normalise_weights: bool
) -> torch.Tensor:
    """Weighted sums of the tiles' softmax probabilities, ``(n, C, y, x)`` float32 on the device.

    Divided by the summed weights when ``normalise_weights`` (the blended probabilities); the argmax does not need
    it (the weight sum is positive and the same for every class).
    """
    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    th, tw = _tile_shape((h, w), config.tile, prep.multiple)
    dev = prep.device
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(dev)
    if x.ndim == 3:
        x = x[:, None]
    x = _pad_to(x, th, tw)
    ys, xs = tile_starts(x.shape[-2], th, config.overlap), tile_starts(x.shape[-1], tw, config.overlap)
    single = len(ys) == 1 and len(xs) == 1
    wmap = None if single else torch.from_numpy(importance_map((th, tw), config.blend)).to(dev)
    hp, wp = x.shape[-2:]
    acc: torch.Tensor | None = None
    tiles = [(s, y0, x0) for s in range(n) for y0 in ys for x0 in xs]
    for b0 in range(0, len(tiles), config.batch_size):
        chunk = tiles[b0 : b0 + config.batch_size]
        if single:
            batch = x[chunk[0][0] : chunk[-1][0] + 1]
        else:
            batch = torch.stack([x[s, :, y0 : y0 + th, x0 : x0 + tw] for s, y0, x0 in chunk])
        probs = _tile_probabilities(prep, batch, len(chunk), config.tta)
        if acc is None:
            # channels-last like the network's output: the copy below and the argmax over classes read memory in
            # order (the argmax of a (n, C, y, x) tensor laid out class-major is ~9x slower on a CPU)
            acc = torch.empty((n, probs.shape[1], hp, wp), dtype=torch.float32, device=dev,
                              memory_format=torch.channels_last)
            if not single:
                acc.zero_()
        if single:
            acc[chunk[0][0] : chunk[-1][0] + 1] = probs
            continue
        probs = probs * wmap
        for i, (s, y0, x0) in enumerate(chunk):
            acc[s, :, y0 : y0 + th, x0 : x0 + tw] += probs[i]
    assert acc is not None
    acc = acc[..., :h, :w]
    if normalise_weights and not single:
        wsum = torch.zeros((hp, wp), dtype=torch.float32, device=dev)
        for y0 in ys:
            for x0 in xs:
                wsum[y0 : y0 + th, x0 : x0 + tw] += wmap
        acc = acc / wsum[:h, :w]
    return acc


def z_kernel(sigma: float) -> np.ndarray:
    """Normalised Gaussian weights of the slices ``-r .. r`` around a slice (``r = ceil(2.5 sigma)``); ``[1]`` for 0."""
    if sigma <= 0:
        return np.ones(1)
    r = int(math.ceil(2.5 * sigma))
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return w / w.sum()


def _symmetries(mode: str) -> list[tuple[bool, tuple[int, ...]]]:
    """(transpose, flipped dims) of each pass of a test-time augmentation mode; the identity first."""
    flips = [(), (-1,), (-2,), (-2, -1)]
    if mode == "none":
        return [(False, ())]
    if mode == "flips":
        return [(False, f) for f in flips]
    return [(t, f) for t in (False, True) for f in flips]


def _tile_probabilities(prep: _Prepared, batch: torch.Tensor, n: int, tta: str) -> torch.Tensor:
    """Softmax probabilities ``(n, C, h, w)`` float32 of a batch of tiles, averaged over the test-time symmetries."""
    kind = prep.device.type if prep.device.type in ("cuda", "cpu") else "cuda"
    passes = _symmetries(tta)
    total: torch.Tensor | None = None
    for transpose, dims in passes:
        x = batch
        if dims:
            x = torch.flip(x, dims)
        if transpose:
            x = x.transpose(-2, -1)
        if _CHANNELS_LAST:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(kind, dtype=torch.float16 if kind == "cuda" else torch.bfloat16, enabled=prep.amp):
            logits = prep.module(x)
        if logits.ndim != 4 or logits.shape[0] != n or logits.shape[-2:] != x.shape[-2:]:
            raise ReactomoError(
                f"The model returned shape {tuple(logits.shape)} for tiles of shape {tuple(x.shape)}; it must "
                "return (N, classes, H, W) scores for (N, channels, H, W) images."
            )
        if prep.n_classes and logits.shape[1] != prep.n_classes:
            raise ReactomoError(
                f"The model returned {logits.shape[1]} classes but its config says {prep.n_classes}; load it with "
                "load_bundle."
            )
        probs = torch.softmax(logits.float(), dim=1)
        if transpose:
            probs = probs.transpose(-2, -1)
        if dims:
            probs = torch.flip(probs, dims)
        total = probs if total is None else total.add_(probs)
    assert total is not None
    return total / len(passes) if len(passes) > 1 else total


def _codes_lut(class_codes: Sequence[int], n_classes: int | None) -> np.ndarray:
    codes = list(class_codes) if class_codes is not None else []
    if not codes or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c <= 255 for c in codes):
        raise ReactomoError(
            f"class_codes is {class_codes!r}; give one phase code from 0 to 255 per output class, e.g. "
            "card['class_codes']."
        )
    if n_classes and len(codes) != n_classes:
        raise ReactomoError(
            f"The model has {n_classes} output classes but {len(codes)} class codes were given; use the card's "
            "class_codes of this model."
        )
    return np.asarray(codes, dtype=np.uint8)


def _check_images(images: Any, channels: int = 1) -> np.ndarray:
    """``(n, y, x)`` for a one-channel network, ``(n, channels, y, x)`` for a network fed neighbouring slices."""
    ok = isinstance(images, np.ndarray) and images.size > 0 and images.dtype.kind in "uif"
    ok = ok and (images.ndim == 3 and channels == 1 or images.ndim == 4 and images.shape[1] == channels)
    if not ok:
        got = f"shape {images.shape} {images.dtype}" if isinstance(images, np.ndarray) else type(images).__name__
        want = "(n, y, x)" if channels == 1 else f"(n, {channels}, y, x) (each slice with its neighbours)"
        raise ReactomoError(f"Images must be a non-empty numeric array of shape {want}; got {got}.")
    return images


def input_channels(model: torch.nn.Module) -> int:
    """Input channels of a network: 1 for one slice, ``2k + 1`` for a slice and ``k`` neighbours on each side."""
    cfg = getattr(model, "config", None)
    return int(getattr(cfg, "in_channels", 1) or 1)


TIME_CONTEXT = 0  # steps on each side whose same slice a new network reads beside its own (run --time-context)


def model_time_context(card: Any) -> int:
    """Time steps on each side a model reads beside the scan it labels: its card's normalisation ``"time_context"``
    (0 for models made before it). Channel layout: the scan's own slice (with its neighbouring slices) first, then the
    same slice of the steps ``-N .. -1, +1 .. +N``, each normalised on its own."""
    spec = card.get("normalisation") if isinstance(card, dict) else None
    value = spec.get("time_context", 0) if isinstance(spec, dict) else 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
        raise ReactomoError(f"The model card's time context is {value!r}; it must be 0 to 3 steps on each side.")
    return int(value)


def time_offsets(reach: int) -> list[int]:
    """The neighbouring steps' offsets in channel order: ``-reach .. -1, 1 .. reach``."""
    return [o for o in range(-int(reach), int(reach) + 1) if o]


def context_slices(volume: Any, zs: Sequence[int], channels: int) -> np.ndarray:
    """Slices ``zs`` of a volume with their neighbours as channels, ``(n, channels, y, x)`` (``(n, y, x)`` for 1).

    Channel ``j`` of slice ``z`` is slice ``z - k + j`` (``k = channels // 2``), clamped to the volume: the first and
    last slices repeat themselves. ``volume`` is an array ``(z, y, x)`` or a :class:`core.imaging.io.Volume`.
    """
    nz = int(volume.shape[0])
    k = channels // 2
    if channels < 1 or channels % 2 == 0:
        raise ReactomoError(f"A network fed neighbouring slices needs an odd number of input channels; got {channels}.")
    if channels == 1:
        return np.stack([_read_slice(volume, int(z)) for z in zs])
    cache: dict[int, np.ndarray] = {}

    def get(z: int) -> np.ndarray:
        z = min(max(z, 0), nz - 1)
        if z not in cache:
            cache[z] = _read_slice(volume, z)
        return cache[z]

    return np.stack([np.stack([get(int(z) - k + j) for j in range(channels)]) for z in zs])


def _read_slice(volume: Any, z: int) -> np.ndarray:
    return np.asarray(volume[z]) if isinstance(volume, np.ndarray) else np.asarray(volume.slice(0, z))


def _labels(prep: _Prepared, images: np.ndarray, config: InferenceConfig, lut: np.ndarray) -> np.ndarray:
    acc = _blend_slab(prep, images, config=config, normalise_weights=False)
    if acc.shape[1] != len(lut):
        raise ReactomoError(
            f"The model returned {acc.shape[1]} classes but {len(lut)} class codes were given; use the card's "
            "class_codes of this model."
        )
    idx = acc.argmax(dim=1).to(torch.uint8).cpu().numpy()
    return lut[idx]


def predict_slices(
    model: torch.nn.Module,
    images: np.ndarray,
    *,
    config: InferenceConfig = InferenceConfig(),
    class_codes: Sequence[int],
    device: str | torch.device | None = None,
    return_probabilities: bool = False,
) -> np.ndarray:
    """Phase codes of normalised slices, by overlapping tiles blended in probability space.

    Each tile's logits go through a softmax; the probabilities (not the logits) of overlapping tiles are averaged
    with the importance-map weights, and a pixel's label is the argmax of that average. This is what MONAI's
    ``sliding_window_inference(..., mode=config.blend)`` computes when its predictor returns
    ``softmax(model(x), dim=1)``; MONAI is not needed here.

    Parameters
    ----------
    model : torch.nn.Module
        E.g. a :class:`core.network.unet.UNet`; ``(N, 1, H, W) -> (N, C, H, W)`` class scores. It is not modified (a copy
        is put in eval mode on the device).
    images : ndarray, shape (n, y, x) or (n, channels, y, x), float32
        Already normalised (:func:`core.imaging.normalise.apply_normalisation`); with the neighbouring slices as channels
        for a network that takes them (:func:`context_slices`).
    config : InferenceConfig
        Tiles, overlap, batch, blend; its ``device`` is used unless ``device`` is given.
    class_codes : sequence of int
        Phase code of output class ``i`` (``card["class_codes"]``).
    device : str or torch.device, optional
        Overrides ``config.device``.
    return_probabilities : bool
        Return the blended probabilities ``(n, C, y, x)`` float32 instead of labels (for checks).

    Returns
    -------
    ndarray, shape (n, y, x), uint8
        Phase codes (or the probabilities, see ``return_probabilities``).

    Raises
    ------
    ReactomoError
        Bad images, config, device or class codes, or a model whose output does not fit.
    """
    if not isinstance(config, InferenceConfig):
        raise ReactomoError(f"config must be an InferenceConfig; got {type(config).__name__}.")
    images = _check_images(images, input_channels(model) if isinstance(model, torch.nn.Module) else 1)
    dev = device if isinstance(device, torch.device) else select_device(device or config.device)
    prep = _prepare(model, dev, amp=config.amp, cpu_amp=config.cpu_amp)
    lut = _codes_lut(class_codes, prep.n_classes or None)
    with torch.inference_mode():
        if return_probabilities:
            return _blend_slab(prep, images, config=config, normalise_weights=True).cpu().numpy()
        return _labels(prep, images, config, lut)


# ------------------------------------------------------------------------------------------------ volumes
@dataclass(frozen=True)
class SegmentResult:
    """What :func:`segment_volume` did.

    Attributes
    ----------
    shape : tuple of int
        ``(z, y, x)`` of the labels (after ``z_range`` and ``region``).
    counts : dict of int to int
        Voxels per phase code (codes with no voxel are listed with 0; post-processing may add code 0).
    seconds : float
        Wall time of the whole call.
    mvoxel_per_s : float
        Labelled voxels per second, in millions.
    out_path : str or None
        The labels file, or None when the labels are returned in ``labels``.
    labels : ndarray or None
        ``(z, y, x)`` uint8 phase codes when no ``out_path`` was given.
    normalisation : dict
        Normalisation parameters that were applied.
    config : dict
        :meth:`InferenceConfig.to_dict` of the settings used.
    warnings : list of str
        Sentences about doubtful inputs (also logged).
    device : str
        Device the network ran on.
    z_range : tuple of int
        ``(z0, z1)`` of the scan that was segmented.
    region : tuple of int
        ``(y0, y1, x0, x1)`` of the scan that was segmented.
    """

    shape: tuple[int, int, int]
    counts: dict[int, int]
    seconds: float
    mvoxel_per_s: float
    out_path: str | None
    labels: np.ndarray | None = field(repr=False, compare=False)
    normalisation: dict[str, Any]
    config: dict[str, Any]
    warnings: list[str]
    device: str
    z_range: tuple[int, int] = (0, 0)
    region: tuple[int, int, int, int] = (0, 0, 0, 0)
    precision: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary without the labels (count keys become strings, as JSON needs)."""
        return {
            "shape": list(self.shape),
            "counts": {str(k): int(v) for k, v in self.counts.items()},
            "seconds": float(self.seconds),
            "mvoxel_per_s": float(self.mvoxel_per_s),
            "out_path": self.out_path,
            "normalisation": dict(self.normalisation),
            "config": dict(self.config),
            "warnings": list(self.warnings),
            "device": self.device,
            "z_range": list(self.z_range),
            "region": list(self.region),
            "precision": self.precision,
        }


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_z_range(z_range: Any, nz: int) -> tuple[int, int]:
    if z_range is None:
        return 0, nz
    if not (isinstance(z_range, (tuple, list)) and len(z_range) == 2 and all(_is_int(v) for v in z_range)
            and 0 <= z_range[0] < z_range[1] <= nz):
        raise ReactomoError(f"z_range {z_range!r} is not inside the scan's {nz} slices; give (z0, z1) with 0 <= z0 < z1 <= {nz}.")
    return int(z_range[0]), int(z_range[1])


def _check_region(region: Any, ny: int, nx: int) -> tuple[int, int, int, int]:
    if region is None:
        return 0, ny, 0, nx
    if not (isinstance(region, (tuple, list)) and len(region) == 4 and all(_is_int(v) for v in region)
            and 0 <= region[0] < region[1] <= ny and 0 <= region[2] < region[3] <= nx):
        raise ReactomoError(
            f"region {region!r} is not inside the scan's {ny} x {nx} slices; give (y0, y1, x0, x1) with "
            f"0 <= y0 < y1 <= {ny} and 0 <= x0 < x1 <= {nx}."
        )
    return tuple(int(v) for v in region)  # type: ignore[return-value]


def _check_out_path(out_path: Any) -> Path:
    p = Path(os.path.expanduser(os.fspath(out_path)))
    if not p.name.lower().endswith((".tif", ".tiff")):
        raise ReactomoError(f"The labels file name {p.name!r} does not end in .tif or .tiff; give a name such as t000_labels.tif.")
    if p.is_dir():
        raise ReactomoError(f"The labels path {p} is a folder; give a TIFF file name inside it, such as {p / 'labels.tif'}.")
    return p


def _note(warnings: list[str], text: str) -> None:
    warnings.append(text)
    log.warning("%s", text)


def segment_volume(
    model: torch.nn.Module,
    card: dict[str, Any],
    source: str | os.PathLike | Volume | np.ndarray,
    out_path: str | os.PathLike | None = None,
    *,
    config: InferenceConfig = InferenceConfig(),
    z_range: tuple[int, int] | None = None,
    region: tuple[int, int, int, int] | None = None,
    postprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    normalisation: dict[str, Any] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    redraw: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    probabilities: Callable[[int, int, np.ndarray], None] | None = None,
    neighbours: Sequence[str | os.PathLike | Volume | np.ndarray | None] | None = None,
) -> SegmentResult:
    """Segment a scan with a U-Net, slab by slab in bounded memory, optionally straight into a TIFF.

    Parameters
    ----------
    model : torch.nn.Module
        The network (from :func:`core.network.bundle.load_bundle` or :func:`load_model_cached`); not modified.
    card : dict
        Its model card: ``class_codes``, ``normalisation`` (method and upper percentile), ``provenance``.
    source : path, Volume or ndarray (z, y, x)
        The scan; a path is opened with :func:`core.imaging.io.open_volume` and closed afterwards.
    out_path : path, optional
        Labels TIFF to write (uint8, zlib, one page per slice, axes ZYX, the scan's voxel size). Written to a
        temporary file in the same folder and renamed into place only when complete. Without it the labels are
        returned in :attr:`SegmentResult.labels`.
    config : InferenceConfig
    z_range : (z0, z1), optional
        Slices ``z0`` to ``z1 - 1`` only.
    region : (y0, y1, x0, x1), optional
        Crop of every slice.
    postprocess : callable, optional
        ``fn(labels_slab) -> labels_slab`` applied to each slab's ``(n, y, x)`` uint8 labels before counting and
        writing (e.g. from :mod:`core.segmentation.postprocess`).
    redraw : callable, optional
        ``fn(labels_slab, grey_slab) -> labels_slab`` applied before ``postprocess`` with the slab's raw grey values
        (e.g. :func:`core.labelling.partial_volume.redraw_partial_volume` for the pores' and inert phases' edges).
    probabilities : callable, optional
        ``fn(z0, z1, probs)`` with the class probabilities ``(z1 - z0, C, y, x)`` float32 of every output slab, as
        labelled (averaged over slices when ``config.z_sigma`` > 0), before ``redraw`` and ``postprocess``; ``z0, z1``
        are scan slice indices (e.g. to label a series' steps together, :mod:`core.segmentation.temporal`).
    normalisation : dict, optional
        Normalisation parameters to apply; default: fitted to this scan with the card's method and percentile.
    on_progress : callable, optional
        ``on_progress(fraction, message)`` after each slab.
    should_stop : callable, optional
        Checked before each slab; when it returns True, :class:`core.errors.JobCancelled` is raised and no file is
        left at ``out_path``.
    neighbours : sequence, optional
        For a model that reads the steps around the scan (:func:`model_time_context` ``N`` > 0): the scans of the
        steps ``-N .. -1, +1 .. +N`` in that order (paths, volumes or arrays of the scan's shape, aligned with it), each
        read as the card says and normalised on its own; None in a place (a step before the first or after the last)
        or no list at all reads the scan itself there, as the network learnt for a missing step (a note says so when
        no list was given).

    Returns
    -------
    SegmentResult

    Raises
    ------
    ReactomoError
        Bad source, crop, card or config; a constant scan (from the normalisation); or a labels file that cannot
        be written (e.g. disk full; nothing is left at ``out_path`` then).
    JobCancelled
        When ``should_stop()`` returned True.
    """
    t_start = time.perf_counter()
    if not isinstance(config, InferenceConfig):
        raise ReactomoError(f"config must be an InferenceConfig; got {type(config).__name__}.")
    if not isinstance(card, dict) or "class_codes" not in card:
        raise ReactomoError("The model card must be the dict from load_bundle with its class_codes; load the model with load_bundle.")
    if postprocess is not None and not callable(postprocess):
        raise ReactomoError(f"postprocess must be a function of a labels slab; got {type(postprocess).__name__}.")
    target = _check_out_path(out_path) if out_path is not None else None
    dev = select_device(config.device)  # before any reading, so a bad device fails fast

    own = False
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.size == 0:
            raise ReactomoError(f"The scan array has shape {source.shape}; give a non-empty 3D array (z, y, x).")
        vol: Volume | np.ndarray = source
        voxel_size = None
    elif isinstance(source, Volume):
        vol, voxel_size = source, source.voxel_size_um
    elif isinstance(source, (str, os.PathLike)):
        vol = open_volume(source)
        own = True
        voxel_size = vol.voxel_size_um
    else:
        raise ReactomoError(f"The scan must be a path, an opened Volume or a (z, y, x) array; got {type(source).__name__}.")
    if target is not None and not isinstance(vol, np.ndarray) and target.resolve() == Path(vol.path).resolve():
        if own:
            vol.close()  # type: ignore[union-attr]
        raise ReactomoError(f"The labels file {target} is the scan itself; give another file name, e.g. {target.stem}_labels.tif.")
    # the scan is read as the model's scans were: with their ring artefacts removed when the card says so
    from core.imaging.rings import model_rings, with_rings

    try:
        given = normalisation if isinstance(normalisation, dict) and "rings" in normalisation else None
        read_as, opened = with_rings(vol, model_rings(given or card.get("normalisation")))
    except BaseException:
        if own:
            vol.close()  # type: ignore[union-attr]
        raise
    if opened:
        if own:
            vol.close()  # type: ignore[union-attr]
        vol, own = read_as, True
    else:
        vol = read_as
    import contextlib

    try:
        with contextlib.ExitStack() as opened_near:
            near = _open_neighbours(card, vol, neighbours, given or card.get("normalisation"), opened_near)
            return _segment(
                model, card, vol, target, voxel_size, dev, config=config, z_range=z_range, region=region,
                postprocess=postprocess, normalisation=normalisation, on_progress=on_progress,
                should_stop=should_stop, t_start=t_start, redraw=redraw, probabilities=probabilities,
                neighbours=near, neighbours_given=neighbours is not None,
            )
    finally:
        if own:
            vol.close()  # type: ignore[union-attr]


def _open_neighbours(card: dict[str, Any], vol: Any, neighbours: Any, spec: Any, stack: Any) -> list[Any]:
    """The model's neighbouring steps, opened and read as the card says: one entry per offset, None = the scan itself."""
    from core.imaging.rings import model_rings, with_rings

    reach = model_time_context(card)
    if neighbours is None or reach == 0:
        return [None] * (2 * reach)
    if isinstance(neighbours, (str, os.PathLike, np.ndarray, Volume)) or not isinstance(neighbours, Sequence):
        raise ReactomoError("neighbours must be a list of scans, one per neighbouring step; got "
                            f"{type(neighbours).__name__}.")
    if len(neighbours) != 2 * reach:
        raise ReactomoError(f"This model reads {reach} step(s) on each side, so it needs {2 * reach} neighbouring "
                            f"scans (steps {', '.join(f'{o:+d}' for o in time_offsets(reach))}); got {len(neighbours)}.")
    mode = model_rings(spec)
    out: list[Any] = []
    for o, item in zip(time_offsets(reach), neighbours):
        if item is None or (isinstance(item, (str, os.PathLike)) and not isinstance(vol, np.ndarray)
                            and Path(item).resolve() == Path(vol.path).resolve()):
            out.append(None)
            continue
        if isinstance(item, (str, os.PathLike)):
            nv = stack.enter_context(open_volume(item))
        elif isinstance(item, (Volume, np.ndarray)):
            nv = item
        else:
            raise ReactomoError(f"The scan of step {o:+d} must be a path, an opened Volume or an array; got "
                                f"{type(item).__name__}.")
        if tuple(int(v) for v in nv.shape) != tuple(int(v) for v in vol.shape):
            raise ReactomoError(f"The scan of step {o:+d} has shape {tuple(nv.shape)}, not the scan's "
                                f"{tuple(vol.shape)}; a model that reads the steps around needs aligned scans of one shape.")
        read_as, was_opened = with_rings(nv, mode)
        if was_opened:
            stack.callback(read_as.close)
        out.append(read_as)
    return out


def _segment(
    model, card, vol, target, voxel_size, dev, *, config, z_range, region, postprocess, normalisation, on_progress,
    should_stop, t_start, redraw=None, probabilities=None, neighbours=(), neighbours_given=False,
) -> SegmentResult:
    nz, ny, nx = (int(v) for v in vol.shape)
    z0, z1 = _check_z_range(z_range, nz)
    y0, y1, x0, x1 = _check_region(region, ny, nx)
    shape = (z1 - z0, y1 - y0, x1 - x0)
    warnings: list[str] = []

    spec = card.get("normalisation") or {}
    if normalisation is None and "method" not in spec:
        _note(warnings, "The model card names no normalisation method, so the scan was normalised with 'bright-tail'; "
                        "re-save the model with its normalisation to be sure.")
    if normalisation is None:
        method = spec.get("method", "bright-tail")
        upper = spec.get("upper", 99.0)
        normalisation = fit_normalisation(vol, method=method, upper=upper)
    else:
        apply_normalisation(np.zeros(1, np.float32), normalisation)  # checks the parameters
    normalisation = dict(normalisation)
    from core.imaging.rings import model_rings, rings_summary

    normalisation["rings"] = model_rings(spec if "rings" not in normalisation else normalisation)
    removed = rings_summary(vol)
    if removed is not None or isinstance(vol, np.ndarray) and normalisation["rings"] == "remove":
        normalisation["rings_removed"] = removed or {"in_memory": True}

    trained = (card.get("provenance") or {}).get("scan_dtype")
    if trained and str(np.dtype(vol.dtype)) != str(trained):
        _note(warnings, f"The scan is {np.dtype(vol.dtype).name} but the model was trained on {trained} scans; check "
                        "the labels, as grey values may not compare.")
    prep = _prepare(model, dev, amp=config.amp, cpu_amp=config.cpu_amp)
    lut = _codes_lut(card["class_codes"], prep.n_classes or None)
    t = -(-config.tile // prep.multiple) * prep.multiple
    if shape[1] < t or shape[2] < t:  # the usual case with the default tile: slices are predicted whole
        log.debug("slices %d x %d are smaller than a %d-pixel tile: predicted whole (padded to a multiple of %d)",
                  shape[1], shape[2], t, prep.multiple)

    neighbours = list(neighbours or [])
    steps_near = len(neighbours)  # the same slice of the steps around, channels after the scan's own slices
    channels = input_channels(model) - steps_near
    if channels < 1 or channels % 2 == 0:
        raise ReactomoError(f"The model takes {input_channels(model)} input channels, which does not fit its card's "
                            f"time context of {steps_near // 2} step(s) on each side; re-save the model with its card.")
    reach = channels // 2  # neighbouring slices read on each side
    near_norm: list[dict[str, Any] | None] = []
    for nv in neighbours:  # each step normalised on its own, as the scan is
        if nv is None:
            near_norm.append(None)
        else:
            near_norm.append(fit_normalisation(nv, method=spec.get("method", "bright-tail"), upper=spec.get("upper", 99.0)))
    if steps_near and not neighbours_given:
        _note(warnings, "This model also reads the steps before and after the scan; none were given, so it read the "
                        "scan in their place (as at a series' first and last step). Segment the series to give them.")
    if steps_near:  # which neighbouring steps were read (False: the scan itself in the place of a missing one)
        normalisation["time_context"] = {"reach": steps_near // 2, "read": [nv is not None for nv in neighbours]}
    counts = np.zeros(256, dtype=np.int64)
    labels_out = None if target is not None else np.empty(shape, np.uint8)
    steps = list(range(z0, z1, config.slab))

    kernel = z_kernel(float(config.z_sigma))
    r = len(kernel) // 2

    def read(s0: int, s1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The network's input for slices s0..s1-1 (with their neighbours as channels) and their raw grey values."""
        # a network fed neighbouring slices reads them too (clamped to the scan, not to z_range)
        h0, h1 = max(s0 - reach, 0), min(s1 + reach, nz)
        raw = vol[h0:h1, y0:y1, x0:x1] if isinstance(vol, np.ndarray) else vol.slab(h0, h1)[:, y0:y1, x0:x1]
        norm = apply_normalisation(raw, normalisation)
        grey = np.array(raw[s0 - h0 : s1 - h0]) if redraw is not None else None
        del raw
        if channels == 1 and not steps_near:
            return norm, grey
        idx = np.clip(np.arange(s0, s1)[:, None] + np.arange(-reach, reach + 1)[None], 0, nz - 1) - h0
        own = norm[idx]
        if not steps_near:
            return own, grey
        centre = own[:, reach]
        extra = []
        for nv, nn in zip(neighbours, near_norm):
            if nv is None:
                extra.append(centre)
            else:
                other = nv[s0:s1, y0:y1, x0:x1] if isinstance(nv, np.ndarray) else nv.slab(s0, s1)[:, y0:y1, x0:x1]
                extra.append(apply_normalisation(other, nn))
        return np.concatenate([own, np.stack(extra, axis=1)], axis=1), grey

    def finish(k: int, s0: int, s1: int, lab: np.ndarray, grey: np.ndarray | None) -> np.ndarray:
        if redraw is not None:
            lab = redraw(lab, grey)
        if postprocess is not None:
            want = (s1 - s0, y1 - y0, x1 - x0)
            lab = postprocess(lab)
            if not isinstance(lab, np.ndarray) or lab.shape != want or lab.dtype != np.uint8:
                got = f"{lab.dtype} {lab.shape}" if isinstance(lab, np.ndarray) else type(lab).__name__
                raise ReactomoError(
                    f"postprocess returned {got} for a {want} uint8 slab; it must return uint8 labels of "
                    "the same shape."
                )
        counts[:] += np.bincount(lab.ravel(), minlength=256)
        if labels_out is not None:
            labels_out[s0 - z0 : s1 - z0] = lab
        if on_progress is not None:
            on_progress((k + 1) / len(steps), f"Segmented slices {s1 - z0} of {shape[0]}")
        return lab

    def stop(at: int) -> None:
        if should_stop is not None and should_stop():
            log.info("segmentation stopped at slice %d of %d", at - z0, shape[0])
            raise JobCancelled()

    def slabs() -> Iterator[np.ndarray]:
        if r == 0:  # every slice on its own
            for k, s0 in enumerate(steps):
                stop(s0)
                s1 = min(s0 + config.slab, z1)
                images, grey = read(s0, s1)
                with torch.inference_mode():
                    if probabilities is None:
                        lab = _labels(prep, images, config, lut)
                    else:
                        p = _blend_slab(prep, images, config=config, normalise_weights=True)
                        probabilities(s0, s1, p.float().cpu().numpy())
                        lab = lut[p.argmax(dim=1).to(torch.uint8).cpu().numpy()]
                        del p
                del images
                yield from finish(k, s0, s1, lab, grey)
            return
        # probabilities averaged over neighbouring slices: slices a..b-1 are predicted once each, in slabs, and
        # an output slab is labelled as soon as the probabilities of its neighbours (up to r slices on) exist
        a, b = max(z0 - r, 0), min(z1 + r, nz)
        weights = [float(w) for w in kernel]
        buf: torch.Tensor | None = None  # probabilities of slices first .. first + len(buf) - 1, channels-last
        first = a
        greys: dict[int, np.ndarray] = {}
        k = 0
        for i0 in range(a, b, config.slab):
            stop(max(i0, z0))
            i1 = min(i0 + config.slab, b)
            images, grey = read(i0, i1)
            with torch.inference_mode():
                p = _blend_slab(prep, images, config=config, normalise_weights=True)
                buf = p if buf is None else torch.cat([buf, p])
            del images, p
            if grey is not None:
                greys.update({z: grey[j] for j, z in enumerate(range(i0, i1))})
            del grey
            while k < len(steps):
                s0 = steps[k]
                s1 = min(s0 + config.slab, z1)
                if min(s1 - 1 + r, nz - 1) >= i1:
                    break  # its neighbours are not predicted yet
                n = s1 - s0
                with torch.inference_mode():
                    # slices s0 - r .. s1 - 1 + r, the scan's first and last repeated beyond its ends
                    near = buf[max(s0 - r, 0) - first : min(s1 + r, nz) - first]
                    pre, post = max(0, r - s0), max(0, s1 + r - nz)
                    if pre or post:
                        near = torch.cat([near[:1]] * pre + [near] + [near[-1:]] * post)
                    avg = near[0:n] * weights[0]
                    for d in range(1, len(weights)):
                        avg.add_(near[d : d + n], alpha=weights[d])
                    idx = avg.argmax(dim=1).to(torch.uint8).cpu().numpy()
                    if probabilities is not None:
                        probabilities(s0, s1, avg.float().cpu().numpy())
                del near, avg
                grey_slab = np.stack([greys.pop(z) for z in range(s0, s1)]) if redraw is not None else None
                yield from finish(k, s0, s1, lut[idx], grey_slab)
                drop = (s1 - r) - first  # slices no later output needs
                if drop > 0:
                    buf, first = buf[drop:], first + drop
                k += 1

    if target is None:
        for _ in slabs():
            pass
    else:
        _write_pages(target, slabs(), shape, voxel_size)

    seconds = time.perf_counter() - t_start
    present = {int(c): int(counts[c]) for c in lut}
    present.update({int(c): int(counts[c]) for c in np.flatnonzero(counts)})
    result = SegmentResult(
        shape=shape,
        counts=dict(sorted(present.items())),
        seconds=seconds,
        mvoxel_per_s=float(np.prod(shape)) / max(seconds, 1e-9) / 1e6,
        out_path=str(target) if target is not None else None,
        labels=labels_out,
        normalisation=normalisation,
        config=config.to_dict(),
        warnings=warnings,
        device=str(dev),
        z_range=(z0, z1),
        region=(y0, y1, x0, x1),
        precision=precision_of(config, dev),
    )
    log.info("segmented %s voxels in %.1f s (%.2f Mvoxel/s) on %s", shape, seconds, result.mvoxel_per_s, dev)
    return result


def _write_pages(target: Path, pages: Iterator[np.ndarray], shape: tuple[int, int, int], voxel_size: float | None) -> None:
    """Stream ``pages`` into a zlib uint8 TIFF at ``target`` via a temporary file renamed into place when done."""
    metadata: dict[str, Any] = {"axes": "ZYX"}
    kwargs: dict[str, Any] = {}
    if voxel_size is not None:
        metadata["voxel_size_um"] = float(voxel_size)
        kwargs.update(resolution=(1e4 / voxel_size, 1e4 / voxel_size), resolutionunit="CENTIMETER")
    # Classic TIFF offsets end at 4 GiB; compressed labels are usually far smaller, but do not bet on it.
    bigtiff = int(np.prod(shape)) > 2**31

    def writer(tmp: Path) -> None:
        with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
            tw.write(pages, shape=shape, dtype=np.uint8, photometric="minisblack", compression="zlib",
                     metadata=metadata, **kwargs)

    try:
        atomic_write_with(target, writer)
    except OSError as exc:
        raise ReactomoError(
            f"The labels file {target} could not be written ({exc.strerror or exc}); check the folder exists, is "
            "writable and has free space."
        ) from None


# ------------------------------------------------------------------------------------------------ model cache
_CACHE: "OrderedDict[tuple, tuple[torch.nn.Module, dict[str, Any]]]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
#: Models kept loaded per process, least recently used dropped first: a server where many models are checked keeps
#: a bounded number in memory (a U-Net of width 16 is ~2 MB of weights, a wide one ~100 MB).
CACHE_MODELS = 4


def load_model_cached(folder: str | os.PathLike, *, phases: Any = None, device: str | torch.device = "cpu"):
    """:func:`core.network.bundle.load_bundle`, loaded once per process (e.g. once per Dask worker).

    The cache key is the bundle's resolved path, the weights checksum in its card, the card's normalisation (how
    the model reads a scan, rings included), the device and the phase table, so a re-saved bundle is loaded afresh. Thread-safe. The returned model is shared: do not train or modify it
    (:func:`segment_volume` and :func:`predict_slices` work on copies).

    Returns
    -------
    (model, card)
    """
    from core.network.bundle import _phase_key, load_bundle, read_card

    path = Path(os.path.expanduser(os.fspath(folder))).resolve()
    card = read_card(path)
    sha = card["weights_sha256"]
    pkey = None if phases is None else tuple(_phase_key(phases))
    # how the model reads a scan (normalisation, rings) is in the card beside the weights: a changed card is reloaded
    how = json.dumps(card.get("normalisation"), sort_keys=True, default=str)
    key = (str(path), sha, str(torch.device(device)), pkey, how)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is None:
            hit = load_bundle(path, phases=phases, device=device)
            _CACHE[key] = hit
            log.info("cached model %s on %s", path, device)
            while len(_CACHE) > CACHE_MODELS:
                _CACHE.popitem(last=False)
        else:
            _CACHE.move_to_end(key)
    return hit


def clear_model_cache() -> None:
    """Forget every cached model (frees their memory once no one else holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def choose_model_cleaning(
    model: torch.nn.Module,
    images: np.ndarray,
    reference: np.ndarray,
    *,
    phases: Any,
    class_codes: Sequence[int],
    device: str | torch.device = "cpu",
    where: str = "the labelled slices",
    tta: str = "none",
):
    """The cleaning for a freshly trained network, chosen from its ground truth alone.

    Give it the ground truth the network did not train on (:func:`core.network.train.held_out`): on its own training
    pixels a network reproduces the forest's small islands, which would make every cleaning look harmful.
    The network labels these slices (whole slices, uncleaned) and
    :func:`core.segmentation.postprocess.choose_cleaning` picks the island sizes and rim width whose cleaned labels agree best
    with the ground truth (the least cleaning within a hair of the best). Trainers store the result in the model
    card (``card["cleaning"]``); segmenting with the automatic cleaning uses it. No check of the reaction is looked at.
    The held-out slices are labelled each on its own (their neighbours are not in the ground truth), while scans are
    segmented with probabilities averaged over neighbouring slices (:attr:`InferenceConfig.z_sigma`), which leaves
    fewer small islands; so the cleaning is chosen on labels a little noisier than the ones it will clean, which errs
    towards cleaning, and on the accuracy family it is none or pores under 4-9 px.

    Parameters
    ----------
    model : torch.nn.Module
    images : ndarray (n, y, x) or (n, channels, y, x), float32
        The ground-truth slices, normalised as for training (with their neighbours for a network that takes them).
    reference : ndarray (n, y, x), uint8
        Their ground-truth labels (0 = not scored).
    phases : PhaseTable
    class_codes : sequence of int
    device : str or torch.device
    where : str
        A few words naming the slices, for the choice's sentence (e.g. ``"2 held-out slices of 7"``).
    tta : str
        The test-time augmentation the scans will be segmented with (:attr:`InferenceConfig.tta`), so the cleaning is
        chosen on the same kind of labels it will clean.

    Returns
    -------
    core.segmentation.postprocess.CleaningChoice
    """
    from core.segmentation.postprocess import choose_cleaning

    pred = predict_slices(model, np.ascontiguousarray(images, dtype=np.float32), config=InferenceConfig(device=str(device), tta=tta),
                          class_codes=class_codes)
    return choose_cleaning(pred, np.asarray(reference, dtype=np.uint8), phases=phases, where=where)
