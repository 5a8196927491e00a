"""Intensity normalisation of scans for the U-Net, robust to grey-value drift and to changing phase fractions.

The choice, and why
-------------------
Between time steps the detector's gain and offset drift, so the same phase has a different grey value in every
scan, while the reaction changes the phase fractions (gypsum is consumed, bassanite and pores grow). A per-scan
1st-99th percentile stretch follows the *fractions*: the 1st percentile sits in the gypsum tail of an early scan
but inside the pores of a late one, so the same phase lands on different normalised values and a network trained
on one step misreads the others.

We anchor instead on what the reaction does not move. ``normalised = (value - centre) / scale`` with

=================  ======================================================================================
method             anchors
=================  ======================================================================================
``"bright-tail"``  (default) ``centre = 0``, ``scale`` = the ``upper`` percentile (99 %) of the scan. The
                   brightest voxels are celestite, which takes no part in the reaction, so its amount and grey
                   value are the same at every step up to the drift; dividing by it removes the gain drift.
                   Grey value 0 is taken as "no attenuation", so an offset drift is left in (small next to
                   the values: the demo's -400 grey on ~24000).
``"matrix-peak"``  ``centre`` = the mode of the smoothed histogram (gypsum + bassanite, the majority at every
                   step), ``scale`` = bright tail - centre. Removes an offset too, but the peak slides from
                   gypsum to the slightly brighter bassanite as the reaction proceeds.
=================  ======================================================================================

Measured on the demo (``DemoConfig(steps=3, shape=(16, 64, 64), seed=3)``, first, label and last step), the
spread of the gypsum median in units of the gypsum-celestite gap: raw 0.115, 1-99 % stretch 0.38, matrix-peak
0.098, bright-tail 0.027 (celestite: raw 0.149, stretch 0.044, bright-tail 0.016); hence the default. The
parameters are computed per step from a sample of slices (:func:`fit_normalisation`) and are a small JSON-able
dict stored in the model card, so a model applied to another scan normalises it the same way.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from core.errors import ReactomoError

__all__ = ["METHODS", "fit_normalisation", "apply_normalisation", "percentile_stretch"]

log = logging.getLogger(__name__)

METHODS = ("bright-tail", "matrix-peak")
_BINS = 2048
_MAX_SAMPLE = 4_000_000


def _sample(data: Any, *, max_slices: int, seed: int) -> np.ndarray:
    """A 1D float64 sample of ``data`` (an array, or a lazy volume with ``.sample``)."""
    if hasattr(data, "sample") and not isinstance(data, np.ndarray):
        arr = np.asarray(data.sample(max_voxels=_MAX_SAMPLE, max_slices=max_slices, seed=seed))
    else:
        arr = np.asarray(data)
    if arr.size == 0:
        raise ReactomoError("Cannot fit a normalisation to an empty image; give at least one slice.")
    if arr.dtype.kind not in "uif":
        raise ReactomoError(f"Normalisation needs numeric grey values; got {arr.dtype}.")
    flat = arr.ravel()
    if flat.size > _MAX_SAMPLE:
        rng = np.random.default_rng(seed)
        flat = flat[rng.choice(flat.size, _MAX_SAMPLE, replace=False)]
    flat = flat.astype(np.float64)
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        raise ReactomoError("Cannot fit a normalisation: the image holds no finite grey value.")
    return flat


def fit_normalisation(
    data: Any, *, method: str = "bright-tail", upper: float = 99.0, max_slices: int = 16, seed: int = 0
) -> dict[str, Any]:
    """Normalisation parameters of one scan (see the module docstring for the choice).

    Parameters
    ----------
    data : ndarray of any shape, or a lazy volume (``core.imaging.io.Volume``)
        Grey values of the scan, or a sample of them (e.g. the ground-truth slices). A volume is sampled from
        up to ``max_slices`` slices.
    method : {"bright-tail", "matrix-peak"}
        Anchors (see the module docstring).
    upper : float
        Percentile (90-99.99) of the bright tail that sets the scale.
    max_slices, seed : int
        Sampling of a lazy volume.

    Returns
    -------
    dict
        ``{"method", "centre", "scale", "upper"}``, JSON-able; give it to :func:`apply_normalisation`.

    Raises
    ------
    ReactomoError
        Empty or constant data, or ``upper`` outside 90-99.99.
    """
    if not 90.0 <= float(upper) <= 99.99:
        raise ReactomoError(f"upper must be a percentile between 90 and 99.99; got {upper}.")
    if method not in METHODS:
        raise ReactomoError(f"Unknown normalisation method {method!r}; use one of {list(METHODS)}.")
    flat = _sample(data, max_slices=max_slices, seed=seed)
    lo, hi = np.percentile(flat, [0.1, 99.9])
    if not hi > lo:
        raise ReactomoError(f"Cannot fit a normalisation: the image is (almost) constant at {lo:g}.")
    bright = float(np.percentile(flat, upper))
    if method == "bright-tail":
        if not bright > 0:
            raise ReactomoError(f"The bright-tail normalisation needs positive grey values; the {upper} % percentile is {bright:g}. Use method='matrix-peak'.")
        return {"method": method, "centre": 0.0, "scale": bright, "upper": float(upper)}
    counts, edges = np.histogram(flat, bins=_BINS, range=(lo, hi))
    smooth = gaussian_filter1d(counts.astype(np.float64), sigma=_BINS / 256)
    i = int(np.argmax(smooth))
    width = edges[1] - edges[0]
    centre = edges[i] + width / 2
    if 0 < i < _BINS - 1:  # parabolic refinement of the peak position
        a, b, c = smooth[i - 1], smooth[i], smooth[i + 1]
        denom = a - 2 * b + c
        if denom < 0:
            centre += 0.5 * (a - c) / denom * width
    scale = bright - centre
    if not scale > 0:
        # the matrix is the brightest phase: fall back to the spread around the peak
        scale = 1.4826 * float(np.median(np.abs(flat - centre))) or 1.0
    params = {"method": method, "centre": float(centre), "scale": float(scale), "upper": float(upper)}
    log.debug("normalisation %s", params)
    return params


def _check(params: Any) -> tuple[float, float]:
    if not isinstance(params, dict) or params.get("method") not in METHODS:
        got = params.get("method") if isinstance(params, dict) else type(params).__name__
        raise ReactomoError(f"Unknown normalisation {got!r}; this version understands {list(METHODS)}.")
    centre, scale = float(params["centre"]), float(params["scale"])
    if not (np.isfinite(centre) and np.isfinite(scale) and scale > 0):
        raise ReactomoError(f"Normalisation parameters must be finite with a positive scale; got centre {centre}, scale {scale}.")
    return centre, scale


def apply_normalisation(array: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """``(array - centre) / scale`` as a new float32 array of the same shape (the input is not modified).

    Parameters
    ----------
    array : ndarray, any shape, numeric
    params : dict
        From :func:`fit_normalisation`.

    Returns
    -------
    ndarray, float32, same shape

    Raises
    ------
    ReactomoError
        When the values hold NaN or infinity: a network fed them trains on NaN losses or labels garbage, so the
        training and segmentation paths (which all come through here) refuse them, as the Data page does.
    """
    centre, scale = _check(params)
    out = np.asarray(array, dtype=np.float32) - np.float32(centre)
    out /= np.float32(scale)
    if not np.isfinite(out).all():
        arr = np.asarray(array)
        n_nan = int(np.count_nonzero(np.isnan(arr))) if np.issubdtype(arr.dtype, np.floating) else 0
        n_bad = int(np.count_nonzero(~np.isfinite(out)))
        what = f"{n_nan} NaN value{'s' if n_nan != 1 else ''}" if n_nan else f"{n_bad} infinite value{'s' if n_bad != 1 else ''}"
        raise ReactomoError(f"The scan holds {what} in the slices read; replace them with a number when reconstructing "
                            "or exporting, and open it again.")
    return out


def percentile_stretch(array: np.ndarray, *, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """The per-scan ``low``-``high`` percentile stretch to [0, 1] (the baseline this module replaces; for comparison)."""
    a = np.asarray(array, dtype=np.float64)
    p0, p1 = np.percentile(a, [low, high])
    return ((a - p0) / max(p1 - p0, 1e-12)).astype(np.float32)
