"""`python -m core run` on the default demo experiment, from the scribbles alone: the internal standard inside the 2 %
band on every step, and Dice per step and phase held to floors.

The slowest test of the suite (~2 min on 2 cores: random forest, 40-epoch U-Net, 10 steps segmented and cleaned).
The run keeps every bassanite island (``--min-size bassanite=0``): the study's 100 px rule deletes the demo's thin
bassanite laths (measured: largest deviation 3.0 % with it, 1.2 % without).

Floors: the Dice measured on 2026-11-24 (2-core AMD EPYC) minus 0.05 for run-to-run differences between CPUs. For
reference, the ceiling (the same network trained on the demo's full truth of the same slices, bench/bench_unet.py)
measured per-step means 0.70, 0.87, 0.91, 0.92, 0.92, 0.91, 0.90, 0.90, 0.89, 0.89 (uncleaned).
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from core.cli import main
from core.evaluate import evaluate_files
from core.synthetic import DemoConfig, write_demo

# step: (gypsum, bassanite, pore, celestite) measured Dice against the truth
MEASURED = {
    0: (0.990, None, 0.672, 0.877),
    1: (0.983, 0.630, 0.809, 0.876),
    2: (0.969, 0.779, 0.875, 0.870),
    3: (0.950, 0.830, 0.898, 0.864),
    4: (0.920, 0.850, 0.903, 0.857),
    5: (0.874, 0.861, 0.905, 0.850),
    6: (0.822, 0.873, 0.909, 0.845),
    7: (0.775, 0.884, 0.911, 0.841),
    8: (0.742, 0.893, 0.914, 0.839),
    9: (0.717, 0.899, 0.915, 0.840),
}
MARGIN = 0.05


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-run")
    demo = root / "demo"
    write_demo(demo, DemoConfig())
    out = root / "run"
    code = main(["-q", "run", "--scans", str(demo / "scans"), "--scribbles", str(demo / "scribbles.tif"),
                 "--label-step", "4", "--out", str(out), "--epochs", "40", "--device", "cpu",
                 "--min-size", "bassanite=0"])
    assert code == 0
    return demo, out


def test_run_on_the_demo_meets_the_dice_floors_on_every_step_and_phase(demo_run):
    demo, out = demo_run
    low = []
    for step, floors in MEASURED.items():
        rep = evaluate_files(out / "segmentations" / f"t{step:03d}.tif", demo / "truth" / f"t{step:03d}.tif", codes=[1, 2, 3, 4])
        for code, measured in zip((1, 2, 3, 4), floors):
            got = rep.per_phase[code]["dice"]
            if measured is None:  # bassanite at t = 0: absent from the truth; little may be predicted (measured 0.67 %)
                assert rep.counts[code]["n_pred"] < 0.015 * sum(c["n_true"] for c in rep.counts.values())
                continue
            if not got >= measured - MARGIN:
                low.append((step, code, round(got, 3), measured))
    assert not low, f"Dice below the floor (step, code, got, measured): {low}"


def test_run_on_the_demo_holds_the_internal_standard_on_every_step(demo_run):
    demo, out = demo_run
    rows = list(csv.DictReader(open(out / "molar_evolution.csv")))
    assert [int(r["step"]) for r in rows] == list(range(10))
    devs = [float(r["deviation_pct"]) for r in rows]
    assert all(math.isfinite(d) for d in devs)
    # measured: -0.98 -0.77 -0.49 -0.09 +0.22 +0.29 +0.32 +0.58 +0.97 +1.19 %
    assert all(abs(d) <= 2.0 for d in devs), devs
    assert all((r["inside_band"] == "True") == (abs(float(r["deviation_pct"])) <= 2.0) for r in rows)
    x = [float(r["x"]) for r in rows]
    assert x[0] < 0.015 and x[-1] > 0.6 and np.all(np.diff(x) > 0)  # the reaction advances at every step
    for name in ("report.html", "summary.json", "pore_sizes.csv", "growth.csv", "pore_check.csv", "inert.csv"):
        assert (out / name).is_file(), name  # the analysis ran at the end of the run
    assert "inside the ±2 % band" in json.loads((out / "summary.json").read_text())["verdict"]["internal_standard"]["sentence"]
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["steps_done"] == 10 and run["unet"]["epochs"] <= 40
    assert run["voxel_size_um"] == pytest.approx(2.75)
    truth = json.loads((demo / "dataset.json").read_text())
    volumes = list(csv.DictReader(open(out / "phase_volumes.csv")))
    # celestite is inert; its segmented volume drifts +6 % over the run (a halo that grows into the product;
    # measured ±3 % around the mean): held to ±5 % until the rim/halo cleaning improves
    cel = np.array([int(v["celestite_voxels"]) for v in volumes], float)
    assert np.abs(cel / cel.mean() - 1).max() < 0.05
    assert truth["steps"][0]["counts"]["celestite"] > 0


def test_run_takes_the_step_times_from_the_demo_and_recovers_its_kinetics(demo_run):
    """No --interval: the times come from the demo's dataset.json, and the JMAK fit of the segmented extent finds the
    demo's law (alpha_max = 0.85, n = 2, k = ln2^(1/n) / (0.45 x duration)). Measured on 2026-11-25: plateau chosen,
    k = 2.52 /h [2.45, 2.58], n = 2.08 [1.98, 2.18], alpha_max = 0.843 [0.826, 0.861] (the CIs are statistical only:
    the segmentation's own bias is not in them, hence tolerances here)."""
    demo, out = demo_run
    run = json.loads((out / "run.json").read_text())
    assert run["interval_s"] == 300 and run["interval_source"].endswith("dataset.json")
    truth = json.loads((demo / "dataset.json").read_text())
    cfg = truth["config"]
    k_true = math.log(2) ** (1 / cfg["avrami_n"]) / (cfg["half_time_fraction"] * cfg["interval_s"] * (cfg["steps"] - 1))
    jm = json.loads((out / "summary.json").read_text())["jmak"]
    assert jm["model_choice"]["chosen"] == "plateau" and jm["t0"] == 0
    assert abs(jm["alpha_max"] - truth["extent_max"]) < 0.03
    assert abs(jm["n"] - cfg["avrami_n"]) < 0.25
    assert abs(jm["k"] / k_true - 1) < 0.1
    assert jm["n_ci"][0] < jm["n"] < jm["n_ci"][1] and jm["alpha_max_ci"][0] < jm["alpha_max"] < jm["alpha_max_ci"][1]
    growth = list(csv.DictReader(open(out / "growth.csv")))
    assert [float(g["time_s"]) for g in growth] == [300.0 * i for i in range(10)]
