"""Redraw one phase's edge in a labelling from the scan itself, by linear unmixing (partial volume).

Why: a pixel classifier trained on scribbles (which stay inside phases) never sees an edge, and its smoothed features
spread a high-contrast phase into its neighbours. On the accuracy family's tuning half the forest's celestite is
8-18 % too large on the very slices it labels, and a network trained on it keeps that halo; how large the halo is
depends on which phases surround the grains, so it changes as the reaction runs. The pores, as far below their
neighbours' grey as celestite is above, have their edge misplaced the same way (on the tuning half their Dice was
0.03-0.05 under the ceiling's at every step); by default both are redrawn, the pores first (:func:`default_codes`).

The rule uses only the scan and physics: blur and filtered back-projection are linear and, locally, conserve the
integral of the attenuation. So around the phase's objects, every pixel holds the fraction

    f = (I − b) / (c − b)

of the phase, with ``c`` its plateau (the median grey of its objects' interiors, eroded by ``inner`` pixels, over all
the slices given) and ``b`` the local background (the mean grey of the pixels farther than ``width`` + 1 from the
objects in a ``window`` × ``window`` neighbourhood). The sum of ``f`` over a band of ± ``width`` pixels around the
objects is the phase's area there; the band's pixels with the largest ``f`` are labelled with the phase until that
area is reached, the others get the label of the nearest pixel of another phase. Interiors (deeper than ``inner``) are
kept. Nothing is tuned on a result: ``width`` covers the blur (σ of about a pixel), ``window`` is the smallest
neighbourhood holding enough background beside a grain, ``inner`` keeps interiors off the edge.

It works for a phase brighter or darker than its surroundings (``f`` is normalised either way). It assumes two
phases meet at each edge; where a third (a pore) touches the object, its pixels count as negative fractions.

The phase *around* the object (``matrix``, e.g. the reactant and its product) is read from beyond the band. Within
``width`` of the object a pixel's grey is a blend of the object and its surroundings, so a classifier reads the halo
of a bright grain in a dark matrix as a brighter matrix phase (celestite's rim in gypsum as bassanite), and the rim of
a pore in a bright matrix as a darker one (bassanite beside a pore as gypsum). With ``matrix`` given, each matrix
pixel within ``width`` of the redrawn object takes the label of the nearest matrix pixel beyond that band: the
unmixing's own assumption (two phases meet at the edge, the background the one beyond) carried to the labels.

Checked against an analytic case (a blurred disk of known area, tests/test_partial_volume.py) and, for the choice to
use it, on the accuracy family's tuning half (README, "Ablation on the tuning half").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from core.errors import ReactomoError

__all__ = ["EDGE_BACKGROUND", "EDGE_BACKGROUNDS", "default_codes", "matrix_codes", "matrix_from_beyond_3d",
           "redraw_partial_volume", "resolve_codes"]

#: how a redrawn object's band reads the phase around it: "beyond" (each reactant or product pixel within the band
#: takes the label of the nearest such pixel beyond it) or "nearest" (the classifier's labels of the band are kept,
#: and a pixel the object gives up takes its nearest neighbour's). Chosen on the accuracy family's tuning half
#: (README, "Ablation on the tuning half").
EDGE_BACKGROUND = "beyond"
EDGE_BACKGROUNDS = ("beyond", "nearest")

#: the words ``resolve_codes`` reads as every phase of that role (a phase of that name wins)
ROLE_WORDS = ("pore", "inert")

_S2 = ndi.generate_binary_structure(2, 1)
_S3 = ndi.generate_binary_structure(3, 1)


def default_codes(phases) -> list[int]:
    """The phases whose edges are redrawn by default: the pore phase first, then the inert phases.

    Both are far from their neighbours' grey values (pores dark, celestite bright), the case the unmixing is made for,
    and the forest misplaces both edges (its smoothed features spread them). Chosen on the accuracy family's tuning
    half against the truth (README, "Ablation on the tuning half": the inert phases alone since 2026-12-06, the pores
    too since 2026-12-06, 13:00 UTC). Pores go first: a grain of an inert phase beside a pore is dimmed by it, and is
    redrawn afterwards against the pore's final edge.
    """
    codes = [p.code for p in phases.by_role("pore")] + [p.code for p in phases.by_role("inert")]
    return list(dict.fromkeys(int(c) for c in codes))


def matrix_codes(phases, mode: str | None = None) -> list[int]:
    """The phases whose labels a redrawn object's band re-reads from beyond it (:func:`redraw_partial_volume`'s
    ``matrix``): the reaction's reactant and products for ``"beyond"``, none for ``"nearest"``; None is
    :data:`EDGE_BACKGROUND`.

    Raises
    ------
    ReactomoError
        For another mode.
    """
    mode = EDGE_BACKGROUND if mode is None else mode
    if mode not in EDGE_BACKGROUNDS:
        raise ReactomoError(f"The edge background must be one of {', '.join(EDGE_BACKGROUNDS)}; got {mode!r}.")
    if mode == "nearest":
        return []
    codes = [p.code for p in phases.by_role("reactant")] + [p.code for p in phases.by_role("product")]
    return list(dict.fromkeys(int(c) for c in codes))


def resolve_codes(phases, names: Sequence[str] | None) -> list[int]:
    """Phase codes for a list of phase names or role words (``pore``, ``inert``), in the order given.

    None gives :func:`default_codes`; an empty list, no redraw. A name of the phase table wins over a role word
    (the default table's pore phase is called "pore" too).

    Raises
    ------
    ReactomoError
        For a name that is neither a phase nor a role word.
    """
    if names is None:
        return default_codes(phases)
    codes: list[int] = []
    known = {p.name.lower(): p.code for p in phases}
    for name in names:
        key = str(name).strip().lower()
        if key in known:
            codes.append(int(known[key]))
        elif key in ROLE_WORDS:
            found = [int(p.code) for p in phases.by_role(key)]
            if not found:
                raise ReactomoError(f"The phase table has no phase of role {key}, so there is nothing to redraw for "
                                    f"'{name}'; give phase names from {list(phases.names)}.")
            codes += found
        elif key in ("auto", "none"):
            raise ReactomoError(f"'{key}' stands alone, not in a list of phases; give it by itself, or phase names "
                                f"from {list(phases.names)}.")
        else:
            raise ReactomoError(f"No phase is called '{name}'; the phase table has {list(phases.names)} "
                                f"(or give pore or inert for every phase of that role).")
    return list(dict.fromkeys(codes))


def redraw_partial_volume(
    image: np.ndarray,
    labels: np.ndarray,
    code: int,
    *,
    slices: Sequence[int] | None = None,
    width: int = 2,
    inner: int = 3,
    window: int = 9,
    min_interior: int = 50,
    matrix: Sequence[int] = (),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Return a copy of ``labels`` whose phase ``code`` has its edge redrawn on ``slices``, and what was done.

    Parameters
    ----------
    image : ndarray, (z, y, x) or (y, x)
        The scan, any real dtype.
    labels : ndarray of the same shape, integer
        The labelling to correct (0 = unlabelled pixels are left alone and never relabelled).
    code : int
        The phase whose edge to redraw.
    slices : sequence of int, optional
        The z indices to correct (default: every slice holding a label).
    matrix : sequence of int
        Phases around the object whose labels within ``width`` of the redrawn object are read from beyond that band
        (the nearest pixel of one of them farther away); empty keeps them (see the module's docstring).

    Returns
    -------
    labels : ndarray
        The corrected copy.
    info : dict
        ``code``, ``plateau``, ``before`` and ``after`` (pixels of the phase on those slices), ``applied`` (False
        with a ``reason`` when the phase has too few interior pixels to know its plateau), ``matrix`` (its codes)
        and ``matrix_relabelled`` (band pixels whose matrix label changed).

    Raises
    ------
    ReactomoError
        If the shapes differ, or a slice index is outside the volume.
    """
    img = np.asarray(image)
    lab = np.asarray(labels)
    if img.shape != lab.shape:
        raise ReactomoError(f"The scan is {img.shape} and its labels {lab.shape}; they must match.")
    flat = img.ndim == 2
    if flat:
        img, lab = img[None], lab[None]
    if img.ndim != 3:
        raise ReactomoError(f"The scan must be 2D or 3D; got {img.ndim} dimensions.")
    if slices is None:
        slices = [int(z) for z in np.flatnonzero(lab.reshape(lab.shape[0], -1).any(axis=1))]
    slices = [int(z) for z in slices]
    bad = [z for z in slices if not 0 <= z < lab.shape[0]]
    if bad:
        raise ReactomoError(f"Slice {bad[0]} is outside the volume's 0 to {lab.shape[0] - 1}.")
    out = lab.copy()
    grains = {z: lab[z] == code for z in slices}
    before = int(sum(int(g.sum()) for g in grains.values()))
    matrix = [int(c) for c in matrix if int(c) != int(code)]
    info: dict[str, Any] = {"code": int(code), "before": before, "after": before, "width": width, "inner": inner,
                            "window": window, "applied": False, "matrix": matrix, "matrix_relabelled": 0}
    interior = [img[z][ndi.binary_erosion(g, _S2, iterations=inner)] for z, g in grains.items()]
    interior = np.concatenate(interior) if interior else np.empty(0)
    if interior.size < min_interior:
        info["reason"] = f"only {interior.size} interior pixels of the phase (under {min_interior}): its plateau is unknown"
        return (out[0] if flat else out), info
    plateau = float(np.median(interior))
    info["plateau"] = plateau
    for z, g in grains.items():
        if not g.any():
            continue
        grey = img[z].astype(np.float64)
        known = lab[z] > 0
        core = ndi.binary_erosion(g, _S2, iterations=inner)
        band = ndi.binary_dilation(g, _S2, iterations=width) & ~core & known
        away = (~ndi.binary_dilation(g, _S2, iterations=width + 1)).astype(np.float64)
        if not away.any():
            continue
        weight = ndi.uniform_filter(away, window)
        local = ndi.uniform_filter(grey * away, window) / np.maximum(weight, 1e-9)
        background = np.where(weight > 1e-3, local, float(np.median(grey[away > 0])))
        span = plateau - background
        span = np.where(np.abs(span) < 1e-9, 1e-9, span)
        frac = np.clip((grey - background) / span, -0.5, 1.5)
        area = int(np.clip(round(float(frac[band].sum())), 0, int(band.sum())))
        where = np.flatnonzero(band)
        new = core.ravel() & known.ravel()
        new[where[np.argsort(-frac[band], kind="stable")[:area]]] = True
        new = new.reshape(g.shape)
        nearest = lab[z][tuple(ndi.distance_transform_edt(g | ~known, return_distances=False, return_indices=True))]
        row = out[z]
        gone = g & ~new
        row[gone] = nearest[gone]
        row[new] = code
        if matrix:
            info["matrix_relabelled"] += _matrix_from_beyond(row, new, matrix, width)
    info["after"] = int(sum(int((out[z] == code).sum()) for z in slices))
    info["applied"] = True
    return (out[0] if flat else out), info


def matrix_from_beyond_3d(labels: np.ndarray, codes: Sequence[int], matrix: Sequence[int], *,
                          width: int = 2) -> tuple[np.ndarray, int]:
    """The band of :func:`redraw_partial_volume`'s ``matrix`` in 3D: a copy of a ``(z, y, x)`` block of labels whose
    ``matrix`` voxels within ``width`` voxels of a ``codes`` voxel (6-connected steps, across slices too) take the
    label of the nearest matrix voxel beyond that band; and how many changed.

    The scanner's blur is 3D, so a voxel just above a grain's top or beside a pore in the next slice is as much a
    blend as one beside it in its own slice, yet lies in no slice's band. For a segmented block (every slice labelled;
    the network's output, slab by slab); codes one after another, in the order given. Unlabelled voxels (0) and
    phases outside ``matrix`` are never changed.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ReactomoError(f"The labels must be a (z, y, x) block; got {lab.ndim} dimensions.")
    out = lab.copy()
    changed = 0
    for code in codes:
        rest = [int(c) for c in matrix if int(c) != int(code)]
        if rest:
            changed += _matrix_from_beyond(out, out == int(code), rest, width)
    return out, changed


def _matrix_from_beyond(row: np.ndarray, obj: np.ndarray, matrix: Sequence[int], width: int) -> int:
    """In place: matrix pixels of ``row`` (a slice, or a block in 3D) within ``width`` of ``obj`` take the nearest
    matrix label beyond; the count of pixels changed."""
    if not obj.any():
        return 0
    near = ndi.binary_dilation(obj, _S3 if row.ndim == 3 else _S2, iterations=width)
    is_matrix = np.isin(row, matrix)
    band = near & ~obj & is_matrix
    source = is_matrix & ~near
    if not band.any() or not source.any():
        return 0
    idx = ndi.distance_transform_edt(~source, return_distances=False, return_indices=True)
    beyond = row[tuple(idx)]
    changed = band & (beyond != row)
    row[changed] = beyond[changed]
    return int(changed.sum())
