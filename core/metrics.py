"""Segmentation quality against a ground truth: the confusion matrix and per-phase scores derived from it.

Both arrays hold label codes (see :mod:`core.phases`); ``0`` in the truth means "not labelled" and those voxels
are ignored, so a truth that covers only some slices (or brushed pixels) can be used directly. Rows of the
confusion matrix are the truth, columns the prediction, in the order of ``codes``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.errors import ReactomoError

__all__ = ["confusion_matrix", "dice_per_phase"]

_CHUNK = 1 << 24  # voxels per chunk: bounded memory on whole volumes


def _check_codes(codes: Sequence[int]) -> list[int]:
    try:
        items = list(codes)
    except TypeError:
        raise ReactomoError(f"codes must be a list of whole numbers from 1 to 255; got {codes!r}.") from None
    if not items:
        raise ReactomoError("codes is empty; give the phase codes to compare, e.g. [1, 2, 3, 4].")
    ok = all(
        not isinstance(c, (bool, np.bool_))
        and isinstance(c, (int, np.integer, float, np.floating))
        and float(c).is_integer()
        and 1 <= c <= 255
        for c in items
    )
    if not ok:
        raise ReactomoError(f"codes must be whole numbers from 1 to 255 (0 means unlabelled); got {items!r}.")
    out = [int(c) for c in items]
    if len(set(out)) != len(out):
        raise ReactomoError(f"codes must be unique; got {out}.")
    return out


def _check_labels(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    for name, a in (("pred", pred), ("truth", truth)):
        if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
            raise ReactomoError(f"{name} must hold integer label codes; got dtype {a.dtype}.")
    if pred.shape != truth.shape:
        raise ReactomoError(
            f"pred has shape {pred.shape} but truth has shape {truth.shape}; give label arrays of the same shape."
        )
    return pred, truth


def _index(values: np.ndarray, codes: list[int]) -> np.ndarray:
    """Index of each value in ``codes`` (int64), ``-1`` for values that are not codes."""
    if values.dtype.itemsize <= 2:
        info = np.iinfo(values.dtype)
        lut = np.full(int(info.max) - int(info.min) + 1, -1, dtype=np.int64)
        for i, c in enumerate(codes):
            if info.min <= c <= info.max:
                lut[c - int(info.min)] = i
        return lut[values.astype(np.int64) - int(info.min)]
    order = np.argsort(codes)
    sorted_codes = np.asarray(codes, dtype=np.int64)[order]
    pos = np.clip(np.searchsorted(sorted_codes, values), 0, len(codes) - 1)
    found = sorted_codes[pos] == values
    return np.where(found, order[pos], -1)


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, *, codes: Sequence[int]) -> np.ndarray:
    """Count voxels by (true phase, predicted phase).

    Parameters
    ----------
    pred, truth : ndarray of int
        Label codes, any shape (both the same), e.g. uint8 ``(z, y, x)``. Voxels whose truth is 0 (unlabelled)
        or not among ``codes`` are ignored; a predicted code not among ``codes`` is counted in no column.
    codes : sequence of int
        The phase codes (1-255) giving the order of rows and columns.

    Returns
    -------
    ndarray
        int64 ``(len(codes), len(codes))``; ``m[i, j]`` = voxels of true phase ``codes[i]`` predicted as
        ``codes[j]``.

    Raises
    ------
    ReactomoError
        If the shapes differ, an array is not integer, or ``codes`` is empty, repeated or outside 1-255.

    Examples
    --------
    >>> confusion_matrix(np.array([1, 2, 2, 1]), np.array([1, 2, 1, 0]), codes=[1, 2])
    array([[1, 1],
           [0, 1]])
    """
    codes = _check_codes(codes)
    pred, truth = _check_labels(pred, truth)
    k = len(codes)
    counts = np.zeros(k * k, dtype=np.int64)
    p_flat, t_flat = pred.reshape(-1), truth.reshape(-1)
    for start in range(0, t_flat.size, _CHUNK):
        ti = _index(t_flat[start : start + _CHUNK], codes)
        pi = _index(p_flat[start : start + _CHUNK], codes)
        keep = (ti >= 0) & (pi >= 0)
        counts += np.bincount(ti[keep] * k + pi[keep], minlength=k * k)
    return counts.reshape(k, k)


def dice_per_phase(pred: np.ndarray, truth: np.ndarray, *, codes: Sequence[int]) -> dict[int, float]:
    """Dice coefficient ``2TP / (2TP + FP + FN)`` of every phase, one phase against the rest.

    Counted over the voxels whose truth is one of ``codes`` (truth 0 = unlabelled is ignored). A predicted code
    outside ``codes`` counts as a miss (FN) of the true phase.

    Parameters
    ----------
    pred, truth : ndarray of int
        Label codes of the same shape.
    codes : sequence of int
        Phase codes to score.

    Returns
    -------
    dict
        ``{code: dice}``; ``nan`` for a phase absent from both the truth and the prediction.

    Raises
    ------
    ReactomoError
        As :func:`confusion_matrix`.

    Examples
    --------
    >>> dice_per_phase(np.array([1, 2, 2, 1]), np.array([1, 2, 1, 0]), codes=[1, 2, 3])
    {1: 0.6666666666666666, 2: 0.6666666666666666, 3: nan}
    """
    codes = _check_codes(codes)
    pred, truth = _check_labels(pred, truth)
    m = confusion_matrix(pred, truth, codes=codes)
    tp = np.diag(m).astype(np.float64)
    fp = m.sum(axis=0) - tp  # predicted as the phase, truly another phase
    true_total = np.array([np.count_nonzero(truth == c) for c in codes], dtype=np.float64)
    fn = true_total - tp  # truly the phase, predicted as another phase or as no phase at all
    out: dict[int, float] = {}
    for i, c in enumerate(codes):
        den = 2 * tp[i] + fp[i] + fn[i]
        out[c] = float(2 * tp[i] / den) if den > 0 else float("nan")
    return out
