"""Segmentation quality against a ground truth: the confusion matrix and the per-phase scores of SPEC.md.

Both arrays hold label codes (see :mod:`core.phases`); ``0`` in the truth means "not labelled" and those voxels
are ignored, so a truth that covers only some slices (or brushed pixels) can be used directly. Rows of the
confusion matrix are the truth, columns the prediction, in the order of ``codes``.

Every score is one phase against the rest, from TP, FP, TN and FN counted over the voxels whose truth is one of
``codes`` (``N`` of them). A predicted code that is not among ``codes`` (0 included) is a miss (FN) of the true
phase and "not that phase" for every other phase (a TN of theirs).

======================  =======================================  ==========================================
name                    formula                                  undefined (NaN) when
======================  =======================================  ==========================================
accuracy                (TP + TN) / N                            never (N > 0 is required)
recall (sensitivity)    TP / (TP + FN)                           the phase is absent from the truth
specificity             TN / (TN + FP)                           every counted voxel is truly the phase
precision               TP / (TP + FP)                           the phase is never predicted
dice                    2TP / (2TP + FP + FN)                    absent from truth and prediction
iou                     TP / (TP + FP + FN)                      absent from truth and prediction
auc                     1 - (FP/(FP+TN) + FN/(FN+TP)) / 2        either of its two rates is undefined
volumetric_similarity   1 - |FN - FP| / (2TP + FP + FN)          absent from truth and prediction
kappa                   (po - pe) / (1 - pe), binary Cohen       pe == 1 (both sides constant and equal)
======================  =======================================  ==========================================

Edge cases, decided once:

- A ratio whose denominator is 0 is ``nan`` (undefined): never 0, and never a division warning.
- A phase absent from both the truth and the prediction gets ``nan`` for every score except accuracy (its
  TNs are real), is listed in :attr:`MetricsReport.absent` and is left out of the averages.
- A phase absent from the truth but predicted: recall ``nan``; precision, Dice, IoU and volumetric similarity 0
  (every prediction of it is wrong); AUC ``nan`` (its miss rate is undefined). Its row keeps these scores (its false
  detections are real), but it is left out of the averages: there is nothing of it in the reference to find.
- A phase in the truth but never predicted: precision ``nan``; recall, Dice, IoU and volumetric similarity 0.
- AUC uses both rates or none: when one of them is undefined it is ``nan``, not the other rate alone.
- "Average" is the mean over the phases present in the reference (``n_true > 0``, listed in
  :attr:`MetricsReport.averaged`) where the score is defined (a nan-mean). A phase absent from the reference (e.g.
  bassanite before the reaction starts) would otherwise add a Dice of 0 (or nothing at all) and move the mean for a
  reason that has nothing to do with how well the present phases are found.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import ReactomoError

__all__ = ["METRICS", "MetricsReport", "confusion_matrix", "confusion_table", "dice_per_phase", "metrics_from_table", "phase_metrics",
           "pool_reports"]

_CHUNK = 1 << 24  # voxels per chunk: bounded memory on whole volumes

METRICS: tuple[str, ...] = (
    "accuracy",
    "recall",
    "specificity",
    "precision",
    "dice",
    "iou",
    "auc",
    "volumetric_similarity",
    "kappa",
)

_NAN = float("nan")


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


def _confusion_with_other(pred: np.ndarray, truth: np.ndarray, codes: list[int]) -> np.ndarray:
    """``(k, k + 1)`` counts by (true phase, predicted phase); the last column is "predicted no phase of codes"."""
    k = len(codes)
    counts = np.zeros(k * (k + 1), dtype=np.int64)
    p_flat, t_flat = pred.reshape(-1), truth.reshape(-1)
    for start in range(0, t_flat.size, _CHUNK):
        ti = _index(t_flat[start : start + _CHUNK], codes)
        pi = _index(p_flat[start : start + _CHUNK], codes)
        keep = ti >= 0
        pi = np.where(pi >= 0, pi, k)[keep]
        counts += np.bincount(ti[keep] * (k + 1) + pi, minlength=k * (k + 1))
    return counts.reshape(k, k + 1)


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
    return _confusion_with_other(pred, truth, codes)[:, :-1].copy()


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
    full = _confusion_with_other(pred, truth, codes)
    out: dict[int, float] = {}
    for i, c in enumerate(codes):
        tp = int(full[i, i])
        fn = int(full[i].sum()) - tp  # truly the phase, predicted as another phase or as no phase at all
        fp = int(full[:, i].sum()) - tp  # predicted as the phase, truly another phase
        out[c] = _ratio(2 * tp, 2 * tp + fp + fn)
    return out


def _ratio(num: float, den: float) -> float:
    """``num / den``, ``nan`` when the denominator is 0 (undefined), without a warning."""
    return float(num / den) if den else _NAN


def _scores(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """The scores of :data:`METRICS` from one phase's counts (Python ints: no overflow on huge volumes)."""
    n = tp + fp + tn + fn
    fpr, fnr = _ratio(fp, fp + tn), _ratio(fn, fn + tp)
    overlap = 2 * tp + fp + fn
    # binary Cohen's kappa (po - pe) / (1 - pe) multiplied out by n^2; the denominator is 0 exactly when pe == 1
    kappa_den = (tp + fp) * (fp + tn) + (tp + fn) * (fn + tn)
    return {
        "accuracy": _ratio(tp + tn, n),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "dice": _ratio(2 * tp, overlap),
        "iou": _ratio(tp, tp + fp + fn),
        "auc": 1.0 - 0.5 * (fpr + fnr),  # nan when either rate is
        "volumetric_similarity": 1.0 - _ratio(abs(fn - fp), overlap),
        "kappa": _ratio(2 * (tp * tn - fn * fp), kappa_den),
    }


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(sum(finite) / len(finite)) if finite else _NAN


def _json_float(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


@dataclass(frozen=True)
class MetricsReport:
    """The scores of every phase against a ground truth, and their average.

    Attributes
    ----------
    codes : list of int
        The phase codes, in the order of the confusion matrix.
    names : list of str
        One name per code.
    confusion : ndarray
        int64 ``(k, k)``: rows truth, columns prediction (as :func:`confusion_matrix`).
    counts : dict
        ``{code: {"tp", "fp", "tn", "fn", "n_true", "n_pred"}}`` (ints, over the voxels whose truth is in codes).
    per_phase : dict
        ``{code: {metric: value}}`` with the keys of :data:`METRICS`; ``nan`` where undefined.
    average : dict
        ``{metric: mean over the phases of averaged where it is defined}``.
    absent : list of int
        Codes absent from both the truth and the prediction.
    averaged : list of int
        Codes present in the truth (``n_true > 0``): the phases the average is taken over.
    """

    codes: list[int]
    names: list[str]
    confusion: np.ndarray
    counts: dict[int, dict[str, int]]
    per_phase: dict[int, dict[str, float]]
    average: dict[str, float]
    absent: list[int]
    averaged: list[int]

    def averaged_names(self) -> list[str]:
        """Names of the phases the average is taken over (those present in the reference), in table order."""
        return [n for c, n in zip(self.codes, self.names) if c in self.averaged]

    def average_note(self) -> str:
        """One sentence saying which phases the average is over, e.g. for a caption or the CLI."""
        names = self.averaged_names()
        left_out = [n for c, n in zip(self.codes, self.names) if c not in self.averaged]
        tail = f" ({', '.join(left_out)} absent from it, not averaged)" if left_out else ""
        return f"Average over the phases present in the reference: {', '.join(names)}{tail}."

    def rows(self) -> list[dict[str, Any]]:
        """One row per phase then an ``"average"`` row (``code`` None): keys ``phase``, ``code``, then METRICS."""
        out = [
            {"phase": name, "code": code, **self.per_phase[code]} for code, name in zip(self.codes, self.names)
        ]
        out.append({"phase": "average", "code": None, **self.average})
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy: ``nan`` becomes None and the per-code dicts are keyed by the code as a string."""
        return {
            "metrics": list(METRICS),
            "codes": list(self.codes),
            "names": list(self.names),
            "confusion": self.confusion.tolist(),
            "counts": {str(c): dict(v) for c, v in self.counts.items()},
            "per_phase": {str(c): {k: _json_float(x) for k, x in v.items()} for c, v in self.per_phase.items()},
            "average": {k: _json_float(x) for k, x in self.average.items()},
            "absent": list(self.absent),
            "averaged": list(self.averaged),
        }


def phase_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    codes: Sequence[int],
    names: Sequence[str] | None = None,
) -> MetricsReport:
    """Score a segmentation against a ground truth: the metrics of :data:`METRICS` per phase and averaged.

    Counts come from one chunked pass (bounded memory on whole volumes); the module docstring gives the
    formulas and what is ``nan`` when.

    Parameters
    ----------
    pred, truth : ndarray of int
        Label codes of the same shape, e.g. uint8 ``(z, y, x)``. Truth 0 (unlabelled) and truth codes outside
        ``codes`` are ignored.
    codes : sequence of int
        Phase codes to score (1-255), e.g. ``DEFAULT_PHASES.codes``.
    names : sequence of str, optional
        One name per code (e.g. ``DEFAULT_PHASES.names``); ``"phase <code>"`` when not given.

    Returns
    -------
    MetricsReport

    Raises
    ------
    ReactomoError
        As :func:`confusion_matrix`; also when ``names`` does not match ``codes`` or no voxel of the truth
        holds any of ``codes``.

    Examples
    --------
    >>> r = phase_metrics(np.array([1, 2, 2, 1]), np.array([1, 2, 1, 0]), codes=[1, 2])
    >>> r.per_phase[2]["recall"], r.per_phase[2]["precision"]
    (1.0, 0.5)
    """
    codes = _check_codes(codes)
    pred, truth = _check_labels(pred, truth)
    if names is None:
        names = [f"phase {c}" for c in codes]
    else:
        if isinstance(names, str):
            raise ReactomoError(f"names must be a list with one name per code; got the string {names!r}.")
        names = [str(n) for n in names]
        if len(names) != len(codes):
            raise ReactomoError(f"names has {len(names)} entries but codes has {len(codes)}; give one name per code.")
    return metrics_from_table(_confusion_with_other(pred, truth, codes), codes=codes, names=names)


def confusion_table(pred: np.ndarray, truth: np.ndarray, *, codes: Sequence[int]) -> np.ndarray:
    """The ``(k, k + 1)`` count table behind :func:`phase_metrics` (rows truth, columns prediction, the last column
    "predicted no phase of codes"); tables of slabs of a volume add up to the table of the volume."""
    codes = _check_codes(codes)
    pred, truth = _check_labels(pred, truth)
    return _confusion_with_other(pred, truth, codes)


def metrics_from_table(full: np.ndarray, *, codes: Sequence[int], names: Sequence[str] | None = None) -> MetricsReport:
    """:func:`phase_metrics` from a count table of :func:`confusion_table` (e.g. summed over the slabs of a volume)."""
    codes = _check_codes(codes)
    full = np.asarray(full, dtype=np.int64)
    if full.shape != (len(codes), len(codes) + 1):
        raise ReactomoError(f"The count table has shape {full.shape}; expected {(len(codes), len(codes) + 1)} for {len(codes)} codes.")
    names = [f"phase {c}" for c in codes] if names is None else [str(n) for n in names]
    n = int(full.sum())
    if n == 0:
        raise ReactomoError(
            f"No voxel of the truth holds any of the codes {codes}; label some voxels or check the codes."
        )
    counts: dict[int, dict[str, int]] = {}
    per_phase: dict[int, dict[str, float]] = {}
    absent: list[int] = []
    for i, c in enumerate(codes):
        tp = int(full[i, i])
        n_true = int(full[i].sum())
        n_pred = int(full[:, i].sum())
        fn, fp = n_true - tp, n_pred - tp
        tn = n - tp - fn - fp
        counts[c] = {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "n_true": n_true, "n_pred": n_pred}
        scores = _scores(tp, fp, tn, fn)
        if n_true == 0 and n_pred == 0:
            absent.append(c)
            scores = {k: (v if k == "accuracy" else _NAN) for k, v in scores.items()}
        per_phase[c] = scores
    # only the phases the reference holds: an absent phase's 0 (or nan) says nothing about the phases present
    present = [c for c in codes if counts[c]["n_true"] > 0]
    average = {m: _nanmean([per_phase[c][m] for c in present]) for m in METRICS}
    return MetricsReport(
        codes=codes,
        names=list(names),
        confusion=full[:, :-1].copy(),
        counts=counts,
        per_phase=per_phase,
        average=average,
        absent=absent,
        averaged=present,
    )


def pool_reports(reports: Sequence[MetricsReport]) -> MetricsReport:
    """One report over all the voxels of several (e.g. every time step): the count tables are summed, then scored.

    Pooling weighs each step by its voxels (unlike a mean of per-step scores), so a phase absent early still gets one
    score over the steps where it occurs. Every report must have the same codes in the same order.
    """
    reports = list(reports)
    if not reports:
        raise ReactomoError("There is no report to pool; evaluate at least one step first.")
    codes = list(reports[0].codes)
    if any(list(r.codes) != codes for r in reports):
        raise ReactomoError("The reports to pool score different phase codes; evaluate them with the same phase table.")
    k = len(codes)
    full = np.zeros((k, k + 1), dtype=np.int64)
    for r in reports:
        full[:, :k] += r.confusion
        # truth voxels predicted as a code outside the table (the last column of the count table)
        full[:, k] += [r.counts[c]["n_true"] - int(r.confusion[i].sum()) for i, c in enumerate(codes)]
    return metrics_from_table(full, codes=codes, names=reports[0].names)
