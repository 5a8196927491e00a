"""Browsing a big scan slice by slice: Reactomo's lazy Volume vs. reading the whole file with tifffile.imread.

Run: .venv/bin/python bench/bench_io.py [--size-gb 1.0]
Each measurement runs in a fresh subprocess (cold Python, warm OS file cache). Memory is the peak of memory the
process allocates (tracemalloc; numpy reports its buffers there). Memory-mapped file pages are not counted: they
are the OS page cache, shared and reclaimable, not the process's own. Prints a Markdown table with the ratios
(peer / Reactomo) for the README.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time, tracemalloc
sys.path.insert(0, {root!r})
import numpy as np
import tifffile
from core.imaging.io import open_volume
method, path, compressed = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
tracemalloc.start()
t0 = time.perf_counter()
if method == "tifffile.imread":
    vol = tifffile.imread(path)
    xy, xz, yz = vol[vol.shape[0] // 2], vol[:, vol.shape[1] // 2], vol[:, :, vol.shape[2] // 2]
else:
    with open_volume(path) as v:
        xy, xz, yz = v.slice(0, v.shape[0] // 2), v.slice(1, v.shape[1] // 2), v.slice(2, v.shape[2] // 2)
        xy, xz, yz = np.array(xy), np.array(xz), np.array(yz)
dt = time.perf_counter() - t0
print(json.dumps({{"seconds": dt, "peak_rss_mb": tracemalloc.get_traced_memory()[1] / 2**20,
                   "checksum": float(xy.sum()) + float(xz.sum()) + float(yz.sum())}}))
"""


def run(method: str, path: Path, compressed: bool) -> dict:
    code = CHILD.format(root=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code, method, str(path), "1" if compressed else "0"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gb", type=float, default=1.0)
    args = ap.parse_args()
    from core.imaging.io import write_volume

    ny, nx = 1024, 1024
    nz = max(8, int(args.size_gb * 2**30 / (ny * nx * 2)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        vol = rng.integers(1000, 30000, size=(nz, ny, nx), dtype=np.uint16)
        for compression in (None, "zlib"):
            path = Path(tmp) / f"scan_{compression}.tif"
            write_volume(path, vol, compression=compression)
            size_mb = path.stat().st_size / 2**20
            peer = run("tifffile.imread", path, compression is not None)
            ours = run("reactomo", path, compression is not None)
            assert abs(peer["checksum"] - ours["checksum"]) < 1e-6 * max(1.0, abs(peer["checksum"]))
            rows.append((compression or "none", size_mb, peer, ours))
        del vol
    print(f"Scan {nz}×{ny}×{nx} uint16; one XY + one XZ + one YZ slice; {platform.processor() or platform.machine()}, "
          f"{time.strftime('%Y-%m-%d')}")
    print("| compression | file MB | imread s | Reactomo s | speed-up | imread peak alloc MB | Reactomo peak alloc MB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for comp, size, peer, ours in rows:
        print(f"| {comp} | {size:.0f} | {peer['seconds']:.2f} | {ours['seconds']:.2f} | {peer['seconds'] / ours['seconds']:.1f}× | "
              f"{peer['peak_rss_mb']:.0f} | {ours['peak_rss_mb']:.0f} | {peer['peak_rss_mb'] / ours['peak_rss_mb']:.1f}× |")


if __name__ == "__main__":
    main()
