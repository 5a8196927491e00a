"""core.analysis.stoichiometry: the line fit, the pore check, the inert phases, the two extents and the verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from core.errors import ReactomoError
from core.phases import BASSANITE, CELESTITE, DEFAULT_PHASES, GYPSUM, PORE, Reaction
from core.analysis.stoichiometry import (CHECKS, extent_two_ways, fit_line, inert_constancy, molar_evolution, overall_verdict,
                                pore_check, verdict)

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
    # a user's walk at a ±0.5 % band: "FAIL ... largest deviation 0.5 %" (0.53 rounded); now as many decimals as it
    # takes not to print the band's own number for a value that is not it
    near = [{"step": 0, "deviation_pct": 0.2}, {"step": 1, "deviation_pct": -0.53}]
    assert verdict(near, 0.005)["sentence"] == "1 of 2 steps lie inside the ±0.5 % band (largest deviation 0.53 % at step 1)."
    assert verdict([{"step": 0, "deviation_pct": 2.004}], 0.02)["sentence"] == (
        "No step lies inside the ±2 % band (largest deviation 2.004 % at step 0).")
    assert "(deviation 0.5 %)" in verdict([{"step": 0, "deviation_pct": 0.5}], 0.005)["sentence"]  # exactly the band
    with pytest.raises(ReactomoError, match="No steps"):
        verdict([], 0.02)
    with pytest.raises(ReactomoError, match="band"):
        verdict(rows, 2)


# -- one verdict over every check -------------------------------------------------------------------------------
GYP_PER_BAS = DEFAULT_PHASES.by_code(GYPSUM).mol_per_m3 / DEFAULT_PHASES.by_code(BASSANITE).mol_per_m3
CONSUMED10 = [0, 10_000, 30_000, 60_000, 90_000, 110_000, 125_000, 135_000, 140_000, 142_000]
TIMES10 = [600.0 * i for i in range(10)]


def _series(consumed, *, n0=200_000, pore0=3_000, cel=5_000, cel_growth=0.0, pore_factor=1.0, deviation_pct=None):
    """Voxel counts per step of a stoichiometric segmentation, with one fault at a time.

    ``cel_growth``: celestite grows linearly to this fraction at the last step, taking the voxels from the pores;
    ``pore_factor``: the share of the freed volume that shows as new pores (compaction below 1);
    ``deviation_pct``: per step, the internal-standard deviation to build in (bassanite voxels taken away)."""
    n = len(consumed)
    out = []
    for i, c in enumerate(consumed):
        bas = round(c * VM_RATIO)
        new_pore = round((c - bas) * pore_factor)
        grown = round(cel * cel_growth * i / max(n - 1, 1))
        missing = 0 if deviation_pct is None else round(deviation_pct[i] / 100 * n0 * GYP_PER_BAS)
        out.append({GYPSUM: n0 - c, BASSANITE: bas - missing, PORE: pore0 + new_pore - grown, CELESTITE: cel + grown})
    return out


def _judge(counts, *, times=TIMES10, band=0.02):
    kw = dict(phases=DEFAULT_PHASES, voxel_size_um=VOX, times_s=times)
    return overall_verdict(molar_evolution(counts, **kw), pore_check(counts, **kw), inert_constancy(counts, **kw), band=band)


def _passed(v) -> dict:
    return {c["name"]: c["passed"] for c in v["checks"]}


ALL_PASS = {"internal_standard": True, "pore_volume": True, "inert_constancy": True, "fit_vs_theory": True, "trend": True}


def test_overall_verdict_shape_and_all_checks_passing_is_green():
    v = _judge(_series(CONSUMED10))
    assert v["passed"] is True and v["failed"] == [] and v["not_evaluated"] == [] and _passed(v) == ALL_PASS
    assert [c["name"] for c in v["checks"]] == list(CHECKS)
    for c in v["checks"]:
        assert {"name", "passed", "value", "limit", "sentence"} <= set(c) and c["sentence"].startswith(CHECKS[c["name"]])
    assert v["sentence"] == ("All 5 checks pass (±2 % band): internal standard, pore volume, inert phases, fit against "
                             "the theory, trend over time.")
    limits = {c["name"]: c["limit"] for c in v["checks"]}
    assert limits == {"internal_standard": 2.0, "pore_volume": 2.0, "inert_constancy": 2.0, "fit_vs_theory": 2.0, "trend": 1.0}
    # the internal standard alone is kept, as verdict() gives it
    rows = molar_evolution(_series(CONSUMED10), phases=DEFAULT_PHASES, voxel_size_um=VOX, times_s=TIMES10)
    assert v["internal_standard"] == verdict(rows, 0.02) and v["internal_standard"]["all_inside"] is True
    assert "exceeds half the band" in v["method"] and "excludes 0" in v["method"]


def test_celestite_growing_at_the_expense_of_pores_fails_the_verdict_while_the_internal_standard_passes():
    counts = _series(CONSUMED10, cel_growth=0.05)
    assert counts[-1][CELESTITE] == 5_250 and counts[-1][PORE] == _series(CONSUMED10)[-1][PORE] - 250
    v = _judge(counts)
    assert v["passed"] is False and v["failed"] == ["inert_constancy"]
    assert _passed(v) == {**ALL_PASS, "inert_constancy": False}
    assert v["internal_standard"]["all_inside"] is True  # the old green: the internal standard alone
    inert = v["checks"][2]
    assert inert["value"] == pytest.approx(5.0, abs=0.01) and inert["limit"] == 2.0
    # +0 % ... +5 % in 9 equal steps: steps 4 to 9 lie beyond +2 %
    assert inert["sentence"] == ("Inert phases: celestite changes by up to +5.0 % from its first step (step 9), outside "
                                 "the ±2 % band at 6 of 10 steps.")
    assert v["sentence"] == inert["sentence"]
    assert _judge(counts, band=0.06)["passed"] is True  # within ±6 %: the same series passes


def test_product_at_the_first_step_is_named_as_the_cause_of_the_internal_standard_failing():
    # a ring artefact in the unreacted scan: 3 % of the gypsum's voxels read as bassanite at every step
    counts = [dict(c) for c in _series(CONSUMED10)]
    ring = 6_000
    for c in counts:
        c[GYPSUM] -= ring
        c[BASSANITE] += ring
    v = _judge(counts)
    assert "internal_standard" in v["failed"]
    rows = molar_evolution(counts, phases=DEFAULT_PHASES, voxel_size_um=VOX, times_s=TIMES10)
    x0 = 100 * rows[0]["x"]
    assert x0 > 2.0 and rows[0]["deviation_pct"] == pytest.approx(-x0)
    is_check = v["checks"][0]
    assert f"At the first step, the reference, product amounting to {x0:.1f} % of the reactant is already found" in is_check["sentence"]
    assert "ring artefacts" in is_check["sentence"] and is_check["sentence"] in v["sentence"]
    # a failure at later steps only (nothing at the first step) says nothing about the first step
    late = _judge(_series(CONSUMED10, deviation_pct=[0.0] * 7 + [3.0, 3.5, 4.0]))
    assert "internal_standard" in late["failed"] and "At the first step" not in late["checks"][0]["sentence"]
    # nor does a passing series
    assert "At the first step" not in _judge(_series(CONSUMED10))["checks"][0]["sentence"]


def test_compaction_fails_the_pore_volume_check_alone():
    v = _judge(_series(CONSUMED10, pore_factor=0.8))
    assert v["failed"] == ["pore_volume"] and _passed(v) == {**ALL_PASS, "pore_volume": False} and v["passed"] is False
    pv = v["checks"][1]
    # 20 % of 0.287 × 142 000 voxels missing from the pores: 4.07 % of the initial gypsum
    assert pv["value"] == pytest.approx(100 * 0.2 * (1 - VM_RATIO) * 142_000 / 200_000, abs=0.01)
    assert "0.287 × the reactant consumed" in pv["sentence"] and "4 of 10 steps lie inside the ±2 % band" in pv["sentence"]
    assert v["sentence"] == pv["sentence"]


def test_a_fit_that_excludes_the_theory_by_more_than_the_band_fails_alone():
    # a reaction followed to 30 % whose product is undercounted by 2.5 % of the extent: slope −1/(1 − 0.025), a drift
    # too small for the trend (0.84 % over the experiment, below half the band) and every step inside ±2 %
    consumed = [0, 6_000, 15_000, 27_000, 40_000, 50_000, 56_000, 59_000, 60_000, 60_000]
    dev = [2.5 * c / 200_000 for c in consumed]
    v = _judge(_series(consumed, deviation_pct=dev))
    assert v["failed"] == ["fit_vs_theory"] and _passed(v) == {**ALL_PASS, "fit_vs_theory": False}
    fit = v["checks"][3]
    d = fit["details"]
    assert d["slope"] == pytest.approx(-1 / 0.975, abs=1e-3) and not d["slope_ci"][0] <= -1 <= d["slope_ci"][1]
    assert d["intercept"] == pytest.approx(1, abs=1e-3) and fit["value"] == pytest.approx(2.56, abs=0.02)
    assert fit["limit"] == 2.0
    assert fit["sentence"].startswith(f"Fit against the theory: slope {d['slope']:.3f} [{d['slope_ci'][0]:.3f}, ")
    # the interval that misses the theory is named, and only that one (the intercept's holds 1 here)
    assert d["intercept_ci"][0] <= 1 <= d["intercept_ci"][1]
    assert (": the slope's interval excludes -1, and the line differs from the theory by 2.6 %, more than the ±2 % band."
            in fit["sentence"]) and "intercept's interval excludes" not in fit["sentence"]
    assert v["sentence"] == fit["sentence"]
    # with a ±4 % band the same difference is too small to matter: the fit passes
    wide = _judge(_series(consumed, deviation_pct=dev), band=0.04)
    assert wide["passed"] is True and "differs from the theory by only 2.6 %" in wide["checks"][3]["sentence"]


def test_a_fit_whose_intervals_hold_the_theory_passes_even_when_far_from_it():
    rng = np.random.default_rng(1)
    x = np.array([0.0, 0.1, 0.2, 0.3])
    y = 1 - x + rng.normal(0, 0.03, 4)
    rows = [{"step": i, "time_s": None, "x": xi, "y": yi, "deviation_pct": 100 * (1 - yi - xi)} for i, (xi, yi) in enumerate(zip(x, y))]
    fit = overall_verdict(rows, [], [], band=0.2)["checks"][3]
    lo, hi = fit["details"]["slope_ci"]
    assert lo < -1 < hi and fit["passed"] is True and "contain the theory" in fit["sentence"]


def test_a_steady_drift_of_the_deviation_fails_the_trend_alone():
    dev = list(np.linspace(-0.6, 0.6, 10))  # every step inside ±2 %, but a steady rise of 1.2 % in 90 minutes
    v = _judge(_series(CONSUMED10, deviation_pct=dev))
    assert v["failed"] == ["trend"] and _passed(v) == {**ALL_PASS, "trend": False}
    tr = v["checks"][4]
    assert tr["details"]["unit"] == "per hour" and tr["details"]["slope_pct"] == pytest.approx(0.8, abs=0.01)
    assert tr["value"] == pytest.approx(1.2, abs=0.01) and tr["limit"] == 1.0
    assert tr["sentence"].startswith("Trend over time: the deviation drifts steadily by +0.797 % per hour [+0.797, +0.798]")
    assert "+1.20 % over the experiment, more than half the band (1 %)." in tr["sentence"]
    # the same drift at half the size stays within half the band
    assert _judge(_series(CONSUMED10, deviation_pct=[d / 2 for d in dev]))["passed"] is True
    # without times the step index stands in for time
    nt = _judge(_series(CONSUMED10, deviation_pct=dev), times=None)
    assert nt["failed"] == ["trend"] and nt["checks"][4]["details"]["unit"] == "per step"


def test_noise_without_a_drift_passes_the_trend():
    rng = np.random.default_rng(7)
    dev = list(rng.normal(0, 0.6, 10))
    v = _judge(_series(CONSUMED10, deviation_pct=dev))
    tr = v["checks"][4]
    lo, hi = tr["details"]["slope_ci"]
    assert lo < 0 < hi and tr["passed"] is True and "interval contains 0" in tr["sentence"]


def test_checks_that_cannot_be_evaluated_are_named_and_never_hide_a_failure():
    two = _series([0, 40_000])
    v = _judge(two, times=[0.0, 600.0])
    assert v["not_evaluated"] == ["fit_vs_theory", "trend"] and v["failed"] == []
    assert _passed(v)["fit_vs_theory"] is None and _passed(v)["trend"] is None
    assert v["passed"] is True and v["n_passed"] == 3
    assert v["sentence"] == ("All 3 checks that could be evaluated pass (±2 % band): internal standard, pore volume, "
                             "inert phases; 2 could not be evaluated: fit against the theory, trend over time.")
    assert "needs at least 3 steps (got 2)" in v["checks"][3]["sentence"]
    bad = _judge(_series([0, 40_000], pore_factor=0.5), times=[0.0, 600.0])
    assert bad["passed"] is False and bad["failed"] == ["pore_volume"]
    assert bad["sentence"].endswith("Of the other checks, 2 could not be evaluated: fit against the theory, trend over time.")
    # no inert phase in the reaction: that check is not evaluated either
    kw = dict(phases=DEFAULT_PHASES, voxel_size_um=VOX, reaction=Reaction(inert=()))
    c = _series(CONSUMED10)
    ni = overall_verdict(molar_evolution(c, **kw), pore_check(c, **kw), inert_constancy(c, **kw))
    assert ni["not_evaluated"] == ["inert_constancy"] and "no inert phase" in ni["checks"][2]["sentence"]


def test_overall_verdict_reads_stored_nulls_as_outside_and_checks_its_input():
    rows = [{"step": i, "time_s": 60.0 * i, "x": x, "y": 1 - x, "deviation_pct": 0.0} for i, x in enumerate([0, 0.2, 0.5, 0.8])]
    rows[2]["deviation_pct"] = None  # a NaN saved to JSON as null
    v = overall_verdict(rows, [], [])
    assert v["passed"] is False and v["failed"] == ["internal_standard"] and v["internal_standard"]["n_inside"] == 3
    with pytest.raises(ReactomoError, match="No steps"):
        overall_verdict([], [], [])
    with pytest.raises(ReactomoError, match="band"):
        overall_verdict(rows, [], [], band=2)


def test_an_inert_phase_never_found_is_not_evaluated_rather_than_constant():
    lost = [{**c, CELESTITE: 0} for c in _series(CONSUMED10)]  # a model that never finds celestite
    v = _judge(lost)
    assert _passed(v)["inert_constancy"] is None and "inert_constancy" in v["not_evaluated"]
    assert "celestite is absent at every step, so its constancy cannot be judged" in v["checks"][2]["sentence"]
    assert "could not be evaluated: inert phases" in v["sentence"]
    # absent at the first step but found later: a failure, as before
    late = [{**c, CELESTITE: 0 if i == 0 else 500} for i, c in enumerate(_series(CONSUMED10))]
    assert _passed(_judge(late))["inert_constancy"] is False


def test_a_fit_whose_intercept_alone_misses_the_theory_names_the_intercept_only():
    """The verdict once said "slope ... and intercept ... exclude the theory" when the slope's interval held -1."""
    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 0.6, 8)
    y = 0.96 - x + rng.normal(0, 0.002, x.size)  # the right slope, 4 % off at the start
    rows = [{"step": i, "time_s": None, "x": xi, "y": yi, "deviation_pct": 100 * (1 - yi - xi)}
            for i, (xi, yi) in enumerate(zip(x, y))]
    fit = overall_verdict(rows, [], [], band=0.02)["checks"][3]
    d = fit["details"]
    assert d["slope_ci"][0] <= -1 <= d["slope_ci"][1] and not d["intercept_ci"][0] <= 1 <= d["intercept_ci"][1]
    assert fit["passed"] is False
    assert ": the intercept's interval excludes 1, and the line differs" in fit["sentence"]
    assert "slope's interval excludes" not in fit["sentence"]


@pytest.mark.parametrize("values, unit", [([2.4e-6, 1.9e-7], "µmol"), ([0.0, 3e-10], "pmol"), ([1.5, 0.2], "mol"),
                                          ([999e-9, float("nan")], "nmol"), ([], "mol"), ([0.0], "mol")])
def test_amounts_are_shown_with_the_prefix_that_makes_them_plain_numbers(values, unit):
    """A user's walk: moles read as 2.4134e-06 in the tables and the hover; now 2.413 µmol."""
    from core.analysis.stoichiometry import amount_unit

    factor, got = amount_unit(values)
    assert got == unit
    finite = [abs(v) for v in values if np.isfinite(v) and v]
    if finite:
        assert 1 <= max(finite) / factor < 1000


def test_the_molar_charts_hover_gives_amounts_in_that_unit():
    from core.analysis.analysis_charts import molar_evolution_figure

    counts = [{1: 100_000 - k * 20_000, 2: k * 20_000, 3: 0, 4: 500} for k in range(4)]
    rows = molar_evolution(counts, phases=DEFAULT_PHASES, reaction=Reaction(), voxel_size_um=2.75)
    fig = molar_evolution_figure(rows)
    points = next(t for t in fig.data if t.name == "measured steps")
    n0 = rows[0]["n_reactant_mol"]
    assert n0 < 1e-6  # a small sample: under a micromole
    assert "nmol" in points.hovertemplate and "e}" not in points.hovertemplate
    assert points.customdata[0][2] == pytest.approx(n0 / 1e-9)
