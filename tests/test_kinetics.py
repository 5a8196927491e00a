"""core.kinetics: the JMAK model, its fit with confidence intervals, and growth rates with bootstrap bands."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import ReactomoError
from core.kinetics import fit_jmak, growth_rate, jmak

K, N = 1 / 3000, 2.5
HALF = math.log(2) ** (1 / N) / K


def _rate_per_h(t, k=K, n=N, t0=0.0):
    tau = np.clip(k * (np.asarray(t) - t0), 0, None)
    return 3600 * n * k * tau ** (n - 1) * np.exp(-(tau**n))


def _noisy(npts, seed, t0=0.0):
    t = np.linspace(0, 12000, npts) + t0
    return t, jmak(t, K, N, t0) + np.random.default_rng(seed).normal(0, 0.01, npts)


def test_jmak_values():
    assert jmak(HALF, K, N) == pytest.approx(0.5)
    assert isinstance(jmak(100.0, K, N), float)
    a = jmak([-5.0, 0.0, 100.0, 1e9], K, N, t0=100.0)
    assert a[0] == a[1] == a[2] == 0 and a[3] == pytest.approx(1)
    assert np.all(np.diff(jmak(np.linspace(0, 1e4, 50), K, N)) >= 0)


@pytest.mark.parametrize("t0", [0.0, None])
def test_noiseless_curve_is_recovered_exactly(t0):
    t = np.linspace(0, 12000, 25)
    f = fit_jmak(t, jmak(t, K, N), t0=t0)
    assert f["converged"] and f["k"] == pytest.approx(K, rel=1e-6) and f["n"] == pytest.approx(N, rel=1e-6)
    assert f["t0"] == pytest.approx(0, abs=1e-3) and f["half_time_s"] == pytest.approx(HALF, rel=1e-6)
    assert f["residual_sd"] < 1e-8 and f["r2"] == pytest.approx(1)
    assert f["param_names"] == (["k", "n"] if t0 is not None else ["k", "n", "t0"])


def test_shifted_onset_is_fitted():
    t = np.linspace(0, 12000, 30)
    f = fit_jmak(t, jmak(t, K, N, 900.0))
    assert f["t0"] == pytest.approx(900, abs=1) and f["k"] == pytest.approx(K, rel=1e-4)


def test_covariance_intervals_cover_the_truth():
    hits = {"k": 0, "n": 0, "half": 0}
    for seed in range(10):
        t, a = _noisy(10 + 3 * seed, seed)  # 10 to 37 points
        f = fit_jmak(t, a, t0=0.0)
        assert f["converged"] and f["n_points"] == t.size and f["dof"] == t.size - 2
        hits["k"] += f["k_ci"][0] <= K <= f["k_ci"][1]
        hits["n"] += f["n_ci"][0] <= N <= f["n_ci"][1]
        hits["half"] += f["half_time_ci"][0] <= HALF <= f["half_time_ci"][1]
    assert min(hits.values()) >= 8, hits
    assert "covariance" in f["method"] and "t-distribution" in f["method"] and "delta method" in f["method"]
    assert f["residual_sd"] == pytest.approx(0.01, rel=0.4)


def test_free_onset_intervals_cover_the_truth():
    hits, t0_hits = 0, 0
    for seed in range(10):
        f = fit_jmak(*_noisy(30, seed))
        assert f["dof"] == 27 and f["param_names"] == ["k", "n", "t0"] and "t0 fitted" in f["method"]
        hits += (f["k_ci"][0] <= K <= f["k_ci"][1]) and (f["n_ci"][0] <= N <= f["n_ci"][1])
        t0_hits += f["t0_ci"][0] <= 0 <= f["t0_ci"][1]
    assert hits >= 8 and t0_hits >= 8


def test_bootstrap_intervals_cover_the_truth():
    hits = 0
    for seed in range(5):
        f = fit_jmak(*_noisy(20, seed), t0=0.0, ci="bootstrap", n_boot=150, seed=seed)
        assert f["ci_method"] == "bootstrap" and f["n_boot"] == 150
        hits += (f["k_ci"][0] <= K <= f["k_ci"][1]) and (f["n_ci"][0] <= N <= f["n_ci"][1])
        assert f["half_time_ci"][0] < f["half_time_s"] < f["half_time_ci"][1]
    assert hits >= 4
    assert "residual bootstrap" in f["method"] and "percentile" in f["method"]
    again = fit_jmak(*_noisy(20, 4), t0=0.0, ci="bootstrap", n_boot=150, seed=4)
    assert again["k_ci"] == f["k_ci"]  # seeded


def test_sigma_weights_and_absolute_covariance():
    t, a = _noisy(25, 3)
    f = fit_jmak(t, a, t0=0.0, sigma=0.01)
    g = fit_jmak(t, a, t0=0.0)
    assert f["k"] == pytest.approx(g["k"], rel=1e-6)
    assert f["k_se"] == pytest.approx(g["k_se"], rel=0.5) and "absolute" in f["method"]


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([0, 1000], [0, 0.5]), {"t0": 0.0}, "at least 3 usable points"),
        (([0, 1000, 2000], [0, 0.5, 0.9]), {}, "at least 4 usable points"),
        (([0, 1000, 2000, 3000], [0, 0.5, 1.5, 1.0]), {}, "between 0 and 1"),
        (([0, 1000, 2000, 3000], [-0.3, 0.5, 0.9, 1.0]), {}, "between 0 and 1"),
        (([0, 1000, 1000, 3000], [0, 0.5, 0.9, 1.0]), {}, "same time"),
        (([0, 1000, 2000], [0, 0.5]), {}, "same length"),
        (([0, 1000, 2000, 3000], [0, 0.2, 0.6, 0.9]), {"ci": "jackknife"}, "ci must be"),
        (([0, 1000, 2000, 3000], [0, 0.2, 0.6, 0.9]), {"level": 95}, "confidence level"),
        (([0, 1000, 2000, 3000], [0, 0.2, 0.6, 0.9]), {"sigma": -1}, "sigma"),
    ],
)
def test_bad_input_sentences(args, kwargs, match):
    with pytest.raises(ReactomoError, match=match) as e:
        fit_jmak(*args, **kwargs)
    assert str(e.value).endswith(".") and "\n" not in str(e.value)


# -- growth rate ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["savgol", "spline"])
def test_growth_rate_band_holds_the_analytic_derivative(method):
    shares = []
    for seed in range(4):
        t, a = _noisy(30, seed)
        g = growth_rate(t, a, method=method, n_boot=200, seed=seed)
        true = _rate_per_h(t)
        assert np.all(g["rate_low"] <= g["rate"] + 1e-12) and np.all(g["rate"] <= g["rate_high"] + 1e-12)
        shares.append(np.mean((g["rate_low"] <= true) & (true <= g["rate_high"])))
    assert min(shares) >= 0.6 and np.mean(shares) >= 0.8, shares
    assert "per hour" in g["method"] and "bootstrap" in g["method"] and g["method_name"] == method


def test_growth_rate_units_and_uneven_times():
    t = np.array([0, 300, 900, 1200, 2400, 3000, 3600, 5400.0])
    g = growth_rate(t, 0.1 + 0.2 * t / 3600)  # 0.2 per hour, a straight line
    assert g["rate"] == pytest.approx(np.full(t.size, 0.2), abs=1e-9)
    assert g["rate_high"] - g["rate_low"] == pytest.approx(np.zeros(t.size), abs=1e-9)
    assert g["smoothed"] == pytest.approx(0.1 + 0.2 * t / 3600)


def test_growth_rate_few_points_uses_differences():
    g = growth_rate([0, 3600, 7200], [0.0, 0.3, 0.5])
    assert g["method_name"] == "differences" and "central differences" in g["method"]
    assert g["rate"][1] == pytest.approx(0.25) and np.all(g["rate_high"] > g["rate_low"])
    g2 = growth_rate([0, 3600], [0.0, 0.3])
    assert g2["rate"] == pytest.approx([0.3, 0.3]) and np.all(np.isnan(g2["rate_low"])) and "no band" in g2["method"]
    g4 = growth_rate([0, 60, 120, 180], [0.0, 0.1, 0.25, 0.3])
    assert g4["method_name"] == "savgol" and g4["window"] == 3 and np.all(np.isfinite(g4["rate_low"]))


def test_growth_rate_bad_input():
    with pytest.raises(ReactomoError, match="at least 2"):
        growth_rate([0], [0.1])
    with pytest.raises(ReactomoError, match="method must be"):
        growth_rate([0, 1, 2, 3], [0, 1, 2, 3], method="fft")
    with pytest.raises(ReactomoError, match="odd number"):
        growth_rate(np.arange(10.0), np.arange(10.0), window=4)
