"""Per-pixel features of XY slices for the random-forest pixel classifier.

A *feature stack* describes every pixel of one XY slice by ``n_features`` numbers: smoothed intensity at several
scales, gradient magnitude, local structure (Hessian eigenvalues), neighbourhood statistics, grey morphology and an
edge-preserving smoothing. It is computed once per slice and reused: for training on the brushed pixels, for
predicting the whole slice, and again after every new brush stroke (only the classifier is retrained).

Layout
------
``FeatureStack.data`` is float32 of shape ``(n_features, y, x)``: one contiguous plane per feature (cheap to compute,
to show as an image and to cache). ``FeatureStack.pixels()`` gives the ``(y * x, n_features)`` view a classifier
needs (one transposing copy).

Intensity normalisation
-----------------------
Grey values drift between time steps (gain and offset of the reconstruction) and differ between scanners, so every
feature is computed on ``(v - lo) / (hi - lo)`` where ``lo, hi`` are robust percentiles (default 0.5 % and 99.5 %)
of the grey values. With ``normalise="volume"`` (the default) they are taken once from a sample of the whole step,
so all slices of a step share one scale (per-slice statistics would change with the slice's mix of phases, which
varies from slice to slice, and so would make the same grey value mean different things on different slices). An
affine drift of the grey values (gain and offset) between steps is removed exactly. ``"slice"`` takes them from the
slice itself; ``"none"`` keeps raw grey values.

3D context
----------
CT noise is independent from slice to slice while the rock is continuous in 3D, so with ``context_3d=True`` (the
default) the Gaussian smoothing at scale ``sigma`` is an isotropic 3D Gaussian: the neighbouring slices within
``3 * sigma`` are averaged in (mirrored at the ends of the volume), then the slice is smoothed in-plane. Derivatives
are in-plane derivatives of that 3D-smoothed image. This roughly halves the noise at a given in-plane resolution.

Speed
-----
float32 throughout; separable filters; the smoothed image of each scale is reused by every feature at that scale;
scales of at least ``downsample_from`` pixels are computed on a 2x (4x, ...) downsampled image and upsampled.
Several slices are computed in parallel threads (the filters release the GIL).
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi

from core.errors import ReactomoError

__all__ = [
    "FEATURE_GROUPS",
    "FEATURE_GROUP_HELP",
    "DEFAULT_GROUPS",
    "FeatureConfig",
    "FeatureStack",
    "feature_names",
    "intensity_reference",
    "image_features",
    "slice_features",
    "volume_features",
    "GuidedFilter",
    "guided_filter",
    "guided_filter_stats",
]

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]

#: Feature groups, in the order their planes appear in a stack.
FEATURE_GROUPS = ("intensity", "gradient", "structure", "neighbourhood", "morphology", "edges")
#: One line per feature group, for tooltips and ``--help``.
FEATURE_GROUP_HELP = {
    "intensity": "the slice and its Gaussian smoothing at every scale",
    "gradient": "gradient magnitude at every scale (edges)",
    "structure": "Hessian eigenvalues at every scale (blobs, ridges, laths)",
    "neighbourhood": "3x3 mean, minimum and maximum and 5x5 standard deviation",
    "morphology": "grey opening and closing (5x5) of the lightly smoothed slice",
    "edges": "edge-preserving (guided-filter) smoothing at two radii",
}
#: Groups on by default: on the demo benchmark (bench/bench_forest.py) gradient, structure and morphology added
#: nothing to the Dice of the ground truth but half the time, so they are opt-in.
DEFAULT_GROUPS = ("intensity", "neighbourhood", "edges")
_NORMALISE = ("volume", "slice", "none")
_TRUNCATE = 3.0  # Gaussian kernels reach 3 sigma: <0.3 % of the weight is cut, ~25 % faster than scipy's 4
_NB_Z_SIGMA = 1.0  # z smoothing of the base of the neighbourhood features when context_3d is on
_MORPH_SIGMA = 1.0
_GUIDED = ((2, 1e-3), (4, 3e-4))  # (radius px, eps in normalised intensity^2)
_MAX_SIGMA = 64.0


# ---------------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureConfig:
    """Which features to compute, at which scales. Frozen: hashable, usable as a cache key.

    Attributes
    ----------
    sigmas : tuple of float
        Scales in pixels (Gaussian standard deviations), ascending, each from 0.3 to 64. Each scale adds one
        intensity, one gradient and two structure planes (for the groups that are on).
    groups : tuple of str
        Feature groups to compute (kept in the canonical order below, whatever order they are given in). Default
        :data:`DEFAULT_GROUPS` (intensity, neighbourhood, edges: the fastest set that reached the best Dice on the
        demo benchmark).

        =============== ================================================================================
        group           planes
        =============== ================================================================================
        intensity       the normalised slice, and its Gaussian smoothing at every sigma (3D with context)
        gradient        gradient magnitude at every sigma (scale-normalised: ``sigma * |grad|``)
        structure       both Hessian eigenvalues at every sigma (``sigma^2``-normalised; < 0 on bright blobs)
        neighbourhood   3x3 mean, minimum and maximum, 5x5 standard deviation
        morphology      grey opening and closing (5x5) of the slice smoothed at sigma 1
        edges           edge-preserving smoothing: self-guided filter at radii 2 and 4
        =============== ================================================================================
    context_3d : bool
        Smooth with isotropic 3D Gaussians using the neighbouring slices (see the module notes).
    normalise : {"volume", "slice", "none"}
        Where the robust intensity range comes from (see the module notes).
    percentiles : (float, float)
        Lower and upper percentile of the grey values mapped to 0 and 1.
    downsample_from : float
        Scales of at least this many pixels are computed on a downsampled image (faster, same result to ~1 %).
    """

    sigmas: tuple[float, ...] = (0.7, 1.0, 2.0, 4.0)
    groups: tuple[str, ...] = DEFAULT_GROUPS
    context_3d: bool = True
    normalise: Literal["volume", "slice", "none"] = "volume"
    percentiles: tuple[float, float] = (0.5, 99.5)
    downsample_from: float = 8.0

    def __post_init__(self) -> None:
        # tuples (not lists) so that the config hashes; validation is explicit (validate()).
        for name in ("sigmas", "groups", "percentiles"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        # groups in their canonical order (the order of the planes), so that equal selections are equal configs;
        # unknown or repeated names are left alone for validate() to report
        g = self.groups
        if isinstance(g, tuple) and all(isinstance(v, str) for v in g) and len(set(g)) == len(g) and set(g) <= set(FEATURE_GROUPS):
            object.__setattr__(self, "groups", tuple(v for v in FEATURE_GROUPS if v in g))

    def validate(self) -> None:
        """Raise :class:`ReactomoError` (one sentence naming the value and what would work) for a bad config."""
        s = self.sigmas
        if not isinstance(s, tuple) or not s:
            raise ReactomoError(f"Feature sigmas are {s!r}; give at least one scale in pixels, e.g. (1, 2, 4).")
        for v in s:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise ReactomoError(f"Feature sigma {v!r} is not a number; give scales in pixels, e.g. (1, 2, 4).")
            if not 0.3 <= v <= _MAX_SIGMA:
                raise ReactomoError(f"Feature sigma {v!r} is outside 0.3 to {_MAX_SIGMA:g} pixels; use scales in that range.")
        if list(s) != sorted(set(s)):
            raise ReactomoError(f"Feature sigmas {list(s)} must be distinct and ascending, e.g. (1, 2, 4).")
        g = self.groups
        if not isinstance(g, tuple) or not g:
            raise ReactomoError(f"No feature group is selected; choose at least one of {', '.join(FEATURE_GROUPS)}.")
        for name in g:
            if name not in FEATURE_GROUPS:
                hint = difflib.get_close_matches(str(name), FEATURE_GROUPS, n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ReactomoError(f"Feature group {name!r} is not known{extra}; choose from {', '.join(FEATURE_GROUPS)}.")
        if len(set(g)) != len(g):
            raise ReactomoError(f"Feature groups {list(g)} repeat a group; list each group once.")
        if not isinstance(self.context_3d, (bool, np.bool_)):
            raise ReactomoError(f"context_3d is {self.context_3d!r}; use True or False.")
        if self.normalise not in _NORMALISE:
            hint = difflib.get_close_matches(str(self.normalise), _NORMALISE, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ReactomoError(f"Normalisation {self.normalise!r} is not known{extra}; use 'volume', 'slice' or 'none'.")
        p = self.percentiles
        if (
            not isinstance(p, tuple)
            or len(p) != 2
            or not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in p)
            or not 0.0 <= p[0] < p[1] <= 100.0
        ):
            raise ReactomoError(f"Percentiles {p!r} are invalid; give two numbers 0 <= low < high <= 100, e.g. (0.5, 99.5).")
        d = self.downsample_from
        if isinstance(d, bool) or not isinstance(d, (int, float, np.integer, np.floating)) or not d >= 2.0:
            raise ReactomoError(f"downsample_from is {d!r}; give a scale of at least 2 pixels (e.g. 8).")

    @property
    def n_features(self) -> int:
        """Number of feature planes this config produces."""
        return len(feature_names(self))

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-ready values (tuples as lists)."""
        d = asdict(self)
        for k in ("sigmas", "groups", "percentiles"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ReactomoError`; the result is validated."""
        if not isinstance(d, dict):
            raise ReactomoError(f"A feature config is a mapping of settings; got {type(d).__name__}.")
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise ReactomoError(f"Unknown feature setting(s) {sorted(unknown)}; allowed settings are {sorted(allowed)}.")
        kw = dict(d)
        for k in ("sigmas", "groups", "percentiles"):
            if k in kw and isinstance(kw[k], (list, tuple)):
                kw[k] = tuple(float(v) if k != "groups" else v for v in kw[k])
        cfg = cls(**kw)
        cfg.validate()
        return cfg


def _sigma_text(s: float) -> str:
    return f"{s:g}"


def feature_names(config: FeatureConfig = FeatureConfig()) -> tuple[str, ...]:
    """Names of the feature planes ``config`` produces, in stack order (known without computing anything)."""
    g = set(config.groups)
    dim = "3D" if config.context_3d else "2D"
    names: list[str] = []
    if "intensity" in g:
        names.append("intensity")
        names += [f"gaussian {dim} sigma {_sigma_text(s)}" for s in config.sigmas]
    if "gradient" in g:
        names += [f"gradient magnitude sigma {_sigma_text(s)}" for s in config.sigmas]
    if "structure" in g:
        for s in config.sigmas:
            names += [f"hessian largest eigenvalue sigma {_sigma_text(s)}", f"hessian smallest eigenvalue sigma {_sigma_text(s)}"]
    if "neighbourhood" in g:
        names += ["mean 3x3", "minimum 3x3", "maximum 3x3", "standard deviation 5x5"]
    if "morphology" in g:
        names += ["grey opening 5x5", "grey closing 5x5"]
    if "edges" in g:
        names += [f"guided filter radius {r}" for r, _ in _GUIDED]
    return tuple(names)


@dataclass
class FeatureStack:
    """The features of one XY slice.

    Attributes
    ----------
    data : ndarray, float32, shape (n_features, y, x)
        One plane per feature, in the order of :attr:`names`.
    names : tuple of str
        Feature names (see :func:`feature_names`).
    guide : ndarray, float32, shape (y, x)
        The normalised slice itself (what edge-aware refinement of the classifier's probabilities follows).
    z : int or None
        Index of the slice in its volume (None for a lone 2D image).
    config : FeatureConfig
    reference : (float, float)
        The grey values mapped to 0 and 1 (see the module notes).
    """

    data: np.ndarray
    names: tuple[str, ...]
    guide: np.ndarray
    z: int | None
    config: FeatureConfig
    reference: tuple[float, float] = field(default=(0.0, 1.0))

    @property
    def shape(self) -> tuple[int, int]:
        """``(y, x)`` of the slice."""
        return tuple(self.data.shape[1:])  # type: ignore[return-value]

    @property
    def n_features(self) -> int:
        return int(self.data.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.guide.nbytes)

    def pixels(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Features as rows, float32 C-contiguous: ``(y * x, n_features)``, or ``(n, n_features)`` for ``mask``'s
        ``True`` pixels in row-major order."""
        if mask is None:
            return np.ascontiguousarray(self.data.reshape(self.n_features, -1).T)
        return np.ascontiguousarray(self.data[:, mask].T)

    def plane(self, name: str) -> np.ndarray:
        """The plane called ``name`` (a view, shape ``(y, x)``)."""
        try:
            return self.data[self.names.index(name)]
        except ValueError:
            raise ReactomoError(f"No feature is called {name!r}; this stack has {list(self.names)}.") from None


# ---------------------------------------------------------------------------------------------------------------
# small validated helpers
# ---------------------------------------------------------------------------------------------------------------
def _check_config(config: Any) -> FeatureConfig:
    if not isinstance(config, FeatureConfig):
        raise ReactomoError(f"config must be a FeatureConfig; got {type(config).__name__}.")
    config.validate()
    return config


def _is_volume(obj: Any) -> bool:
    from core.imaging.io import Volume

    return isinstance(obj, Volume)


def _check_numeric(arr: Any, ndim: int, what: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise ReactomoError(f"The {what} must be a numpy array; got {type(arr).__name__}.")
    if arr.ndim != ndim:
        axes = "(y, x)" if ndim == 2 else "(z, y, x)"
        raise ReactomoError(f"The {what} must be {ndim}D {axes}; got shape {arr.shape}.")
    if arr.dtype.kind not in "uif" or arr.dtype == np.float16:
        raise ReactomoError(f"The {what} holds {arr.dtype.name} values; give uint8, uint16 or float32 grey values.")
    if min(arr.shape) < 1:
        raise ReactomoError(f"The {what} is empty (shape {arr.shape}); give a non-empty image.")
    if arr.shape[-1] < 3 or arr.shape[-2] < 3:
        raise ReactomoError(f"The {what} of shape {arr.shape} is too small; slices need at least 3 x 3 pixels.")
    return arr


def _check_reference(reference: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in reference)
    except (TypeError, ValueError):
        raise ReactomoError(f"The intensity reference {reference!r} is not two numbers (low, high).") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ReactomoError(f"The intensity reference ({lo:g}, {hi:g}) is invalid; give finite low < high grey values.")
    return lo, hi


def intensity_reference(
    data: np.ndarray | Any,
    *,
    percentiles: tuple[float, float] = (0.5, 99.5),
    max_voxels: int = 2_000_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Robust grey-value range ``(lo, hi)``: the given percentiles of (a seeded sample of) ``data``.

    Parameters
    ----------
    data : ndarray (any shape) or core.imaging.io.Volume
        Grey values; a :class:`~core.imaging.io.Volume` is sampled without reading it whole.
    percentiles : (float, float)
        Percentiles mapped to 0 and 1.
    max_voxels : int
        At most this many values are drawn (seeded; with replacement from arrays, see
        :meth:`core.imaging.io.Volume.sample` for volumes).
    seed : int
        Seed of the sample.

    Returns
    -------
    (float, float)
        ``lo < hi`` (when the percentiles coincide, e.g. a nearly constant image, the full min..max range is used,
        and ``(v, v + 1)`` for a constant image).

    Raises
    ------
    ReactomoError
        If ``data`` holds NaN or infinite values or nothing at all.
    """
    if _is_volume(data):
        values = data.sample(max_voxels=max_voxels, seed=seed)
    else:
        arr = np.asarray(data)
        if arr.size == 0:
            raise ReactomoError("The image is empty; give grey values to take an intensity range from.")
        flat = arr.reshape(-1)
        if flat.size > max_voxels:
            # drawn with replacement: as good for percentiles and ~10x faster than a permutation
            rng = np.random.default_rng(seed)
            flat = flat[rng.integers(0, flat.size, size=max_voxels)]
        values = flat
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ReactomoError("The image is empty; give grey values to take an intensity range from.")
    if not np.all(np.isfinite(values)):
        raise ReactomoError("The image holds NaN or infinite grey values; replace them (e.g. by 0) before computing features.")
    lo, hi = (float(v) for v in np.percentile(values, list(percentiles)))
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
        if not hi > lo:
            hi = lo + 1.0
    return lo, hi


# ---------------------------------------------------------------------------------------------------------------
# filters (float32, reflect at the borders like scipy.ndimage's default)
# ---------------------------------------------------------------------------------------------------------------
_D1 = np.array([-0.5, 0.0, 0.5], dtype=np.float32)
_D2 = np.array([1.0, -2.0, 1.0], dtype=np.float32)


def _reflect_index(i: np.ndarray, n: int) -> np.ndarray:
    """Half-sample symmetric reflection of indices into ``[0, n)`` (scipy.ndimage's ``"reflect"``)."""
    m = np.mod(i, 2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def _z_weights(sigma: float, z: int, nz: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice indices (mirrored at the ends) and float32 weights of a sampled 1D Gaussian centred on ``z``."""
    r = max(1, int(math.ceil(_TRUNCATE * sigma)))
    offsets = np.arange(-r, r + 1)
    w = np.exp(-0.5 * (offsets / sigma) ** 2)
    w /= w.sum()
    return _reflect_index(z + offsets, nz), w.astype(np.float32)


def _z_smooth(slab: np.ndarray, centre: int, z_abs: int, nz: int, z0: int, sigma: float) -> np.ndarray:
    """Weighted sum over z of a normalised float32 slab (which starts at absolute index ``z0``)."""
    idx, w = _z_weights(sigma, z_abs, nz)
    out = np.zeros(slab.shape[1:], dtype=np.float32)
    # equal indices (mirrored) are merged first so each slice is read once
    acc: dict[int, float] = {}
    for i, wi in zip(idx.tolist(), w.tolist()):
        acc[i] = acc.get(i, 0.0) + wi
    for i, wi in acc.items():
        out += np.float32(wi) * slab[i - z0]
    return out


def _gauss2d(img: np.ndarray, sigma: float, downsample_from: float) -> tuple[np.ndarray, int]:
    """In-plane Gaussian; large scales on a block-averaged image. Returns the smoothed image and its factor."""
    f = 1
    while sigma / (2 * f) >= downsample_from / 2 and min(img.shape) // (2 * f) >= 8:
        f *= 2
    if f == 1:
        return ndi.gaussian_filter(img, sigma, truncate=_TRUNCATE, mode="reflect"), 1
    ny, nx = img.shape
    py, px = (-ny) % f, (-nx) % f
    padded = np.pad(img, ((0, py), (0, px)), mode="reflect") if (py or px) else img
    small = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).mean(axis=(1, 3), dtype=np.float32)
    # block averaging is itself a blur of variance (f^2 - 1) / 12; remove it from the Gaussian's
    s = math.sqrt(max(sigma * sigma - (f * f - 1) / 12.0, 0.25 * f * f)) / f
    return ndi.gaussian_filter(small, s, truncate=_TRUNCATE, mode="reflect"), f


def _upsample(small: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a block-averaged image by ``f`` (pixel centres aligned), cropped to ``shape``."""
    if f == 1:
        return small
    ny, nx = shape
    ys = (np.arange(ny, dtype=np.float32) + 0.5) / f - 0.5
    xs = (np.arange(nx, dtype=np.float32) + 0.5) / f - 0.5
    ys = np.clip(ys, 0, small.shape[0] - 1)
    xs = np.clip(xs, 0, small.shape[1] - 1)
    y0 = np.minimum(np.floor(ys).astype(np.intp), small.shape[0] - 2) if small.shape[0] > 1 else np.zeros(ny, np.intp)
    x0 = np.minimum(np.floor(xs).astype(np.intp), small.shape[1] - 2) if small.shape[1] > 1 else np.zeros(nx, np.intp)
    wy = (ys - y0)[:, None].astype(np.float32)
    wx = (xs - x0)[None, :].astype(np.float32)
    y1 = np.minimum(y0 + 1, small.shape[0] - 1)
    x1 = np.minimum(x0 + 1, small.shape[1] - 1)
    top = small[y0][:, x0] * (1 - wx) + small[y0][:, x1] * wx
    bottom = small[y1][:, x0] * (1 - wx) + small[y1][:, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32, copy=False)


def _minmax(img: np.ndarray, size: int, op: Callable) -> np.ndarray:
    """Separable ``size x size`` minimum or maximum filter (``op`` = np.minimum / np.maximum), edges mirrored."""
    r = size // 2
    p = np.pad(img, r, mode="edge")  # for min/max, equal to scipy's "reflect" for windows of any size
    ny, nx = img.shape
    rows = p[0:ny, :].copy()
    for k in range(1, size):
        op(rows, p[k : k + ny, :], out=rows)
    out = rows[:, 0:nx].copy()
    for k in range(1, size):
        op(out, rows[:, k : k + nx], out=out)
    return out


def _box(img: np.ndarray, size: int) -> np.ndarray:
    return ndi.uniform_filter(img, size, mode="reflect")


def _guided(img: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Self-guided filter (He et al. 2013): edge-preserving smoothing with box filters only."""
    k = 2 * radius + 1
    m = _box(img, k)
    v = _box(img * img, k)
    v -= m * m
    np.maximum(v, 0, out=v)
    a = v / (v + np.float32(eps))
    b = m - a * m
    out = _box(a, k)
    out *= img
    out += _box(b, k)
    return out


@dataclass
class GuidedFilter:
    """A guided filter (He et al. 2013) with the statistics of its guide computed once, to filter many images.

    Use :func:`guided_filter_stats` to build it and :meth:`apply` for each image to filter.
    """

    guide: np.ndarray  # float32 (y, x)
    mean: np.ndarray  # box mean of the guide
    inv_var: np.ndarray  # 1 / (box variance + eps)
    size: int

    def apply(self, src: np.ndarray) -> np.ndarray:
        """``src`` (float32 ``(y, x)``) smoothed where the guide is even, kept where the guide has edges."""
        k = self.size
        mp = _box(src, k)
        a = _box(self.guide * src, k)
        a -= self.mean * mp
        a *= self.inv_var
        mp -= a * self.mean  # b
        out = _box(a, k)
        out *= self.guide
        out += _box(mp, k)
        return out


def guided_filter_stats(guide: np.ndarray, *, radius: int, eps: float) -> GuidedFilter:
    """Prepare a guided filter that follows the edges of ``guide``.

    Parameters
    ----------
    guide : ndarray, float32, shape (y, x)
        E.g. the normalised slice (:attr:`FeatureStack.guide`).
    radius : int
        Half-width of the box windows in pixels (>= 1).
    eps : float
        Regularisation in guide units squared: edges with contrast below about ``sqrt(eps)`` are smoothed across.

    Returns
    -------
    GuidedFilter
    """
    g = np.asarray(guide, dtype=np.float32)
    k = 2 * int(radius) + 1
    mean = _box(g, k)
    var = _box(g * g, k)
    var -= mean * mean
    np.maximum(var, 0, out=var)
    var += np.float32(eps)
    return GuidedFilter(guide=g, mean=mean, inv_var=np.reciprocal(var), size=k)


def guided_filter(guide: np.ndarray, src: np.ndarray, *, radius: int, eps: float) -> np.ndarray:
    """Guided filter of ``src`` following the edges of ``guide`` (both float32 ``(y, x)``).

    See :func:`guided_filter_stats` for the parameters; returns float32 ``(y, x)``.
    """
    return guided_filter_stats(guide, radius=radius, eps=eps).apply(np.asarray(src, dtype=np.float32))


# ---------------------------------------------------------------------------------------------------------------
# the features of one slice
# ---------------------------------------------------------------------------------------------------------------
def _compute(slab: np.ndarray, z_abs: int, nz: int, z0: int, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Feature planes of slice ``z_abs`` from a normalised float32 slab starting at ``z0`` (``nz`` = volume depth)."""
    g = set(config.groups)
    img = slab[z_abs - z0]
    shape = img.shape
    names = feature_names(config)
    out = np.empty((len(names), *shape), dtype=np.float32)
    k = 0

    def base(sigma_z: float) -> np.ndarray:
        if config.context_3d and nz > 1:
            return _z_smooth(slab, z_abs - z0, z_abs, nz, z0, sigma_z)
        return img

    scales = []  # (sigma, smoothed, factor)
    need_scales = g & {"intensity", "gradient", "structure"}
    if need_scales:
        for s in config.sigmas:
            sm, f = _gauss2d(base(s), s, config.downsample_from)
            scales.append((s, sm, f))
    if "intensity" in g:
        out[k] = img
        k += 1
        for s, sm, f in scales:
            out[k] = _upsample(sm, f, shape)
            k += 1
    if "gradient" in g:
        for s, sm, f in scales:
            gy = ndi.correlate1d(sm, _D1, axis=0, mode="reflect")
            gx = ndi.correlate1d(sm, _D1, axis=1, mode="reflect")
            mag = np.hypot(gy, gx)
            mag *= np.float32(s / f)  # scale-normalised, per full-resolution pixel
            out[k] = _upsample(mag, f, shape)
            k += 1
    if "structure" in g:
        for s, sm, f in scales:
            hyy = ndi.correlate1d(sm, _D2, axis=0, mode="reflect")
            hxx = ndi.correlate1d(sm, _D2, axis=1, mode="reflect")
            hxy = ndi.correlate1d(ndi.correlate1d(sm, _D1, axis=0, mode="reflect"), _D1, axis=1, mode="reflect")
            half_trace = (hxx + hyy) * np.float32(0.5)
            diff = (hxx - hyy) * np.float32(0.5)
            root = np.sqrt(diff * diff + hxy * hxy)
            norm = np.float32((s / f) ** 2)
            out[k] = _upsample((half_trace + root) * norm, f, shape)
            out[k + 1] = _upsample((half_trace - root) * norm, f, shape)
            k += 2
    if "neighbourhood" in g:
        b = base(_NB_Z_SIGMA)
        out[k] = _box(b, 3)
        out[k + 1] = _minmax(b, 3, np.minimum)
        out[k + 2] = _minmax(b, 3, np.maximum)
        m = _box(b, 5)
        v = _box(b * b, 5)
        v -= m * m
        np.maximum(v, 0, out=v)
        out[k + 3] = np.sqrt(v)
        k += 4
    if "morphology" in g:
        sm = ndi.gaussian_filter(base(_MORPH_SIGMA), _MORPH_SIGMA, truncate=_TRUNCATE, mode="reflect")
        out[k] = _minmax(_minmax(sm, 5, np.minimum), 5, np.maximum)
        out[k + 1] = _minmax(_minmax(sm, 5, np.maximum), 5, np.minimum)
        k += 2
    if "edges" in g:
        b = base(0.7)
        for r, eps in _GUIDED:
            out[k] = _guided(b, r, eps)
            k += 1
    assert k == len(names)
    return out, img


def _normalise(raw: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = raw.astype(np.float32)  # always a copy: the caller's array is never modified
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return out


def _reference_for(data: Any, config: FeatureConfig, reference: Any, *, fallback: np.ndarray | None = None) -> tuple[float, float]:
    if reference is not None:
        return _check_reference(reference)
    if config.normalise == "none":
        return 0.0, 1.0
    if config.normalise == "slice" and fallback is not None:
        return intensity_reference(fallback, percentiles=config.percentiles)
    return intensity_reference(data, percentiles=config.percentiles)


def _z_reach(config: FeatureConfig) -> int:
    """Slices needed on each side of a slice for its 3D context."""
    if not config.context_3d:
        return 0
    g = set(config.groups)
    sig = []
    if g & {"intensity", "gradient", "structure"}:
        sig += list(config.sigmas)
    if "neighbourhood" in g:
        sig.append(_NB_Z_SIGMA)
    if "morphology" in g:
        sig.append(_MORPH_SIGMA)
    if "edges" in g:
        sig.append(0.7)
    return max(1, int(math.ceil(_TRUNCATE * max(sig)))) if sig else 0


def image_features(
    image: np.ndarray,
    *,
    config: FeatureConfig = FeatureConfig(),
    reference: tuple[float, float] | None = None,
) -> FeatureStack:
    """Features of a lone 2D image (no neighbouring slices, so no 3D context even if ``config.context_3d``).

    Parameters
    ----------
    image : ndarray, shape (y, x), uint8, uint16 or float32
        Grey values; not modified.
    config : FeatureConfig
    reference : (float, float), optional
        Grey values mapped to 0 and 1; by default taken from ``image`` itself (``normalise`` "volume" and "slice"
        are the same for a lone image).

    Returns
    -------
    FeatureStack
        ``data`` float32 ``(n_features, y, x)``.

    Examples
    --------
    >>> fs = image_features(np.zeros((16, 16), np.uint16) + 7)
    >>> fs.data.shape[1:], fs.data.dtype
    ((16, 16), dtype('float32'))
    """
    config = _check_config(config)
    image = _check_numeric(image, 2, "image")
    lo, hi = _reference_for(image, config, reference, fallback=image)
    slab = _normalise(image[None], lo, hi)
    data, guide = _compute(slab, 0, 1, 0, config)
    return FeatureStack(data=data, names=feature_names(config), guide=guide, z=None, config=config, reference=(lo, hi))


def _volume_shape(volume: Any) -> tuple[int, int, int]:
    if _is_volume(volume):
        return tuple(int(v) for v in volume.shape)  # type: ignore[return-value]
    vol = _check_numeric(volume, 3, "scan volume")
    return tuple(int(v) for v in vol.shape)  # type: ignore[return-value]


def _read_slab(volume: Any, z0: int, z1: int) -> np.ndarray:
    if _is_volume(volume):
        return volume.slab(z0, z1)
    return volume[z0:z1]


def _check_z(z: Any, nz: int) -> int:
    if isinstance(z, (bool, np.bool_)) or not isinstance(z, (int, np.integer)) or not 0 <= int(z) < nz:
        raise ReactomoError(f"Slice index {z!r} is outside the volume, which has {nz} slices; give an index from 0 to {nz - 1}.")
    return int(z)


def slice_features(
    volume: np.ndarray | Any,
    z: int,
    *,
    config: FeatureConfig = FeatureConfig(),
    reference: tuple[float, float] | None = None,
) -> FeatureStack:
    """Features of XY slice ``z`` of a scan, with 3D context from its neighbours when ``config.context_3d``.

    Parameters
    ----------
    volume : ndarray (z, y, x) of uint8, uint16 or float32, or core.imaging.io.Volume
        The scan of one time step; not modified (a :class:`~core.imaging.io.Volume` is read only where needed).
    z : int
        Slice index, ``0 <= z < volume.shape[0]``.
    config : FeatureConfig
    reference : (float, float), optional
        Grey values mapped to 0 and 1; default from ``config.normalise`` (for many slices of one step, compute it
        once with :func:`intensity_reference` or use :func:`volume_features`).

    Returns
    -------
    FeatureStack
    """
    return volume_features(volume, [z], config=config, reference=reference, n_jobs=1)[0]


def volume_features(
    volume: np.ndarray | Any,
    zs: Sequence[int],
    *,
    config: FeatureConfig = FeatureConfig(),
    reference: tuple[float, float] | None = None,
    n_jobs: int | None = None,
    on_progress: Progress | None = None,
) -> list[FeatureStack]:
    """Features of several XY slices of one scan, computed in parallel threads.

    Parameters
    ----------
    volume : ndarray (z, y, x) of uint8, uint16 or float32, or core.imaging.io.Volume
        The scan of one time step; not modified.
    zs : sequence of int
        Slice indices (distinct).
    config : FeatureConfig
    reference : (float, float), optional
        Grey values mapped to 0 and 1; default: robust percentiles of the whole volume (``normalise="volume"``),
        of each slice (``"slice"``) or none (``"none"``).
    n_jobs : int, optional
        Threads; default: the number of CPU cores (at most the number of slices).
    on_progress : callable, optional
        ``on_progress(fraction, message)``.

    Returns
    -------
    list of FeatureStack
        In the order of ``zs``; each ``data`` is float32 ``(n_features, y, x)``.

    Raises
    ------
    ReactomoError
        For a bad config, a volume that is not 3D numeric, or slice indices outside it.
    """
    import os

    config = _check_config(config)
    nz, ny, nx = _volume_shape(volume)
    if ny < 3 or nx < 3:
        raise ReactomoError(f"The scan's slices are {ny} x {nx} pixels; features need at least 3 x 3.")
    zs = [_check_z(z, nz) for z in zs]
    if len(set(zs)) != len(zs):
        raise ReactomoError(f"Slice indices {zs} repeat a slice; list each slice once.")
    if not zs:
        return []
    ref = None
    if reference is not None:
        ref = _check_reference(reference)
    elif config.normalise == "volume":
        ref = intensity_reference(volume, percentiles=config.percentiles)
    elif config.normalise == "none":
        ref = (0.0, 1.0)
    reach = _z_reach(config)
    progress = on_progress or (lambda f, m: None)

    def one(z: int) -> FeatureStack:
        z0, z1 = max(0, z - reach), min(nz, z + reach + 1)
        raw = _read_slab(volume, z0, z1)
        if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
            raise ReactomoError(f"Slice {z} (or its neighbours) holds NaN or infinite grey values; replace them before computing features.")
        lo, hi = ref if ref is not None else intensity_reference(raw[z - z0], percentiles=config.percentiles)
        slab = _normalise(raw, lo, hi)
        data, guide = _compute(slab, z, nz, z0, config)
        return FeatureStack(data=data, names=feature_names(config), guide=guide.copy(), z=z, config=config, reference=(lo, hi))

    workers = min(len(zs), n_jobs or os.cpu_count() or 1)
    out: list[FeatureStack] = []
    # progress is reported from the calling thread only (a UI may not be updated from worker threads)
    with ThreadPoolExecutor(workers) if workers > 1 else _Serial() as ex:
        for st in ex.map(one, zs):
            out.append(st)
            progress(len(out) / len(zs), f"Features of slice {st.z} ({len(out)} of {len(zs)})")
    return out


class _Serial:
    """A stand-in for ThreadPoolExecutor that runs in the calling thread."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def map(self, fn: Callable, items: Sequence) -> Any:
        return (fn(item) for item in items)
