"""Screen: how much of the workflow's error sits on ring artefacts, and how well the polar ring filter removes them
(tuning half only; chooses nothing by itself).

For each tuning variant the scans are made a second time with ``ring_grey = 0`` (the same photons, rock and drift:
the rings use their own random stream), so ``scan - twin`` is each step's ring image, known exactly. Reported:

- ``ring_rms``: RMS of the rings over the volume, and over the voxels where they exceed ``--level`` grey;
- ``after_rms``: RMS of ``fit_rings(scan).apply(scan) - twin`` on the same voxels (what the filter leaves, or adds), and over
  the voxels with no ring (what it adds elsewhere);
- from a saved run's labels (``--runs``): the share of gypsum/bassanite errors on ring voxels against their share of
  the volume, and the worst step mean Dice if every ring voxel were labelled right (an upper bound of the gain).

Run: .venv/bin/python bench/screen_rings.py --runs "bench/.runs/LABEL" [--out bench/results/screen-rings.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.family import ensure, split, variant  # noqa: E402


def _dice_mean(lab: np.ndarray, truth: np.ndarray) -> float:
    out = []
    for c in (1, 2, 3, 4):
        t = truth == c
        if t.any():
            p = lab == c
            out.append(2 * np.count_nonzero(p & t) / (np.count_nonzero(p) + np.count_nonzero(t)))
    return float(np.mean(out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--family", type=Path, default=ROOT / "bench" / ".family")
    ap.add_argument("--level", type=float, default=300.0)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--setting", action="append", default=[], help="ring filter setting KEY=VALUE")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    from core.imaging.io import read_tiff_volume
    from core.imaging.rings import fit_rings
    from core.imaging.synthetic import make_demo

    settings = {k: float(v) for k, v in (s.split("=", 1) for s in a.setting)}
    rows = []
    for name in a.only or split()["tuning"]:
        v = variant(name)
        data = ensure(v, a.family)
        ds = json.loads((data / "dataset.json").read_text())
        t0 = time.perf_counter()
        twin = make_demo(dataclasses.replace(v.config(), ring_grey=0.0))
        row = {"variant": v.name, "steps": []}
        for k, s in enumerate(ds["steps"]):
            scan = read_tiff_volume(data / s["scan"]).astype(np.float32)
            free = twin.scans[k].astype(np.float32)
            ring = scan - free
            t1 = time.perf_counter()
            fixed = fit_rings(scan, **settings).apply(scan)
            secs = time.perf_counter() - t1
            on = np.abs(ring) > a.level
            left = fixed - free
            st = {"step": s["name"], "ring_voxels_pct": 100 * float(on.mean()),
                  "ring_rms_all": float(np.sqrt(np.mean(ring**2))), "after_rms_all": float(np.sqrt(np.mean(left**2))),
                  "ring_rms_on": float(np.sqrt(np.mean(ring[on] ** 2))) if on.any() else 0.0,
                  "after_rms_on": float(np.sqrt(np.mean(left[on] ** 2))) if on.any() else 0.0,
                  "added_rms_off": float(np.sqrt(np.mean(left[~on] ** 2))), "filter_s": secs}
            seg = a.runs / v.name / "segmentations" / f"{s['name']}.tif"
            if seg.exists():
                lab = read_tiff_volume(seg)
                truth = twin.truth[k]
                gb = np.isin(truth, (1, 2)) | np.isin(lab, (1, 2))
                wrong = gb & (lab != truth)
                st["errors_on_ring_pct"] = 100 * float(np.count_nonzero(wrong & on) / max(1, np.count_nonzero(wrong)))
                st["dice"] = _dice_mean(lab, truth)
                st["dice_rings_right"] = _dice_mean(np.where(on, truth, lab), truth)
                st["false_bassanite"] = int(np.count_nonzero((lab == 2) & (truth != 2)))
                st["false_bassanite_on_ring"] = int(np.count_nonzero((lab == 2) & (truth != 2) & on))
            row["steps"].append(st)
            print(json.dumps({"variant": v.name, **st}), flush=True)
        if "dice" in row["steps"][0]:
            row["worst_step"] = min(x["dice"] for x in row["steps"])
            row["worst_step_rings_right"] = min(x["dice_rings_right"] for x in row["steps"])
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    for r in rows:
        st = r["steps"]
        print(f"{r['variant']:34s} rings {np.mean([x['ring_rms_on'] for x in st]):6.0f} -> {np.mean([x['after_rms_on'] for x in st]):6.0f} "
              f"on; added off {np.mean([x['added_rms_off'] for x in st]):5.0f}; errors on rings "
              f"{np.mean([x.get('errors_on_ring_pct', np.nan) for x in st]):4.1f} % of errors on "
              f"{np.mean([x['ring_voxels_pct'] for x in st]):4.1f} % of voxels; worst step {r.get('worst_step', np.nan):.4f} "
              f"-> {r.get('worst_step_rings_right', np.nan):.4f} if rings right")
    if a.out:
        a.out.write_text(json.dumps({"level": a.level, "settings": settings, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
