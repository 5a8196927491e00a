"""One history per voxel: the steps of a series labelled together, in the direction the reaction runs.

Why: the network labels every step on its own, from one noisy scan. But a voxel of a reacting rock has a history,
and the reaction says which histories are possible: the reactant may turn into the product or into pore space
(the fluid escapes), and nothing turns back: the product and the pores stay what they are. The inert phases are left
free (each step's evidence alone places them), so that their constancy remains a check, not a constraint. A voxel
read as product at one step, reactant at the next and product again is noise. Labelling the series together, the
most probable *history* of each voxel is chosen among those the reaction allows (a Viterbi pass over the steps, with
the network's class probabilities of every step as the evidence), which pools the evidence of all steps where a
single step's is weak.

What it assumes, and checks: the scans are aligned (the same voxel is the same piece of rock at every step). The
shift between consecutive steps is measured by phase correlation of a central slab (:func:`step_shifts`); a series
whose steps move by more than half a voxel is labelled step by step, and the record says why.

What it does not assume: how much of the reactant turns into product (the internal standard's question stays open:
the histories constrain the direction of change, never its amount), nor when each voxel changes.

Screened on the accuracy family's tuning half (README, "Ablation on the tuning half").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.errors import ReactomoError

__all__ = ["DEFAULT", "MATCH_VOLUMES", "allowed_transitions", "aligned_neighbours", "describe", "free_classes",
           "matched_offsets", "most_probable_histories", "pair_histogram", "step_shifts", "MAX_SHIFT_VOX"]

#: Whether `segment`, `run` and the Segment page label the steps together unless told otherwise: on since
#: 2026-12-06, chosen on the accuracy family's tuning half by the scores against the truth (README, "Ablation on the
#: tuning half"). Beamtime mode (`watch`) labels each step as it arrives.
DEFAULT = True
#: Whether labelling the steps together first matches each step's split between the reactant and the product to the
#: network's expected split (:func:`matched_offsets`): on since 2026-12-07, chosen on the accuracy family's tuning half
#: with two seeds by the rule written first (bench/results/volume-matching-rules.txt; README, "Ablation on the tuning
#: half"): the reaction extent's error lower on 11 of 12 runs, the Dice scores not lower.
MATCH_VOLUMES = True
#: Largest shift between consecutive steps (voxels) for which the scans count as aligned.
MAX_SHIFT_VOX = 0.5
_FORBIDDEN = np.float32(1e4)  # a cost no sum of log-probabilities (>= log 1e-4 per step) can pay back
_FLOOR = 1e-4


def _signed(n: int | float) -> str:
    n = int(round(n))
    return f"{n:+,}".replace("-", "\u2212")


def _largest_changes(matched: dict[str, Any]) -> str:
    """The largest increase and decrease of the product's voxels asked by the matching, in words."""
    gaps = [int(e) - int(n) for e, n in zip(matched.get("expected_voxels") or [], matched.get("network_voxels") or [])]
    if not gaps or not any(gaps):
        return "no step needed a change"
    up, down = int(np.argmax(gaps)), int(np.argmin(gaps))
    if gaps[up] > 0 and gaps[down] < 0:
        return f"{_signed(gaps[up])} voxels at step {up}, {_signed(gaps[down])} at step {down}: the largest changes"
    k = up if gaps[up] > 0 else down
    return f"largest change {_signed(gaps[k])} voxels at step {k}"


def _steps(steps: Sequence[int]) -> str:
    steps = [int(k) for k in steps]
    return ("step " if len(steps) == 1 else "steps ") + ", ".join(str(k) for k in steps)


def describe(together: dict[str, Any] | None) -> str:
    """How the steps of a segmentation were labelled, in one sentence (the record's ``temporal``), for the CLI, the
    Segment page and the report alike.

    >>> describe({"applied": True, "changed_voxels": [10, 5], "allowed": "gypsum may become bassanite"})
    'Steps labelled together: 15 voxels relabelled along their most probable history (gypsum may become bassanite).'
    >>> describe({"applied": False, "reason": "one step has no history"})
    'Steps labelled one by one: one step has no history.'
    >>> describe({})
    'Steps labelled one by one.'
    """
    together = together or {}
    if together.get("applied"):
        allowed = together.get("allowed")
        n = sum(together.get("changed_voxels") or [])
        text = (f"Steps labelled together: {n:,} voxel{'' if n == 1 else 's'} relabelled along their most probable "
                f"history" + (f" ({allowed})." if allowed else "."))
        matched = together.get("volumes_matched") or {}
        if matched.get("applied"):
            text += (f" Each step's {matched.get('product', 'product')} was first matched to the network's expected "
                     f"volume ({_largest_changes(matched)}).")
        elif matched.get("reason"):
            text += f" Volumes not matched: {str(matched['reason']).rstrip('.')}."
        return text
    if together.get("mixed"):
        kept = together.get("together_steps") or []
        alone = together.get("alone_steps") or []
        missing = together.get("missing_steps") or []
        if not kept:
            return "Steps labelled one by one: none of the steps labelled together is in this series any more."
        text = (f"Steps labelled partly together: {_steps(kept)} {'keeps' if len(kept) == 1 else 'keep'} the labels "
                f"of the series labelled together")
        if alone:
            text += (f", {_steps(alone)} {'was' if len(alone) == 1 else 'were'} segmented again on "
                     f"{'its' if len(alone) == 1 else 'their'} own afterwards")
        if missing:
            text += f"; {_steps(missing)} {'is' if len(missing) == 1 else 'are'} not segmented"
        return text + "; segment every step again to label them all together."
    reason = str(together.get("reason") or "").rstrip(".")
    return f"Steps labelled one by one: {reason}." if reason else "Steps labelled one by one."


def allowed_transitions(class_codes: Sequence[int], reactant: int, products: Sequence[int]) -> np.ndarray:
    """``(C, C)`` bool: ``[i, j]`` is True where class ``i`` may become class ``j`` between two steps.

    Every class may stay; the reactant may become any of ``products`` (the product phase and the pore space), and
    none of these turns back. The phases outside the reaction are not constrained here but left free
    (:func:`free_classes`): each step's evidence alone places them, so that their constancy stays a check of the
    segmentation (``inert_constancy``) rather than something imposed on it.
    """
    codes = [int(c) for c in class_codes]
    if len(set(codes)) != len(codes) or not codes:
        raise ReactomoError(f"The class codes {codes} must be distinct and not empty.")
    ok = np.eye(len(codes), dtype=bool)
    if reactant not in codes:
        raise ReactomoError(f"The reactant's code {reactant} is not one of the model's classes {codes}.")
    for p in products:
        if p not in codes:
            raise ReactomoError(f"The code {p} is not one of the model's classes {codes}.")
        ok[codes.index(reactant), codes.index(int(p))] = True
    return ok


def free_classes(class_codes: Sequence[int], reactant: int, products: Sequence[int]) -> np.ndarray:
    """``(C,)`` bool: the classes outside the reaction (inert or other), placed by each step's evidence alone."""
    reaction = {int(reactant), *(int(p) for p in products)}
    return np.array([int(c) not in reaction for c in class_codes], dtype=bool)


def pair_histogram(block: np.ndarray, reactant: int, product: int) -> np.ndarray:
    """``(256, 256)`` int64 counts of (reactant, product) probability pairs over the voxels of ``block`` that the network
    gave to one of the two, from stored probabilities.

    ``block``: uint8 ``(n, C + 1, ...)`` as the series keeps them (``255`` = 1; the last plane is the class index the
    network gave); ``reactant``, ``product``: class indices (not phase codes). Histograms of slabs add up to the step's.
    """
    b = np.asarray(block)
    if b.dtype != np.uint8 or b.ndim < 3 or not (0 <= reactant < b.shape[1] - 1 and 0 <= product < b.shape[1] - 1):
        raise ReactomoError("The stored probabilities must be uint8 (slices, classes + 1, ...) with both classes in them.")
    given = b[:, -1]
    pair = (given == reactant) | (given == product)
    cells = b[:, reactant][pair].astype(np.int64) * 256 + b[:, product][pair]
    return np.bincount(cells, minlength=256 * 256).reshape(256, 256)


def matched_offsets(histograms: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """One offset per step for the product's log-probability that makes the labels' split between the reactant and the
    product match the network's expected split.

    Why: a step's class probabilities summed over its voxels are the network's expected phase volumes, but its labels
    (the most probable class of each voxel) hold less of a scarce phase than that sum: a thin young lath is a row of
    voxels the network gives 30-45 % product, all labelled reactant (the best threshold of a scarce class for Dice is
    below one half). Among the voxels the network gave to either phase, the offset ``d`` is chosen so that the number
    with ``log p_product + d > log p_reactant`` is as close as the stored probabilities allow to
    ``N * sum(p_product) / sum(p_reactant + p_product)``. It uses the step's own probabilities only: no truth, and not
    the internal standard, which stays a check of the volumes.

    Parameters
    ----------
    histograms : ndarray, shape (T, 256, 256) integer
        :func:`pair_histogram` of every step.

    Returns
    -------
    offsets : ndarray, shape (T,) float32
        0 where a step has no voxel of either phase.
    record : dict
        ``network_voxels`` (labelled product before), ``expected_voxels`` (the target, rounded) and ``offsets`` per
        step, JSON-able.
    """
    h = np.asarray(histograms)
    if h.ndim != 3 or h.shape[1:] != (256, 256) or (h < 0).any():
        raise ReactomoError(f"The histograms of the steps must be (steps, 256, 256) counts; got {h.shape}.")
    levels = np.arange(256, dtype=np.float64) / 255.0
    logs = np.log(np.clip(levels, _FLOOR, 1.0))
    ratio = (logs[None, :] - logs[:, None]).ravel()  # log p_product - log p_reactant of every cell [reactant, product]
    order = np.argsort(-ratio, kind="stable")
    ratio_sorted = ratio[order]
    pg, pb = np.meshgrid(levels, levels, indexing="ij")
    offsets = np.zeros(h.shape[0], dtype=np.float32)
    network, expected = [], []
    for t in range(h.shape[0]):
        counts = h[t].astype(np.float64).ravel()
        n = counts.sum()
        mass_b, mass = float((counts * pb.ravel()).sum()), float((counts * (pg + pb).ravel()).sum())
        network.append(int(counts[ratio > 0].sum()))
        if n == 0 or mass <= 0:
            expected.append(0)
            continue
        target = n * mass_b / mass
        expected.append(int(round(target)))
        cum = np.cumsum(counts[order])
        k = int(np.searchsorted(cum, target))  # first cell whose cumulative count reaches the target
        if k > 0 and abs(cum[k - 1] - target) <= abs(cum[min(k, cum.size - 1)] - target):
            k -= 1  # the nearer of the two counts
        k = min(k, cum.size - 1)
        nxt = ratio_sorted[k + 1] if k + 1 < ratio_sorted.size else ratio_sorted[k] - 1.0
        # cells 0..k labelled product: the threshold halfway between the last one in and the first one out
        offsets[t] = np.float32(-(ratio_sorted[k] + nxt) / 2.0)
    return offsets, {"network_voxels": network, "expected_voxels": expected,
                     "offsets": [round(float(d), 4) for d in offsets]}


def most_probable_histories(probabilities: np.ndarray, allowed: np.ndarray, free: np.ndarray | None = None,
                            given: np.ndarray | None = None, log_bias: np.ndarray | None = None) -> np.ndarray:
    """Class index of every voxel at every step, along its most probable allowed history.

    Parameters
    ----------
    probabilities : ndarray, shape (T, C, ...) float
        Class probabilities of each step (any layout after the class axis; each voxel's history is independent).
    allowed : ndarray (C, C) bool
        :func:`allowed_transitions`.
    free : ndarray (C,) bool, optional
        Classes placed by each step alone (:func:`free_classes`): where a step's most probable class is free, the
        voxel keeps it at that step, and that step gives no evidence to (and puts no constraint on) the voxel's
        history among the other classes. A free class is never a bridge between two states the reaction does not
        connect.
    given : ndarray, shape (T, ...), integer, optional
        The class each step's network gave (its argmax before any rounding of the stored probabilities); default
        the argmax of ``probabilities``. Decides where a free class is taken.
    log_bias : ndarray, shape (T, C) float, optional
        Added to each step's log-probabilities of each class (:func:`matched_offsets`); not to the voxels whose class
        at that step is free.

    Returns
    -------
    ndarray, shape (T, ...), uint8
        Without free classes, the argmax of ``sum_t log p_t(h_t)`` over histories ``h`` with ``allowed[h_t, h_t+1]``
        for every t; with one step, the argmax of its probabilities.
    """
    p = np.asarray(probabilities)
    if p.ndim < 2:
        raise ReactomoError(f"Probabilities need the shape (steps, classes, ...); got {p.shape}.")
    t_n, c_n = p.shape[:2]
    allowed = np.asarray(allowed, dtype=bool)
    if allowed.shape != (c_n, c_n) or not allowed.diagonal().all():
        raise ReactomoError(f"The allowed transitions must be a ({c_n}, {c_n}) table in which every class may stay.")
    bias = None
    if log_bias is not None:
        bias = np.asarray(log_bias, dtype=np.float32)
        if bias.shape != (t_n, c_n) or not np.isfinite(bias).all():
            raise ReactomoError(f"The offsets of the log-probabilities must be a finite ({t_n}, {c_n}) table.")
    rest = p.shape[2:]
    flat = p.reshape(t_n, c_n, -1)
    if free is not None and np.asarray(free, dtype=bool).any():
        free = np.asarray(free, dtype=bool)
        if free.shape != (c_n,) or free.all():
            raise ReactomoError(f"The free classes must be a ({c_n},) mask that leaves at least one class constrained.")
        first = flat.argmax(axis=1) if given is None else np.asarray(given).reshape(t_n, -1)  # (T, voxels)
        alone = free[first]
        keep = np.flatnonzero(~free)
        logp = np.log(np.clip(flat[:, keep].astype(np.float32), _FLOOR, 1.0))
        if bias is not None:
            logp += bias[:, keep, None]
        logp = np.where(alone[:, None, :], np.float32(0), logp)  # a step where the class is free says nothing here
        sub = _viterbi(logp, allowed[np.ix_(keep, keep)])
        return np.where(alone, first, keep[sub]).astype(np.uint8).reshape((t_n, *rest))
    logp = np.log(np.clip(flat.astype(np.float32), _FLOOR, 1.0))
    if bias is not None:
        logp += bias[:, :, None]
    return _viterbi(logp, allowed).reshape((t_n, *rest))


def _viterbi(logp: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Class index ``(T, voxels)`` uint8 of the history of highest summed log-evidence ``logp`` ``(T, C, voxels)``."""
    t_n, c_n = logp.shape[:2]
    cost = np.where(allowed, np.float32(0), _FORBIDDEN).astype(np.float32)
    score = logp[0].copy()
    back = np.zeros((t_n, c_n, logp.shape[2]), dtype=np.uint8)
    for t in range(1, t_n):
        cand = score[:, None, :] - cost[:, :, None]  # (from, to, voxels)
        back[t] = cand.argmax(axis=0)
        score = np.take_along_axis(cand, back[t][None].astype(np.intp), axis=0)[0] + logp[t]
    out = np.empty((t_n, logp.shape[2]), dtype=np.uint8)
    cur = score.argmax(axis=0).astype(np.intp)
    for t in range(t_n - 1, -1, -1):
        out[t] = cur
        if t:
            cur = np.take_along_axis(back[t], cur[None], axis=0)[0].astype(np.intp)
    return out


def _shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shift (z, y, x) in voxels that moves ``b`` onto ``a`` (phase correlation, to a tenth of a voxel)."""
    from skimage.registration import phase_cross_correlation

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    shift, _, _ = phase_cross_correlation(a - a.mean(), b - b.mean(), upsample_factor=10, normalization=None,
                                          disambiguate=False)
    return np.asarray(shift, dtype=float)


def step_shifts(read_slab: Any, n_steps: int, *, depth: int = 16, size: int = 256) -> list[list[float]]:
    """Shift (z, y, x) in voxels of every step against the previous one, from a central block of each scan.

    ``read_slab(step)`` returns the central block of that step's scan (any float array of one shape for all steps,
    e.g. ``depth`` slices by ``size`` x ``size`` pixels). Step 0's shift is 0.
    """
    shifts = [[0.0, 0.0, 0.0]]
    prev = np.asarray(read_slab(0), dtype=np.float32)
    for t in range(1, n_steps):
        cur = np.asarray(read_slab(t), dtype=np.float32)
        if cur.shape != prev.shape:
            raise ReactomoError(f"Step {t}'s scan has another shape than step {t - 1}'s; the steps cannot be labelled together.")
        shifts.append([round(float(v), 3) for v in _shift(prev, cur)])
        prev = cur
    return shifts


def centre_block(path: Any, *, depth: int = 16, size: int = 256) -> np.ndarray:
    """The central block (``depth`` slices of ``size`` x ``size`` pixels at most) of a scan file, as float32."""
    from core.imaging.io import open_volume

    with open_volume(path) as vol:
        nz, ny, nx = (int(v) for v in vol.shape)
        d, h, w = min(depth, nz), min(size, ny), min(size, nx)
        z0, y0, x0 = (nz - d) // 2, (ny - h) // 2, (nx - w) // 2
        return np.asarray(vol.slab(z0, z0 + d)[:, y0 : y0 + h, x0 : x0 + w], dtype=np.float32)


def aligned_neighbours(scans: Sequence[Any], step: int, reach: int) -> dict[str, Any]:
    """Which neighbouring steps of ``step`` (up to ``reach`` on each side) a forest may read beside it.

    The forest of the labelled step can read the same pixels at the steps around it (a voxel has a history) only if
    the same pixel is the same piece of rock there: the scans must have one shape and be aligned, as for labelling
    the steps together (every consecutive shift and the shift against ``step`` at most :data:`MAX_SHIFT_VOX`).

    Returns
    -------
    dict
        ``reach, offsets`` (the offsets used, e.g. ``[-1, 1]``; empty when none can be), ``steps`` (their indices),
        ``applied`` (bool), ``reason`` (why none, or None) and ``shifts_vox`` (each step's shift against the
        previous one, from ``step - reach``).
    """
    if isinstance(reach, bool) or not isinstance(reach, (int, np.integer)) or not 0 <= reach <= 3:
        raise ReactomoError(f"The forest's time context is {reach!r} steps; give 0 to 3 steps on each side.")
    lo, hi = max(0, step - int(reach)), min(len(scans) - 1, step + int(reach))
    rec: dict[str, Any] = {"reach": int(reach), "offsets": [], "steps": [], "applied": False, "reason": None, "shifts_vox": []}
    if reach == 0:
        rec["reason"] = "the forest reads the labelled step alone (time context 0)"
        return rec
    if lo == hi:
        rec["reason"] = "the series has one step"
        return rec
    window = list(range(lo, hi + 1))
    from core.imaging.io import open_volume

    try:
        shapes = []
        for t in window:
            with open_volume(scans[t]) as vol:
                shapes.append(tuple(int(v) for v in vol.shape))
        if len(set(shapes)) > 1:
            other = next(t for t, sh in zip(window, shapes) if sh != shapes[window.index(step)])
            rec["reason"] = (f"step {other}'s scan has another shape than the labelled step's "
                             f"({shapes[window.index(other)]} against {shapes[window.index(step)]})")
            return rec
        shifts = step_shifts(lambda i: centre_block(scans[window[i]]), len(window))
    except ReactomoError as exc:
        rec["reason"] = f"a neighbouring step's scan cannot be read ({str(exc).rstrip('.')})"
        return rec
    rec["shifts_vox"] = shifts
    total = np.cumsum(np.asarray(shifts, dtype=float), axis=0)
    k = window.index(step)
    for i in range(len(window)):  # every step of the window, the first one too, against its predecessor and the label
        against_label = total[i] - total[k]
        worst = max(max(abs(v) for v in shifts[i]), float(np.abs(against_label).max()))
        if worst > MAX_SHIFT_VOX:
            before = f"step {window[i - 1]} or " if i else ""
            rec["reason"] = (f"step {window[i]} is shifted by up to {worst:.2g} voxels against {before}the labelled "
                             f"step, more than {MAX_SHIFT_VOX:g}; register the scans for the forest to read the steps "
                             "around the labelled one")
            return rec
    rec["steps"] = [t for t in window if t != step]
    rec["offsets"] = [t - step for t in rec["steps"]]
    rec["applied"] = True
    return rec
