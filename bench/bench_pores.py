"""Local thickness: Reactomo vs PoreSpy's ``porespy.filters.local_thickness``, side by side in one run.

Run: .venv/bin/python bench/bench_pores.py [--n 200] [--seed 0] [--repeats 3]
Needs porespy (not a dependency: ``.venv/bin/pip install porespy==3.2.0``). Data: the pore phase of a seeded
Gaussian-smoothed noise field (sigma 5 voxels) thresholded at 25 % porosity, n^3 voxels.

Every method runs in its own child process (so one method's memory does not count for the next): numba kernels are
compiled and loaded first (a warm-up call on a small cube, for PoreSpy and for Reactomo alike), then the method runs
``--repeats`` times; the best wall time is reported, and the peak resident memory (sampled every 0.5 ms) above the
process's level just before the first timed call (the result of one call is dropped before the next). PoreSpy returns radii in whole
voxels; they are doubled (after timing) to compare diameters (voxel units). Agreement is over pore voxels. Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = {
    "ours": "Reactomo `local_thickness()` (exact radii)",
    "ours_step1": "Reactomo `local_thickness(sampling_step=1)` (whole-voxel radii)",
    "bf": "PoreSpy {v} `local_thickness(method='bf')`",
    "dt": "PoreSpy {v} `local_thickness(method='dt')`",
    "conv": "PoreSpy {v} `local_thickness(method='conv')`",
}


def make_mask(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.standard_normal((n,) * 3).astype(np.float32), 5)
    return field > np.quantile(field, 0.75)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def child(method: str, mask_file: str, repeats: int, out: str) -> None:
    im = np.load(mask_file)  # made by the parent: the child's memory peak is the method's, not the mask maker's
    if method.startswith("ours"):
        from core.analysis.pores import local_thickness

        step = 1.0 if method == "ours_step1" else None
        fn = lambda m: local_thickness(m, sampling_step=step)  # noqa: E731
    else:
        import porespy as ps

        fn = lambda m: ps.filters.local_thickness(m, method=method)  # noqa: E731  (radii, converted after timing)
    fn(im[:40, :40, :40])  # JIT compile / cache load
    base = _rss_mb()
    peak, done = [base], threading.Event()

    def poll() -> None:  # resident memory sampled every 0.5 ms (ru_maxrss would count the JIT's own transient peak)
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.0005)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    times, lt = [], None
    for _ in range(repeats):
        lt = None  # the previous result is not held during the next call
        t = time.perf_counter()
        lt = fn(im)
        times.append(time.perf_counter() - t)
    done.set()
    watcher.join()
    peak = peak[0] - base
    lt = np.asarray(lt, dtype=np.float32) * (1.0 if method.startswith("ours") else 2.0)
    np.save(out, lt)
    print(json.dumps({"best_s": min(times), "times_s": times, "peak_mb": peak}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mask", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.mask, a.repeats, a.out)
        return
    try:
        import porespy as ps

        methods, version = list(METHODS), ps.__version__
    except ImportError:
        methods, version = ["ours", "ours_step1"], "?"
        print("porespy is not installed; only Reactomo is timed.")
    im = make_mask(a.n, a.seed)
    res, maps = {}, {}
    tmp = Path("/tmp") / f"bench_pores_{a.n}_{a.seed}"
    tmp.mkdir(exist_ok=True)
    np.save(tmp / "mask.npy", im)
    for m in methods:
        out = tmp / f"{m}.npy"
        p = subprocess.run([sys.executable, __file__, "--child", m, "--mask", str(tmp / "mask.npy"),
                            "--repeats", str(a.repeats), "--out", str(out)], capture_output=True, text=True, check=True)
        res[m] = json.loads(p.stdout.strip().splitlines()[-1])
        maps[m] = np.load(out)
    base = res.get("bf", res["ours"])["best_s"]
    print(f"{a.n}^3 voxels, porosity {im.mean():.2f}, diameters in voxels; best of {a.repeats}; "
          f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores\n")
    print("| method | wall s (best) | time vs PoreSpy bf | peak extra memory MB | identical to PoreSpy bf | within 1 voxel | within 2 voxels | mean (this − PoreSpy bf) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for m in methods:
        r = res[m]
        name = METHODS[m].format(v=version)
        if "bf" in maps:
            d = maps[m][im] - maps["bf"][im]
            agree = f"{np.mean(d == 0):.3f} | {np.mean(np.abs(d) <= 1):.3f} | {np.mean(np.abs(d) <= 2):.3f} | {np.mean(d):+.3f}"
        else:
            agree = "- | - | - | -"
        print(f"| {name} | {r['best_s']:.2f} | {r['best_s'] / base:.2f}× | {r['peak_mb']:.0f} | {agree} |")


if __name__ == "__main__":
    main()
