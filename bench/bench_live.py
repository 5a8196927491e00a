"""Beamtime mode: seconds per scan and the keep-up verdict, for the demo's size and a 400 x 736 x 800 scan.

Run: .venv/bin/python bench/bench_live.py [--interval 60] [--big-slices 400] [--skip-big]

For each case a :class:`core.workflow.live.Watcher` (what ``python -m core watch`` and the Live page run) looks at a
folder where one complete scan has just landed, with the shipped model (models/demo-unet) and its own cleaning:

- **segment**: the scan segmented and cleaned (the step's time in the segmentation record);
- **checks**: the confidence and grey-value checks, and the analysis of the steps so far made again;
- **per scan**: from the scan's first look to its updated results, wall time, against the arrival interval (in
  quick mode, the slab's results; the whole scans that follow when there is time are not in it).

Cases: the demo's scan (40 x 256 x 256, the second of two steps, so the checks have a series); a 400 x 736 x 800
scan (the study's slice size, 400 slices) made of the demo's texture (mirror-tiled, as in bench_segment.py), whole
("full") and in quick mode (the central slab sized from the speed measured on the whole scan to fit 80 % of the
interval). Then what a 2016^3 scan every interval needs, worked out from the measured Mvoxel/s.

Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = ROOT / "models" / "demo-unet"


def big_scan(n: int, seed: int = 0) -> np.ndarray:
    from core.imaging.synthetic import DemoConfig, make_demo

    demo = make_demo(DemoConfig(steps=2, shape=(16, 256, 256), seed=seed, imaging="fast"))
    src = demo.scans[1]
    tile = np.pad(src, ((0, 0), (0, 736 - 256), (0, 800 - 256)), mode="symmetric")
    out = np.empty((n, 736, 800), dtype=src.dtype)
    for z in range(n):
        out[z] = np.roll(tile[z % 16], 7 * z, axis=1)
    return out


def measure(scans: list[np.ndarray], *, interval: float, quick: bool = False, speed: float | None = None) -> dict:
    """Land the scans one after another in a fresh folder; time the last one from its first look to its results."""
    from core.imaging.io import write_volume
    from core.workflow.live import LiveConfig, Watcher

    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    try:
        folder, out = tmp / "scans", tmp / "seg"
        folder.mkdir()
        w = None
        for k, scan in enumerate(scans):
            write_volume(folder / f".t{k:03d}.tif", scan)
            os.replace(folder / f".t{k:03d}.tif", folder / f"t{k:03d}.tif")  # the recommended rename
            if w is None:
                w = Watcher(LiveConfig(scans=str(folder), model=str(MODEL), out=str(out), interval_s=interval,
                                       complete="rename", quick=quick))
                if speed:  # quick mode sized from the speed measured on whole scans, as after the first scans
                    w.scans["(earlier)"] = {"mvoxel_per_s": speed}
                if quick:  # what a user waits for in quick mode: the slab and its checks (whole scans come later)
                    w._segment = lambda complete, todo, redo, w=w, **kw: w._segment_quick(complete, todo, redo,
                                                                                          should_stop=None)
            t0 = time.perf_counter()
            w.look()
            total = time.perf_counter() - t0
        rec = w.scans[f"t{len(scans) - 1:03d}.tif"]
        seg = rec.get("quick_seconds") if quick else rec.get("seconds")
        voxels = int(np.prod(scans[-1].shape)) if not quick else int(
            np.diff(rec["quick_slices"])[0] * scans[-1].shape[1] * scans[-1].shape[2])
        return {"segment_s": float(seg), "per_scan_s": total, "checks_s": total - float(seg),
                "mvoxel_per_s": voxels / float(seg) / 1e6, "voxels": voxels,
                "slices": rec.get("quick_slices") if quick else [0, scans[-1].shape[0]]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, default=60.0)
    ap.add_argument("--big-slices", type=int, default=400)
    ap.add_argument("--skip-big", action="store_true")
    a = ap.parse_args(argv)
    import torch

    from core.imaging.synthetic import DemoConfig, make_demo

    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), interval {a.interval:g} s", flush=True)
    rows = []
    demo = make_demo(DemoConfig(steps=2, seed=0, imaging="fast"))
    r = measure([demo.scans[0], demo.scans[1]], interval=a.interval)
    rows.append(("demo scan, 40 × 256 × 256", "full", r))
    print(rows[-1], flush=True)
    if not a.skip_big:
        scan = big_scan(a.big_slices)
        first = big_scan(a.big_slices, seed=1)
        r = measure([first, scan], interval=a.interval)
        rows.append((f"{a.big_slices} × 736 × 800", "full", r))
        print(rows[-1], flush=True)
        speed = r["mvoxel_per_s"]
        r = measure([first, scan], interval=a.interval, quick=True, speed=speed)
        rows.append((f"{a.big_slices} × 736 × 800", "quick", r))
        print(rows[-1], flush=True)
    print("\n| scan | mode | slices segmented | segment s | checks s | per scan s | Mvoxel/s | keeps up with "
          f"{a.interval:g} s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, mode, r in rows:
        z0, z1 = r["slices"]
        print(f"| {name} | {mode} | {z1 - z0} | {r['segment_s']:.1f} | {r['checks_s']:.1f} | {r['per_scan_s']:.1f} | "
              f"{r['mvoxel_per_s']:.2f} | {'yes' if r['per_scan_s'] <= a.interval else 'no'} |")
    full = [r for _, m, r in rows if m == "full"][-1]
    need = 2016**3 / a.interval / 1e6
    print(f"\nA 2016³ scan every {a.interval:g} s needs {need:.0f} Mvoxel/s of segmentation, {need / full['mvoxel_per_s']:.0f}× "
          f"the {full['mvoxel_per_s']:.2f} Mvoxel/s measured here (whole scan, this CPU).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
