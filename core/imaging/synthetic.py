"""A generated demo experiment with known truth: a dehydrating gypsum rock imaged by a synchrotron tomograph.

The demo is the study's system in miniature (SPEC.md, ``paper/rizzo-internal-standards-4d-uct.txt``): a gypsum
rock (CaSO4·2H2O) with a few percent of bright, inert celestite (SrSO4) and a little old porosity dehydrates to
bassanite laths (CaSO4·0.5H2O) and new pore space. Everything is 3D and every array is ``(z, y, x)``.

Two parts, both seeded:

*The rock (truth)*, label codes of :mod:`core.phases` (1 gypsum, 2 bassanite, 3 pore, 4 celestite). Every gypsum
voxel gets a consumption time from growing needles: lath-shaped needles nucleate (mostly on grain boundaries and
old pores) with the orientation of their host grain and grow fast along their axis and slowly across it. The
reaction extent follows an Avrami law, ``alpha(t) = alpha_max * (1 - exp(-(k t)^n))``; at step ``t`` exactly
``N(t) = round(alpha(t) * G0)`` gypsum voxels are consumed (the first ``N(t)`` in consumption-time order), and of
them exactly ``round(N(t) * 53.15 / 74.53)`` are bassanite, the rest pore (of the voxels consumed at a step, those
of "bassanite" needles and nearest their needle's axis become bassanite; pores open as elongated voids beside and
between the laths). So the voxel counts obey the reaction's stoichiometry exactly (the internal standard holds to
rounding), the conversion is monotone (nothing is ever un-consumed) and celestite never changes.

*The imaging*, as a tomograph would produce it from that truth: per-phase attenuation with a low
gypsum/bassanite contrast, per-grain offsets and a fine lamellar texture in gypsum, partial-volume blur, noise
with the high-frequency spectrum of filtered back projection, ring artefacts reconstructed from a sinogram with
bad detector columns, a vertical noise gradient, beam-hardening cupping and a slow gain/offset drift between
steps, so that no single grey-value threshold serves all phases or all steps.

Examples
--------
>>> exp = make_demo(DemoConfig(steps=4, shape=(16, 64, 64), seed=1))
>>> len(exp.scans), exp.scans[0].dtype, exp.truth[0].dtype
(4, dtype('uint16'), dtype('uint8'))
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from core import __version__
from core.atomic import atomic_write_json, atomic_write_with
from core.errors import ReactomoError
from core.phases import BASSANITE, CELESTITE, DEFAULT_PHASES, DEFAULT_REACTION, GYPSUM, PORE

__all__ = ["DemoConfig", "DemoExperiment", "DEMO", "demo_config", "make_demo", "write_demo", "step_names", "kinetic_extent"]

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]

#: How the scans are made from the truth (see :class:`DemoConfig`).
IMAGING = ("fast", "tomography")
#: Largest number of voxels in one step (about 0.5 GB per float32 working array).
MAX_VOXELS = 2**27
# weights of (distance to the needle axis, smooth random field) in the bassanite-or-pore score of a consumed voxel
_FATE_WEIGHTS = (0.12, 0.1)
_NEVER = np.iinfo(np.uint16).max  # consumption step of a voxel that is never consumed


# ---------------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoConfig:
    """Everything that defines a demo experiment; the same config and seed always give the same arrays.

    Attributes
    ----------
    steps : int
        Number of time steps (scans), 2 to 500.
    shape : tuple of int
        ``(z, y, x)`` voxels of every scan: z from 8, y and x from 16, each at most 2048 (and at most ``MAX_VOXELS``
        in all).
    seed : int
        Seed of every random choice (rock, kinetics jitter, noise, rings, scribbles).
    voxel_size_um : float
        Voxel edge length in micrometres (the study: 2.75 um).
    interval_s : float
        Seconds between scans.
    grain_size_vox : float
        Typical gypsum grain diameter in voxels.
    pore_fraction : float
        Volume fraction of old (pre-reaction) pores.
    celestite_fraction : float
        Volume fraction of celestite aggregates.
    extent_max : float
        ``alpha_max`` of the Avrami law: the fraction of gypsum consumed after infinite time.
    avrami_n : float
        Avrami exponent ``n``.
    half_time_fraction : float
        Time at which ``alpha = alpha_max / 2``, as a fraction of the experiment's duration (sets ``k``).
    lath_length_vox : float
        Mean half-length of a bassanite needle in voxels.
    lath_aspect : float
        Half-width / half-length of a needle (its growth speed across the axis relative to along it).
    lath_width_vox : float
        Thickness of a needle when it nucleates, voxels (at least 3 so that laths stay segmentable after blur).
    lath_flatness : float
        Thickness / width of a needle's cross-section (laths are flat).
    lath_scatter_deg : float
        Scatter of needle axes around their host grain's lath direction, degrees.
    grey_pore, grey_gypsum, grey_celestite : float
        Mean grey value (uint16 units, before drift) of pores, gypsum and celestite.
    bassanite_contrast : float
        Bassanite grey value above gypsum, as a fraction of the gypsum-celestite gap (low contrast, as in the study).
    grain_offset_grey : float
        Standard deviation of the per-grain gypsum grey offset.
    texture_grey : float
        Amplitude of the fine lamellar (cleavage) texture of gypsum.
    blur_sigma_vox : float
        Gaussian point-spread function sigma in voxels (partial-volume blur).
    noise_grey : float
        Noise standard deviation at the quietest height of the sample.
    noise_gradient : float
        Noise standard deviation at the top and bottom relative to the quietest (middle) height.
    ring_grey : float
        Peak amplitude of the ring artefacts.
    n_rings : int
        Number of bad detector columns (rings).
    cupping : float
        Beam-hardening cupping: relative darkening of the centre against the corners.
    drift_gain : float
        Relative gain drift over the whole experiment.
    drift_offset_grey : float
        Offset drift over the whole experiment, in grey values.
    pore_size : float
        Size of the old pores relative to the default (radii of 1.0-2.8 voxels times this factor).
    imaging : {"fast", "tomography"}
        How the scans are made from the truth. ``"fast"``: the truth blurred, plus noise with the spectrum of
        filtered back projection and a precomputed ring image (a few seconds). ``"tomography"``: a simulated
        synchrotron scan of every step (:mod:`core.imaging.tomography`): the attenuation map is forward projected over
        180°, photon (Poisson) noise with a vertical beam profile, miscalibrated detector columns (half-rings),
        detector blur and optional propagation phase contrast are applied to the projections, and every slice is
        reconstructed by filtered back projection. ``noise_grey``, ``noise_gradient``, ``ring_grey``,
        ``blur_sigma_vox`` and ``cupping`` then set the photon count, the beam profile, the columns' gain errors,
        the detector blur and the beam hardening so that the scan has about that noise, rings and blur.
    n_angles : int
        Projections over 180° with ``imaging="tomography"`` (0 = as many as the slice is wide).
    phase_contrast : float
        Propagation phase-contrast strength with ``imaging="tomography"`` (bright/dark fringes at interfaces; 0 =
        pure absorption).
    label_step : int
        The step that carries the scribbles; -1 (default) = the mid-reaction step (extent nearest
        ``alpha_max / 2``).
    n_label_slices : int
        Number of XY slices of the label step that carry scribbles.
    scribble_fraction : float
        Target fraction of the pixels of those slices that are scribbled.
    """

    steps: int = 10
    shape: tuple[int, int, int] = (40, 256, 256)
    seed: int = 0
    voxel_size_um: float = 2.75
    interval_s: float = 300.0
    # the rock
    grain_size_vox: float = 45.0
    pore_fraction: float = 0.008
    celestite_fraction: float = 0.03
    # the reaction
    extent_max: float = 0.85
    avrami_n: float = 2.0
    half_time_fraction: float = 0.45
    lath_length_vox: float = 32.0
    lath_aspect: float = 0.16
    lath_width_vox: float = 6.0
    lath_flatness: float = 0.65
    lath_scatter_deg: float = 10.0
    # the imaging
    grey_pore: float = 12000.0
    grey_gypsum: float = 24000.0
    grey_celestite: float = 40000.0
    bassanite_contrast: float = 0.12
    grain_offset_grey: float = 150.0
    texture_grey: float = 120.0
    blur_sigma_vox: float = 0.8
    noise_grey: float = 600.0
    noise_gradient: float = 1.8
    ring_grey: float = 1800.0
    n_rings: int = 6
    cupping: float = 0.01
    drift_gain: float = -0.03
    drift_offset_grey: float = -400.0
    pore_size: float = 1.0
    imaging: str = "fast"
    n_angles: int = 0
    phase_contrast: float = 0.0
    # the scribbles
    label_step: int = -1
    n_label_slices: int = 4
    scribble_fraction: float = 0.02

    def validate(self) -> None:
        """Raise :class:`ReactomoError` (one sentence naming the value and what would work) for a bad config."""

        def _int(name: str, lo: int, hi: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ReactomoError(f"Demo {name} is {v!r}; use a whole number from {lo} to {hi}.")

        def _num(name: str, lo: float, hi: float, *, lo_open: bool = False) -> None:
            v = getattr(self, name)
            ok = not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v)
            if ok:
                ok = (v > lo if lo_open else v >= lo) and v <= hi
            if not ok:
                rng = f"{'above' if lo_open else 'from'} {lo:g} {'and at most' if lo_open else 'to'} {hi:g}"
                raise ReactomoError(f"Demo {name} is {v!r}; use a number {rng}.")

        _int("steps", 2, 500)
        shape = self.shape
        if (
            not isinstance(shape, (tuple, list))
            or len(shape) != 3
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in shape)
        ):
            raise ReactomoError(f"Demo shape is {shape!r}; give three whole numbers (z, y, x), e.g. (40, 256, 256).")
        # a few slices are enough in z (benchmarks use 8 slices of 736 x 800); slices need room for grains and laths
        if not (8 <= shape[0] <= 2048 and all(16 <= s <= 2048 for s in shape[1:])):
            raise ReactomoError(
                f"Demo shape {tuple(shape)} is outside the allowed sizes; use 8 to 2048 slices (z) of 16 to 2048 "
                f"voxels in y and x."
            )
        if int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
            raise ReactomoError(
                f"Demo shape {tuple(shape)} has {int(np.prod(shape, dtype=np.int64)):,} voxels per step; "
                f"use at most {MAX_VOXELS:,} (e.g. 128 x 1024 x 1024)."
            )
        _int("seed", 0, 2**32 - 1)
        _num("voxel_size_um", 0.0, 1e6, lo_open=True)
        _num("interval_s", 0.0, 1e7, lo_open=True)
        _num("grain_size_vox", 8.0, 1000.0)
        _num("pore_fraction", 0.0, 0.1)
        _num("celestite_fraction", 0.0, 0.2)
        _num("extent_max", 0.0, 0.98, lo_open=True)
        _num("avrami_n", 0.5, 4.0)
        _num("half_time_fraction", 0.05, 5.0)
        _num("lath_length_vox", 6.0, 200.0)
        _num("lath_aspect", 0.05, 1.0)
        _num("lath_width_vox", 1.0, 50.0)
        _num("lath_flatness", 0.2, 1.0)
        _num("lath_scatter_deg", 0.0, 90.0)
        for name in ("grey_pore", "grey_gypsum", "grey_celestite"):
            _num(name, 0.0, 60000.0)
        if not self.grey_pore < self.grey_gypsum < self.grey_celestite:
            raise ReactomoError(
                f"Demo grey values must rise from pore to gypsum to celestite; got {self.grey_pore:g}, "
                f"{self.grey_gypsum:g}, {self.grey_celestite:g}."
            )
        _num("bassanite_contrast", -1.0, 1.0)
        _num("grain_offset_grey", 0.0, 10000.0)
        _num("texture_grey", 0.0, 10000.0)
        _num("blur_sigma_vox", 0.0, 5.0)
        _num("noise_grey", 0.0, 20000.0)
        _num("noise_gradient", 1.0, 10.0)
        _num("ring_grey", 0.0, 20000.0)
        _int("n_rings", 0, 64)
        _num("cupping", 0.0, 0.5)
        _num("drift_gain", -0.5, 0.5)
        _num("drift_offset_grey", -20000.0, 20000.0)
        _num("pore_size", 0.3, 5.0)
        if self.imaging not in IMAGING:
            raise ReactomoError(f"Demo imaging is {self.imaging!r}; use one of {list(IMAGING)}.")
        _int("n_angles", 0, 8192)
        if self.n_angles and self.n_angles < 16:
            raise ReactomoError(f"Demo n_angles is {self.n_angles}; use 0 (as many as the slice is wide) or at least 16.")
        _num("phase_contrast", 0.0, 5.0)
        _int("label_step", -1, self.steps - 1)
        _int("n_label_slices", 1, 64)
        if self.n_label_slices > self.shape[0]:
            raise ReactomoError(
                f"Demo n_label_slices is {self.n_label_slices} but the scans have only {self.shape[0]} slices; "
                f"use at most {self.shape[0]}."
            )
        _num("scribble_fraction", 0.0, 0.2, lo_open=True)

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-ready values (``shape`` as a list)."""
        d = asdict(self)
        d["shape"] = [int(s) for s in self.shape]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DemoConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ReactomoError`."""
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise ReactomoError(f"Unknown demo setting(s) {sorted(unknown)}; allowed settings are {sorted(allowed)}.")
        d = dict(d)
        if "shape" in d and isinstance(d["shape"], list):
            d["shape"] = tuple(d["shape"])
        return cls(**d)


#: The demo experiment (``python -m core demo``, the dashboard's demo project, the shipped model): the generator's
#: rock, scanned by the simulated tomograph, with the study's difficulty -- bassanite only 0.08 of the
#: gypsum-celestite gap brighter than gypsum, noise 850 grey, laths 4 voxels thick. Chosen on 2026-12-04 before any
#: workflow setting was measured on it; until then the demo was the fast imaging at contrast 0.12 / noise 600, which
#: was easier than the data it stands for. The dataclass defaults stay the generator's (fast imaging, used by the
#: tests that need a quick experiment).
DEMO = DemoConfig(imaging="tomography", bassanite_contrast=0.08, noise_grey=850.0, lath_width_vox=4.0)


def demo_config(**changes: Any) -> DemoConfig:
    """:data:`DEMO` with some settings changed (e.g. ``steps``, ``shape``, ``seed``), validated."""
    from dataclasses import replace

    cfg = replace(DEMO, **{k: (tuple(v) if k == "shape" else v) for k, v in changes.items()})
    cfg.validate()
    return cfg


@dataclass
class DemoExperiment:
    """A generated experiment: scans, their known truth and a user's scribbles.

    Attributes
    ----------
    config : DemoConfig
    truth : list of ndarray
        Per step, uint8 ``(z, y, x)`` label codes 1-4 (gypsum, bassanite, pore, celestite).
    scans : list of ndarray
        Per step, uint16 ``(z, y, x)`` grey values.
    scribbles : ndarray
        uint8 ``(z, y, x)``; brush strokes (phase codes) on ``label_slices`` of ``label_step``, 0 elsewhere.
    label_step : int
        The mid-reaction step (extent nearest ``alpha_max / 2``) that carries the scribbles.
    label_slices : list of int
        z indices of the scribbled slices.
    times_s : list of float
        Time of every step in seconds (step ``i`` at ``i * interval_s``).
    extent : list of float
        Reaction extent ``alpha(t)`` of the kinetic law at every step (fraction of the initial gypsum consumed).
    counts : list of dict
        Per step, truth voxel counts by phase name.
    extent_max : float
        The ``alpha_max`` actually used (``config.extent_max`` unless the needles could not reach that much gypsum).
    """

    config: DemoConfig
    truth: list[np.ndarray]
    scans: list[np.ndarray]
    scribbles: np.ndarray
    label_step: int
    label_slices: list[int]
    times_s: list[float]
    extent: list[float]
    counts: list[dict[str, int]]
    extent_max: float = float("nan")


def step_names(steps: int) -> list[str]:
    """Names of the steps: ``t000, t001, ...`` (three digits, more when there are more than 1000 steps)."""
    width = max(3, len(str(max(int(steps) - 1, 0))))
    return [f"t{i:0{width}d}" for i in range(int(steps))]


def kinetic_extent(times_s, *, extent_max: float, avrami_n: float, rate_per_s: float) -> np.ndarray:
    """Avrami extent ``alpha(t) = extent_max * (1 - exp(-(k t)^n))`` at ``times_s`` (float64, same length)."""
    t = np.asarray(times_s, dtype=np.float64)
    return extent_max * (1.0 - np.exp(-np.power(np.maximum(rate_per_s * t, 0.0), avrami_n)))


def _rng(seed: int, part: int, *more: int) -> np.random.Generator:
    """An independent stream per part, so changing one knob (e.g. ``steps``) does not reshuffle the rest."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(part), *[int(m) for m in more]]))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _random_frames(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` random orthonormal frames ``(u, v, w)``: u uniform on the sphere, v uniform around it."""
    u = _unit(rng.standard_normal((n, 3)))
    a = _unit(rng.standard_normal((n, 3)))
    v = _unit(a - np.sum(a * u, axis=1, keepdims=True) * u)
    return u, v, np.cross(u, v)


# ---------------------------------------------------------------------------------------------------------------
# the rock
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Rock:
    """Static truth of an experiment from which every step's labels follow."""

    base: np.ndarray  # uint8 (z, y, x): codes before the reaction (gypsum, old pores, celestite)
    grain: np.ndarray  # int32 (z, y, x): gypsum grain id (0 where not gypsum)
    consumed_at: np.ndarray  # uint16 (z, y, x): step at which a gypsum voxel is consumed (_NEVER if not)
    fate: np.ndarray  # uint8 (z, y, x): BASSANITE or PORE for consumed voxels, base code elsewhere
    g0: int
    n_consumed: np.ndarray  # int64 per step
    n_bassanite: np.ndarray  # int64 per step
    extent: np.ndarray  # float64 per step (kinetic law)
    extent_max: float
    grain_frames: tuple[np.ndarray, np.ndarray, np.ndarray]

    def truth(self, step: int) -> np.ndarray:
        """uint8 labels of ``step``."""
        return np.where(self.consumed_at <= step, self.fate, self.base)


def _grains(cfg: DemoConfig, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """3D grains: a power (Laguerre) diagram of random seeds, i.e. Voronoi cells of varied size.

    Returns int32 grain ids ``1..G`` ``(z, y, x)`` and ``G``. The diagram is first labelled on a grid twice as
    coarse, then only the voxels near a coarse boundary are labelled exactly (grains are far larger than 2 voxels).
    """
    shape = np.array(cfg.shape, dtype=np.float64)
    pad = cfg.grain_size_vox
    n = max(2, int(round(np.prod(shape + 2 * pad) / cfg.grain_size_vox**3)))
    seeds = rng.uniform(-pad, shape + pad, size=(n, 3))
    # power distance |x - s|^2 - w_s is the Euclidean distance in 4D from (x, 0) to (s, sqrt(W - w_s))
    weights = rng.uniform(0.0, 1.0, n) * (0.35 * cfg.grain_size_vox) ** 2
    tree = cKDTree(np.column_stack([seeds, np.sqrt(weights.max() - weights)]))

    def label(points: np.ndarray) -> np.ndarray:
        out = np.empty(len(points), dtype=np.int32)
        for i in range(0, len(points), 1_000_000):
            q = np.zeros((min(1_000_000, len(points) - i), 4), dtype=np.float64)
            q[:, :3] = points[i : i + len(q)]
            out[i : i + len(q)] = tree.query(q, workers=-1)[1]
        return out

    cshape = tuple(int(math.ceil(s / 2)) for s in cfg.shape)
    cz, cy, cx = np.meshgrid(*[np.arange(c) * 2.0 + 0.5 for c in cshape], indexing="ij", sparse=True)
    cpts = np.column_stack([np.broadcast_to(c, cshape).ravel() for c in (cz, cy, cx)])
    coarse = label(cpts).reshape(cshape)
    near = ndi.binary_dilation(_boundaries(coarse), iterations=1)
    up = (slice(0, cfg.shape[0]), slice(0, cfg.shape[1]), slice(0, cfg.shape[2]))
    grain = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)[up]
    redo = np.flatnonzero(near.repeat(2, 0).repeat(2, 1).repeat(2, 2)[up])
    if redo.size:
        grain.ravel()[redo] = label(np.column_stack(np.unravel_index(redo, cfg.shape)).astype(np.float64))
    # renumber 1..G so that ids are compact (0 is kept for "not gypsum")
    present = np.bincount(grain.ravel(), minlength=n) > 0
    remap = np.cumsum(present).astype(np.int32)
    grain = remap[grain]
    return grain, int(present.sum())


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """True where a voxel's 6-neighbourhood holds another label."""
    b = np.zeros(labels.shape, dtype=bool)
    for ax in range(labels.ndim):
        sl_a = [slice(None)] * labels.ndim
        sl_b = [slice(None)] * labels.ndim
        sl_a[ax] = slice(1, None)
        sl_b[ax] = slice(None, -1)
        diff = labels[tuple(sl_a)] != labels[tuple(sl_b)]
        b[tuple(sl_a)] |= diff
        b[tuple(sl_b)] |= diff
    return b


def _stamp_ellipsoid(mask: np.ndarray, centre, axes: np.ndarray, radii, allowed: np.ndarray) -> int:
    """Set ``mask`` True inside the oriented ellipsoid (rows of ``axes`` are its unit axes) where ``allowed``.

    Returns the number of voxels newly set.
    """
    r = float(max(radii))
    lo = np.maximum(np.floor(np.asarray(centre) - r).astype(int), 0)
    hi = np.minimum(np.ceil(np.asarray(centre) + r).astype(int) + 1, mask.shape)
    if np.any(hi <= lo):
        return 0
    grids = np.meshgrid(*[np.arange(lo[i], hi[i]) - centre[i] for i in range(3)], indexing="ij", sparse=True)
    q = 0.0
    for k in range(3):
        proj = grids[0] * axes[k, 0] + grids[1] * axes[k, 1] + grids[2] * axes[k, 2]
        q = q + (proj / radii[k]) ** 2
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    new = (q <= 1.0) & allowed[box] & ~mask[box]
    mask[box] |= new
    return int(new.sum())


def _stamp_box(mask: np.ndarray, centre, axes: np.ndarray, half: np.ndarray) -> int:
    """Set ``mask`` True inside the oriented box (a euhedral crystal) with half-sizes ``half``; returns the new count."""
    r = float(np.linalg.norm(half))
    lo = np.maximum(np.floor(np.asarray(centre) - r).astype(int), 0)
    hi = np.minimum(np.ceil(np.asarray(centre) + r).astype(int) + 1, mask.shape)
    if np.any(hi <= lo):
        return 0
    grids = np.meshgrid(*[np.arange(lo[i], hi[i]) - centre[i] for i in range(3)], indexing="ij", sparse=True)
    inside = True
    for k in range(3):
        proj = grids[0] * axes[k, 0] + grids[1] * axes[k, 1] + grids[2] * axes[k, 2]
        inside = inside & (np.abs(proj) <= half[k])
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    new = inside & ~mask[box]
    mask[box] |= new
    return int(new.sum())


def _celestite(cfg: DemoConfig, boundary: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Aggregates of small euhedral (oriented box) crystals, added until the target fraction is reached."""
    shape = np.array(cfg.shape)
    mask = np.zeros(cfg.shape, dtype=bool)
    target = cfg.celestite_fraction * mask.size
    if target < 1:
        return mask
    bz, by, bx = np.nonzero(boundary[:, ::2, ::2])  # candidate aggregate centres on grain boundaries
    filled = 0
    for _ in range(100_000):
        if filled >= target:
            break
        if len(bz) and rng.random() < 0.6:
            k = rng.integers(len(bz))
            centre = np.array([bz[k], 2 * by[k], 2 * bx[k]], dtype=np.float64)
        else:
            centre = rng.uniform(0, shape)
        spread = rng.uniform(2.0, 5.0)
        for _c in range(int(rng.integers(4, 14))):
            c = centre + rng.normal(0.0, spread, 3)
            u, v, w = (f[0] for f in _random_frames(rng, 1))
            half = np.sort(rng.uniform(1.2, 4.5, 3))[::-1] * np.array([1.0, 0.8, 0.7])
            filled += _stamp_box(mask, c, np.stack([u, v, w]), half)
    return mask


def _old_pores(cfg: DemoConfig, boundary: np.ndarray, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small blobs (old porosity), about half on grain boundaries; never inside celestite."""
    mask = np.zeros(cfg.shape, dtype=bool)
    target = cfg.pore_fraction * mask.size
    if target < 1:
        return mask
    gyp = base == GYPSUM
    bz, by, bx = np.nonzero(boundary & gyp)
    shape = np.array(cfg.shape)
    filled = 0
    for _ in range(100_000):
        if filled >= target:
            break
        if len(bz) and rng.random() < 0.55:
            k = rng.integers(len(bz))
            centre = np.array([bz[k], by[k], bx[k]], dtype=np.float64)
        else:
            centre = rng.uniform(0, shape)
        u, v, w = (f[0] for f in _random_frames(rng, 1))
        radii = rng.uniform(1.0, 2.8, 3) * np.array([1.6, 1.0, 0.8]) * cfg.pore_size
        filled += _stamp_ellipsoid(mask, centre, np.stack([u, v, w]), radii, gyp)
    return mask


def _grow_needles(
    grain: np.ndarray,
    phi: np.ndarray,
    owner: np.ndarray,
    needles: "_Needles",
    *,
    first_id: int,
) -> None:
    """Lower the consumption time ``phi`` (and record its ``owner`` needle) with needles growing in their host grain.

    A needle seeded at ``c`` at time ``t0`` reaches ``x`` at ``t0 + d``, with ``a = x - c`` and the anisotropic
    distance ``d = ((a.u)^4 + (max(p - r0, 0) / aspect)^4)^(1/4)``, ``p = sqrt((a.v)^2 + (a.w / flat)^2)``: the needle
    starts as a lath of half-width ``r0`` (so even a young lath is at least 3 voxels across, segmentable after
    blur), lengthens at speed 1 along its axis ``u`` and widens ``1 / aspect`` times slower (less across ``w``,
    the thin direction of the lath); it stops at ``d = half_len``. Only each needle's bounding box is computed.
    """
    shape = np.array(grain.shape)
    ny, nx = grain.shape[1], grain.shape[2]
    grain_flat, phi_flat, owner_flat = grain.ravel(), phi.ravel(), owner.ravel()
    nd = needles
    for i in range(len(nd.centres)):
        c = nd.centres[i]
        u, v, w = nd.u[i], nd.v[i], nd.w[i]
        L = nd.half_len[i]
        radius = nd.r0 + L * nd.aspect
        ext = L * np.abs(u) + radius * (np.abs(v) + nd.flat * np.abs(w))
        lo = np.maximum(np.floor(c - ext).astype(int), 0)
        hi = np.minimum(np.ceil(c + ext).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        dz = (np.arange(lo[0], hi[0], dtype=np.float32) - np.float32(c[0]))[:, None, None]
        dy = (np.arange(lo[1], hi[1], dtype=np.float32) - np.float32(c[1]))[None, :, None]
        dx = (np.arange(lo[2], hi[2], dtype=np.float32) - np.float32(c[2]))[None, None, :]
        # squared perpendicular metric as a quadratic form, split so that only three operations run over the whole
        # box; the rest is computed on the voxels inside the needle's cylinder only (a few % of an oblique box)
        p = (np.outer(v, v) + np.outer(w, w) / nd.flat**2).astype(np.float32)
        zy = p[0, 0] * dz * dz + 2 * p[0, 1] * dz * dy + p[1, 1] * dy * dy
        lin = 2 * (p[0, 2] * dz + p[1, 2] * dy)
        p2 = lin * dx
        p2 += zy
        p2 += p[2, 2] * dx * dx
        cand = np.flatnonzero(p2 <= np.float32(radius * radius))
        if cand.size == 0:
            continue
        _, by, bx = hi - lo
        iz, rem = np.divmod(cand, by * bx)
        iy, ix = np.divmod(rem, bx)
        gidx = ((iz + lo[0]) * ny + (iy + lo[1])) * nx + (ix + lo[2])
        mine = grain_flat[gidx] == nd.host[i]
        gidx, cand, iz, iy, ix = gidx[mine], cand[mine], iz[mine], iy[mine], ix[mine]
        along = u[0] * dz.ravel()[iz] + u[1] * dy.ravel()[iy] + u[2] * dx.ravel()[ix]
        across = np.maximum(np.sqrt(np.maximum(p2.ravel()[cand], 0.0)) - nd.r0, 0.0) / nd.aspect
        # a rounded-rectangle norm: laths have nearly parallel sides and blunt ends, not the tips of an ellipsoid
        along *= along
        across *= across
        d = np.sqrt(np.sqrt(along * along + across * across))
        keep = d <= L
        d = d[keep] + nd.t0[i]
        gidx = gidx[keep]
        better = d < phi_flat[gidx]
        phi_flat[gidx[better]] = d[better]
        owner_flat[gidx[better]] = first_id + i


@dataclass
class _Needles:
    centres: np.ndarray
    u: np.ndarray
    v: np.ndarray
    w: np.ndarray
    half_len: np.ndarray
    t0: np.ndarray
    host: np.ndarray
    r0: float
    aspect: float
    flat: float


def _make_rock(cfg: DemoConfig, progress: Progress) -> _Rock:
    seed = cfg.seed
    shape = cfg.shape
    grain, n_grains = _grains(cfg, _rng(seed, 1))
    progress(0.05, "Grains")
    g_bound = _boundaries(grain)
    base = np.full(shape, GYPSUM, dtype=np.uint8)
    cel = _celestite(cfg, g_bound, _rng(seed, 2))
    base[cel] = CELESTITE
    pores = _old_pores(cfg, g_bound, base, _rng(seed, 3))
    base[pores] = PORE
    grain[base != GYPSUM] = 0
    progress(0.1, "Celestite and old pores")

    # each grain: lath axis u (bassanite grows topotactically), width direction v, cleavage normal w
    rng = _rng(seed, 4)
    gu, gv, gw = _random_frames(rng, n_grains + 1)

    gyp = base == GYPSUM
    g0 = int(gyp.sum())
    phi = np.full(shape, np.inf, dtype=np.float32)
    owner = np.full(shape, -1, dtype=np.int32)
    r0 = cfg.lath_width_vox / 2.0 / cfg.lath_flatness  # so that a young lath is lath_width_vox thick
    flat = cfg.lath_flatness
    mean_len = cfg.lath_length_vox * math.exp(0.35**2 / 2)
    # mean needle volume: a tapered lath ~ 0.6 of its bounding cylinder-ish body
    mean_vol = 0.6 * 2 * mean_len * math.pi * (r0 + 0.5 * mean_len * cfg.lath_aspect) ** 2 * flat
    t_nuc = 2.0 * cfg.lath_length_vox  # spread of nucleation times, in units of needle growth (voxels along the axis)
    # nucleation sites: grain boundaries and the rims of old pores first, then anywhere in gypsum
    near_pore = ndi.binary_dilation(base == PORE, iterations=2) & gyp
    site_sets = [np.flatnonzero(g_bound & gyp), np.flatnonzero(near_pore), np.flatnonzero(gyp)]
    site_weights = np.array([0.55, 0.15, 0.30])
    batches: list[_Needles] = []
    n_needles = 0
    scatter = np.tan(np.radians(cfg.lath_scatter_deg))
    need = min(0.995, cfg.extent_max + 0.05)  # gypsum the needles must reach (with a margin)
    rounds = 10
    reached = 0
    per_needle = mean_vol  # gypsum voxels newly reached per needle, re-estimated after every round
    for round_ in range(rounds):
        before = reached
        reached = int(np.count_nonzero(np.isfinite(phi)))
        if round_ > 0:
            per_needle = max((reached - before) / max(n, 1), 1.0)
        if g0 == 0 or reached >= need * g0:
            break
        if round_ == 0:
            n = max(8, int(1.3 * g0 / mean_vol))
            kind = rng.choice(3, size=n, p=site_weights)
            flat_idx = np.empty(n, dtype=np.int64)
            for k in range(3):
                sel = kind == k
                pool = site_sets[k] if len(site_sets[k]) else site_sets[2]
                flat_idx[sel] = pool[rng.integers(len(pool), size=int(sel.sum()))]
            # needles on boundaries and pores nucleate early, inside grains later
            t0 = rng.uniform(0, 1, n) ** np.where(kind == 2, 0.7, 1.6) * t_nuc
        else:
            # top up: more needles seeded in the gypsum nothing has reached yet, nucleating late
            unreached = np.flatnonzero(gyp & ~np.isfinite(phi))
            n = int(min(max(4, 1.5 * (need * g0 - reached) / per_needle), len(unreached)))
            flat_idx = unreached[rng.choice(len(unreached), size=n, replace=False)]
            t0 = t_nuc * (0.6 + 0.4 * round_ / rounds + rng.uniform(0, 0.4, n))
        centres = np.column_stack(np.unravel_index(flat_idx, shape)).astype(np.float64)
        centres += rng.uniform(-0.5, 0.5, (n, 3))
        host = grain.ravel()[flat_idx].astype(np.int64)
        # orientation: the host grain's lath axis, or (one needle in four) a twin-related variant, +- scatter
        u, v = gu[host].copy(), gv[host].copy()
        twin = rng.random(n) < 0.25
        ang = np.radians(58.0)
        u[twin] = np.cos(ang) * gu[host][twin] + np.sin(ang) * gv[host][twin]
        v[twin] = -np.sin(ang) * gu[host][twin] + np.cos(ang) * gv[host][twin]
        u = _unit(u + scatter * rng.standard_normal((n, 3)))
        v = _unit(v - np.sum(v * u, axis=1, keepdims=True) * u)
        w = np.cross(u, v)
        half_len = cfg.lath_length_vox * rng.lognormal(0.0, 0.35, n)
        batch = _Needles(centres, u, v, w, half_len, t0, host, r0, cfg.lath_aspect, flat)
        _grow_needles(grain, phi, owner, batch, first_id=n_needles)
        batches.append(batch)
        n_needles += n
        log.debug("demo needles round %d: %d needles, reach %.3f", round_, n, np.isfinite(phi).sum() / max(g0, 1))
        progress(0.1 + 0.12 * (round_ + 1) / rounds, "Bassanite needles")
    reached = int(np.count_nonzero(np.isfinite(phi)))
    centres = np.concatenate([b_.centres for b_ in batches]) if batches else np.zeros((0, 3))
    nv = np.concatenate([b_.v for b_ in batches]) if batches else np.zeros((0, 3))
    nw = np.concatenate([b_.w for b_ in batches]) if batches else np.zeros((0, 3))
    n_len = np.concatenate([b_.half_len for b_ in batches]) if batches else np.zeros(0)
    extent_max = cfg.extent_max
    if g0 and reached < extent_max * g0:
        extent_max = math.floor(1000 * reached / g0) / 1000
        log.warning(
            "demo: the needles reach only %.1f %% of the gypsum, so extent_max is capped from %.3f to %.3f",
            100 * reached / g0, cfg.extent_max, extent_max,
        )

    # kinetics: exactly N(t) = round(alpha(t) G0) voxels consumed by step t, in order of consumption time
    times = np.arange(cfg.steps) * cfg.interval_s
    duration = times[-1]
    rate = math.log(2.0) ** (1.0 / cfg.avrami_n) / (cfg.half_time_fraction * duration)
    extent = kinetic_extent(times, extent_max=extent_max, avrami_n=cfg.avrami_n, rate_per_s=rate)
    n_consumed = np.array([int(round(a * g0)) for a in extent], dtype=np.int64)
    n_consumed = np.minimum(np.maximum.accumulate(n_consumed), reached)
    ratio = DEFAULT_REACTION.product_volume_ratio(DEFAULT_PHASES)
    n_bassanite = np.array([int(round(n * ratio)) for n in n_consumed], dtype=np.int64)

    idx = np.flatnonzero(np.isfinite(phi))
    # ties broken by a seeded jitter far below a voxel's growth time
    key = phi.ravel()[idx].astype(np.float64) + 1e-4 * _rng(seed, 5).random(len(idx))
    n_last = int(n_consumed[-1])
    kth = np.unique(n_consumed[n_consumed > 0] - 1)
    # a partial sort is enough: positions [N(t-1), N(t)) then hold exactly the voxels consumed at step t
    cons = idx[np.argpartition(key, kth)[:n_last]] if n_last else idx[:0]
    del key, idx
    consumed_at = np.full(shape, _NEVER, dtype=np.uint16)
    for t in range(1, cfg.steps):
        consumed_at.ravel()[cons[n_consumed[t - 1] : n_consumed[t]]] = t
    progress(0.25, "Reaction kinetics")

    # fate: of the voxels consumed at step t, the dB(t) with the lowest score become bassanite, the rest pore. The
    # score grows with the distance to the needle's axis (relative to its full width), so laths keep bassanite
    # cores and pores open beside them; a per-needle random term makes some needles mostly pore (elongated voids
    # between laths, wide enough to be seen) and others solid bassanite; a smooth field roughens the pockets.
    zi, yi, xi = np.unravel_index(cons, shape)
    own = owner.ravel()[cons]
    a = np.column_stack([zi, yi, xi]).astype(np.float32) - centres[own].astype(np.float32)
    del zi, yi, xi
    across_v = np.einsum("ij,ij->i", a, nv[own].astype(np.float32))
    across_w = np.einsum("ij,ij->i", a, nw[own].astype(np.float32)) / np.float32(flat)
    del a
    radius = (r0 + cfg.lath_aspect * n_len[own]).astype(np.float32)
    score = np.sqrt(across_v * across_v + across_w * across_w) / radius
    del across_v, across_w, radius
    score *= np.float32(_FATE_WEIGHTS[0])
    field = ndi.gaussian_filter(_rng(seed, 6).standard_normal(shape, dtype=np.float32), 1.5)
    field /= max(float(field.std()), 1e-6)
    score += np.float32(_FATE_WEIGHTS[1]) * field.ravel()[cons]
    del field
    needle_bias = _rng(seed, 7).random(max(len(centres), 1)).astype(np.float32)
    score += needle_bias[own]
    fate = base.copy()
    fate_flat = fate.ravel()
    for t in range(1, cfg.steps):
        start, stop = int(n_consumed[t - 1]), int(n_consumed[t])
        n_b = int(n_bassanite[t] - n_bassanite[t - 1])
        group = cons[start:stop]
        if 0 < n_b < len(group):
            group = group[np.argpartition(score[start:stop], n_b - 1)]
        fate_flat[group[:n_b]] = BASSANITE
        fate_flat[group[n_b:]] = PORE
    progress(0.3, "Bassanite and new pores")
    return _Rock(
        base=base,
        grain=grain,
        consumed_at=consumed_at,
        fate=fate,
        g0=g0,
        n_consumed=n_consumed,
        n_bassanite=n_bassanite,
        extent=extent,
        extent_max=extent_max,
        grain_frames=(gu, gv, gw),
    )


# ---------------------------------------------------------------------------------------------------------------
# the imaging
# ---------------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _ring_image(ny: int, nx: int, n_rings: int, seed: int) -> tuple[np.ndarray, tuple[float, ...]]:
    """Ring artefacts: the filtered back projection of a sinogram holding only a few bad detector columns.

    FBP is linear, so reconstructing (object sinogram + bad-column offsets) equals reconstructing the object plus
    this image; adding it to every slice is therefore what a tomograph with those bad columns produces. Computed
    once per (slice shape, seed). Returns the image scaled to a peak of 1 (float32 ``(ny, nx)``) and the ring radii
    in pixels.
    """
    from skimage.transform import iradon

    if n_rings == 0:
        return np.zeros((ny, nx), dtype=np.float32), ()
    rng = _rng(seed, 20)
    n = max(ny, nx)
    n_det = int(math.ceil(n * math.sqrt(2))) + 4
    n_det += 1 - n_det % 2  # odd: the rotation axis sits on the central column
    n_angles = int(min(720, max(180, round(math.pi / 2 * n / 2))))
    theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    r_max = 0.5 * math.hypot(ny, nx)
    radii = np.sort(rng.uniform(0.12 * r_max, 0.8 * r_max, n_rings))
    side = rng.choice([-1, 1], n_rings)  # a column on either side of the axis
    sino = np.zeros((n_det, n_angles))
    centre = n_det // 2
    for r, sd in zip(radii, side):
        col = int(round(centre + sd * r))
        amp = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
        # the column's gain error wanders a little with angle, so rings are uneven arcs, as in real data
        wobble = 1.0 + 0.35 * np.sin(np.radians(theta) * rng.integers(1, 4) + rng.uniform(0, 2 * np.pi))
        for k in range(int(rng.integers(1, 4))):  # a defect spans 1-3 adjacent columns (a scintillator blemish)
            sino[min(col + k, n_det - 1)] += amp * wobble
    img = iradon(sino, theta=theta, output_size=n, filter_name="shepp-logan", circle=False)
    y0, x0 = (n - ny) // 2, (n - nx) // 2
    img = img[y0 : y0 + ny, x0 : x0 + nx]
    img /= max(float(np.abs(img).max()), 1e-12)
    img = img.astype(np.float32)
    img.setflags(write=False)
    return img, tuple(float(r) for r in radii)


def _fbp_noise_filter(ny: int, nx: int) -> np.ndarray:
    """rfft2 amplitude filter that turns white noise into FBP-like noise of unit standard deviation.

    The noise power spectrum of a filtered back projection grows like the ramp ``|k|`` times the squared
    apodisation window (here Hann, cut at Nyquist): high-frequency noise, correlated (anti-correlated) over 1-2 px.
    """
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.rfftfreq(nx)[None, :]
    k = np.sqrt(ky * ky + kx * kx)
    window = 0.5 * (1.0 + np.cos(np.pi * np.minimum(k / 0.5, 1.0)))
    amp = np.sqrt(k) * window
    # unit output std: sum of |H|^2 over the full (two-sided) spectrum divided by N
    weight = np.full(amp.shape, 2.0)
    weight[:, 0] = 1.0
    if nx % 2 == 0:
        weight[:, -1] = 1.0
    power = float(np.sum(weight * amp * amp)) / (ny * nx)
    return (amp / math.sqrt(power)).astype(np.float32)


@dataclass
class _Optics:
    """Everything about the imaging that does not change between steps (plus the drift per step)."""

    gypsum_texture: np.ndarray  # float32 (z, y, x): per-grain offset + lamellar texture, added to gypsum voxels
    ring: np.ndarray  # float32 (y, x), peak 1
    ring_radii: tuple[float, ...]
    ring_per_slice: np.ndarray  # float32 (z,)
    cupping: np.ndarray  # float32 (y, x) multiplicative
    noise_per_slice: np.ndarray  # float32 (z,) noise std in grey values
    noise_filter: np.ndarray  # float32 rfft2 filter
    gain: np.ndarray  # float64 (steps,)
    offset: np.ndarray  # float64 (steps,)
    lut: np.ndarray  # float32 grey value per code 0..4


def _make_optics(cfg: DemoConfig, rock: _Rock) -> _Optics:
    nz, ny, nx = cfg.shape
    rng = _rng(cfg.seed, 21)
    # gypsum: a small offset per grain and a fine lamellar texture normal to its cleavage (w of the grain frame)
    n_grains = len(rock.grain_frames[0])
    offsets = rng.normal(0.0, cfg.grain_offset_grey, n_grains).astype(np.float32)
    offsets[0] = 0.0
    period = rng.uniform(5.0, 9.0, n_grains)
    phase = rng.uniform(0, 2 * np.pi, n_grains)
    gw = rock.grain_frames[2]
    texture = np.zeros(cfg.shape, dtype=np.float32)
    zz = np.arange(nz, dtype=np.float32)[:, None]
    yy, xx = np.meshgrid(np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32), indexing="ij")
    yy, xx = yy.ravel(), xx.ravel()
    for z in range(nz):  # slice by slice: bounded memory
        g = rock.grain[z].ravel().astype(np.int64)
        k = (2 * np.pi / period[g]).astype(np.float32)
        arg = (zz[z] * gw[g, 0] + yy * gw[g, 1] + xx * gw[g, 2]).astype(np.float32) * k + phase[g].astype(np.float32)
        t = offsets[g] + np.float32(cfg.texture_grey) * np.sin(arg)
        t[g == 0] = 0.0
        texture[z] = t.reshape(ny, nx)
    ring, radii = _ring_image(ny, nx, cfg.n_rings if cfg.imaging == "fast" else 0, cfg.seed)
    ring_per_slice = (cfg.ring_grey * rng.uniform(0.75, 1.25, nz)).astype(np.float32)
    # beam hardening: the centre of each slice is darker than its rim
    ry = np.arange(ny) - (ny - 1) / 2
    rx = np.arange(nx) - (nx - 1) / 2
    r2 = (ry[:, None] ** 2 + rx[None, :] ** 2) / (0.25 * (ny * ny + nx * nx))
    cup = (1.0 - cfg.cupping * (1.0 - r2)).astype(np.float32)
    # noise grows from the quietest middle height towards the top and the bottom (the study's vertical gradient)
    u = np.linspace(-1.0, 1.0, nz) if nz > 1 else np.zeros(1)
    noise = (cfg.noise_grey * (1.0 + (cfg.noise_gradient - 1.0) * u * u)).astype(np.float32)
    # slow drift of the reconstruction's gain and offset over the experiment (beam, detector, temperature)
    frac = np.arange(cfg.steps) / (cfg.steps - 1)
    wiggle = 0.12 * np.sin(2 * np.pi * 1.3 * frac + rng.uniform(0, 2 * np.pi))
    gain = 1.0 + cfg.drift_gain * (frac + wiggle - wiggle[0])
    offset = cfg.drift_offset_grey * (frac + 0.5 * (wiggle - wiggle[0]))
    bas = cfg.grey_gypsum + cfg.bassanite_contrast * (cfg.grey_celestite - cfg.grey_gypsum)
    lut = np.array([0.0, cfg.grey_gypsum, bas, cfg.grey_pore, cfg.grey_celestite], dtype=np.float32)
    return _Optics(
        gypsum_texture=texture,
        ring=ring,
        ring_radii=radii,
        ring_per_slice=ring_per_slice,
        cupping=cup,
        noise_per_slice=noise,
        noise_filter=_fbp_noise_filter(ny, nx),
        gain=gain,
        offset=offset,
        lut=lut,
    )


@lru_cache(maxsize=4)
def _tomograph(ny: int, nx: int, n_angles: int, detector_sigma: float) -> tuple[Any, float, float]:
    """A :class:`core.imaging.tomography.Tomograph` and its calibration for slices of ``(ny, nx)``.

    Returns ``(tomograph, noise, ring)``: the reconstructed noise standard deviation (attenuation per pixel) of a
    uniform gypsum slice scanned with 10^4 photons per bin, and the peak of the half-ring that a gain error of 1 in
    one detector column a third of the way out leaves. Both scale exactly (1/sqrt(photons) and linearly), so the
    photon count and the gain errors for a wanted noise and ring amplitude follow.
    """
    from core.imaging.tomography import ScanPhysics, Tomograph, scan_volume

    tomo = Tomograph((ny, nx), n_angles=n_angles)
    mu = 1.0 / nx
    flat = np.full((4, ny, nx), mu, dtype=np.float32)
    rec = scan_volume(flat, tomo, ScanPhysics(photons=1e4, beam_profile=1.0, detector_sigma=detector_sigma),
                      rng=np.random.default_rng(0))
    cy, cx = ny // 2, nx // 2
    noise = float(rec[:, cy - ny // 4 : cy + ny // 4, cx - nx // 4 : cx + nx // 4].std())
    sino = np.zeros((1, tomo.n_angles, tomo.n_det), dtype=np.float32)
    sino[0, :, (tomo.n_det - 1) // 2 + max(ny, nx) // 3] = 1.0
    ring = float(np.abs(tomo.fbp(sino)).max())
    return tomo, noise, ring


def _tomography_step(cfg: DemoConfig, optics: _Optics, truth: np.ndarray, step: int) -> np.ndarray:
    """Grey values (float32) of one step scanned by the simulated tomograph (``imaging="tomography"``).

    Attenuation is linear in the demo's grey values with pores as empty space: a ray across the whole slice of
    gypsum loses ``1 - 1/e`` of its photons, celestite and bassanite attenuate in proportion to their grey values.
    """
    from core.imaging.tomography import ScanPhysics, scan_volume

    nz, ny, nx = truth.shape
    n_angles = cfg.n_angles or max(ny, nx)
    tomo, noise1, ring1 = _tomograph(ny, nx, n_angles, float(cfg.blur_sigma_vox))
    grey_per_mu = (cfg.grey_gypsum - cfg.grey_pore) * nx  # grey value of one unit of attenuation per pixel
    mu_lut = (optics.lut - np.float32(cfg.grey_pore)) / np.float32(grey_per_mu)
    mu_lut[0] = 0.0
    att = mu_lut[truth]
    np.add(att, optics.gypsum_texture / np.float32(grey_per_mu), out=att, where=truth == GYPSUM)
    # photons for the wanted noise at the quietest height; the beam profile gives noise_gradient at top and bottom
    target = max(cfg.noise_grey, 1e-3) / grey_per_mu
    photons = min(1e4 * (noise1 / target) ** 2, 1e12)
    rng = _rng(cfg.seed, 22)
    columns = []
    if cfg.n_rings and cfg.ring_grey > 0:
        r_max = 0.5 * math.hypot(ny, nx)
        for r in rng.uniform(0.12 * r_max, 0.8 * r_max, cfg.n_rings):
            gain = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * cfg.ring_grey / grey_per_mu / ring1
            side = int(rng.choice([-1, 1]))
            for k in range(int(rng.integers(1, 4))):  # a defect spans 1-3 adjacent columns (a scintillator blemish)
                columns.append((side * int(round(r)) + k, float(gain)))
    physics = ScanPhysics(photons=photons, beam_profile=1.0 / cfg.noise_gradient**2, detector_sigma=float(cfg.blur_sigma_vox),
                          phase_contrast=float(cfg.phase_contrast), bad_columns=tuple(columns))
    rec = scan_volume(att, tomo, physics, rng=_rng(cfg.seed, 30, step))
    return rec * np.float32(grey_per_mu) + np.float32(cfg.grey_pore)


def _image_step(cfg: DemoConfig, optics: _Optics, truth: np.ndarray, step: int) -> np.ndarray:
    """The uint16 scan of one step: what the tomograph reconstructs from ``truth``."""
    from scipy import fft as sfft

    if cfg.imaging == "tomography":
        img = _tomography_step(cfg, optics, truth, step)
        img *= optics.cupping
    else:
        img = optics.lut[truth]
        np.add(img, optics.gypsum_texture, out=img, where=truth == GYPSUM)
        if cfg.blur_sigma_vox > 0:
            img = ndi.gaussian_filter(img, cfg.blur_sigma_vox, truncate=3.5)
        img *= optics.cupping
        white = _rng(cfg.seed, 30, step).standard_normal(truth.shape, dtype=np.float32)
        spec = sfft.rfft2(white, axes=(1, 2), workers=-1)
        spec *= optics.noise_filter
        noise = sfft.irfft2(spec, s=truth.shape[1:], axes=(1, 2), workers=-1)
        noise *= optics.noise_per_slice[:, None, None]
        img += noise
        img += optics.ring[None] * optics.ring_per_slice[:, None, None]
    img *= np.float32(optics.gain[step])
    img += np.float32(optics.offset[step] + 0.5)  # + 0.5: round to nearest on the cast below
    np.clip(img, 0, 65535, out=img)
    return img.astype(np.uint16)


# ---------------------------------------------------------------------------------------------------------------
# the scribbles
# ---------------------------------------------------------------------------------------------------------------
def _brush(width: int) -> np.ndarray:
    """Pixel offsets ``(k, 2)`` of a round brush ``width`` pixels across (anchored at its upper-left centre)."""
    o = np.arange(width) - (width - 1) / 2.0
    oy, ox = np.meshgrid(o, o, indexing="ij")
    inside = oy * oy + ox * ox <= (width / 2.0) ** 2 + 1e-9
    base = -((width - 1) // 2)
    iy, ix = np.nonzero(inside)
    return np.column_stack([iy + base, ix + base])


def _fits(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Anchor positions where the whole brush lies inside ``mask`` (2D)."""
    ny, nx = mask.shape
    ok = np.ones_like(mask)
    for dy, dx in offsets:
        shifted = np.zeros_like(mask)
        ys = slice(max(0, -dy), min(ny, ny - dy))
        xs = slice(max(0, -dx), min(nx, nx - dx))
        shifted[ys, xs] = mask[max(0, dy) : min(ny, ny + dy), max(0, dx) : min(nx, nx + dx)]
        ok &= shifted
    return ok


def _scribble_slice(truth2d: np.ndarray, *, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Brush strokes on one slice: random walks with momentum, 2-4 px wide, each wholly inside its phase."""
    ny, nx = truth2d.shape
    out = np.zeros(truth2d.shape, dtype=np.uint8)
    inner = np.zeros(truth2d.shape, dtype=bool)
    inner[1:-1, 1:-1] = True
    codes = [GYPSUM, BASSANITE, PORE, CELESTITE]
    area = np.array([np.count_nonzero(truth2d == c) for c in codes], dtype=np.float64)
    if area.sum() == 0:
        return out
    # budget per phase: by area, but rare phases get a fair share (a user brushes every phase)
    present = area > 0
    share = np.where(present, np.sqrt(area), 0.0)
    share = np.where(present, np.maximum(share / share.sum(), 0.12), 0.0)
    budget = fraction * truth2d.size * share / share.sum()
    for code, want in zip(codes, budget):
        mask = (truth2d == code) & inner
        if not mask.any():
            continue
        valid = None
        for width in (int(rng.integers(3, 5)), 3, 2):
            brush = _brush(width)
            valid = _fits(mask, brush)
            if np.count_nonzero(valid) >= 3:
                break
        if valid is None or not valid.any():
            continue
        starts = np.flatnonzero(valid)
        painted = 0
        for _stroke in range(400):
            if painted >= want:
                break
            s = starts[rng.integers(len(starts))]
            p = np.array([s // nx, s % nx], dtype=np.float64)
            heading = rng.uniform(0, 2 * np.pi)
            for _ in range(int(rng.integers(12, 60))):
                iy, ix = int(round(p[0])), int(round(p[1]))
                py, px = iy + brush[:, 0], ix + brush[:, 1]
                painted += int(np.count_nonzero(out[py, px] == 0))
                out[py, px] = code
                if painted >= want:
                    break
                for _turn in range(6):  # momentum: keep the heading, bend gently, turn away at the phase's edge
                    heading += rng.normal(0.0, 0.3) if _turn == 0 else rng.uniform(-1.2, 1.2)
                    q = p + 1.3 * np.array([np.sin(heading), np.cos(heading)])
                    qy, qx = int(round(q[0])), int(round(q[1]))
                    if 0 <= qy < ny and 0 <= qx < nx and valid[qy, qx]:
                        p = q
                        break
                else:
                    break
    return out


# ---------------------------------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------------------------------
def _noop(fraction: float, message: str) -> None:
    pass


def _counts(truth: np.ndarray) -> dict[str, int]:
    n = np.bincount(truth.ravel(), minlength=256)
    return {p.name: int(n[p.code]) for p in DEFAULT_PHASES}


def _plan(cfg: DemoConfig, progress: Progress) -> tuple[_Rock, _Optics, int, list[int]]:
    cfg.validate()
    rock = _make_rock(cfg, lambda f, m: progress(f, m))
    optics = _make_optics(cfg, rock)
    label_step = cfg.label_step if cfg.label_step >= 0 else int(np.argmin(np.abs(rock.extent - rock.extent_max / 2.0)))
    nz, n = cfg.shape[0], cfg.n_label_slices
    label_slices = sorted({min(nz - 1, int((i + 0.5) * nz / n)) for i in range(n)})
    progress(0.35, "Imaging")
    return rock, optics, label_step, label_slices


def _scribbles(cfg: DemoConfig, truth: np.ndarray, label_slices: list[int]) -> np.ndarray:
    out = np.zeros(cfg.shape, dtype=np.uint8)
    for z in label_slices:
        out[z] = _scribble_slice(truth[z], fraction=cfg.scribble_fraction, rng=_rng(cfg.seed, 40, z))
    return out


def make_demo(config: DemoConfig = DemoConfig(), *, on_progress: Progress | None = None) -> DemoExperiment:
    """Generate a demo experiment in memory.

    Parameters
    ----------
    config : DemoConfig
        Size, seed and physics of the experiment; validated first.
    on_progress : callable, optional
        ``on_progress(fraction, message)`` with ``fraction`` rising from 0 to 1.

    Returns
    -------
    DemoExperiment
        Truth (uint8) and scans (uint16) of every step, ``(z, y, x)``, scribbles and the reaction's bookkeeping.

    Raises
    ------
    ReactomoError
        If ``config`` is invalid.
    """
    progress = on_progress or _noop
    cfg = config
    rock, optics, label_step, label_slices = _plan(cfg, progress)
    truth, scans, counts = [], [], []
    for t in range(cfg.steps):
        lab = rock.truth(t)
        truth.append(lab)
        counts.append(_counts(lab))
        scans.append(_image_step(cfg, optics, lab, t))
        progress(0.35 + 0.6 * (t + 1) / cfg.steps, f"Imaged step {t + 1} of {cfg.steps}")
    scribbles = _scribbles(cfg, truth[label_step], label_slices)
    progress(1.0, "Demo experiment ready")
    return DemoExperiment(
        config=cfg,
        truth=truth,
        scans=scans,
        scribbles=scribbles,
        label_step=label_step,
        label_slices=label_slices,
        times_s=[float(t * cfg.interval_s) for t in range(cfg.steps)],
        extent=[float(a) for a in rock.extent],
        counts=counts,
        extent_max=float(rock.extent_max),
    )


def _write_tiff(path: Path, volume: np.ndarray, *, compress: bool) -> None:
    import tifffile

    def writer(tmp: Path) -> None:
        # a 3D array is written one page per z slice
        tifffile.imwrite(tmp, volume, photometric="minisblack", compression="zlib" if compress else None)

    atomic_write_with(path, writer)


def write_demo(out_dir: str | os.PathLike, config: DemoConfig = DemoConfig(), *, on_progress: Progress | None = None) -> dict:
    """Generate a demo experiment and write it to ``out_dir``, one step at a time (bounded memory).

    Layout: ``scans/t000.tif ...`` (uint16, one page per z slice), ``truth/t000.tif ...`` (uint8 codes 1-4, zlib),
    ``scribbles.tif`` (uint8, 0 = unlabelled) and ``dataset.json`` (written last, atomically).

    Parameters
    ----------
    out_dir : path-like
        Folder to write into (created if missing; files of the same names are replaced).
    config : DemoConfig
    on_progress : callable, optional
        ``on_progress(fraction, message)``.

    Returns
    -------
    dict
        The content of ``dataset.json``: generator, version, config, voxel size, interval, label step and slices,
        phases, reaction and per step its name, time, extent, file paths (relative to ``out_dir``) and truth counts.

    Raises
    ------
    ReactomoError
        If ``config`` is invalid.
    """
    progress = on_progress or _noop
    cfg = config
    out = Path(out_dir)
    rock, optics, label_step, label_slices = _plan(cfg, progress)
    names = step_names(cfg.steps)
    steps = []
    scribbles = None
    for t, name in enumerate(names):
        lab = rock.truth(t)
        if t == label_step:
            scribbles = _scribbles(cfg, lab, label_slices)
        _write_tiff(out / "truth" / f"{name}.tif", lab, compress=True)
        _write_tiff(out / "scans" / f"{name}.tif", _image_step(cfg, optics, lab, t), compress=False)
        steps.append(
            {
                "name": name,
                "time_s": float(t * cfg.interval_s),
                "extent": float(rock.extent[t]),
                "scan": f"scans/{name}.tif",
                "truth": f"truth/{name}.tif",
                "counts": _counts(lab),
            }
        )
        progress(0.35 + 0.6 * (t + 1) / cfg.steps, f"Wrote step {t + 1} of {cfg.steps}")
    assert scribbles is not None
    _write_tiff(out / "scribbles.tif", scribbles, compress=True)
    dataset = {
        "generator": "reactomo.synthetic",
        "version": __version__,
        "config": cfg.to_dict(),
        "voxel_size_um": float(cfg.voxel_size_um),
        "interval_s": float(cfg.interval_s),
        "label_step": int(label_step),
        "label_slices": [int(z) for z in label_slices],
        "extent_max": float(rock.extent_max),
        "phases": DEFAULT_PHASES.to_dict(),
        "reaction": DEFAULT_REACTION.to_dict(),
        "steps": steps,
    }
    atomic_write_json(out / "dataset.json", dataset)
    progress(1.0, "Demo experiment written")
    log.info("demo written to %s: %d steps of %s, label step %d", out, cfg.steps, cfg.shape, label_step)
    return dataset
