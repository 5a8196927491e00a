"""Pore-space descriptors per step: porosity, connected porosity, local thickness and equivalent diameters.

Local thickness (Hildebrand & Rüegsegger 1997; the definition of PoreSpy's ``porespy.filters.local_thickness``
and ImageJ's "Local Thickness"): every pore voxel gets the diameter of the largest ball that fits inside the pore
space and contains the voxel. Discretisation, decided once:

- ``dt`` is the Euclidean distance transform of the pore mask (:func:`scipy.ndimage.distance_transform_edt`): the
  distance from a pore voxel centre to the nearest solid voxel centre (outside the array is *not* solid, so pores
  cut by the volume's faces are treated as continuing beyond it).
- The ball of a centre ``c`` is the set of voxels strictly closer to ``c`` than ``dt(c)``; it never contains a solid
  voxel. The local thickness of ``p`` is ``2 · max{dt(c) : |p - c| < dt(c)}`` (times the voxel size), computed
  exactly for that definition (every distinct ``dt`` value, no radius bins, unless ``sampling_step`` asks for them).
- This voxel model is within one voxel of the continuous value: a ball ``|x| < R`` (integer ``R``) gets exactly
  ``2R`` everywhere; a slab of ``T`` voxel layers gets ``T`` (``T`` even) or ``T + 1`` (``T`` odd); a single pore
  voxel gets 2 voxels.
- PoreSpy 3.x returns *radii* restricted to whole voxels (``floor``-like levels); twice its value is up to two
  voxels below ours. See ``bench/bench_pores.py``.

Algorithm: distance transform; drop every centre whose ball is contained in the ball of a neighbour within two
voxels (exact containment test on the voxel sets, from a table per distinct ``dt`` value); paint the remaining
balls in increasing radius order (later, larger balls overwrite), with flat-index writes in bounded chunks.

Connected porosity is the share of labelled voxels that are pore voxels in a pore cluster (face connectivity)
touching one of the volume's boundary faces, i.e. pore space reachable from outside the scanned volume; enclosed
pores are left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from core.errors import ReactomoError

__all__ = [
    "bootstrap_ci",
    "connected_porosity",
    "equivalent_diameters",
    "local_thickness",
    "pore_size_table",
    "porosity",
    "size_distribution",
]

_CHUNK = 1 << 22  # index writes per chunk while painting balls: bounded memory
_NAN = float("nan")


# ---------------------------------------------------------------------------------------------------------- checks
def _check_voxel_size(voxel_size_um: Any) -> float:
    ok = isinstance(voxel_size_um, (int, float, np.integer, np.floating)) and not isinstance(voxel_size_um, (bool, np.bool_))
    if not ok or not math.isfinite(float(voxel_size_um)) or float(voxel_size_um) <= 0:
        raise ReactomoError(f"The voxel size must be a positive number of micrometres; got {voxel_size_um!r}.")
    return float(voxel_size_um)


def _check_mask(mask: Any, name: str = "mask") -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise ReactomoError(
            f"The {name} must be a boolean array (True = pore); got dtype {arr.dtype}, so compare the labels with the pore code first, e.g. labels == 3."
        )
    if arr.ndim not in (2, 3):
        raise ReactomoError(f"The {name} must be a 2D (y, x) or 3D (z, y, x) array; got {arr.ndim} dimensions.")
    if arr.size == 0:
        raise ReactomoError(f"The {name} is empty (shape {arr.shape}); give a volume with at least one voxel.")
    return arr


def _check_labels(labels: Any) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ReactomoError(f"The labels must be an integer array of phase codes; got dtype {arr.dtype}.")
    if arr.ndim not in (2, 3):
        raise ReactomoError(f"The labels must be a 2D (y, x) or 3D (z, y, x) array; got {arr.ndim} dimensions.")
    if arr.size == 0:
        raise ReactomoError(f"The labels are empty (shape {arr.shape}); give a volume with at least one voxel.")
    return arr


# ------------------------------------------------------------------------------------------------ local thickness
def _ball_offsets(d2: int, ndim: int) -> np.ndarray:
    """Integer offsets ``q`` with ``|q|^2 < d2`` (the open ball of radius ``sqrt(d2)``), shape (n, ndim)."""
    r = math.isqrt(max(d2 - 1, 0))
    axes = np.arange(-r, r + 1)
    grid = np.stack(np.meshgrid(*([axes] * ndim), indexing="ij"), axis=-1).reshape(-1, ndim)
    return grid[(grid * grid).sum(1) < d2]


def _containment_table(values: np.ndarray, offsets: np.ndarray, ndim: int) -> np.ndarray:
    """``M[i, j] = max_{|q|^2 < values[i]} |q - offsets[j]|^2``: a neighbour at ``offsets[j]`` with squared radius
    ``> M[i, j]`` holds the whole ball of squared radius ``values[i]``.

    The maximum of a convex function over the ball's points lies on its outer shell, so only points with
    ``|q| >= rho - 5`` (``rho`` the ball's largest ``|q|``, offsets at most two voxels per axis) are scanned.
    """
    onorm = (offsets * offsets).sum(1)
    table = np.empty((values.size, offsets.shape[0]), dtype=np.int64)
    for i, v in enumerate(values.tolist()):
        q = _ball_offsets(int(v), ndim)
        qn = (q * q).sum(1)
        rho = math.sqrt(qn.max())
        shell = q[qn >= max(rho - 5.0, 0.0) ** 2] if rho > 8 else q
        table[i] = ((shell * shell).sum(1)[:, None] - 2 * shell @ offsets.T).max(0) + onorm
    return table


def local_thickness(mask: np.ndarray, *, voxel_size_um: float = 1.0, sampling_step: float | None = None) -> np.ndarray:
    """Local thickness of the pore space: per pore voxel the diameter (µm) of the largest inscribed ball holding it.

    Parameters
    ----------
    mask : ndarray of bool, 2D (y, x) or 3D (z, y, x)
        True for pore voxels. At least one voxel must be solid (False), or no ball is bounded.
    voxel_size_um : float
        Edge of a voxel in micrometres; the result is scaled by it.
    sampling_step : float, optional
        Radius resolution in voxels. ``None`` (default) uses every distinct distance-transform value (exact for the
        voxel model of the module docstring). A step ``s > 0`` rounds each centre's radius down to a multiple of
        ``s`` (and at least one voxel): faster to group, and it can only lower a value (most at ball rims).

    Returns
    -------
    ndarray of float32, the shape of ``mask``
        Diameters in µm on pore voxels, 0 elsewhere. Within one voxel of the continuous value (module docstring).
    """
    arr = _check_mask(mask)
    size = _check_voxel_size(voxel_size_um)
    if sampling_step is not None and (
        isinstance(sampling_step, (bool, np.bool_)) or not isinstance(sampling_step, (int, float, np.integer, np.floating)) or not sampling_step > 0
    ):
        raise ReactomoError(f"sampling_step must be a positive number of voxels or None; got {sampling_step!r}.")
    out = np.zeros(arr.shape, dtype=np.float32)
    if not arr.any():
        return out
    if arr.all():
        raise ReactomoError("The mask is pore everywhere, so no ball is bounded by solid; crop to a region that contains solid voxels.")
    ndim = arr.ndim
    dt = ndi.distance_transform_edt(arr)
    if sampling_step is not None:
        step = float(sampling_step)
        dt = np.where(arr, np.maximum(np.floor(dt / step + 1e-9) * step, 1.0), 0.0)
        d2 = np.ceil(dt * dt - 1e-9).astype(np.int64)  # open ball |q| < r  <=>  |q|^2 < ceil(r^2) for integer |q|^2
    else:
        d2 = np.rint(dt * dt).astype(np.int64)
    # the radius painted for each squared radius (equal balls: the larger radius)
    radius_of = np.zeros(int(d2.max()) + 1, dtype=np.float64)
    if sampling_step is None:
        radius_of = np.sqrt(np.arange(radius_of.size, dtype=np.float64))
    else:
        np.maximum.at(radius_of, d2[arr], dt[arr])
    del dt
    radius_max = math.isqrt(int(d2.max()) - 1) + 1 if d2.max() > 1 else 1
    pad = max(radius_max, 2)
    d2p = np.pad(d2, pad).astype(np.int32)
    del d2
    shape_p = d2p.shape
    strides = np.array([int(np.prod(shape_p[k + 1:])) for k in range(ndim)], dtype=np.int64)
    flat_d2 = d2p.ravel()

    # candidate centres: all pore voxels; drop those whose ball lies inside a neighbour's ball
    cand = np.flatnonzero(flat_d2 > 0)
    values = np.unique(flat_d2[cand])
    lut = np.zeros(int(values.max()) + 1, dtype=np.int64)
    lut[values] = np.arange(values.size)
    near = np.stack(np.meshgrid(*([np.arange(-2, 3)] * ndim), indexing="ij"), axis=-1).reshape(-1, ndim)
    near = near[(near != 0).any(1)]
    near = near[np.argsort((near * near).sum(1), kind="stable")]  # the closest neighbours remove the most, first
    table = _containment_table(values, near, ndim)
    vi = lut[flat_d2[cand]]
    for j, off in enumerate(near @ strides):
        contained = flat_d2[cand + off] > table[vi, j]
        if contained.any():
            keep = ~contained
            cand, vi = cand[keep], vi[keep]

    # paint the remaining balls, smallest radius first, so that larger balls overwrite
    out_p = np.zeros(flat_d2.size, dtype=np.float32)
    cd2 = flat_d2[cand]
    order = np.argsort(cd2, kind="stable")
    cand, cd2 = cand[order], cd2[order]
    bounds = np.flatnonzero(np.diff(cd2)) + 1
    for group in np.split(np.arange(cand.size), bounds):
        if group.size == 0:
            continue
        v = int(cd2[group[0]])
        radius = float(radius_of[v])
        offs = _ball_offsets(v, ndim) @ strides
        per = max(1, _CHUNK // offs.size)
        centres = cand[group]
        for start in range(0, centres.size, per):
            idx = (centres[start:start + per, None] + offs[None, :]).ravel()
            out_p[idx] = 2.0 * radius * size
    out_p = out_p.reshape(shape_p)
    out[...] = out_p[tuple(slice(pad, pad + n) for n in arr.shape)]
    out[~arr] = 0.0
    return out


# -------------------------------------------------------------------------------------------- sizes and porosity
def equivalent_diameters(mask: np.ndarray, *, voxel_size_um: float = 1.0, connectivity: int = 1) -> np.ndarray:
    """Equivalent diameter (µm) of every connected pore: the sphere (3D) or circle (2D) of the same volume or area.

    Parameters
    ----------
    mask : ndarray of bool, 2D or 3D
        True for pore voxels.
    voxel_size_um : float
    connectivity : int
        1 = faces (default), up to ``mask.ndim`` = corners too (:func:`scipy.ndimage.generate_binary_structure`).

    Returns
    -------
    ndarray of float64
        One diameter per pore, in label order; empty when there is no pore voxel.
    """
    arr = _check_mask(mask)
    size = _check_voxel_size(voxel_size_um)
    if isinstance(connectivity, (bool, np.bool_)) or not isinstance(connectivity, (int, np.integer)) or not 1 <= connectivity <= arr.ndim:
        raise ReactomoError(f"connectivity must be a whole number from 1 to {arr.ndim}; got {connectivity!r}.")
    lab, n = ndi.label(arr, structure=ndi.generate_binary_structure(arr.ndim, int(connectivity)))
    counts = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64)
    if arr.ndim == 3:
        return np.cbrt(6.0 * counts / np.pi) * size
    return np.sqrt(4.0 * counts / np.pi) * size


def _labelled(labels: np.ndarray, codes: Iterable[int] | None) -> np.ndarray:
    if codes is None:
        return labels != 0
    return np.isin(labels, np.asarray(list(codes)))


def porosity(labels: np.ndarray, pore_code: int = 3, codes: Iterable[int] | None = None) -> float:
    """Pore voxels over labelled voxels (``0`` = unlabelled is ignored; ``codes`` restricts what counts as labelled).

    Returns ``nan`` when no voxel is labelled.
    """
    arr = _check_labels(labels)
    lab = _labelled(arr, codes)
    n = int(np.count_nonzero(lab))
    return float(np.count_nonzero((arr == pore_code) & lab)) / n if n else _NAN


def _boundary_clusters(pore: np.ndarray) -> np.ndarray:
    """Pore voxels in face-connected clusters that touch one of the array's boundary faces."""
    lab, n = ndi.label(pore)
    if n == 0:
        return np.zeros(pore.shape, dtype=bool)
    touching = np.zeros(n + 1, dtype=bool)
    for axis in range(pore.ndim):
        for end in (0, -1):
            touching[np.take(lab, end, axis=axis)] = True
    touching[0] = False
    return touching[lab]


def connected_porosity(labels: np.ndarray, pore_code: int = 3) -> float:
    """Share of labelled voxels that are pore voxels reachable from outside the volume.

    A pore voxel counts when its face-connected pore cluster touches one of the volume's boundary faces (the
    scanned sub-volume is taken as open to the rest of the sample); enclosed pores do not count. The denominator is
    every labelled (non-zero) voxel, as in :func:`porosity`, so ``connected_porosity <= porosity``. ``nan`` when no
    voxel is labelled.
    """
    arr = _check_labels(labels)
    n = int(np.count_nonzero(arr))
    if not n:
        return _NAN
    return float(np.count_nonzero(_boundary_clusters(arr == pore_code))) / n


# -------------------------------------------------------------------------------------------------- statistics
def size_distribution(values_um: Any, *, bins: int | np.ndarray | None = None) -> dict[str, Any]:
    """Histogram and summary of sizes (µm): ``edges, counts, density, median, q1, q3, mean, n``.

    ``bins`` is passed to :func:`numpy.histogram` (``None`` = "auto"). Empty input gives empty counts and ``nan``.
    """
    vals = np.asarray(values_um, dtype=np.float64).ravel()
    if np.isnan(vals).any():
        raise ReactomoError("The sizes contain NaN; drop the undefined values before building the distribution.")
    if vals.size == 0:
        return {"edges": np.array([]), "counts": np.array([], dtype=np.int64), "density": np.array([]),
                "median": _NAN, "q1": _NAN, "q3": _NAN, "mean": _NAN, "n": 0}
    counts, edges = np.histogram(vals, bins="auto" if bins is None else bins)
    widths = np.diff(edges)
    density = counts / (counts.sum() * np.where(widths > 0, widths, 1.0))
    q1, med, q3 = np.percentile(vals, [25, 50, 75])
    return {"edges": edges, "counts": counts, "density": density, "median": float(med), "q1": float(q1),
            "q3": float(q3), "mean": float(vals.mean()), "n": int(vals.size)}


def _check_boot(n_boot: Any, level: Any) -> None:
    if isinstance(n_boot, (bool, np.bool_)) or not isinstance(n_boot, (int, np.integer)) or n_boot < 10:
        raise ReactomoError(f"n_boot must be a whole number of at least 10; got {n_boot!r}.")
    if not isinstance(level, (int, float, np.floating)) or not 0 < level < 1:
        raise ReactomoError(f"level must be a fraction between 0 and 1, e.g. 0.95; got {level!r}.")


def bootstrap_ci(values: Any, stat: Callable[..., Any] = np.median, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``stat`` over independent ``values``.

    ``stat`` is called once on an ``(n_boot, n)`` array of resamples with ``axis=1`` (numpy reductions such as
    ``np.median`` or ``np.mean``); a function without ``axis`` is called per resample. Returns ``(nan, nan)`` for
    empty input.
    """
    _check_boot(n_boot, level)
    vals = np.asarray(values, dtype=np.float64).ravel()
    if vals.size == 0:
        return (_NAN, _NAN)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, vals.size, size=(int(n_boot), vals.size))
    sample = vals[idx]
    try:
        stats = np.asarray(stat(sample, axis=1), dtype=np.float64)
    except TypeError:
        stats = np.array([float(stat(row)) for row in sample])
    alpha = (1.0 - float(level)) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def _cluster_bootstrap_median(values: np.ndarray, cluster: np.ndarray, n_clusters: int, *, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    """CI of the voxel-weighted median, resampling whole pores (clusters) with replacement.

    Voxels of one pore are correlated, so pores are the independent units: each resample draws ``n_clusters`` pores
    and takes the median of all their voxels (a pore drawn k times counts k times). Vectorised through a histogram
    of the (discrete) values per pore.
    """
    uniq, inv = np.unique(values, return_inverse=True)
    hist = np.zeros((n_clusters, uniq.size), dtype=np.float64)
    np.add.at(hist, (cluster, inv), 1.0)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=int(n_boot)).astype(np.float64)
    cum = np.cumsum(draws @ hist, axis=1)
    half = cum[:, -1:] / 2.0
    meds = uniq[np.minimum((cum < half).sum(1), uniq.size - 1)]
    alpha = (1.0 - float(level)) / 2.0
    lo, hi = np.quantile(meds, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


# ----------------------------------------------------------------------------------------------- table per step
def _central_crop(arr: np.ndarray, max_voxels: int) -> tuple[np.ndarray, bool]:
    if arr.size <= max_voxels:
        return arr, False
    factor = (max_voxels / arr.size) ** (1.0 / arr.ndim)
    sl = []
    for n in arr.shape:
        m = max(1, min(n, int(n * factor)))
        start = (n - m) // 2
        sl.append(slice(start, start + m))
    return arr[tuple(sl)], True


def pore_size_table(
    labels_per_step: Iterable[tuple[int, float, np.ndarray]],
    *,
    voxel_size_um: float = 2.75,
    pore_code: int = 3,
    max_voxels: int | None = 128**3,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row of pore-space descriptors per step.

    Parameters
    ----------
    labels_per_step : iterable of (step, time_s, labels)
        Integer label volumes (2D or 3D) in time order.
    voxel_size_um : float
    pore_code : int
    max_voxels : int or None
        Volumes larger than this are cropped to a central sub-volume of about this many voxels (same proportions)
        before any descriptor is computed, and the row says so (``subvolume`` True, ``shape`` the analysed shape).
        ``None`` analyses the whole volume.
    n_boot, level, seed
        Bootstrap of the median local thickness.

    Returns
    -------
    list of dict
        Keys ``step, time_s, shape, subvolume, porosity, connected_porosity, n_pores, lt_median_um, lt_q1_um,
        lt_q3_um, lt_mean_um, lt_median_ci_low, lt_median_ci_high, eqd_median_um, eqd_mean_um``. Local-thickness
        statistics are over pore voxels. The confidence interval of the median resamples whole pores
        (face-connected clusters; voxels of a pore are correlated, so resampling voxels would be too narrow), each
        drawn pore contributing all its voxels. A step without pore voxels gives porosity 0, ``n_pores`` 0 and
        ``nan`` sizes instead of an error; a step without labelled voxels gives ``nan`` porosities.
    """
    size = _check_voxel_size(voxel_size_um)
    _check_boot(n_boot, level)
    if max_voxels is not None and (isinstance(max_voxels, (bool, np.bool_)) or not isinstance(max_voxels, (int, np.integer)) or max_voxels < 1):
        raise ReactomoError(f"max_voxels must be a positive whole number or None; got {max_voxels!r}.")
    rows: list[dict[str, Any]] = []
    for item in labels_per_step:
        try:
            step, time_s, labels = item
        except (TypeError, ValueError):
            raise ReactomoError("Each step must be a (step, time_s, labels) triple; got something else.") from None
        arr = _check_labels(labels)
        cropped = False
        if max_voxels is not None:
            arr, cropped = _central_crop(arr, int(max_voxels))
        pore = arr == pore_code
        row: dict[str, Any] = {"step": step, "time_s": float(time_s), "shape": tuple(arr.shape), "subvolume": cropped,
                               "porosity": porosity(arr, pore_code), "connected_porosity": connected_porosity(arr, pore_code)}
        lab, n = ndi.label(pore)
        row["n_pores"] = int(n)
        nan_keys = ("lt_median_um", "lt_q1_um", "lt_q3_um", "lt_mean_um", "lt_median_ci_low", "lt_median_ci_high", "eqd_median_um", "eqd_mean_um")
        if n == 0 or pore.all():
            row.update({k: _NAN for k in nan_keys})
            rows.append(row)
            continue
        lt = local_thickness(pore, voxel_size_um=size)[pore]
        q1, med, q3 = np.percentile(lt, [25, 50, 75])
        lo, hi = _cluster_bootstrap_median(lt, lab[pore] - 1, n, n_boot=n_boot, level=level, seed=seed)
        eqd = equivalent_diameters(pore, voxel_size_um=size)
        row.update({"lt_median_um": float(med), "lt_q1_um": float(q1), "lt_q3_um": float(q3), "lt_mean_um": float(lt.mean()),
                    "lt_median_ci_low": lo, "lt_median_ci_high": hi,
                    "eqd_median_um": float(np.median(eqd)), "eqd_mean_um": float(eqd.mean())})
        rows.append(row)
    return rows
