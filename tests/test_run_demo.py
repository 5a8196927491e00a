"""`python -m core run` on the demo experiment with its defaults, from the scribbles alone: Dice per step and phase held
to floors, and the run's own checks reported honestly.

The slowest test of the suite (~1.5-3 min on 2 cores: random forest, U-Net of up to 40 epochs, 10 steps segmented).
Since 2026-12-05 the demo is scanned by the simulated tomograph at the study's difficulty (``core.imaging.synthetic.DEMO``:
contrast 0.08, noise 850) and the run uses its defaults: the cleaning is chosen from the ground truth of the
labelled slices (here: none), never from the internal standard.

Measured on 2026-12-06, 13:00 UTC (2-core AMD EPYC, the defaults: one input slice, cleaning chosen from the ground
truth, the pores' and celestite's edges redrawn from the scan, the steps labelled together): the internal standard is
inside the ±2 % band at every step (largest deviation 1.46 %; 5.85 % before the pores' edges were redrawn, when late
bassanite was under-found and the extent read 0.712 instead of 0.85; now 0.759) and the run's verdict fails on the fit
against the theory and the trend; celestite stays within 0.5 % of its first step. Measured again on 2026-12-07,
00:15 UTC, with the scans' ring artefacts removed (the default since then): largest deviation 0.98 %, the extent reads
0.812 at the last step, and every check of the verdict passes (the fit's intervals contain the theory, no trend,
celestite within 0.7 %). Measured again on 2026-12-07, 04:05 UTC, with the network's weights averaged over its 5
epochs of lowest validation loss (the default since then, chosen on the accuracy family's tuning half): every Dice
within 0.012 of that, mostly a little lower, the largest deviation 1.86 %, the extent 0.767 at the last step, and the
verdict fails on the trend alone (the deviation grows by 1.7 % over the experiment, more than half the band).
Measured again on 2026-12-07, 06:55 UTC, with the U-Net trained in bfloat16 where the CPU has it natively (the
default since 06:40 UTC, chosen on the accuracy family's tuning half as a speed change that keeps accuracy): every
Dice within 0.035 of that (bassanite at step 1 0.522 against 0.556, the rest within 0.015), the largest deviation
1.88 %, the verdict fails on the trend alone (+1.48 % over the experiment), 75 s in all. The
tests do not ask for a green verdict: they ask that it says what the checks say. The
accuracy targets of issue 11 are tracked with bench/bench_accuracy.py; these tests hold the measured level and check
that the run says so.

Floors: the Dice measured minus 0.05 for run-to-run differences between CPUs, measured again whenever a default
changes (the defaults are chosen on the accuracy benchmark's tuning half, never on this demo): after the square-root
class weights, celestite's edge redraw, the averaging over slices, the steps labelled together, the pores' redraw,
the band of each redrawn edge read from beyond it (2026-12-06, 22:45 UTC: largest deviation 1.80 %) and the scans'
ring artefacts removed (2026-12-07, 00:15 UTC: largest deviation 0.98 %, every check of the verdict passes), the
weights averaged (2026-12-07, 04:05 UTC: largest deviation 1.86 %, the trend check fails) and the training in
bfloat16 (2026-12-07, 06:55 UTC: largest deviation 1.88 %, the trend check fails).
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from core.cli import main
from core.workflow.evaluate import evaluate_files
from core.imaging.synthetic import DEMO, write_demo

# step: (gypsum, bassanite, pore, celestite) measured Dice against the truth, again on 2026-12-07, 00:15 UTC, after the
# scans' ring artefacts were removed before the forest and the network (core.imaging.rings): higher at every step and
# phase but celestite's (within 0.001): bassanite at step 1 0.564 against 0.499, pores at step 0 0.771 against 0.681,
# bassanite 0.02-0.04 higher from step 2 on, gypsum 0.01-0.03 higher at the late steps. On 2026-12-06, 22:45 UTC, after
# the band of each redrawn edge was read from beyond it (bassanite at step 1 0.499 against 0.464, pores at step 0 0.681
# against 0.714, the rest within 0.01). Before that (2026-12-06, 13:00 UTC, with the pores' and
# then celestite's edges redrawn from the scan in the ground truth and in the network's output, the class probabilities
# averaged over neighbouring slices (z_sigma 0.7) and the steps labelled together along each voxel's history). Against
# the defaults of 09:00 UTC (celestite redrawn alone): pores 0.03 higher from step 2 on and gypsum up to 0.02 higher
# at the late steps, but bassanite at step 1 0.464 against 0.537 and pores at step 0 0.714 against 0.763 (the default
# was chosen on the accuracy family's tuning half, where it was better on 5 of 6 variants; this demo is not a choosing
# set, and these floors follow what it measures)
# Measured again on 2026-12-07, 04:05 UTC, with the weights of the 5 epochs of lowest validation loss averaged (the
# default since 03:45 UTC, chosen on the accuracy family's tuning half): within 0.012 of the rings' row at every step
# and phase, mostly a little lower (bassanite at the last step 0.881 against 0.893, at step 1 0.556 against 0.564; pores
# at step 0 0.766 against 0.771); the rings' row (00:15 UTC) was:
# 0: (0.995, None, 0.771, 0.916), 1: (0.986, 0.564, 0.856, 0.913), 5: (0.869, 0.848, 0.927, 0.899),
# 9: (0.694, 0.893, 0.928, 0.890)
# Measured again on 2026-12-07, 06:55 UTC, with the U-Net trained in bfloat16 where native (the default since 06:40
# UTC): bassanite at step 1 0.522 against 0.556, pores at step 0 0.752 against 0.766, every other value within 0.01;
# the averaged weights' row (04:05 UTC) was:
# 0: (0.995, None, 0.766, 0.916), 1: (0.986, 0.556, 0.856, 0.913), 2: (0.969, 0.733, 0.899, 0.910),
# 9: (0.687, 0.881, 0.929, 0.890)
# Measured again on 2026-12-07, 11:50 UTC, with each step's bassanite matched to the network's expected volume before
# the steps are labelled together (the default since 11:15 UTC, chosen on the accuracy family's tuning half):
# bassanite at step 1 0.595 against 0.522, step 2 0.741 against 0.723, step 3 0.794 against 0.787, every other value
# within 0.002; the bfloat16 row (06:55 UTC) was:
# 1: (0.986, 0.522, 0.855, 0.913), 2: (0.969, 0.723, 0.899, 0.910), 3: (0.944, 0.787, 0.916, 0.906)
MEASURED = {
    0: (0.995, None, 0.752, 0.916),
    1: (0.986, 0.595, 0.855, 0.913),
    2: (0.969, 0.741, 0.899, 0.910),
    3: (0.945, 0.794, 0.916, 0.906),
    4: (0.913, 0.824, 0.924, 0.902),
    5: (0.867, 0.839, 0.927, 0.899),
    6: (0.814, 0.852, 0.928, 0.894),
    7: (0.762, 0.866, 0.929, 0.893),
    8: (0.719, 0.875, 0.930, 0.891),
    9: (0.688, 0.882, 0.929, 0.890),
}
MARGIN = 0.05
# largest |deviation| of the internal standard measured on 2026-12-06, 13:00 UTC (5.85 % before the pores' edges were
# redrawn, 5.79 % before the steps were labelled together, 5.45 % before the slice averaging), and the margin a rerun
# may add
MEASURED_MAX_DEVIATION_PCT = 1.64  # volumes matched (2026-12-07, 11:50 UTC); 1.88 % trained in bfloat16 (06:55 UTC);
# 1.86 % with the weights averaged
# (04:05 UTC); 0.98 % with the rings removed,
# 1.80 % before the rings were removed, 1.46 % before the band of each edge
DEVIATION_MARGIN_PCT = 1.5


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-run")
    demo = root / "demo"
    dataset = write_demo(demo, DEMO)
    out = root / "run"
    code = main(["-q", "run", "--scans", str(demo / "scans"), "--scribbles", str(demo / "scribbles.tif"),
                 "--label-step", str(dataset["label_step"]), "--out", str(out), "--epochs", "40", "--device", "cpu"])
    assert code == 0
    return demo, out


def test_run_on_the_demo_meets_the_dice_floors_on_every_step_and_phase(demo_run):
    demo, out = demo_run
    low = []
    for step, floors in MEASURED.items():
        rep = evaluate_files(out / "segmentations" / f"t{step:03d}.tif", demo / "truth" / f"t{step:03d}.tif", codes=[1, 2, 3, 4])
        for code, measured in zip((1, 2, 3, 4), floors):
            got = rep.per_phase[code]["dice"]
            if measured is None:  # bassanite at t = 0: absent from the truth; little may be predicted (measured 0.09 % with the weights averaged, 0.13 % with the rings removed, 0.4 % before, 1.0 % before the histories)
                assert rep.counts[code]["n_pred"] < 0.015 * sum(c["n_true"] for c in rep.counts.values())
                continue
            if not got >= measured - MARGIN:
                low.append((step, code, round(got, 3), measured))
    assert not low, f"Dice below the floor (step, code, got, measured): {low}"


def test_run_on_the_demo_reports_its_internal_standard_and_verdict_honestly(demo_run):
    demo, out = demo_run
    rows = list(csv.DictReader(open(out / "molar_evolution.csv")))
    assert [int(r["step"]) for r in rows] == list(range(10))
    devs = [float(r["deviation_pct"]) for r in rows]
    assert all(math.isfinite(d) for d in devs)
    # measured (2026-12-07, 11:50 UTC, volumes matched): -0.34 +0.17 +0.54 +0.89 +1.38 +1.47 +1.64 +1.46 +1.56 +1.44 %,
    # the verdict fails on the fit against the theory (slope -1.021 [-1.029, -1.012], 2.1 % from it) and the trend
    # (+1.78 % over the experiment); (04:05 UTC, weights averaged): -0.14 +0.46 +0.86 +1.14 +1.63 +1.74 +1.86 +1.68 +1.77 +1.61 %,
    # every check but the trend passes (+1.71 % over the experiment, more than half the band);
    # (2026-12-07, 00:15 UTC, rings removed): -0.19 +0.34 +0.60 +0.69 +0.98 +0.86 +0.76 +0.47 +0.48 +0.24 %,
    # and the verdict passed every check for the first time; on 2026-12-06, 22:45 UTC:
    # -0.54 +0.09 +0.54 +0.90 +1.38 +1.52 +1.72 +1.65 +1.80 +1.68 %; at 13:00 UTC
    # -1.02 ... +1.46 % (all within the 2 % band since the pores' edges are redrawn; -0.62 ... +5.85 % before)
    assert max(abs(d) for d in devs) <= MEASURED_MAX_DEVIATION_PCT + DEVIATION_MARGIN_PCT, devs
    assert all((r["inside_band"] == "True") == (abs(float(r["deviation_pct"])) <= 2.0) for r in rows)
    x = [float(r["x"]) for r in rows]
    assert x[0] < 0.03 and x[-1] > 0.6 and np.all(np.diff(x) > 0)  # the reaction advances at every step
    for name in ("report.html", "summary.json", "pore_sizes.csv", "growth.csv", "pore_check.csv", "inert.csv"):
        assert (out / name).is_file(), name  # the analysis ran at the end of the run
    summary = json.loads((out / "summary.json").read_text())
    verdict = summary["verdict"]
    # one verdict over every check: never green while a step is outside the band, and every failure named
    failed = [c["name"] for c in verdict["checks"] if c["passed"] is False]
    assert verdict["failed"] == failed and verdict["passed"] is (not failed)
    assert ("internal_standard" in failed) == any(abs(d) > 2.0 for d in devs)
    assert all(c["sentence"] and c["sentence"] in verdict["sentence"] for c in verdict["checks"] if c["passed"] is False)
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["verdict_passed"] is verdict["passed"] and run["summary"]["failed_checks"] == failed
    assert run["summary"]["steps_done"] == 10 and run["unet"]["epochs"] <= 40
    assert run["voxel_size_um"] == pytest.approx(2.75)
    assert run["cleaning"]["mode"] == "auto" and "not looked at" in run["cleaning"]["chosen_from_ground_truth"]["method"]
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["unet"]["in_channels"] == 1  # one slice: the default since the tuning half's ablation
    # thin laths painted into half the augmented patches (the default since 2026-12-08, chosen on the tuning half)
    assert card["training"]["config"]["thin_p"] == 0.5 and card["training"]["thin_examples"]["painted"] is True
    truth = json.loads((demo / "dataset.json").read_text())
    volumes = list(csv.DictReader(open(out / "phase_volumes.csv")))
    # celestite is inert. Since its edge is redrawn from the scan (the defaults since 2026-12-06) its volume is measured
    # within -2.3 to -1.5 % of the truth at every step (it was 22-23 % too large), drifting by up to 0.5 % from the
    # first step (2.7 % before the pores were redrawn first): asserted against the truth, and the run's own check must
    # say whether it drifts
    cel = np.array([int(v["celestite_voxels"]) for v in volumes], float)
    true_cel = np.array([s["counts"]["celestite"] for s in truth["steps"]], float)
    assert true_cel[0] > 0 and np.all(true_cel == true_cel[0])
    assert np.abs(cel / true_cel - 1).max() < 0.05
    drifts = np.abs(cel / cel[0] - 1).max() > 0.02
    assert ("inert_constancy" in failed) == drifts  # the verdict tells the drift, whichever way it goes


def test_run_takes_the_step_times_from_the_demo_and_recovers_its_kinetics(demo_run):
    """No --interval: the times come from the demo's dataset.json, and the JMAK fit of the segmented extent finds the
    demo's law (alpha_max = 0.85, n = 2, k = ln2^(1/n) / (0.45 x duration)). Measured on 2026-12-06, 13:00 UTC:
    plateau chosen, k = 2.30 /h (truth 2.47), n = 2.02, alpha_max = 0.796 (0.706 before the pores' edges were
    redrawn); on 2026-12-07, 00:15 UTC, with the rings removed: k = 2.34 /h, n = 2.11, alpha_max = 0.842: the rate and the exponent are right, the plateau is low by the run's extent error (late bassanite
    still a little under-found). The CIs are statistical only: the segmentation's own bias is not in them, hence
    tolerances here."""
    demo, out = demo_run
    run = json.loads((out / "run.json").read_text())
    assert run["interval_s"] == 300 and run["interval_source"].endswith("dataset.json")
    truth = json.loads((demo / "dataset.json").read_text())
    cfg = truth["config"]
    k_true = math.log(2) ** (1 / cfg["avrami_n"]) / (cfg["half_time_fraction"] * cfg["interval_s"] * (cfg["steps"] - 1))
    jm = json.loads((out / "summary.json").read_text())["jmak"]
    assert jm["model_choice"]["chosen"] == "plateau" and jm["t0"] == 0
    assert abs(jm["alpha_max"] - truth["extent_max"]) < 0.12  # measured 0.008 low with the rings removed (0.054 before, 0.144 before the pores' redraw)
    assert abs(jm["n"] - cfg["avrami_n"]) < 0.25
    assert abs(jm["k"] / k_true - 1) < 0.1
    assert jm["n_ci"][0] < jm["n"] < jm["n_ci"][1] and jm["alpha_max_ci"][0] < jm["alpha_max"] < jm["alpha_max_ci"][1]
    growth = list(csv.DictReader(open(out / "growth.csv")))
    assert [float(g["time_s"]) for g in growth] == [300.0 * i for i in range(10)]
