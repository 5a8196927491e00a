"""Reaction kinetics: the JMAK (Avrami) model fitted to the reacted fraction, and growth rates with bands.

JMAK (Johnson-Mehl-Avrami-Kolmogorov): ``alpha(t) = 1 − exp(−(k·(t − t0))^n)`` for ``t > t0`` and 0 before, with
rate constant ``k`` (1/s), Avrami exponent ``n`` and onset ``t0`` (s). :func:`fit_jmak` fits it by non-linear least
squares (:func:`scipy.optimize.curve_fit`) from starting values read off the linearised Avrami plot
``ln(−ln(1 − alpha))`` against ``ln(t − t0)``; confidence intervals come from the covariance matrix with t quantiles,
or from a residual bootstrap. :func:`growth_rate` differentiates a smoothed fraction (local polynomial /
Savitzky-Golay, or a smoothing spline) and bands the rate with a residual bootstrap of the smoother.

Every result carries a ``method`` sentence that the UI prints under its chart.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats

from core.errors import ReactomoError

__all__ = ["jmak", "fit_jmak", "growth_rate", "N_BOUNDS"]

#: Bounds of the Avrami exponent in the fit.
N_BOUNDS = (0.3, 6.0)
#: Measured fractions may stray this far outside [0, 1] through noise before they are refused.
ALPHA_SLACK = 0.1
_LN2 = math.log(2.0)


def jmak(t, k: float, n: float, t0: float = 0.0):
    """JMAK reacted fraction ``1 − exp(−(k (t − t0))^n)`` for ``t > t0``, 0 otherwise (vectorised).

    Parameters
    ----------
    t : float or array_like
        Time(s) in seconds.
    k : float
        Rate constant in 1/s (> 0).
    n : float
        Avrami exponent (> 0).
    t0 : float
        Onset time in seconds.

    Returns
    -------
    float or numpy.ndarray
        Same shape as ``t``.
    """
    ta = np.asarray(t, dtype=float)
    tau = np.clip(k * (ta - t0), 0.0, None)
    out = -np.expm1(-(tau**n))
    return float(out) if out.ndim == 0 else out


# -- input checks -----------------------------------------------------------------------------------------------
def _level(level: float) -> float:
    if not 0 < level < 1:
        raise ReactomoError(f"The confidence level must be a fraction between 0 and 1 (0.95 = 95 %); got {level!r}.")
    return float(level)


def _series(t_s, y, what: str, extra=None):
    """Finite (t, y) pairs sorted by time (and ``extra`` per point, aligned), refusing duplicate times."""
    t = np.asarray(t_s, dtype=float).ravel()
    v = np.asarray(y, dtype=float).ravel()
    if t.size != v.size:
        raise ReactomoError(f"Times and {what} must have the same length; got {t.size} and {v.size} values.")
    keep = np.isfinite(t) & np.isfinite(v)
    order = np.argsort(t[keep], kind="stable")
    t, v = t[keep][order], v[keep][order]
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise ReactomoError("Two steps have the same time; every step needs its own time.")
    if extra is None:
        return t, v
    e = np.broadcast_to(np.asarray(extra, dtype=float), keep.shape)[keep][order]
    return t, v, e


# -- JMAK fit ---------------------------------------------------------------------------------------------------
def _avrami_start(t: np.ndarray, a: np.ndarray, t0: float) -> tuple[float, float]:
    """(k, n) from the linearised Avrami plot on 0.05 < alpha < 0.95, with a fallback when it cannot be used."""
    m = (a > 0.05) & (a < 0.95) & (t > t0)
    if m.sum() >= 2 and np.ptp(np.log(t[m] - t0)) > 0:
        X, Y = np.log(t[m] - t0), np.log(-np.log1p(-a[m]))
        n, c = np.polyfit(X, Y, 1)
        if np.isfinite(n) and n > 0:
            n = float(np.clip(n, N_BOUNDS[0] * 1.01, N_BOUNDS[1] * 0.99))
            return float(math.exp(c / n)), n
    # fallback: half-time from the first crossing of 0.5 (or the middle of the time span), n = 2
    above = np.nonzero(a >= 0.5)[0]
    th = float(t[above[0]] - t0) if above.size else float(np.ptp(t) or 1.0)
    th = th if th > 0 else float(np.ptp(t) or 1.0)
    return _LN2**0.5 / th, 2.0


def _curve_fit(t, a, p0, lower, upper, sigma, absolute, fixed_t0):
    def model(tt, k, n, *rest):
        return jmak(tt, k, n, fixed_t0 if fixed_t0 is not None else rest[0])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        popt, pcov = optimize.curve_fit(model, t, a, p0=p0, bounds=(lower, upper), sigma=sigma,
                                        absolute_sigma=absolute, method="trf", max_nfev=2000,
                                        x_scale="jac")
    return popt, pcov


def _fit_once(t, a, t0_fixed, sigma, absolute, starts):
    """Best (lowest weighted SSE) curve_fit over several starting points; returns (popt, pcov) or (None, None)."""
    lower = [0.0, N_BOUNDS[0]] + ([] if t0_fixed is not None else [starts[0][2] - 10 * (np.ptp(t) or 1.0)])
    best = (None, None, np.inf)
    for p in starts:
        p = list(p[:2]) if t0_fixed is not None else list(p)
        up_t0 = [] if t0_fixed is not None else [_t0_upper(t, a)]
        upper = [np.inf, N_BOUNDS[1]] + up_t0
        if t0_fixed is None:
            lower[2] = min(lower[2], p[2] - 1.0)
            p[2] = min(p[2], upper[2] - 1e-9 * (abs(upper[2]) + 1))
        p[0] = max(p[0], 1e-300)
        try:
            popt, pcov = _curve_fit(t, a, p, lower, upper, sigma, absolute, t0_fixed)
        except (RuntimeError, ValueError, optimize.OptimizeWarning):
            continue
        r = (a - jmak(t, popt[0], popt[1], t0_fixed if t0_fixed is not None else popt[2]))
        if sigma is not None:
            r = r / sigma
        sse = float(r @ r)
        if sse < best[2]:
            best = (popt, pcov, sse)
    return best[0], best[1]


def _t0_upper(t: np.ndarray, a: np.ndarray) -> float:
    """The onset must come before the first clearly reacted point (alpha > 0.05)."""
    up = np.nonzero(a > 0.05)[0]
    return float(t[up[0]]) if up.size else float(t[-1])


def _half_time(k: float, n: float, t0: float) -> float:
    return t0 + _LN2 ** (1.0 / n) / k


def fit_jmak(
    t_s: Sequence[float],
    alpha: Sequence[float],
    *,
    t0: float | None = None,
    level: float = 0.95,
    sigma: float | Sequence[float] | None = None,
    ci: str = "covariance",
    n_boot: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the JMAK model to a reacted fraction over time, with confidence intervals.

    Parameters
    ----------
    t_s : sequence of float
        Times in seconds (any order; sorted internally; no duplicates).
    alpha : sequence of float
        Reacted fraction at each time, in [0, 1]; noise may take values up to ``ALPHA_SLACK`` (0.1) outside.
        Pairs with a NaN are dropped.
    t0 : float, optional
        Onset time in seconds, held fixed; ``None`` fits it as a third parameter (bounded above by the first time
        with alpha > 0.05).
    level : float
        Confidence level (0.95 = 95 %).
    sigma : float or sequence of float, optional
        Standard deviation of each alpha. When given, the fit is weighted and the covariance is taken as absolute;
        otherwise it is scaled by the residual variance.
    ci : {"covariance", "bootstrap"}
        ``"covariance"``: estimate ± t(1 − (1−level)/2, n_points − n_params) × √diag(cov), and the half-time
        interval by the delta method. ``"bootstrap"``: residual bootstrap (``n_boot`` resamples of the fitted curve
        plus resampled residuals inflated by √(n/(n−p)), refitted; percentile intervals), seeded by ``seed``.
    n_boot, seed : int
        Bootstrap resamples and random seed.

    Returns
    -------
    dict
        ``k`` (1/s), ``n``, ``t0`` (s), ``k_ci``, ``n_ci``, ``t0_ci`` (NaN when t0 is fixed), ``k_se, n_se, t0_se``,
        ``cov`` (covariance matrix in the order of ``param_names``), ``param_names``, ``half_time_s``,
        ``half_time_ci``, ``residual_sd``, ``r2``, ``n_points``, ``dof``, ``level``, ``ci_method``, ``n_boot``
        (resamples that converged; 0 for the covariance method), ``converged``, ``notes`` (list of str),
        ``method`` (sentence).

    Raises
    ------
    ReactomoError
        Fewer than 3 usable points (or fewer than the parameters + 1), alpha outside [0, 1], a bad ``ci``, level
        or ``sigma``.
    """
    level = _level(level)
    if ci not in ("covariance", "bootstrap"):
        raise ReactomoError(f"ci must be 'covariance' or 'bootstrap'; got {ci!r}.")
    if sigma is None:
        t, a = _series(t_s, alpha, "reacted fractions")
        sig = None
    else:
        try:
            t, a, sig = _series(t_s, alpha, "reacted fractions", sigma)
        except ValueError:
            raise ReactomoError("sigma must be one number or one standard deviation per point.") from None
        if not np.all(np.isfinite(sig) & (sig > 0)):
            raise ReactomoError("sigma must be positive standard deviations of alpha.")
    if t.size and (a.min() < -ALPHA_SLACK or a.max() > 1 + ALPHA_SLACK):
        raise ReactomoError(f"The reacted fraction must lie between 0 and 1; got values from {a.min():.3g} to {a.max():.3g}.")
    n_par = 2 if t0 is not None else 3
    if t.size < max(3, n_par + 1):
        raise ReactomoError(f"A JMAK fit needs at least {max(3, n_par + 1)} usable points (with {n_par} parameters); got {t.size}.")
    absolute = sig is not None

    # starting values from the linearised Avrami plot
    if t0 is not None:
        k_s, n_s = _avrami_start(t, a, float(t0))
        starts = [(k_s, n_s, float(t0)), (k_s, 2.0, float(t0))]
    else:
        up = _t0_upper(t, a)
        cands = {float(min(t[0], up)), float(min(0.0, up)) if t[0] >= 0 else float(t[0])}
        zero = np.nonzero(a <= 0.01)[0]
        if zero.size:
            cands.add(float(min(t[zero[-1]], up)))
        starts = []
        for c in sorted(cands):
            c = min(c, up - 1e-6 * (abs(up) + 1))
            starts.append((*_avrami_start(t, a, c), c))
    popt, pcov = _fit_once(t, a, t0, sig, absolute, starts)
    notes: list[str] = []
    names = ["k", "n"] + ([] if t0 is not None else ["t0"])
    if popt is None:
        k, n_, t0v = starts[0]
        converged = False
        notes.append("The least-squares fit did not converge; the values shown are the starting values.")
        pcov = np.full((n_par, n_par), np.nan)
        popt = np.array([k, n_, t0v][:n_par])
    else:
        converged = bool(np.all(np.isfinite(pcov)))
        if not converged:
            notes.append("The fit's covariance could not be estimated (the data do not constrain every parameter).")
    k, n_ = float(popt[0]), float(popt[1])
    t0v = float(t0) if t0 is not None else float(popt[2])
    if n_ <= N_BOUNDS[0] * 1.001 or n_ >= N_BOUNDS[1] * 0.999:
        notes.append(f"The Avrami exponent sits at its bound {N_BOUNDS}; treat n and its interval with caution.")

    fitted = jmak(t, k, n_, t0v)
    res = a - fitted
    dof = int(t.size - n_par)
    rss = float(res @ res)
    resid_sd = math.sqrt(rss / dof) if dof > 0 else float("nan")
    sst = float(((a - a.mean()) ** 2).sum())
    r2 = 1.0 - rss / sst if sst > 0 else float("nan")
    se = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(n_par, np.nan)
    half = _half_time(k, n_, t0v)
    pct = f"{100 * level:g} %"
    nan2 = (float("nan"), float("nan"))

    if ci == "covariance":
        tq = float(stats.t.ppf(0.5 + level / 2, dof)) if dof > 0 else float("nan")
        cis = [(float(p - tq * s), float(p + tq * s)) for p, s in zip(popt, se)]
        # delta method for t_half = t0 + ln2^(1/n)/k
        c = _LN2 ** (1.0 / n_)
        g = np.array([-c / k**2, -c * math.log(_LN2) / (n_**2 * k)] + ([] if t0 is not None else [1.0]))
        h_se = float(math.sqrt(max(g @ pcov @ g, 0.0))) if np.all(np.isfinite(pcov)) else float("nan")
        half_ci = (half - tq * h_se, half + tq * h_se)
        used_boot = 0
        ci_text = (f"{pct} intervals = estimate ± t × standard error, standard errors from the fit's covariance "
                   + ("(taken as absolute, from the given sigma)" if absolute else "(scaled by the residual variance)")
                   + f", t-distribution on n − p = {dof} degrees of freedom; half-time interval by the delta method")
    else:
        if n_boot < 20:
            raise ReactomoError(f"A bootstrap needs at least 20 resamples; got n_boot={n_boot}.")
        rng = np.random.default_rng(seed)
        infl = math.sqrt(t.size / dof) if dof > 0 else 1.0
        r0 = (res - res.mean()) * infl
        draws = []
        start = [(k, n_, t0v)]
        for _ in range(int(n_boot)):
            yb = fitted + rng.choice(r0, size=r0.size, replace=True)
            pb, _cv = _fit_once(t, yb, t0, sig, absolute, start)
            if pb is not None:
                draws.append([pb[0], pb[1], t0v if t0 is not None else pb[2]])
        used_boot = len(draws)
        if used_boot < 20:
            cis, half_ci = [nan2] * n_par, nan2
            notes.append("Too few bootstrap refits converged for intervals.")
        else:
            d = np.array(draws)
            lo, hi = 50 * (1 - level), 50 * (1 + level)
            cis = [(float(np.percentile(d[:, j], lo)), float(np.percentile(d[:, j], hi))) for j in range(n_par)]
            hb = d[:, 2] + _LN2 ** (1.0 / d[:, 1]) / d[:, 0]
            half_ci = (float(np.percentile(hb, lo)), float(np.percentile(hb, hi)))
        ci_text = (f"{pct} intervals by residual bootstrap: {used_boot} of {n_boot} resamples (fitted curve + centred "
                   f"residuals inflated by √(n/(n−p)), seed {seed}) refitted, percentile intervals, half-time too")
    t0_text = f"t0 fixed at {t0v:g} s" if t0 is not None else "t0 fitted"
    method = (f"JMAK α = 1 − exp(−(k(t − t0))^n) fitted to {t.size} points by non-linear least squares "
              f"(scipy.optimize.curve_fit, trust-region, k > 0, {N_BOUNDS[0]} < n < {N_BOUNDS[1]}, {t0_text}; "
              f"start from the linearised Avrami plot on 0.05 < α < 0.95); {ci_text}.")
    return {
        "k": k, "n": n_, "t0": t0v,
        "k_ci": cis[0], "n_ci": cis[1], "t0_ci": cis[2] if t0 is None else nan2,
        "k_se": float(se[0]), "n_se": float(se[1]), "t0_se": float(se[2]) if t0 is None else float("nan"),
        "cov": np.asarray(pcov, dtype=float), "param_names": names,
        "half_time_s": float(half), "half_time_ci": (float(half_ci[0]), float(half_ci[1])),
        "residual_sd": float(resid_sd), "r2": float(r2), "n_points": int(t.size), "dof": dof, "level": level,
        "ci_method": ci, "n_boot": used_boot, "converged": converged, "notes": notes, "method": method,
    }


# -- growth rate ------------------------------------------------------------------------------------------------
def _local_poly_operators(t: np.ndarray, window: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear operators S (smoothed values) and D (first derivative) of a sliding local polynomial fit.

    For evenly spaced times this is exactly the Savitzky-Golay filter (with its polynomial end treatment); for uneven
    spacing each point gets its own least-squares fit over its ``window`` neighbours.
    """
    n = t.size
    h = window // 2
    S, D = np.zeros((n, n)), np.zeros((n, n))
    scale = float(np.median(np.diff(t)))
    for i in range(n):
        lo = min(max(i - h, 0), n - window)
        idx = np.arange(lo, lo + window)
        x = (t[idx] - t[i]) / scale
        V = np.vander(x, order + 1, increasing=True)
        P = np.linalg.pinv(V)  # rows: coefficient j as a linear function of y
        S[i, idx] = P[0]
        D[i, idx] = P[1] / scale
    return S, D


def growth_rate(
    t_s: Sequence[float],
    fraction: Sequence[float],
    *,
    method: str = "savgol",
    window: int | None = None,
    polyorder: int = 3,
    smoothing: float | None = None,
    level: float = 0.95,
    n_boot: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    """Growth rate of a phase fraction: smoothed curve, its derivative per hour and a bootstrap band.

    Parameters
    ----------
    t_s : sequence of float
        Times in seconds (sorted internally; no duplicates; NaN pairs dropped).
    fraction : sequence of float
        Phase fraction (or reacted fraction) at each time.
    method : {"savgol", "spline"}
        ``"savgol"``: local polynomial of degree ``polyorder`` over ``window`` neighbouring points (Savitzky-Golay;
        uneven spacing handled by a least-squares fit per point). ``"spline"``: cubic smoothing spline
        (:class:`scipy.interpolate.UnivariateSpline`) with smoothing factor ``smoothing``.
    window : int, optional
        Odd window length for ``"savgol"``; default ``max(7, 2·(n // 10) + 1)`` points, at most all of them.
    polyorder : int
        Polynomial degree for ``"savgol"`` (default 3: with a centred window a quadratic gives the same, more
        biased, slope as a straight line; lowered when the window is too short to leave residuals).
    smoothing : float, optional
        FITPACK smoothing factor ``s`` (sum of squared residuals allowed) for ``"spline"``; default ``½·n·σ̂²`` with
        ``σ̂`` the noise SD estimated from the residuals of a local cubic fit over 7 points.
    level : float
        Coverage of the band (0.95 = 95 %).
    n_boot, seed : int
        Residual bootstrap resamples and seed.

    Returns
    -------
    dict
        ``t_s, fraction, smoothed, rate, rate_low, rate_high`` (arrays; rates in fraction per hour), ``level``,
        ``window``, ``polyorder``, ``method_name``, ``method`` (sentence). The band is rate + the
        ``(1±level)/2`` quantiles of (bootstrap rate − rate of the smoothed curve), where each resample is the
        smoothed curve plus residuals drawn with replacement; it covers the smoother's noise, not its bias.
        With 2 or 3 points: central differences (:func:`numpy.gradient`) and a band of ± t × the residual SD of a
        straight line propagated through the difference weights (NaN with 2 points); the method says so.

    Raises
    ------
    ReactomoError
        Fewer than 2 usable points, an unknown method, a bad window or level.
    """
    level = _level(level)
    if method not in ("savgol", "spline"):
        raise ReactomoError(f"method must be 'savgol' or 'spline'; got {method!r}.")
    t, y = _series(t_s, fraction, "fractions")
    n = t.size
    if n < 2:
        raise ReactomoError(f"A growth rate needs at least 2 usable points; got {n}.")
    pct = f"{100 * level:g} %"
    q_lo, q_hi = 0.5 - level / 2, 0.5 + level / 2
    if n < 4:
        # central differences (one-sided at the ends) as a linear operator on y
        D = np.zeros((n, n))
        for j in range(n):
            e = np.zeros(n)
            e[j] = 1.0
            D[:, j] = np.gradient(e, t)
        rate = D @ y
        if n == 3:
            b, a0 = np.polyfit(t, y, 1)
            sd = float(np.sqrt(((y - (a0 + b * t)) ** 2).sum() / 1))
            half = float(stats.t.ppf(q_hi, 1)) * sd * np.sqrt((D**2).sum(axis=1))
        else:
            half = np.full(n, np.nan)
        return {"t_s": t, "fraction": y, "smoothed": y.copy(), "rate": 3600 * rate,
                "rate_low": 3600 * (rate - half), "rate_high": 3600 * (rate + half), "level": level,
                "window": None, "polyorder": None, "method_name": "differences",
                "method": (f"Only {n} points: rate by central differences (one-sided at the ends), no smoothing; "
                           + (f"{pct} band = ± t(1 dof) × residual SD of a straight-line fit propagated through the "
                              "difference weights." if n == 3 else "no band (a residual needs at least 3 points)."))}

    rng = np.random.default_rng(seed)
    if method == "savgol":
        if window is None:
            window = max(7, 2 * (n // 10) + 1)
        window = int(window)
        if window % 2 == 0 or window < 3:
            raise ReactomoError(f"The window must be an odd number of points, at least 3; got {window}.")
        window = min(window, n if n % 2 else n - 1)
        order = int(min(max(polyorder, 1), window - 2))
        S, D = _local_poly_operators(t, window, order)
        smoothed, rate = S @ y, D @ y
        res = y - smoothed
        # E[RSS] = σ²(n − 2 tr S + tr SᵀS) for a linear smoother: inflate the residuals to the noise level
        dof_eff = max(n - 2 * float(np.trace(S)) + float((S * S).sum()), 1.0)
        r0 = (res - res.mean()) * math.sqrt(n / dof_eff)
        Yb = smoothed[None, :] + rng.choice(r0, size=(int(n_boot), n), replace=True)
        dev = Yb @ D.T - (D @ smoothed)[None, :]
        name = "savgol"
        how = (f"local polynomial of degree {order} over {window} points (Savitzky-Golay, least squares per point "
               "for uneven times), its derivative")
        win_out, ord_out = window, order
    else:
        from scipy.interpolate import UnivariateSpline

        auto = smoothing is None
        if auto:
            # noise variance from the residuals of a local cubic (Savitzky-Golay) fit, corrected for its hat matrix
            w = min(7, n if n % 2 else n - 1)
            S0, _ = _local_poly_operators(t, w, min(3, w - 2))
            r_ = y - S0 @ y
            noise_sd = math.sqrt(float(r_ @ r_) / max(n - 2 * np.trace(S0) + (S0 * S0).sum(), 1.0))
            smoothing = 0.5 * n * noise_sd**2
        else:
            noise_sd = math.sqrt(float(smoothing) / n)
        s_used = float(smoothing)
        spl = UnivariateSpline(t, y, k=3, s=s_used)
        smoothed, rate = spl(t), spl.derivative()(t)
        res = y - smoothed
        r0 = res - res.mean()
        sd_r = float(r0.std())
        if sd_r > 0:  # inflate to the estimated noise level when the spline hugs the data
            r0 = r0 * max(1.0, noise_sd / sd_r)
        dev = np.empty((int(n_boot), n))
        for b in range(int(n_boot)):
            yb = smoothed + rng.choice(r0, size=n, replace=True)
            dev[b] = UnivariateSpline(t, yb, k=3, s=s_used).derivative()(t)
        dev -= rate[None, :]
        name = "spline"
        how = (f"cubic smoothing spline (scipy UnivariateSpline, smoothing factor s = {s_used:.3g}"
               + (", ½ × n × noise variance from a local cubic fit's residuals" if auto else "") + "; best with 20 or more points), its derivative")
        win_out, ord_out = None, 3
    lo = rate + np.quantile(dev, q_lo, axis=0)
    hi = rate + np.quantile(dev, q_hi, axis=0)
    return {"t_s": t, "fraction": y, "smoothed": smoothed, "rate": 3600 * rate, "rate_low": 3600 * lo,
            "rate_high": 3600 * hi, "level": level, "window": win_out, "polyorder": ord_out, "method_name": name,
            "method": (f"Growth rate per hour = derivative of the {how}; {pct} band from a residual bootstrap "
                       f"({n_boot} resamples of the smoothed curve + residuals drawn with replacement, seed {seed}); "
                       "the band shows the noise, not the smoother's bias.")}
