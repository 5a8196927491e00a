"""The ceiling of the accuracy family: the whole workflow with the forest's ground truth replaced by the *truth* of
the scribbled slices, scored like ``bench/bench_accuracy.py``.

Everything else is ``python -m core run`` with its defaults (same network, training, inference, cleaning and
analysis), so the gap between a variant's row here and its row in ``bench_accuracy.py`` is what the labels from the
scribbles cost; the row itself is what the network reaches with perfect labels of the same slices. No edge is
redrawn here, in the ground truth or in the network's output (``partial_volume=()``): the truth has no halo to remove,
and the network taught by it places the edges itself.

Usage::

    python bench/bench_ceiling.py --split tuning --out bench/results/tuning-ceiling.json

A diagnostic of the tuning half: it reads the truth of the labelled slices, so it never chooses a default.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_accuracy import score_run  # noqa: E402
from bench.family import ensure, split, variant  # noqa: E402


def ceiling_run(name: str, *, family_root: Path, runs_root: Path) -> dict[str, Any]:
    import numpy as np
    import tifffile

    import core.labelling.forest as forest
    from core.workflow.run import RunConfig, run_workflow

    data = ensure(variant(name), family_root)
    ds = json.loads((data / "dataset.json").read_text())
    k, zs = ds["label_step"], ds["label_slices"]
    truth = tifffile.imread(data / "truth" / f"t{k:03d}.tif")

    class _Truth:  # what ground_truth_from_scribbles returns, from the truth of the scribbled slices
        def __init__(self) -> None:
            self.labels = np.zeros_like(truth)
            self.labels[zs] = truth[zs]
            counts = np.bincount(self.labels[zs].ravel(), minlength=256)
            self.fractions = {int(c): float(counts[c] / counts[1:].sum()) for c in np.flatnonzero(counts[1:]) + 1}

    original = forest.ground_truth_from_scribbles
    forest.ground_truth_from_scribbles = lambda *a, **kw: _Truth()
    out = runs_root / name
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        run_workflow(RunConfig(scans=str(data / "scans"), scribbles=str(data / "scribbles.tif"), label_step=k, out=str(out),
                               partial_volume=()))
    finally:
        forest.ground_truth_from_scribbles = original
    return {"variant": name, "seconds": time.perf_counter() - t0, "label_step": k, "label_slices": len(zs),
            **score_run(data, out)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("tuning", "test"), default="tuning")
    ap.add_argument("--family-root", type=Path, default=ROOT / "bench" / ".family")
    ap.add_argument("--runs-root", type=Path, default=ROOT / "bench" / ".runs" / "ceiling")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    for name in split()[args.split]:
        row = ceiling_run(name, family_root=args.family_root, runs_root=args.runs_root)
        rows.append(row)
        print(f"{name}: worst step {row['worst_step_dice']:.3f} ({row['worst_step']}), worst phase "
              f"{row['worst_phase_dice']:.3f} ({row['worst_phase']}), extent error {row['extent_error_pct']:.1f} points",
              flush=True)
        if args.out:
            args.out.write_text(json.dumps({"label": "ceiling (truth of the scribbled slices)", "date": time.strftime("%Y-%m-%d"),
                                            "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
