"""Segmenting whole scans with core.network.inference: throughput, peak memory, and MONAI's sliding window side by side.

Run: .venv/bin/python bench/bench_segment.py [--slices 16] [--memory-slices 128 512] [--device cpu] [--skip-memory]

Scan: a synthetic 736 x 800 uint16 scan (the study's slice size) made from the demo's texture: step 1 of
``make_demo(DemoConfig(steps=2, shape=(16, 256, 256), seed=0))``, each slice mirror-tiled to 736 x 800, slice ``z``
taken from demo slice ``z % 16`` and rolled by ``7 z`` pixels so no two slices are equal. Written uncompressed (so
core.imaging.io memory-maps it) into a temporary folder.

1. Throughput: :func:`core.network.inference.segment_volume` of the shipped model (models/demo-unet) on ``--slices`` slices,
   writing the labels TIFF, wall time of the whole call (normalisation fit, reading, inference, writing) ->
   Mvoxel/s, for a few settings (tile, overlap, batch, channels-last, batch-norm folding, bfloat16 autocast),
   torch threads = CPU cores unless a row says otherwise.
2. Peak memory: one subprocess per scan size runs segment_volume to a file; peak RSS (``VmHWM``, which includes
   the memory-mapped scan pages the process touched) and the peak of its private memory (``RssAnon``, sampled
   every 20 ms). Uses a tiny network (width 4, depth 2) so 512 slices take about a minute; memory depends on the
   slab and slice size, not on the network's width beyond its activations.
3. The same network through ``monai.inferers.sliding_window_inference`` (predictor = softmax of the model, slice
   by slice) and through ours, same tile, overlap, batch and Gaussian blend, on the same normalised slices: times,
   speed ratio and % identical labels.

Prints Markdown tables for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPE_YX = (736, 800)
BUNDLE = ROOT / "models" / "demo-unet"


def demo_slices() -> np.ndarray:
    """16 demo slices mirror-tiled to 736 x 800, uint16."""
    from core.imaging.synthetic import DemoConfig, make_demo

    s = make_demo(DemoConfig(steps=2, shape=(16, 256, 256), seed=0)).scans[1]
    block = np.concatenate([np.concatenate([s, s[:, :, ::-1]], 2), np.concatenate([s[:, ::-1], s[:, ::-1, ::-1]], 2)], 1)
    big = np.tile(block, (1, 2, 2))  # 1024 x 1024
    return np.ascontiguousarray(big[:, : SHAPE_YX[0], : SHAPE_YX[1]])


def write_scan(path: Path, nz: int, base: np.ndarray) -> Path:
    """An uncompressed ZYX uint16 TIFF of ``nz`` slices filled page by page through a memory map."""
    import tifffile

    mm = tifffile.memmap(path, shape=(nz, *SHAPE_YX), dtype=np.uint16, photometric="minisblack",
                         metadata={"axes": "ZYX"})
    for z in range(nz):
        mm[z] = np.roll(base[z % len(base)], 7 * z, axis=1)
    mm.flush()
    del mm
    return path


def machine() -> str:
    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


# -------------------------------------------------------------------------------------------- 1. throughput
def throughput(scan: Path, out_dir: Path, device: str) -> list[tuple[str, float, float, float]]:
    import torch

    import core.network.inference as seg
    from core.network.bundle import load_bundle
    from core.imaging.io import read_labels
    from core.network.inference import InferenceConfig, segment_volume

    model, card = load_bundle(BUNDLE)
    import copy

    from core.network.unet import UNetEnsemble

    twin = copy.deepcopy(model)  # a second network of the same shape (weights nudged: the speed does not depend on them)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(1.01)
    pair = UNetEnsemble([model, twin]).eval()  # what `run --ensemble 2` / the Train page's "Networks averaged" 2 make
    cores = os.cpu_count() or 1
    old = dict(tile=256, overlap=0.25, batch_size=8, cpu_amp=False, z_sigma=0.0)  # the defaults until 2026-12-04
    default: dict = {}  # InferenceConfig() today: whole slices (tile 1024), batch 2, bfloat16 where the CPU has it,
    # probabilities averaged over neighbouring slices (z_sigma 0.7)
    # (name, config fields, channels-last, fold batch norms, torch threads); the first row is the reference of the
    # "labels as the previous default" column
    cases = [
        ("tile 256, overlap 0.25, batch 8, float32 (the default until 2026-12-04)", old, True, True, cores),
        ("previous default without channels-last", old, False, True, cores),
        ("previous default without batch-norm folding", old, True, False, cores),
        ("tile 256, overlap 0.25, batch 2, float32", dict(old, batch_size=2), True, True, cores),
        ("tile 512, overlap 0.25, batch 4, float32", dict(old, tile=512, batch_size=4), True, True, cores),
        ("tile 1024 (whole slice), batch 2, float32", dict(tile=1024, batch_size=2, cpu_amp=False, z_sigma=0.0), True, True, cores),
        ("tile 256, batch 8 + bfloat16", dict(old, cpu_amp=True), True, True, cores),
        ("whole slice, batch 2, bfloat16 where native, each slice on its own (the default until 2026-12-06)",
         dict(z_sigma=0.0), True, True, cores),
        ("**InferenceConfig() (today's default): the same, probabilities averaged over slices (z_sigma 0.7)**", default,
         True, True, cores),
        ("today's default, 1 torch thread", default, True, True, 1),
        ("today's default, a model averaging two networks (`--ensemble 2`)", default, True, True, cores),
    ]
    rows = []
    ref = None
    for name, kw, cl, fuse, threads in cases:
        seg._CHANNELS_LAST, seg._FUSE_BN = cl, fuse
        torch.set_num_threads(threads)
        try:
            out = out_dir / "labels.tif"
            net = pair if "two networks" in name else model
            r = segment_volume(net, card, scan, out, config=InferenceConfig(device=device, slab=8, **kw))
        finally:
            seg._CHANNELS_LAST, seg._FUSE_BN = True, True
            torch.set_num_threads(cores)
        lab = read_labels(out)
        if ref is None:
            ref = lab
        agree = float((lab == ref).mean() * 100)
        rows.append((name, r.mvoxel_per_s, r.seconds, agree))
        print(f"  {name}: {r.mvoxel_per_s:.3f} Mvoxel/s ({r.seconds:.1f} s, {r.precision}), {agree:.2f} % as the previous default",
              file=sys.stderr, flush=True)
    return rows


# -------------------------------------------------------------------------------------------- 2. memory
CHILD = r"""
import json, sys, threading, time
sys.path.insert(0, {root!r})
import torch
from core.network.inference import InferenceConfig, segment_volume
from core.network.unet import UNetConfig, build_unet
peak = [0]
def rss_anon():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0
stop = False
def poll():
    while not stop:
        peak[0] = max(peak[0], rss_anon()); time.sleep(0.02)
threading.Thread(target=poll, daemon=True).start()
torch.manual_seed(0)
model = build_unet(UNetConfig(n_classes=4, width=4, depth=2)).eval()
card = {{"class_codes": [1, 2, 3, 4], "normalisation": {{"method": "bright-tail", "upper": 99.0}}}}
base_anon = rss_anon()
torch.set_num_threads(int(sys.argv[4]))
r = segment_volume(model, card, sys.argv[1], sys.argv[2], config=InferenceConfig(device=sys.argv[3], tile=256, slab=8))
stop = True
peak[0] = max(peak[0], rss_anon())
hwm = 0
with open("/proc/self/status") as fh:
    for line in fh:
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
print(json.dumps({{"seconds": r.seconds, "mvoxel_per_s": r.mvoxel_per_s, "vmhwm_mb": hwm / 1024,
                   "peak_anon_mb": peak[0] / 1024, "start_anon_mb": base_anon / 1024}}))
"""


def memory(scan: Path, out: Path, device: str, threads: int) -> dict:
    code = CHILD.format(root=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code, str(scan), str(out), device, str(threads)], capture_output=True,
                         text=True)
    if res.returncode:
        raise SystemExit(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------- 3. vs MONAI
def versus_monai(scan: Path, device: str, n: int, tile: int, batch: int) -> dict:
    import torch
    from monai.inferers import sliding_window_inference

    from core.network.bundle import load_bundle
    from core.imaging.io import open_volume
    from core.imaging.normalise import apply_normalisation, fit_normalisation
    from core.network.inference import InferenceConfig, predict_slices

    from core.network.inference import context_slices

    model, card = load_bundle(BUNDLE, device=device)
    channels = card["unet"].get("in_channels", 1)
    with open_volume(scan) as v:
        norm = fit_normalisation(v)
        stack = apply_normalisation(context_slices(v, range(n), channels), norm)
    images = stack if channels > 1 else stack[:, None]  # (n, channels, y, x)
    codes = np.asarray(card["class_codes"], np.uint8)
    dev = torch.device(device)

    def predictor(x):
        return torch.softmax(model(x), dim=1)

    t0 = time.perf_counter()
    theirs = np.empty((n, *images.shape[-2:]), np.uint8)
    with torch.inference_mode():
        for z in range(n):
            x = torch.from_numpy(np.ascontiguousarray(images[z][None])).to(dev)
            p = sliding_window_inference(x, roi_size=(tile, tile), sw_batch_size=batch, predictor=predictor,
                                         overlap=0.25, mode="gaussian")
            theirs[z] = codes[p.argmax(1)[0].cpu().numpy()]
    t_monai = time.perf_counter() - t0
    ours_in = images if channels > 1 else images[:, 0]
    t0 = time.perf_counter()
    ours = predict_slices(model, ours_in, config=InferenceConfig(tile=tile, overlap=0.25, batch_size=batch, cpu_amp=False,
                                                                  blend="gaussian", device=device),
                          class_codes=card["class_codes"])
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = predict_slices(model, ours_in, config=InferenceConfig(device=device), class_codes=card["class_codes"])
    t_fast = time.perf_counter() - t0
    vox = n * images.shape[-1] * images.shape[-2] / 1e6
    return {"n": n, "monai_s": t_monai, "ours_s": t_ours, "monai_mvs": vox / t_monai, "ours_mvs": vox / t_ours,
            "agree": float((ours == theirs).mean() * 100), "default_s": t_fast, "default_mvs": vox / t_fast,
            "default_agree": float((fast == theirs).mean() * 100)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=16, help="slices of the throughput scan (default 16)")
    ap.add_argument("--memory-slices", type=int, nargs="*", default=[128, 512])
    ap.add_argument("--monai-slices", type=int, default=4)
    ap.add_argument("--memory-threads", type=int, default=1, help="torch threads of the memory runs (default 1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    base = demo_slices()
    print(f"# Segmenting scans ({time.strftime('%Y-%m-%d')}, {machine()}, device {args.device})\n")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scan = write_scan(tmp / "scan.tif", args.slices, base)
        if not args.skip_throughput:
            rows = throughput(scan, tmp, args.device)
            print(f"Shipped model (width 16, depth 4) on {args.slices} x 736 x 800 uint16, labels written to a zlib "
                  "TIFF; wall time of segment_volume (fit, read, infer, write).\n")
            print("| settings | Mvoxel/s | seconds | labels as the previous default |")
            print("|---|---|---|---|")
            for name, mvs, s, agree in rows:
                print(f"| {name} | {mvs:.3f} | {s:.1f} | {agree:.2f} % |")
            print()

        m = versus_monai(scan, args.device, min(args.monai_slices, args.slices), tile=256, batch=8)
        print(f"Shipped model, {m['n']} slices 736 x 800, tile 256, overlap 0.25, batch 8, Gaussian blend, softmax "
              "probabilities blended; MONAI slice by slice.\n")
        print("| inferer | seconds | Mvoxel/s |")
        print("|---|---|---|")
        print(f"| monai.inferers.sliding_window_inference | {m['monai_s']:.2f} | {m['monai_mvs']:.3f} |")
        print(f"| core.network.inference.predict_slices, same settings (float32) | {m['ours_s']:.2f} | {m['ours_mvs']:.3f} |")
        print(f"| core.network.inference.predict_slices, its defaults (whole slice, batch 2, bfloat16 where native) | {m['default_s']:.2f} | {m['default_mvs']:.3f} |")
        print(f"\nSame settings: ours / MONAI {m['ours_mvs'] / m['monai_mvs']:.2f}x, identical labels {m['agree']:.3f} %. "
              f"Defaults: ours / MONAI {m['default_mvs'] / m['monai_mvs']:.2f}x, labels as MONAI's {m['default_agree']:.3f} %.\n")

        if not args.skip_memory:
            rows = []
            for nz in args.memory_slices:
                big = write_scan(tmp / f"scan_{nz}.tif", nz, base)
                r = memory(big, tmp / f"labels_{nz}.tif", args.device, args.memory_threads)
                size = big.stat().st_size / 2**20
                rows.append((nz, size, r))
                print(f"  memory {nz}: {r}", file=sys.stderr, flush=True)
                big.unlink()
                (tmp / f"labels_{nz}.tif").unlink()
            print("Peak memory of segment_volume to a file (subprocess per scan; tiny network width 4, depth 2; tile "
                  f"256, slab 8, {args.memory_threads} torch thread(s)). VmHWM counts the memory-mapped scan pages "
                  "the process touched (OS page cache, reclaimable); private = peak RssAnon (the process's own "
                  "allocations).\n")
            print("| scan | file MB | seconds | Mvoxel/s | peak RSS (VmHWM) MB | peak private MB |")
            print("|---|---|---|---|---|---|")
            for nz, size, r in rows:
                print(f"| {nz} x 736 x 800 uint16 | {size:.0f} | {r['seconds']:.1f} | {r['mvoxel_per_s']:.2f} | "
                      f"{r['vmhwm_mb']:.0f} | {r['peak_anon_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
