"""core.stoichiometry: the line fit, the pore check, the inert phases, the two extents and the verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from core.errors import ReactomoError
from core.phases import BASSANITE, CELESTITE, DEFAULT_PHASES, GYPSUM, PORE, Reaction
from core.stoichiometry import (extent_two_ways, fit_line, inert_constancy, molar_evolution, pore_check,
                                verdict)

VOX = 2.75
VM_RATIO = 53.15 / 74.53


def _counts(consumed, *, n0=200_000, pore0=3_000, cel=5_000, pore_factor=1.0, cel_drift=0.0):
    """Stoichiometric counts: N gypsum voxels consumed -> round(N·53.15/74.53) bassanite + the rest pore."""
    out = []
    for i, c in enumerate(consumed):
        bas = round(c * VM_RATIO)
        new_pore = round((c - bas) * pore_factor)
        out.append({GYPSUM: n0 - c, BASSANITE: bas, PORE: pore0 + new_pore,
                    CELESTITE: round(cel * (1 + cel_drift * i / max(len(consumed) - 1, 1)))})
    return out


CONSUMED = [0, 10_000, 30_000, 60_000, 100_000, 140_000]


# -- fit_line ---------------------------------------------------------------------------------------------------
def test_fit_line_matches_polyfit_and_linregress():
    rng = np.random.default_rng(4)
    x = np.linspace(0, 1, 12)
    y = 0.98 - 0.95 * x + rng.normal(0, 0.01, x.size)
    f = fit_line(x, y)
    lr = stats.linregress(x, y)
    (b, a), cov = np.polyfit(x, y, 1, cov=True)
    assert f["slope"] == pytest.approx(lr.slope, rel=1e-12) == pytest.approx(b, rel=1e-10)
    assert f["intercept"] == pytest.approx(lr.intercept, rel=1e-12) == pytest.approx(a, rel=1e-10)
    assert f["slope_se"] == pytest.approx(lr.stderr, rel=1e-10) == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-8)
    assert f["intercept_se"] == pytest.approx(lr.intercept_stderr, rel=1e-10) == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-8)
    assert f["r2"] == pytest.approx(lr.rvalue**2, rel=1e-12)
    tq = stats.t.ppf(0.975, 10)
    assert f["slope_ci"] == pytest.approx((lr.slope - tq * lr.stderr, lr.slope + tq * lr.stderr), rel=1e-10)
    assert f["n"] == 12 and f["dof"] == 10 and "t-distribution" in f["method"] and "10 degrees" in f["method"]
    assert f["theory_inside_ci"] is False  # slope −0.95 ± ~0.02 excludes −1


def test_theory_points_give_slope_minus_one_and_intercept_one():
    x = np.linspace(0, 0.9, 8)
    f = fit_line(x, 1 - x)
    assert f["slope"] == pytest.approx(-1, abs=1e-12) and f["intercept"] == pytest.approx(1, abs=1e-12)
    assert f["theory_inside_ci"] is True and f["r2"] == pytest.approx(1)
    noisy = fit_line(x, 1 - x + np.random.default_rng(0).normal(0, 0.005, x.size))
    assert noisy["theory_inside_ci"] is True
    assert noisy["slope_ci"][0] < -1 < noisy["slope_ci"][1]


def test_fit_line_two_points_and_bad_input():
    f = fit_line([0, 1], [1, 0])
    assert f["slope"] == pytest.approx(-1) and all(math.isnan(v) for v in f["slope_ci"] + f["intercept_ci"])
    assert f["theory_inside_ci"] is None and "no confidence interval" in f["note"]
    with pytest.raises(ReactomoError, match="the same"):
        fit_line([0.3, 0.3, 0.3], [1, 2, 3])
    with pytest.raises(ReactomoError, match="same length"):
        fit_line([0, 1, 2], [1, 2])
    with pytest.raises(ReactomoError, match="at least 2"):
        fit_line([1], [1])
    with pytest.raises(ReactomoError, match="NaN"):
        fit_line([0, 1, np.nan], [1, 2, 3])
    with pytest.raises(ReactomoError, match="confidence level"):
        fit_line([0, 1, 2], [1, 2, 3], level=95)


# -- pore check -------------------------------------------------------------------------------------------------
def test_pore_check_exact_stoichiometry_gives_ratio_one():
    rows = pore_check(_counts(CONSUMED), phases=DEFAULT_PHASES, voxel_size_um=VOX, times_s=[60 * i for i in range(6)])
    assert rows[0]["pore_volume_ratio"] == pytest.approx(1 - 53.15 / 74.53) == pytest.approx(0.287, abs=1e-3)
    assert math.isnan(rows[0]["ratio"]) and rows[0]["deviation"] == 0
    vox = (VOX * 1e-3) ** 3
    for r, c in zip(rows[1:], CONSUMED[1:]):
        assert r["ratio"] == pytest.approx(1, abs=2e-4)
        assert r["consumed_mm3"] == pytest.approx(c * vox)
        assert r["expected_new_pore_mm3"] == pytest.approx(0.287 * c * vox, rel=1e-3)
        assert r["inside_band"] and abs(r["deviation_pct"]) < 0.01
    assert rows[5]["time_s"] == 300 and "no compaction" in rows[0]["method"]
    v = verdict(rows, 0.02)
    assert v["all_inside"] and v["sentence"].startswith("All 6 steps lie inside the ±2 % band")


def test_pore_check_flags_compaction():
    rows = pore_check(_counts(CONSUMED, pore_factor=0.7), phases=DEFAULT_PHASES, voxel_size_um=VOX)
    assert rows[-1]["ratio"] == pytest.approx(0.7, abs=1e-3)
    # 30 % of 0.287 × 140 000 / 200 000 = 6 % of the initial gypsum volume missing
    assert rows[-1]["deviation_pct"] == pytest.approx(-100 * 0.3 * 0.287 * 0.7, abs=0.05)
    assert not rows[-1]["inside_band"] and rows[1]["inside_band"]
    v = verdict(rows)
    assert not v["all_inside"] and v["step_of_max"] == 5 and v["sentence"].startswith(f"{v['n_inside']} of 6 steps")


def test_pore_check_needs_reactant_at_start():
    with pytest.raises(ReactomoError, match="no gypsum"):
        pore_check([{GYPSUM: 0, PORE: 5}], phases=DEFAULT_PHASES, voxel_size_um=VOX)
    with pytest.raises(ReactomoError, match="No steps"):
        pore_check([], phases=DEFAULT_PHASES, voxel_size_um=VOX)


# -- inert phases -----------------------------------------------------------------------------------------------
def test_inert_constancy_constant_and_drifting():
    times = [600.0 * i for i in range(6)]
    rows = inert_constancy(_counts(CONSUMED), phases=DEFAULT_PHASES, reaction=Reaction(), voxel_size_um=VOX, times_s=times)
    assert len(rows) == 6 and {r["phase"] for r in rows} == {"celestite"}
    assert all(r["inside_band"] and r["change_vs_first"] == 0 for r in rows)
    assert rows[0]["drift_pct_per_h"] == pytest.approx(0, abs=1e-9) and rows[0]["drift_zero_inside_ci"] is True

    drift = inert_constancy(_counts(CONSUMED, cel_drift=0.05), phases=DEFAULT_PHASES, voxel_size_um=VOX, times_s=times)
    assert drift[-1]["change_vs_first"] == pytest.approx(0.05)
    assert not drift[-1]["inside_band"] and drift[1]["inside_band"]
    assert drift[-1]["change_vs_mean"] == pytest.approx(1.05 / 1.025 - 1, abs=1e-3)
    # +5 % over 50 min = 6 % per hour
    assert drift[0]["drift_pct_per_h"] == pytest.approx(6.0, abs=0.05)
    lo, hi = drift[0]["drift_pct_per_h_ci"]
    assert 0 < lo <= 6.0 <= hi or lo == pytest.approx(hi, abs=0.1)
    assert drift[0]["drift_zero_inside_ci"] is False and "hours" in drift[0]["method"]


def test_inert_constancy_without_times_or_inert():
    rows = inert_constancy(_counts(CONSUMED), phases=DEFAULT_PHASES, voxel_size_um=VOX)
    assert math.isnan(rows[0]["drift_pct_per_h"]) and "no times" in rows[0]["method"]
    assert inert_constancy(_counts(CONSUMED), phases=DEFAULT_PHASES, reaction=Reaction(inert=()), voxel_size_um=VOX) == []


# -- extent two ways, verdict -----------------------------------------------------------------------------------
def test_extent_two_ways_matches_deviation():
    counts = _counts(CONSUMED)
    counts[3] = {**counts[3], BASSANITE: counts[3][BASSANITE] - 1_000}
    mol = molar_evolution(counts, phases=DEFAULT_PHASES, voxel_size_um=VOX, times_s=[0, 1, 2, 3, 4, 5])
    ext = extent_two_ways(mol)
    assert [e["time_s"] for e in ext] == [0, 1, 2, 3, 4, 5]
    for e, m, c in zip(ext, mol, CONSUMED):
        assert e["extent_from_reactant"] == pytest.approx(c / 200_000)
        assert e["difference_pct"] == pytest.approx(m["deviation_pct"], abs=1e-9)
    assert ext[3]["extent_from_product"] < ext[3]["extent_from_reactant"] and "two ways" in ext[0]["method"]
    with pytest.raises(ReactomoError, match="molar_evolution"):
        extent_two_ways([{"step": 0}])


def test_verdict_sentences():
    rows = [{"step": i, "deviation_pct": d} for i, d in enumerate([0.1, -1.2, 0.5])]
    v = verdict(rows, 0.02)
    assert v["sentence"] == "All 3 steps lie inside the ±2 % band (largest deviation 1.2 % at step 1)."
    assert v["n_steps"] == 3 and v["n_inside"] == 3 and v["all_inside"] and v["max_abs_deviation_pct"] == pytest.approx(1.2)
    rows = [{"step": i, "deviation_pct": d} for i, d in enumerate([0.1, 3.4, -2.5])]
    v = verdict(rows, 0.02)
    assert v["sentence"] == "1 of 3 steps lie inside the ±2 % band (largest deviation 3.4 % at step 1)."
    assert verdict([{"step": 0, "deviation_pct": 5.0}], 0.02)["sentence"].startswith("No step lies inside the ±2 % band")
    assert verdict(rows, 0.05)["sentence"].startswith("All 3 steps lie inside the ±5 % band")
    with pytest.raises(ReactomoError, match="No steps"):
        verdict([], 0.02)
    with pytest.raises(ReactomoError, match="band"):
        verdict(rows, 2)
