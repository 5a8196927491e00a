"""Offline screen: the network's probabilities smoothed along the local structure before the history pass.

The rule, written before it ran: bench/results/oriented-smoothing-rules.txt (its result is there too). Replays the
history pass on captured probabilities (bench/capture/sitecustomize.py) through bench/screen_volume_target.py.

Run: CAPTURE_DIR=bench/.capture .venv/bin/python bench/screen_oriented_smoothing.py S_ALONG [v03-...,v06-...]
(S_ALONG 0 = no smoothing, which reproduces the runs' labels.)
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench.screen_volume_target as S  # noqa: E402

K = 8

def kernels(s_long, s_across=0.5, size=None):
    size = size or (2 * int(np.ceil(3 * s_long)) + 1)
    r = size // 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    ks = []
    for k in range(K):
        th = np.pi * k / K  # direction of the structure (along)
        u = xx * np.cos(th) + yy * np.sin(th); v = -xx * np.sin(th) + yy * np.cos(th)
        g = np.exp(-0.5 * (u / s_long) ** 2 - 0.5 * (v / s_across) ** 2); ks.append(g / g.sum())
    return torch.tensor(np.stack(ks)[:, None], dtype=torch.float32), r

def oriented(l, s_long):
    """l: (z, y, x) float32 log-odds; smooth along the local structure direction per slice."""
    gy = ndi.gaussian_filter(l, (0, 1, 1), order=(0, 1, 0)); gx = ndi.gaussian_filter(l, (0, 1, 1), order=(0, 0, 1))
    jxx = ndi.gaussian_filter(gx * gx, (0, 2, 2)); jyy = ndi.gaussian_filter(gy * gy, (0, 2, 2)); jxy = ndi.gaussian_filter(gx * gy, (0, 2, 2))
    th_grad = 0.5 * np.arctan2(2 * jxy, jxx - jyy)
    th = (th_grad + np.pi / 2) % np.pi
    idx = np.round(th / (np.pi / K)).astype(int) % K
    w, r = kernels(s_long)
    with torch.no_grad():
        x = torch.from_numpy(np.pad(l, ((0, 0), (r, r), (r, r)), mode='reflect'))[:, None]
        out = torch.nn.functional.conv2d(x, w).numpy()  # (z, K, y, x)
    return np.take_along_axis(out, idx[:, None], axis=1)[:, 0]

def transform(store, s_long):
    p = store[:, :-1].astype(np.float32) / 255.0  # (z, C, y, x)
    pg, pb = p[:, 0], p[:, 1]
    tot = pg + pb
    l = np.log(np.clip(pb, 1e-3, 1)) - np.log(np.clip(pg, 1e-3, 1))
    l2 = oriented(l.astype(np.float32), s_long)
    q = 1 / (1 + np.exp(-l2))
    p[:, 1] = tot * q; p[:, 0] = tot * (1 - q)
    out = store.copy()
    out[:, :-1] = np.clip(np.round(p * 255), 0, 255).astype(np.uint8)
    # the network's own argmax channel stays: it only says which voxels are free (pore, celestite) and which labels
    # are the network's; the reactant/product pair is decided by the history pass from the smoothed probabilities
    return out

orig_load = np.load
def make_loader(s_long):
    def load(path, *a, **k):
        arr = orig_load(path, *a, **k)
        if 'probs_' in str(path) and s_long:
            arr = transform(arr, s_long)
        return arr
    return load

if __name__ == '__main__':
    s_long = float(sys.argv[1])
    names = sys.argv[2].split(',') if len(sys.argv) > 2 else sorted(p.name for p in S.CAP.iterdir())
    S.np.load = make_loader(s_long)
    for v in names:
        t0 = time.perf_counter()
        r = S.run_variant(v, ['naive'])['naive']
        print(v[:3], f"s_long {s_long} worst {r['worst']:.4f} wphase {r['wphase']:.4f} ext {r['ext']:.2f}", ' '.join(r['b'][:4]), f"({time.perf_counter()-t0:.0f} s)", flush=True)
