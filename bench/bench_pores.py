"""Local thickness: Reactomo (pure numpy/scipy, exact for its voxel model) vs PoreSpy's local_thickness.

Run: .venv/bin/python bench/bench_pores.py [--n 200] [--seed 0]
Needs porespy (not a dependency: ``.venv/bin/pip install porespy==3.2.0``). Data: the pore phase of a seeded
Gaussian-smoothed noise field (sigma 5 voxels) thresholded at 25 % porosity, n^3 voxels. PoreSpy returns radii in
whole voxels; it is doubled to compare diameters (voxel units). PoreSpy is warmed up (numba JIT) on a small cube
first. Agreement is over pore voxels. Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.pores import local_thickness  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    field = ndi.gaussian_filter(rng.standard_normal((a.n,) * 3).astype(np.float32), 5)
    im = field > np.quantile(field, 0.75)
    t = time.perf_counter()
    ours = local_thickness(im)
    t_ours = time.perf_counter() - t
    rows = [("Reactomo `local_thickness` (exact radii)", t_ours, None)]
    try:
        import porespy as ps
    except ImportError:
        print("porespy is not installed; only Reactomo was timed:", f"{t_ours:.2f} s")
        return
    ps.filters.local_thickness(im[:40, :40, :40])  # JIT warm-up
    for method in ("bf", "dt", "conv"):
        t = time.perf_counter()
        lt = 2.0 * np.asarray(ps.filters.local_thickness(im, method=method), dtype=np.float64)
        rows.append((f"PoreSpy {ps.__version__} `local_thickness(method='{method}')`", time.perf_counter() - t, lt))
    print(f"{a.n}^3 voxels, porosity {im.mean():.2f}, diameters in voxels\n")
    print("| method | wall s | within 1 voxel | within 2 voxels | mean abs diff | mean (ours - peer) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, sec, lt in rows:
        if lt is None:
            print(f"| {name} | {sec:.2f} | - | - | - | - |")
            continue
        d = ours[im] - lt[im]
        print(f"| {name} | {sec:.2f} | {np.mean(np.abs(d) <= 1):.3f} | {np.mean(np.abs(d) <= 2):.3f} | {np.mean(np.abs(d)):.3f} | {np.mean(d):+.3f} |")


if __name__ == "__main__":
    main()
