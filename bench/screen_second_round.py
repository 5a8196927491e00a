"""Screen (2026-12-06, not kept): a second U-Net training on the first run's own labels of the scribbled slices.

Why it was tried: on the tuning half's runs of the defaults, the run's output at the label step is closer to the truth
on the scribbled slices than the forest's ground truth it learned from (bassanite +0.003 to +0.051): it pools the
neighbouring slices (``z_sigma``) and the other steps (the history pass), which the forest never sees. So the whole
``run`` is made again with the forest's labels of those slices replaced by the first run's output there (the brushed
pixels kept as brushed), and scored like ``bench_accuracy.py``. Result and rule: README, "Ablation on the tuning half".

    python bench/screen_second_round.py --first "bench/.runs/<defaults label>" --out bench/results/tuning-round2.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import core.labelling.forest as forest  # noqa: E402
from bench.bench_accuracy import score_run  # noqa: E402
from bench.family import split  # noqa: E402
from core.workflow.run import RunConfig, run_workflow  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first", required=True, help="folder of the first runs (one sub-folder per variant, from bench_accuracy)")
    ap.add_argument("--family-root", default=str(ROOT / "bench" / ".family"))
    ap.add_argument("--runs-root", default=str(ROOT / "bench" / ".runs" / "second round"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    first, fam = Path(args.first), Path(args.family_root)
    rows = []
    for v in split()["tuning"]:
        d = fam / v
        k = json.loads((d / "dataset.json").read_text())["label_step"]
        seg = tifffile.imread(first / v / "segmentations" / f"t{k:03d}.tif")

        def own_labels(scan, scribbles, **kw):  # stands in for the forest: the first run's output on the same slices
            zs = np.flatnonzero(scribbles.reshape(scribbles.shape[0], -1).any(axis=1))
            lab = np.zeros_like(seg)
            lab[zs] = seg[zs]
            lab = np.where(scribbles > 0, scribbles, lab).astype(seg.dtype)
            counts = np.bincount(lab[zs].ravel(), minlength=5)
            return type("R", (), {"labels": lab, "fractions": {i: float(counts[i] / counts[1:].sum()) for i in (1, 2, 3, 4)}})

        forest.ground_truth_from_scribbles = own_labels
        out = Path(args.runs_root) / v
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        run_workflow(RunConfig(scans=str(d / "scans"), scribbles=str(d / "scribbles.tif"), label_step=k, out=str(out)))
        before = json.loads((first / v / "run.json").read_text())
        row = {"variant": v, "seconds": time.perf_counter() - t0 + before["timings_s"]["total_s"],  # both rounds
               "label_step": k, "label_slices": before["random_forest"]["slices"], "cleaning": None, **score_run(d, out)}
        rows.append(row)
        print(f"{v}: worst step {row['worst_step_dice']:.3f}, worst phase {row['worst_phase_dice']:.3f}, "
              f"extent error {row['extent_error_pct']:.1f}", flush=True)
    Path(args.out).write_text(json.dumps({
        "label": "a second training on the first round's labels of the scribbled slices (screen, not kept)",
        "extra_args": ["(bench/screen_second_round.py)"], "date": time.strftime("%Y-%m-%d"),
        "machine": "x86_64, 2 cores", "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
