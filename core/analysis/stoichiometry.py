"""The internal standard: moles of reactant and product per step, against the reaction's stoichiometry.

For reaction R1 (CaSO4·2H2O -> CaSO4·0.5H2O + 1.5 H2O) one mole of gypsum gives one mole of bassanite, so with
``n_i(t) = V_i(t) · rho_i / M_i`` (``V_i`` = voxel count × voxel volume) theory says
``n_product(t) = r · (n_reactant(0) − n_reactant(t))`` (``r`` = product per reactant, 1 for R1). Normalised by
``n_reactant(0)``: ``x = n_product / (r · n0)``, ``y = n_reactant / n0`` lie on ``y = 1 − x``. The deviation at step
``t`` is ``(n0 − n_reactant(t) − n_product(t) / r) / n0``; a step is inside the band when ``|deviation| <= band``
(the study: every point inside ±2 %). Phases and the reaction come from configuration (:mod:`core.phases`).

Further checks (SPEC.md, "The internal standard"):

* :func:`fit_line` -- ordinary least squares of the measured points with t-distribution confidence intervals, shown
  beside the theory line ``y = 1 − x``;
* :func:`pore_check` -- with no compaction the new pore volume is ``(1 − r·Vm_product/Vm_reactant)`` × the reactant
  volume consumed (0.287 for R1);
* :func:`inert_constancy` -- the inert phases (celestite) keep their volume;
* :func:`extent_two_ways` -- reaction extent from the reactant lost and from the product gained;
* :func:`verdict` -- one sentence over all steps of one check (the internal standard, or the pore check);
* :func:`overall_verdict` -- one verdict over every check (internal standard, pore volume, inert phases, fit against
  the theory, trend over time): passed only when every check that can be evaluated passes.

Every result carries a ``method`` string that says how it was computed (the UI prints it under the chart).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import math

import numpy as np
from scipy import stats

from core.errors import ReactomoError
from core.phases import PhaseTable, Reaction

__all__ = ["moles", "molar_evolution", "fit_line", "pore_check", "inert_constancy", "extent_two_ways", "verdict",
           "overall_verdict", "CHECKS", "amount_unit", "pct_beside"]


def moles(voxels: int | float, phase, voxel_size_um: float) -> float:
    """Moles of ``phase`` in ``voxels`` voxels of edge ``voxel_size_um`` µm: ``V · rho / M``."""
    if phase.mol_per_m3 is None:
        raise ReactomoError(f"The phase '{phase.name}' has no density and molar mass; set them in the phase table to count its moles.")
    if not voxel_size_um or voxel_size_um <= 0:
        raise ReactomoError(f"The voxel size must be a positive number of micrometres; got {voxel_size_um!r}.")
    return float(voxels) * (float(voxel_size_um) * 1e-6) ** 3 * phase.mol_per_m3


def molar_evolution(
    counts: Sequence[Mapping[int, int]],
    *,
    phases: PhaseTable,
    reaction: Reaction = Reaction(),
    voxel_size_um: float,
    times_s: Sequence[float] | None = None,
    band: float = 0.02,
) -> list[dict[str, Any]]:
    """One row per step: moles of reactant and product, the normalised point (x, y), the deviation and the verdict.

    Parameters
    ----------
    counts : sequence of mappings
        Voxel counts per phase code, one mapping per step in time order; the first step is the reference ``t = 0``.
    phases, reaction
        The phase table and the reaction (codes of reactant and product).
    voxel_size_um : float
    times_s : sequence of float, optional
    band : float
        Half-width of the band as a fraction (0.02 = ±2 %).

    Returns
    -------
    list of dict
        Keys ``step, time_s, n_reactant_mol, n_product_mol, x, y, deviation_pct, inside_band``.
    """
    if not counts:
        raise ReactomoError("No steps to compare with the reaction; segment at least one step first.")
    if not 0 < band < 1:
        raise ReactomoError(f"The band must be a fraction between 0 and 1 (0.02 = ±2 %); got {band!r}.")
    reaction.check_against(phases)
    rp, pp = phases.by_code(reaction.reactant), phases.by_code(reaction.product)
    r = float(reaction.product_per_reactant)
    n0 = moles(counts[0].get(reaction.reactant, 0), rp, voxel_size_um)
    if n0 <= 0:
        raise ReactomoError(f"The first step has no {rp.name}; the internal standard needs the reactant at t = 0.")
    rows = []
    for i, c in enumerate(counts):
        nr = moles(c.get(reaction.reactant, 0), rp, voxel_size_um)
        npd = moles(c.get(reaction.product, 0), pp, voxel_size_um)
        dev = (n0 - nr - npd / r) / n0
        rows.append({"step": i, "time_s": float(times_s[i]) if times_s is not None else None,
                     "n_reactant_mol": nr, "n_product_mol": npd, "x": npd / (r * n0), "y": nr / n0,
                     "deviation_pct": 100.0 * dev, "inside_band": bool(abs(dev) <= band)})
    return rows


# -- fit of the measured points ---------------------------------------------------------------------------------
def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise ReactomoError(f"The confidence level must be a fraction between 0 and 1 (0.95 = 95 %); got {level!r}.")
    return float(level)


def _check_band(band: float) -> float:
    if not 0 < band < 1:
        raise ReactomoError(f"The band must be a fraction between 0 and 1 (0.02 = ±2 %); got {band!r}.")
    return float(band)


def _inside(value: float, ci: tuple[float, float]) -> bool:
    """``value`` inside ``ci`` allowing for floating-point round-off (a zero-width interval from exact data)."""
    tol = 1e-9 * max(1.0, abs(value))
    return bool(ci[0] - tol <= value <= ci[1] + tol)


def fit_line(x: Sequence[float], y: Sequence[float], *, level: float = 0.95) -> dict[str, Any]:
    """Ordinary least squares ``y = a + b·x`` with t-distribution confidence intervals.

    Parameters
    ----------
    x, y : sequence of float
        The points (e.g. the normalised moles ``x = n_product/(r·n0)``, ``y = n_reactant/n0``); all finite.
    level : float
        Confidence level of the intervals (0.95 = 95 %).

    Returns
    -------
    dict
        ``slope, intercept, slope_se, intercept_se, slope_ci (low, high), intercept_ci, r2, n, dof, residual_sd,
        level, theory_inside_ci, note, method``. Standard errors are the textbook OLS ones
        (``se_b = s/√Sxx``, ``se_a = s·√(1/n + x̄²/Sxx)``, ``s`` = residual SD with ``n − 2`` degrees of freedom);
        intervals are estimate ± ``t(1 − (1−level)/2, n − 2)`` × SE. ``theory_inside_ci`` says whether the theory
        line of the internal standard (slope −1, intercept 1) lies inside both intervals. With fewer than 3 points
        the intervals are NaN, ``theory_inside_ci`` is ``None`` and ``note`` says why.

    Raises
    ------
    ReactomoError
        Mismatched lengths, non-finite values, fewer than 2 points or constant ``x``.
    """
    level = _check_level(level)
    xa, ya = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if xa.size != ya.size:
        raise ReactomoError(f"x and y must have the same length to fit a line; got {xa.size} and {ya.size} values.")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        raise ReactomoError("The points to fit contain NaN or infinite values; remove those steps first.")
    n = int(xa.size)
    if n < 2:
        raise ReactomoError(f"A line needs at least 2 points; got {n}.")
    xm, ym = xa.mean(), ya.mean()
    sxx = float(((xa - xm) ** 2).sum())
    if sxx <= 1e-300 or np.ptp(xa) <= 1e-12 * max(1.0, float(np.abs(xa).max())):
        raise ReactomoError(f"All x values are the same ({xa[0]:g}); a line needs at least two different x values.")
    b = float(((xa - xm) * (ya - ym)).sum() / sxx)
    a = float(ym - b * xm)
    res = ya - (a + b * xa)
    sst = float(((ya - ym) ** 2).sum())
    r2 = 1.0 - float((res**2).sum()) / sst if sst > 0 else 1.0
    dof = n - 2
    note = ""
    if dof >= 1:
        s = math.sqrt(float((res**2).sum()) / dof)
        se_b = s / math.sqrt(sxx)
        se_a = s * math.sqrt(1.0 / n + xm**2 / sxx)
        tq = float(stats.t.ppf(0.5 + level / 2, dof))
        slope_ci = (b - tq * se_b, b + tq * se_b)
        intercept_ci = (a - tq * se_a, a + tq * se_a)
        theory = _inside(-1.0, slope_ci) and _inside(1.0, intercept_ci)
    else:
        s = se_a = se_b = float("nan")
        slope_ci = intercept_ci = (float("nan"), float("nan"))
        theory = None
        note = "Only 2 points: the line passes through both, so there is no residual and no confidence interval."
    pct = f"{100 * level:g} %"
    method = (f"Ordinary least squares y = a + b·x on {n} points; {pct} confidence intervals are estimate ± t × standard "
              f"error with the t-distribution on n − 2 = {dof} degrees of freedom; theory: slope −1, intercept 1.")
    return {"slope": b, "intercept": a, "slope_se": se_b, "intercept_se": se_a,
            "slope_ci": tuple(map(float, slope_ci)), "intercept_ci": tuple(map(float, intercept_ci)),
            "r2": float(r2), "n": n, "dof": dof, "residual_sd": float(s), "level": level,
            "theory_inside_ci": theory, "note": note, "method": method}


# -- pore volume, inert phases ----------------------------------------------------------------------------------
def _voxel_mm3(voxel_size_um: float) -> float:
    if not voxel_size_um or voxel_size_um <= 0:
        raise ReactomoError(f"The voxel size must be a positive number of micrometres; got {voxel_size_um!r}.")
    return (float(voxel_size_um) * 1e-3) ** 3


def _time(times_s: Sequence[float] | None, i: int, n: int) -> float | None:
    if times_s is None:
        return None
    if len(times_s) != n:
        raise ReactomoError(f"Give one time per step: {n} steps but {len(times_s)} times.")
    return float(times_s[i])


def pore_check(
    counts: Sequence[Mapping[int, int]],
    *,
    phases: PhaseTable,
    reaction: Reaction = Reaction(),
    voxel_size_um: float,
    band: float = 0.02,
    times_s: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """Second check: the new pore volume against the volume the reaction frees when nothing compacts.

    For each step, ``consumed = V_reactant(0) − V_reactant(t)`` and the expected new pore volume is
    ``(1 − r·Vm_product/Vm_reactant) × consumed`` (0.287 × consumed for R1: 1 − 53.15/74.53). The deviation is
    ``(new pore − expected) / V_reactant(0)``; a step is inside the band when ``|deviation| <= band``.

    Parameters
    ----------
    counts : sequence of mappings
        Voxel counts per phase code, one mapping per step in time order (as for :func:`molar_evolution`).
    phases, reaction, voxel_size_um, band
        As for :func:`molar_evolution`.
    times_s : sequence of float, optional
        Time of each step, carried into the rows.

    Returns
    -------
    list of dict
        Keys ``step, time_s, consumed_mm3, new_pore_mm3, expected_new_pore_mm3, ratio`` (measured/expected; NaN while
        nothing has been consumed)``, deviation`` (fraction of the initial reactant volume)``, deviation_pct,
        inside_band, pore_volume_ratio, method``. Volumes are voxel counts × voxel volume; they carry no error
        model of their own, the band is the tolerance.
    """
    if not counts:
        raise ReactomoError("No steps to check the pore volume of; segment at least one step first.")
    band = _check_band(band)
    vox = _voxel_mm3(voxel_size_um)
    f = reaction.pore_volume_ratio(phases)
    rp = phases.by_code(reaction.reactant)
    v0 = counts[0].get(reaction.reactant, 0) * vox
    if v0 <= 0:
        raise ReactomoError(f"The first step has no {rp.name}; the pore check needs the reactant at t = 0.")
    p0 = counts[0].get(reaction.pore, 0) * vox
    method = (f"Pore check: new pore volume (pore voxels minus those at the first step) against {f:.3f} × "
              f"{rp.name} volume consumed (1 − r·Vm_product/Vm_reactant, no compaction); deviation as a fraction of "
              f"the initial {rp.name} volume, band ±{100 * band:g} %; volumes are voxel counts × "
              f"({voxel_size_um:g} µm)³ with no error model of their own.")
    rows = []
    for i, c in enumerate(counts):
        consumed = v0 - c.get(reaction.reactant, 0) * vox
        new_pore = c.get(reaction.pore, 0) * vox - p0
        expected = f * consumed
        dev = (new_pore - expected) / v0
        ratio = new_pore / expected if abs(expected) > 1e-12 * v0 else float("nan")
        rows.append({"step": i, "time_s": _time(times_s, i, len(counts)), "consumed_mm3": consumed,
                     "new_pore_mm3": new_pore, "expected_new_pore_mm3": expected, "ratio": ratio,
                     "deviation": dev, "deviation_pct": 100.0 * dev, "inside_band": bool(abs(dev) <= band + 1e-12),
                     "pore_volume_ratio": f, "method": method})
    return rows


def inert_constancy(
    counts: Sequence[Mapping[int, int]],
    *,
    phases: PhaseTable,
    reaction: Reaction = Reaction(),
    voxel_size_um: float,
    band: float = 0.02,
    times_s: Sequence[float] | None = None,
    level: float = 0.95,
) -> list[dict[str, Any]]:
    """Third check: every inert phase keeps its volume.

    Parameters
    ----------
    counts : sequence of mappings
        Voxel counts per phase code, one mapping per step in time order.
    phases, reaction, voxel_size_um, band
        As for :func:`molar_evolution`; the inert phases are ``reaction.inert``.
    times_s : sequence of float, optional
        Time of each step; with it (and at least 2 steps) the drift is fitted with :func:`fit_line`.
    level : float
        Confidence level of the drift interval.

    Returns
    -------
    list of dict
        One row per inert phase per step (phase-major), keys ``code, phase, step, time_s, volume_mm3,
        change_vs_first, change_vs_mean`` (fractions)``, inside_band`` (``|change_vs_first| <= band``)``,
        drift_pct_per_h, drift_pct_per_h_ci, drift_zero_inside_ci, method``. The drift is the OLS slope of the
        volume over time in % of the first step's volume per hour, with its t interval (NaN without times or with
        fewer than 3 steps); it is the same in every row of a phase. Empty when the reaction has no inert phase.
    """
    if not counts:
        raise ReactomoError("No steps to check the inert phases of; segment at least one step first.")
    band = _check_band(band)
    level = _check_level(level)
    vox = _voxel_mm3(voxel_size_um)
    n = len(counts)
    t = None if times_s is None else [_time(times_s, i, n) for i in range(n)]
    rows = []
    for code in reaction.inert:
        ph = phases.by_code(code)
        vol = np.array([c.get(code, 0) * vox for c in counts], dtype=float)
        v_first, v_mean = float(vol[0]), float(vol.mean())
        drift, drift_ci, zero_in = float("nan"), (float("nan"), float("nan")), None
        how = "no times given, so no drift fit"
        if t is not None and n >= 2 and v_first > 0 and np.ptp(t) > 0:
            fit = fit_line(np.asarray(t) / 3600.0, 100.0 * vol / v_first, level=level)
            drift, drift_ci = fit["slope"], fit["slope_ci"]
            zero_in = None if fit["dof"] < 1 else _inside(0.0, drift_ci)
            how = (f"drift = OLS slope of volume (% of the first step) over time in hours, {100 * level:g} % t interval "
                   f"on n − 2 = {fit['dof']} degrees of freedom")
        method = (f"Inert {ph.name}: volume = voxel count × ({voxel_size_um:g} µm)³; change relative to the first step "
                  f"(band ±{100 * band:g} %) and to the mean of all steps; {how}.")
        for i in range(n):
            rows.append({"code": code, "phase": ph.name, "step": i, "time_s": None if t is None else t[i],
                         "volume_mm3": float(vol[i]),
                         "change_vs_first": (vol[i] - v_first) / v_first if v_first > 0 else float("nan"),
                         "change_vs_mean": (vol[i] - v_mean) / v_mean if v_mean > 0 else float("nan"),
                         "inside_band": bool(abs(vol[i] - v_first) <= (band + 1e-12) * v_first) if v_first > 0 else bool(vol[i] == 0),
                         "drift_pct_per_h": drift, "drift_pct_per_h_ci": tuple(map(float, drift_ci)),
                         "drift_zero_inside_ci": zero_in, "method": method})
    return rows


# -- extent and verdict -----------------------------------------------------------------------------------------
def extent_two_ways(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Reaction extent measured twice: from the reactant lost (``1 − y``) and from the product gained (``x``).

    Parameters
    ----------
    rows : sequence of mappings
        Rows of :func:`molar_evolution` (keys ``step, time_s, x, y``).

    Returns
    -------
    list of dict
        Keys ``step, time_s, extent_from_reactant, extent_from_product, difference`` (reactant − product, equal to
        the deviation of :func:`molar_evolution`)``, difference_pct, method``.
    """
    if not rows:
        raise ReactomoError("No steps to compute the reaction extent of; run the internal standard first.")
    method = ("Reaction extent two ways from the normalised moles: 1 − n_reactant/n0 (reactant lost) and "
              "n_product/(r·n0) (product gained); their difference is the internal standard's deviation.")
    out = []
    for r in rows:
        try:
            er, ep = 1.0 - float(r["y"]), float(r["x"])
        except KeyError as exc:
            raise ReactomoError(f"The rows lack {exc.args[0]!r}; pass the rows of molar_evolution.") from None
        out.append({"step": r.get("step"), "time_s": r.get("time_s"), "extent_from_reactant": er,
                    "extent_from_product": ep, "difference": er - ep, "difference_pct": 100.0 * (er - ep),
                    "method": method})
    return out


def pct_beside(value: float, limit: float) -> str:
    """``value`` (a percentage) with one decimal, or as many more (up to three) as it takes not to print the same
    number as ``limit`` when it is not: a deviation of 0.53 % against a ±0.5 % band reads "0.53", not "0.5"."""
    if not np.isfinite(value):
        return "nan"
    for d in (1, 2, 3):
        if round(value, d) != round(limit, d) or abs(value - limit) < 1e-9:
            break
    return f"{value:.{d}f}"


_AMOUNT_UNITS = ((1.0, "mol"), (1e-3, "mmol"), (1e-6, "µmol"), (1e-9, "nmol"), (1e-12, "pmol"), (1e-15, "fmol"))


def amount_unit(values: Any) -> tuple[float, str]:
    """``(factor, unit)`` that shows these amounts (mol) as plain numbers: the largest SI prefix with the largest
    |value| at least 1 (``value / factor`` in ``unit``); ``(1.0, "mol")`` when there is no finite non-zero value.

    >>> amount_unit([2.4e-6, 1.9e-7])
    (1e-06, 'µmol')
    >>> amount_unit([0.0, 3e-10])
    (1e-12, 'pmol')
    """
    a = np.abs(np.asarray(values, dtype=float).ravel())
    a = a[np.isfinite(a) & (a > 0)]
    if not a.size:
        return 1.0, "mol"
    top = float(a.max())
    for factor, unit in _AMOUNT_UNITS:
        if top >= factor:
            return factor, unit
    return _AMOUNT_UNITS[-1]


def verdict(rows: Sequence[Mapping[str, Any]], band: float = 0.02) -> dict[str, Any]:
    """Overall verdict of a check: how many steps lie inside the band, and the largest deviation.

    Parameters
    ----------
    rows : sequence of mappings
        Rows with ``deviation_pct`` and ``step`` (from :func:`molar_evolution` or :func:`pore_check`).
    band : float
        Half-width of the band as a fraction (0.02 = ±2 %); a step is inside when ``|deviation_pct| <= 100·band``.

    Returns
    -------
    dict
        ``n_steps, n_inside, all_inside, max_abs_deviation_pct, step_of_max, band, sentence, method``.
    """
    band = _check_band(band)
    if not rows:
        raise ReactomoError("No steps to judge; run the internal standard on at least one step first.")
    try:
        dev = np.array([float(r["deviation_pct"]) for r in rows], dtype=float)
    except KeyError:
        raise ReactomoError("The rows lack 'deviation_pct'; pass the rows of molar_evolution or pore_check.") from None
    steps = [r.get("step", i) for i, r in enumerate(rows)]
    finite = np.isfinite(dev)
    inside = finite & (np.abs(dev) <= 100.0 * band + 1e-9)
    n, k = len(rows), int(inside.sum())
    bw = f"±{100 * band:g} %"
    if finite.any():
        j = int(np.nanargmax(np.abs(np.where(finite, dev, np.nan))))
        mx, at = float(abs(dev[j])), steps[j]
    else:
        mx, at = float("nan"), None
    word = "step" if n == 1 else "steps"
    mxs = pct_beside(mx, 100.0 * band)
    if k == n:
        sentence = (f"The step lies inside the {bw} band (deviation {mxs} %)." if n == 1 else
                    f"All {n} steps lie inside the {bw} band (largest deviation {mxs} % at step {at}).")
    elif k == 0:
        sentence = (f"No step lies inside the {bw} band" + ("." if at is None else
                    f" (largest deviation {mxs} % at step {at})."))
    else:
        sentence = f"{k} of {n} {word} lie inside the {bw} band (largest deviation {mxs} % at step {at})."
    return {"n_steps": n, "n_inside": k, "all_inside": k == n, "max_abs_deviation_pct": mx, "step_of_max": at,
            "band": band, "sentence": sentence,
            "method": f"A step is inside when |deviation| ≤ {100 * band:g} % of the initial reactant; NaN deviations count as outside."}


# -- one verdict over every check -------------------------------------------------------------------------------
#: The checks of :func:`overall_verdict`, in their order: name -> the label shown to the user.
CHECKS = {"internal_standard": "Internal standard", "pore_volume": "Pore volume", "inert_constancy": "Inert phases",
          "fit_vs_theory": "Fit against the theory", "trend": "Trend over time"}


def _num(v: Any) -> float:
    """A stored number as a float; None (a NaN written to JSON as null) or anything unreadable as NaN."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _check(name: str, passed: bool | None, value: float | None, limit: float, sentence: str,
           **details: Any) -> dict[str, Any]:
    value = None if value is None or not np.isfinite(value) else float(value)
    return {"name": name, "label": CHECKS[name], "passed": passed, "value": value, "limit": float(limit), "unit": "%",
            "sentence": sentence, **({"details": details} if details else {})}


def _internal_standard_check(rows: Sequence[Mapping[str, Any]], band: float) -> tuple[dict[str, Any], dict[str, Any]]:
    iv = verdict(rows, band)
    sentence = f"{CHECKS['internal_standard']}: {_lower_first(iv['sentence'])}"
    # at the first step (the reference, n0) the deviation is exactly the product found there: name that cause
    x0 = _num(rows[0].get("x"))
    if np.isfinite(x0) and x0 > band + 1e-12:
        sentence += (f" At the first step, the reference, product amounting to {100 * x0:.1f} % of the reactant is "
                     "already found; a scan taken before the reaction holds none, so these voxels are misread (ring "
                     "artefacts are common in an unreacted, uniform scan: look at the first step's segmentation) or "
                     "the reaction began before the first scan.")
    return _check("internal_standard", bool(iv["all_inside"]), iv["max_abs_deviation_pct"], 100 * band, sentence), iv


def _pore_volume_check(pore_rows: Sequence[Mapping[str, Any]], band: float) -> dict[str, Any]:
    label = CHECKS["pore_volume"]
    if not pore_rows:
        return _check("pore_volume", None, None, 100 * band, f"{label}: not evaluated, no pore-check rows were given.")
    pv = verdict([{"step": r.get("step", i), "deviation_pct": _num(r.get("deviation_pct"))}
                  for i, r in enumerate(pore_rows)], band)
    f = _num(pore_rows[0].get("pore_volume_ratio"))
    what = f"new pores against {f:.3f} × the reactant consumed" if np.isfinite(f) else "new pores against the volume freed"
    sentence = f"{label} ({what}, in % of the initial reactant): {_lower_first(pv['sentence'])}"
    return _check("pore_volume", bool(pv["all_inside"]), pv["max_abs_deviation_pct"], 100 * band, sentence)


def _inert_check(inert_rows: Sequence[Mapping[str, Any]], band: float) -> dict[str, Any]:
    label, bw = CHECKS["inert_constancy"], f"±{100 * band:g} %"
    if not inert_rows:
        return _check("inert_constancy", None, None, 100 * band, f"{label}: not evaluated, the reaction has no inert phase.")
    by_phase: dict[Any, list[Mapping[str, Any]]] = {}
    for r in inert_rows:
        by_phase.setdefault(r.get("phase", r.get("code")), []).append(r)
    ok_parts, bad_parts, absent, worst = [], [], [], 0.0
    for phase, rs in by_phase.items():
        vol = np.array([_num(r.get("volume_mm3")) for r in rs], dtype=float)
        steps = [r.get("step", i) for i, r in enumerate(rs)]
        v0 = vol[0]
        n = len(vol)
        if not np.isfinite(v0):
            worst = float("inf")
            bad_parts.append(f"{phase} has no readable volume at the first step")
            continue
        if v0 == 0:  # absent at the first step: constant only while it stays absent
            k = int((vol == 0).sum())
            if k < n:
                worst = float("inf")
                bad_parts.append(f"{phase} is absent at the first step but not at {n - k} of {n} steps")
            else:  # nothing to hold constant: a segmentation that never finds the phase must not pass for it
                absent.append(str(phase))
            continue
        # the rule of inert_constancy and with_band: |V(t) − V(first)| ≤ band × V(first)
        change = 100.0 * (vol - v0) / v0
        k = int((np.abs(vol - v0) <= (band + 1e-12) * v0).sum())
        finite = np.isfinite(change)
        j = int(np.nanargmax(np.abs(np.where(finite, change, np.nan))))
        worst = max(worst, float(abs(change[j])))
        if k == n:
            ok_parts.append(f"{phase} stays within {bw} of its first step at every step (" +
                            ("no change)" if change[j] == 0 else f"largest change {change[j]:+.1f} % at step {steps[j]})"))
        else:
            bad_parts.append(f"{phase} changes by up to {change[j]:+.1f} % from its first step (step {steps[j]}), "
                             f"outside the {bw} band at {n - k} of {n} steps")
    gone = (f"{' and '.join(absent)} {'is' if len(absent) == 1 else 'are'} absent at every step, so "
            f"{'its' if len(absent) == 1 else 'their'} constancy cannot be judged (was it found at all?)") if absent else ""
    if not ok_parts and not bad_parts:
        return _check("inert_constancy", None, None, 100 * band, f"{label}: not evaluated, {gone}.")
    passed = not bad_parts
    sentence = f"{label}: {'; '.join((ok_parts if passed else bad_parts) + ([gone] if gone else []))}."
    return _check("inert_constancy", passed, worst, 100 * band, sentence)


def _fit_check(rows: Sequence[Mapping[str, Any]], band: float, level: float) -> dict[str, Any]:
    label, bw, pct = CHECKS["fit_vs_theory"], f"±{100 * band:g} %", f"{100 * level:g} %"
    pts = [(_num(r.get("x")), _num(r.get("y"))) for r in rows]
    pts = [(x, y) for x, y in pts if np.isfinite(x) and np.isfinite(y)]
    if len(pts) < 3:
        return _check("fit_vs_theory", None, None, 100 * band,
                      f"{label}: not evaluated, a line with confidence intervals needs at least 3 steps (got {len(pts)}).")
    try:
        fit = fit_line([p[0] for p in pts], [p[1] for p in pts], level=level)
    except ReactomoError:
        return _check("fit_vs_theory", None, None, 100 * band,
                      f"{label}: not evaluated, every step has the same extent, so there is no line to fit.")
    b, a, sci, ici = fit["slope"], fit["intercept"], fit["slope_ci"], fit["intercept_ci"]
    diff = max(abs(b + 1.0), abs(a - 1.0))
    consistent = bool(fit["theory_inside_ci"])
    small = abs(b + 1.0) < band and abs(a - 1.0) < band
    nums = (f"slope {b:.3f} [{sci[0]:.3f}, {sci[1]:.3f}] and intercept {a:.3f} [{ici[0]:.3f}, {ici[1]:.3f}] "
            f"({pct} intervals)")
    # which interval misses the theory, by name: a sentence never says both do when one holds its value
    missed = [what for what, (lo, hi), theory in (("the slope's interval excludes -1", sci, -1.0),
                                                   ("the intercept's interval excludes 1", ici, 1.0))
              if not lo <= theory <= hi]
    if consistent or not missed:
        sentence = f"{label}: {nums} contain the theory (-1 and 1); they differ from it by {100 * diff:.1f} %."
    elif small:
        sentence = (f"{label}: {nums}: {' and '.join(missed)}, but the line differs from the theory by only "
                    f"{pct_beside(100 * diff, 100 * band)} %, less than the {bw} band.")
    else:
        sentence = (f"{label}: {nums}: {' and '.join(missed)}, and the line differs from the theory by "
                    f"{pct_beside(100 * diff, 100 * band)} %, more than the {bw} band.")
    return _check("fit_vs_theory", consistent or small, 100 * diff, 100 * band, sentence,
                  slope=b, slope_ci=list(sci), intercept=a, intercept_ci=list(ici), theory_inside_ci=consistent)


def _trend_check(rows: Sequence[Mapping[str, Any]], band: float, level: float) -> dict[str, Any]:
    label, pct, half = CHECKS["trend"], f"{100 * level:g} %", 50.0 * band
    times = [_num(r.get("time_s")) for r in rows]
    if all(np.isfinite(times)) and np.ptp(times) > 0:
        t, unit = [x / 3600.0 for x in times], "per hour"
    else:  # no times: the step index stands in for time
        t, unit = [float(r["step"]) if r.get("step") is not None else float(i) for i, r in enumerate(rows)], "per step"
    pts = [(ti, _num(r.get("deviation_pct"))) for ti, r in zip(t, rows)]
    pts = [(ti, d) for ti, d in pts if np.isfinite(ti) and np.isfinite(d)]
    if len(pts) < 3:
        return _check("trend", None, None, half,
                      f"{label}: not evaluated, a drift with its interval needs at least 3 steps (got {len(pts)}).")
    tt = np.array([p[0] for p in pts])
    try:
        fit = fit_line(tt, [p[1] for p in pts], level=level)
    except ReactomoError:
        return _check("trend", None, None, half, f"{label}: not evaluated, every step has the same time.")
    slope, ci = fit["slope"], fit["slope_ci"]
    change = slope * float(np.ptp(tt))
    steady = not _inside(0.0, ci)
    big = abs(change) > half + 1e-12
    nums = f"{slope:+.3g} % {unit} [{ci[0]:+.3g}, {ci[1]:+.3g}]"
    if steady and big:
        sentence = (f"{label}: the deviation drifts steadily by {nums} (the {pct} interval excludes 0), "
                    f"{change:+.2f} % over the experiment, more than half the band ({half:g} %).")
    elif steady:
        sentence = (f"{label}: the deviation drifts by {nums}, but only {change:+.2f} % over the experiment, within "
                    f"half the band ({half:g} %).")
    else:
        sentence = (f"{label}: no steady drift of the deviation ({nums}, the {pct} interval contains 0; "
                    f"{change:+.2f} % over the experiment).")
    return _check("trend", not (steady and big), abs(change), half, sentence,
                  slope_pct=slope, slope_ci=list(ci), unit=unit, change_pct=change)


def overall_verdict(
    rows: Sequence[Mapping[str, Any]],
    pore_rows: Sequence[Mapping[str, Any]],
    inert_rows: Sequence[Mapping[str, Any]],
    *,
    band: float = 0.02,
    level: float = 0.95,
) -> dict[str, Any]:
    """One verdict over every check of the segmentation, each explained in one sentence that names its number.

    ============================ ======================================================================================
    check (``name``)             passes when
    ============================ ======================================================================================
    ``internal_standard``        every step's ``|deviation|`` ≤ band (value: largest ``|deviation|`` %, limit: band %)
    ``pore_volume``              every step of :func:`pore_check` has ``|deviation|`` ≤ band (same value and limit)
    ``inert_constancy``          every inert phase's volume lies within the band of its first step's at every step
                                 (value: largest ``|change|`` %, limit: band %)
    ``fit_vs_theory``            the ``level`` intervals of the OLS slope and intercept of (x, y) contain −1 and 1, OR
                                 ``|slope + 1|`` and ``|intercept − 1|`` are both below the band (a difference too
                                 small to matter); value: the larger difference in %, limit: band %
    ``trend``                    NOT (the ``level`` t interval of the OLS slope of ``deviation_pct`` against time
                                 (hours; the step index without times) excludes 0 AND the fitted change over the whole
                                 experiment, slope × time span, exceeds half the band); value: ``|change|`` %,
                                 limit: half the band %
    ============================ ======================================================================================

    A check that cannot be evaluated (fewer than 3 steps for the fit or the trend, no inert phase or one absent at every
    step, no pore rows) has
    ``passed = None``: it neither passes nor fails. The verdict ``passed`` is True when no evaluated check fails (the
    internal standard is always evaluated); a check left out is named in the sentence ("2 could not be evaluated:
    ..."), so it never reads as a pass.

    Parameters
    ----------
    rows : sequence of mappings
        Rows of :func:`molar_evolution` (``step, time_s, x, y, deviation_pct``); ``None`` counts as NaN (outside).
    pore_rows : sequence of mappings
        Rows of :func:`pore_check` (``step, deviation_pct, pore_volume_ratio``).
    inert_rows : sequence of mappings
        Rows of :func:`inert_constancy` (``phase`` or ``code``, ``step, volume_mm3``); empty when nothing is inert.
    band : float
        Half-width of the band as a fraction (0.02 = ±2 %).
    level : float
        Confidence level of the fit and trend intervals.

    Returns
    -------
    dict
        ``passed`` (bool), ``checks`` (list of dicts ``name, label, passed`` (True, False or None)``, value, limit,
        unit`` ("%")``, sentence`` and, for the fit and the trend, ``details``), ``sentence`` (all pass: one sentence
        naming every check; else the sentences of the failing checks, joined), ``band, level, n_checks, n_passed,
        failed`` (names)``, not_evaluated`` (names)``, internal_standard`` (the dict of :func:`verdict` on ``rows``)
        and ``method``.

    Raises
    ------
    ReactomoError
        No rows, or a band or level that is not a fraction.

    Examples
    --------
    >>> rows = [{"step": i, "time_s": 60.0 * i, "x": x, "y": 1 - x, "deviation_pct": 0.0}
    ...         for i, x in enumerate([0.0, 0.2, 0.5, 0.8])]
    >>> overall_verdict(rows, [], [])["passed"]
    True
    """
    band, level = _check_band(band), _check_level(level)
    if not rows:
        raise ReactomoError("No steps to judge; run the internal standard on at least one step first.")
    rows = [{**r, "deviation_pct": _num(r.get("deviation_pct"))} for r in rows]
    is_check, iv = _internal_standard_check(rows, band)
    checks = [is_check, _pore_volume_check(pore_rows, band), _inert_check(inert_rows, band),
              _fit_check(rows, band, level), _trend_check(rows, band, level)]
    failed = [c for c in checks if c["passed"] is False]
    left = [c for c in checks if c["passed"] is None]
    done = [c for c in checks if c["passed"] is not None]
    bw = f"±{100 * band:g} %"

    def names(cs: list[dict[str, Any]]) -> str:
        return ", ".join(_lower_first(c["label"]) for c in cs)

    left_text = (f"{len(left)} could not be evaluated: {names(left)}" if len(left) != 1 else
                 f"1 could not be evaluated: {names(left)}")
    if not failed:
        sentence = (f"All {len(checks)} checks pass ({bw} band): {names(done)}." if not left else
                    f"All {len(done)} checks that could be evaluated pass ({bw} band): {names(done)}; {left_text}.")
    else:
        sentence = " ".join(c["sentence"] for c in failed) + (f" Of the other checks, {left_text}." if left else "")
    method = (f"One verdict over {len(checks)} checks, band {bw}: internal standard, every step's |deviation| ≤ band; "
              f"pore volume, every step's new pore volume within the band of the volume the reaction frees (in % of the "
              f"initial reactant); inert phases, every inert phase's volume within the band of its first step's at every "
              f"step; fit against the theory, the {100 * level:g} % intervals of the fitted slope and intercept contain "
              f"−1 and 1, or both differ from them by less than the band; trend over time, ordinary least squares of the "
              f"deviation against time (hours; the step index without times) with a {100 * level:g} % t interval, "
              f"failing when the interval excludes 0 and the fitted change over the experiment exceeds half the band. "
              f"Passed only when no check fails; a check that cannot be evaluated (too few steps, no inert phase) "
              f"neither passes nor fails and is named.")
    return {"passed": not failed, "checks": checks, "sentence": sentence, "band": band, "level": level,
            "n_checks": len(checks), "n_passed": sum(c["passed"] is True for c in checks),
            "failed": [c["name"] for c in failed], "not_evaluated": [c["name"] for c in left],
            "internal_standard": iv, "method": method}
