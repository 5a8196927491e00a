"""Random-forest ground truth: Reactomo vs scikit-image's trainable segmentation, on the same scribbles.

Run: .venv/bin/python bench/bench_forest.py [--repeats 3] [--seed 0]

Data: the demo generator's label step with 8 scribbled XY slices of 736 x 800 pixels (the study's sub-volume
size), ``DemoConfig(steps=3, shape=(16, 736, 800), n_label_slices=8)``. Both methods are trained on the same
scribbles and label the same 8 slices; Dice is against the demo's known truth on those slices.

- scikit-image: its gallery example "Trainable segmentation using local features and random forests" as written:
  ``multiscale_basic_features(img, intensity=True, edges=False, texture=True, sigma_min=1, sigma_max=16)`` per slice,
  ``RandomForestClassifier(n_estimators=50, n_jobs=-1, max_depth=10, max_samples=0.05)``, ``fit_segmenter`` /
  ``predict_segmenter`` (plus ``random_state`` so that runs repeat).
- Reactomo: :func:`core.labelling.forest.ground_truth_from_scribbles` with the default FeatureConfig and ForestConfig.
- Threshold baseline: multi-Otsu on the same slices (:func:`core.labelling.threshold.multi_otsu`).

End to end = features + training + prediction of all 8 slices. Both methods are run once to warm up (imports,
thread pools), then ``--repeats`` times, interleaved; the median is reported. "Interactive": one stroke is added
to the scribbles of one slice, then the forest is retrained on all scribbles (features cached, as on the page) and
that 736 x 800 slice is predicted again. Prints a Markdown table for the README.

Whole process (``--whole-process``): what a CLI user waits for. The demo's label step of 8 slices of 512 x 512 with 6
scribbled slices is written as TIFFs; then ``python -m core rf --scan --scribbles --out`` and the gallery recipe as
a script (``bench_forest.py --peer-process SCAN SCRIBBLES OUT``: read both TIFFs with tifffile, the recipe above on
the scribbled slices, write the labels TIFF) run as fresh processes, interleaved, each once to warm the file cache
and then ``--repeats`` times. Wall time, peak resident memory (``wait4``) and Dice on the scribbled slices.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CODES = [1, 2, 3, 4]


def skimage_gallery(scan: np.ndarray, scribbles: np.ndarray, zs: list[int], seed: int) -> tuple[np.ndarray, dict]:
    from skimage import feature, future
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.perf_counter()
    features_func = partial(feature.multiscale_basic_features, intensity=True, edges=False, texture=True,
                            sigma_min=1, sigma_max=16)
    features = np.stack([features_func(scan[z]) for z in zs])
    t1 = time.perf_counter()
    clf = RandomForestClassifier(n_estimators=50, n_jobs=-1, max_depth=10, max_samples=0.05, random_state=seed)
    clf = future.fit_segmenter(scribbles[zs], features, clf)
    t2 = time.perf_counter()
    result = future.predict_segmenter(features, clf)
    t3 = time.perf_counter()
    return result.astype(np.uint8), {"features": t1 - t0, "train": t2 - t1, "predict": t3 - t2, "total": t3 - t0}


def reactomo(scan: np.ndarray, scribbles: np.ndarray, zs: list[int], seed: int):
    from core.labelling.forest import ForestConfig, ground_truth_from_scribbles

    r = ground_truth_from_scribbles(scan, scribbles, forest_config=ForestConfig(seed=seed))
    assert list(r.slices) == zs
    return r.labels[zs], dict(r.seconds), r


def threshold(scan: np.ndarray, zs: list[int]):
    from core.labelling.threshold import multi_otsu

    t0 = time.perf_counter()
    labels = multi_otsu(scan[zs]).labels
    return labels, {"total": time.perf_counter() - t0}


def interactive(scan: np.ndarray, scribbles: np.ndarray, truth: np.ndarray, zs: list[int], seed: int, repeats: int) -> float:
    """Seconds to retrain on all scribbles and re-predict one slice after a new stroke (features cached)."""
    from core.labelling.features import FeatureConfig, intensity_reference, volume_features
    from core.labelling.forest import ForestConfig, predict_forest, train_forest

    fc = FeatureConfig()
    stacks = volume_features(scan, zs, config=fc, reference=intensity_reference(scan))
    z_i = len(zs) // 2
    lab = [scribbles[z].copy() for z in zs]
    # a new stroke: a 3 px wide horizontal line across the middle of the slice where the truth is bassanite
    ny = lab[z_i].shape[0]
    rows = slice(ny // 2 - 1, ny // 2 + 2)
    stroke = truth[zs[z_i]][rows] == 2
    lab[z_i][rows][stroke] = 2
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forest = train_forest(stacks, lab, config=ForestConfig(seed=seed))
        predict_forest(forest, stacks[z_i])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def dice(pred: np.ndarray, truth: np.ndarray) -> dict[int, float]:
    from core.segmentation.metrics import dice_per_phase

    return dice_per_phase(pred, truth, codes=CODES)


def peer_process(scan_path: str, scribbles_path: str, out_path: str, seed: int) -> None:
    """The gallery recipe as a user would run it as a script: read the TIFFs, label the scribbled slices, write."""
    import tifffile

    scan, scribbles = tifffile.imread(scan_path), tifffile.imread(scribbles_path)
    zs = [z for z in range(scribbles.shape[0]) if scribbles[z].any()]
    labels, _ = skimage_gallery(scan, scribbles, zs, seed)
    out = np.zeros(scan.shape, np.uint8)
    out[zs] = labels
    tifffile.imwrite(out_path, out)


def _timed_process(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one fresh process (fails loudly if it fails)."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def whole_process(args: argparse.Namespace) -> None:
    import tempfile

    import sklearn
    import skimage
    import tifffile

    from core.imaging.synthetic import DemoConfig, make_demo

    exp = make_demo(DemoConfig(steps=3, shape=(8, 512, 512), n_label_slices=6, seed=args.seed))
    t = exp.label_step
    zs = list(exp.label_slices)
    with tempfile.TemporaryDirectory() as tmp:
        scan, scrib = Path(tmp) / "scan.tif", Path(tmp) / "scribbles.tif"
        tifffile.imwrite(scan, exp.scans[t])
        tifffile.imwrite(scrib, exp.scribbles.astype(np.uint8))
        peer_out, our_out = Path(tmp) / "peer.tif", Path(tmp) / "rf"
        cmds = {
            "scikit-image gallery as a script": [sys.executable, str(Path(__file__).resolve()), "--peer-process",
                                                 str(scan), str(scrib), str(peer_out), "--seed", str(args.seed)],
            "`python -m core rf` (defaults)": [sys.executable, "-m", "core", "rf", "--scan", str(scan), "--scribbles",
                                               str(scrib), "--out", str(our_out), "--seed", str(args.seed),
                                               "--overwrite"],
        }
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds}
        for i in range(args.repeats + 1):
            for name, cmd in cmds.items():
                result = _timed_process(cmd)
                if i:  # the first round warms the file cache
                    runs[name].append(result)
        truth = exp.truth[t][zs]
        outputs = {name: tifffile.imread(path)[zs]
                   for name, path in zip(cmds, (peer_out, our_out / "ground_truth.tif"))}
    print(f"Demo label step, 8 XY slices of 512×512 px, {len(zs)} scribbled; whole processes; {machine()}; "
          f"{time.strftime('%Y-%m-%d')}; scikit-learn {sklearn.__version__}, scikit-image {skimage.__version__}; "
          f"median of {args.repeats} interleaved runs")
    print()
    print("| process | wall s | speed-up | peak RSS MB | gypsum | bassanite | pore | celestite | mean Dice |")
    print("|---|---|---|---|---|---|---|---|---|")
    peer_wall = statistics.median(w for w, _ in runs[next(iter(cmds))])
    for name in cmds:
        wall = statistics.median(w for w, _ in runs[name])
        rss = max(m for _, m in runs[name])
        d = dice(outputs[name], truth)
        print(f"| {name} | {wall:.2f} | {peer_wall / wall:.2f}× | {rss:.0f} | "
              + " | ".join(f"{d[c]:.3f}" for c in CODES) + f" | {float(np.nanmean(list(d.values()))):.3f} |")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="seed of the demo and of both forests")
    ap.add_argument("--shape", type=int, nargs=3, default=(16, 736, 800), metavar=("Z", "Y", "X"))
    ap.add_argument("--slices", type=int, default=8, help="number of scribbled slices")
    ap.add_argument("--whole-process", action="store_true",
                    help="time `python -m core rf` and the gallery recipe as whole processes, as a CLI user waits")
    ap.add_argument("--peer-process", nargs=3, metavar=("SCAN", "SCRIBBLES", "OUT"),
                    help="(internal) run the gallery recipe as a script on two TIFFs")
    args = ap.parse_args()
    if args.peer_process:
        peer_process(*args.peer_process, seed=args.seed)
        return
    if args.whole_process:
        whole_process(args)
        return

    import sklearn
    import skimage

    from core.imaging.synthetic import DemoConfig, make_demo

    cfg = DemoConfig(steps=3, shape=tuple(args.shape), n_label_slices=args.slices, seed=args.seed)
    exp = make_demo(cfg)
    t = exp.label_step
    scan, truth, scribbles, zs = exp.scans[t], exp.truth[t], exp.scribbles, list(exp.label_slices)

    # warm-up on a small crop: imports, thread pools, first allocations
    crop = (slice(None), slice(0, 96), slice(0, 96))
    if all(np.unique(scribbles[crop][zs]).size > 2 for _ in [0]):
        skimage_gallery(scan[crop], scribbles[crop], zs, args.seed)
        reactomo(np.ascontiguousarray(scan[crop]), np.ascontiguousarray(scribbles[crop]), zs, args.seed)

    sk_times, our_times = [], []
    for _ in range(args.repeats):
        sk_labels, s = skimage_gallery(scan, scribbles, zs, args.seed)
        sk_times.append(s)
        our_labels, o, result = reactomo(scan, scribbles, zs, args.seed)
        our_times.append(o)
    th_labels, th = threshold(scan, zs)
    inter = interactive(scan, scribbles, truth, zs, args.seed, args.repeats)

    def med(times: list[dict], key: str) -> float:
        return statistics.median(t[key] for t in times)

    true = truth[zs]
    rows = [
        ("scikit-image gallery (50 trees, depth 10)", sk_times, dice(sk_labels, true)),
        ("Reactomo (defaults)", our_times, dice(our_labels, true)),
        ("multi-Otsu threshold", [th], dice(th_labels, true)),
    ]
    sk_total = med(sk_times, "total")
    print(f"Demo label step, {len(zs)} XY slices of {args.shape[1]}×{args.shape[2]} px "
          f"({sum(int((scribbles[z] > 0).sum()) for z in zs):,} scribbled px); {machine()}; "
          f"{time.strftime('%Y-%m-%d')}; scikit-learn {sklearn.__version__}, scikit-image {skimage.__version__}; "
          f"median of {args.repeats} runs")
    print()
    print("| method | features s | train s | predict s | end to end s | speed-up | Dice gypsum | bassanite | pore | celestite | mean |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, times, d in rows:
        total = med(times, "total")
        parts = [f"{med(times, k):.2f}" if k in times[0] else "–" for k in ("features", "train", "predict")]
        mean = float(np.nanmean(list(d.values())))
        print(f"| {name} | {' | '.join(parts)} | {total:.2f} | {sk_total / total:.1f}× | "
              + " | ".join(f"{d[c]:.3f}" for c in CODES) + f" | {mean:.3f} |")
    print()
    sk_mean = float(np.nanmean(list(rows[0][2].values())))
    our_mean = float(np.nanmean(list(rows[1][2].values())))
    print(f"Speed-up end to end: {sk_total / med(our_times, 'total'):.1f}× (target ≥ 3×); "
          f"mean Dice {our_mean:.3f} vs {sk_mean:.3f}: +{our_mean - sk_mean:.3f} (target ≥ +0.05).")
    print(f"Interactive: retrain on all scribbles + re-predict one {args.shape[1]}×{args.shape[2]} slice after a "
          f"stroke: {inter:.2f} s (target ≈ 1 s).")
    print(f"Top features: {', '.join(f'{n} {v:.2f}' for n, v in result.forest.importances()[:5])}")


if __name__ == "__main__":
    main()
