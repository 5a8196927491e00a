"""The histogram-threshold baseline the study replaced: manual grey ranges per phase, or multi-Otsu.

A grey range is half-open, ``low <= v < high``, so ranges that share an end (``[a, b)`` and ``[b, c)``) tile the grey
axis without overlapping. Pixels outside every range are 0 (unlabelled).

Multi-Otsu (:func:`multi_otsu`, via :func:`skimage.filters.threshold_multiotsu`) splits the histogram into as many
classes as phases; the classes, ordered by grey value, are mapped to phases by their expected brightness order
(default ``pore < gypsum < bassanite < celestite``: X-ray attenuation grows with density, SPEC.md). One set of
thresholds serves every pixel it is applied to, which is exactly why it fails on drifting, noisy, low-contrast CT
(SPEC.md, study section 3.2): the baseline is there to be compared against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from core.errors import ReactomoError
from core.phases import BASSANITE, CELESTITE, DEFAULT_PHASES, GYPSUM, PORE, PhaseTable

__all__ = [
    "BRIGHTNESS_ORDER",
    "GreyRange",
    "ThresholdResult",
    "check_ranges",
    "threshold_ranges",
    "otsu_thresholds",
    "otsu_ranges",
    "multi_otsu",
]

#: Default phases from darkest to brightest (pore < gypsum < bassanite < celestite).
BRIGHTNESS_ORDER = (PORE, GYPSUM, BASSANITE, CELESTITE)


@dataclass(frozen=True)
class GreyRange:
    """Pixels with ``low <= grey value < high`` belong to phase ``code``."""

    code: int
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return {"code": int(self.code), "low": float(self.low), "high": float(self.high)}


class ThresholdResult(NamedTuple):
    """Labels and the grey ranges that made them."""

    labels: np.ndarray
    ranges: tuple[GreyRange, ...]


def _num_text(v: float) -> str:
    return f"{v:g}"


def check_ranges(ranges: Sequence[Any], *, phases: PhaseTable = DEFAULT_PHASES) -> tuple[GreyRange, ...]:
    """Validate grey ranges and return them as :class:`GreyRange`, sorted by ``low``.

    Parameters
    ----------
    ranges : sequence of GreyRange or (code, low, high)
        One or more ranges; a phase may have several ranges, but no two ranges may overlap.
    phases : PhaseTable
        Every code must be one of its codes.

    Returns
    -------
    tuple of GreyRange

    Raises
    ------
    ReactomoError
        Not (code, low, high) triples, a code outside the phase table, a non-finite bound, an inverted or empty
        range (``low >= high``), or two overlapping ranges.

    Examples
    --------
    >>> check_ranges([(3, 0, 15000), (1, 15000, 25000)])[0]
    GreyRange(code=3, low=0.0, high=15000.0)
    """
    if isinstance(ranges, (str, bytes)) or not isinstance(ranges, Sequence) or not ranges:
        raise ReactomoError(f"Give at least one grey range as (code, low, high); got {ranges!r}.")
    out = []
    for item in ranges:
        if isinstance(item, GreyRange):
            code, low, high = item.code, item.low, item.high
        else:
            try:
                code, low, high = item
            except (TypeError, ValueError):
                raise ReactomoError(f"A grey range is (code, low, high); got {item!r}.") from None
        if isinstance(code, (bool, np.bool_)) or not isinstance(code, (int, np.integer, float, np.floating)) or not float(code).is_integer():
            raise ReactomoError(f"The phase code {code!r} of a grey range is not a whole number; use one of {list(phases.codes)}.")
        code = int(code)
        if code not in phases.codes:
            raise ReactomoError(f"Grey range for code {code}: no phase has that code; use one of {list(phases.codes)}.")
        try:
            low, high = float(low), float(high)
        except (TypeError, ValueError):
            raise ReactomoError(f"The bounds of the grey range for code {code} are not numbers ({low!r}, {high!r}).") from None
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ReactomoError(f"The grey range for code {code} has a bound that is not finite ({low}, {high}); give finite grey values.")
        name = phases.by_code(code).name
        if not low < high:
            raise ReactomoError(
                f"The grey range of {name} runs from {_num_text(low)} to {_num_text(high)}, which is inverted or empty; "
                "give low < high."
            )
        out.append(GreyRange(code, low, high))
    out.sort(key=lambda r: (r.low, r.high))
    for a, b in zip(out, out[1:]):
        if b.low < a.high:
            na, nb = phases.by_code(a.code).name, phases.by_code(b.code).name
            raise ReactomoError(
                f"The grey ranges of {na} [{_num_text(a.low)}, {_num_text(a.high)}) and {nb} [{_num_text(b.low)}, "
                f"{_num_text(b.high)}) overlap; make each grey value belong to one phase."
            )
    return tuple(out)


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ReactomoError(f"The image must be a numpy array of grey values; got {type(image).__name__}.")
    if image.dtype.kind not in "uif" or image.size == 0:
        raise ReactomoError(f"The image must be a non-empty array of uint8, uint16 or float32 grey values; got {image.dtype.name} of shape {image.shape}.")
    return image


def threshold_ranges(image: np.ndarray, ranges: Sequence[Any], *, phases: PhaseTable = DEFAULT_PHASES) -> np.ndarray:
    """Label pixels by grey range.

    Parameters
    ----------
    image : ndarray, any shape (e.g. (y, x) or (z, y, x)), uint8, uint16 or float32
        Grey values; not modified.
    ranges : sequence of GreyRange or (code, low, high)
        Half-open ranges ``low <= v < high`` (validated by :func:`check_ranges`).
    phases : PhaseTable

    Returns
    -------
    ndarray, uint8, same shape as ``image``
        Phase codes; 0 where no range applies (and for NaN).
    """
    image = _check_image(image)
    rs = check_ranges(ranges, phases=phases)
    out = np.zeros(image.shape, dtype=np.uint8)
    for r in rs:
        out[(image >= r.low) & (image < r.high)] = r.code
    return out


def _check_order(order: Sequence[int], phases: PhaseTable) -> list[int]:
    try:
        codes = [int(c) for c in order]
    except (TypeError, ValueError):
        raise ReactomoError(f"The brightness order must be phase codes from darkest to brightest; got {order!r}.") from None
    if len(codes) < 2:
        raise ReactomoError(f"The brightness order {codes} needs at least two phases (darkest to brightest).")
    if len(set(codes)) != len(codes):
        raise ReactomoError(f"The brightness order {codes} repeats a phase; list each phase once, darkest first.")
    bad = [c for c in codes if c not in phases.codes]
    if bad:
        raise ReactomoError(f"The brightness order holds code(s) {bad} that are not in the phase table {list(phases.codes)}.")
    if len(codes) > 5:
        raise ReactomoError(f"Multi-Otsu with {len(codes)} classes is too slow and unstable; use at most 5 phases.")
    return codes


def _sample(image: np.ndarray, max_values: int, seed: int) -> np.ndarray:
    flat = image.reshape(-1)
    if image.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    if flat.size > max_values:
        flat = flat[np.random.default_rng(seed).choice(flat.size, size=max_values, replace=False)]
    return flat


def otsu_thresholds(
    image: np.ndarray, *, classes: int = 4, nbins: int = 256, max_values: int = 4_000_000, seed: int = 0
) -> np.ndarray:
    """Multi-Otsu thresholds (``classes - 1`` of them, ascending) of the grey values of ``image``.

    Parameters
    ----------
    image : ndarray, any shape
        Grey values (a seeded sample of at most ``max_values`` is used).
    classes : int
        Number of classes (2-5).
    nbins : int
        Histogram bins.
    max_values, seed : int
        Sample size and its seed.

    Returns
    -------
    ndarray, float64, shape (classes - 1,)

    Raises
    ------
    ReactomoError
        If the image has fewer distinct grey values than classes.
    """
    from skimage.filters import threshold_multiotsu

    image = _check_image(image)
    if not 2 <= int(classes) <= 5:
        raise ReactomoError(f"Multi-Otsu needs 2 to 5 classes; got {classes}.")
    values = _sample(image, max_values, seed)
    if np.unique(values[: min(values.size, 100_000)]).size < classes and np.unique(values).size < classes:
        raise ReactomoError(f"The image has fewer distinct grey values than the {classes} phases to separate; multi-Otsu cannot split it.")
    try:
        # as float: for integer input skimage uses one bin per grey value (65536 for uint16), which is very slow
        t = threshold_multiotsu(values.astype(np.float64), classes=int(classes), nbins=int(nbins))
    except ValueError as exc:
        raise ReactomoError(f"Multi-Otsu could not split the histogram into {classes} classes ({exc}); use manual grey ranges.") from None
    return np.asarray(t, dtype=np.float64)


def otsu_ranges(
    values: np.ndarray,
    *,
    order: Sequence[int] = BRIGHTNESS_ORDER,
    phases: PhaseTable = DEFAULT_PHASES,
    nbins: int = 256,
    bounds: tuple[float, float] | None = None,
) -> tuple[GreyRange, ...]:
    """Multi-Otsu thresholds of ``values`` as half-open grey ranges, darkest phase first.

    Parameters
    ----------
    values : ndarray, any shape
        Grey values to take the thresholds from (e.g. the labelled slices, or a sample of a whole scan).
    order : sequence of int
        Phase codes from darkest to brightest; its length is the number of classes.
    phases : PhaseTable
    nbins : int
        Histogram bins.
    bounds : (float, float), optional
        Low end of the first range and high end of the last (default: the minimum of ``values`` and just above
        their maximum; give the data type's limits to cover grey values that the sample missed).

    Returns
    -------
    tuple of GreyRange
        One range per phase of ``order``, tiling ``[bounds[0], bounds[1])``.
    """
    values = _check_image(values)
    codes = _check_order(order, phases)
    t = otsu_thresholds(values, classes=len(codes), nbins=nbins)
    if bounds is None:
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        hi = hi + 1.0 if values.dtype.kind in "ui" else float(np.nextafter(np.float32(hi), np.float32(np.inf)))
    else:
        lo, hi = float(bounds[0]), float(bounds[1])
    edges = [lo, *[float(v) for v in t], hi]
    # thresholds at or beyond the data range would make an empty range: nudge them inside
    for i in range(1, len(edges)):
        if not edges[i] > edges[i - 1]:
            edges[i] = float(np.nextafter(edges[i - 1], np.inf))
    return tuple(GreyRange(c, edges[i], edges[i + 1]) for i, c in enumerate(codes))


def multi_otsu(
    image: np.ndarray,
    *,
    order: Sequence[int] = BRIGHTNESS_ORDER,
    phases: PhaseTable = DEFAULT_PHASES,
    nbins: int = 256,
    reference: np.ndarray | None = None,
) -> ThresholdResult:
    """Label pixels with multi-Otsu thresholds, classes mapped to phases by brightness.

    Parameters
    ----------
    image : ndarray, any shape, uint8, uint16 or float32
        Grey values to label; not modified.
    order : sequence of int
        Phase codes from darkest to brightest; its length is the number of classes.
    phases : PhaseTable
    nbins : int
        Histogram bins.
    reference : ndarray, optional
        Grey values to take the thresholds from (default ``image`` itself), e.g. the labelled slices of a step.

    Returns
    -------
    ThresholdResult
        ``labels`` uint8 (shape of ``image``; 0 only for NaN) and the equivalent half-open ``ranges`` (covering
        every grey value of ``image``), ready to be edited as manual ranges.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = (np.repeat([100.0, 200.0, 300.0, 400.0], 250) + rng.normal(0, 10, 1000)).astype(np.float32)
    >>> res = multi_otsu(img)  # pore < gypsum < bassanite < celestite
    >>> [int(res.labels[i]) for i in (0, 300, 600, 900)]
    [3, 1, 2, 4]
    """
    image = _check_image(image)
    src = image if reference is None else _check_image(reference)
    lo = float(min(np.nanmin(image), np.nanmin(src)))
    hi = float(max(np.nanmax(image), np.nanmax(src)))
    hi = hi + 1.0 if image.dtype.kind in "ui" else float(np.nextafter(np.float32(hi), np.float32(np.inf)))
    ranges = otsu_ranges(src, order=order, phases=phases, nbins=nbins, bounds=(lo, hi))
    # np.digitize with the thresholds is threshold_multiotsu's own recipe: v < t_1 -> class 0, t_1 <= v < t_2 -> 1,
    # ... (the same half-open ranges)
    t = np.asarray([r.low for r in ranges[1:]], dtype=np.float64)
    values = np.nan_to_num(image, nan=lo) if image.dtype.kind == "f" else image
    idx = np.digitize(values, bins=t)
    labels = np.asarray([r.code for r in ranges], dtype=np.uint8)[idx]
    if image.dtype.kind == "f":
        labels[~np.isfinite(image)] = 0
    return ThresholdResult(labels, ranges)
