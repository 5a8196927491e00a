"""Celestite's partial-volume boundary redrawn from the scan: three physical rules tried on saved segmentations.

The network's celestite is 7-25 % too large at every step of the accuracy family's tuning half (a halo of about one
voxel: the blur and the reconstruction spread the bright grains into their neighbours). This script redraws that
boundary after the fact, from a run of ``bench/bench_accuracy.py`` (its ``--runs-root`` folder), and scores each rule
against the family's truth: celestite's volume error, its largest change from the first step (the drift the issue's
target is about), its Dice, and the worst step's mean Dice over the phases present.

- ``halfway``: a boundary voxel is celestite when brighter than half-way between celestite's plateau (the median of
  its grains eroded by 3) and the median of its nearest neighbour phase.
- ``mass``: linear unmixing, which blur and reconstruction conserve: in a band of ±2 voxels around the grains, each
  voxel holds the fraction (I − b)/(c − b) of celestite, b the local background (mean of the non-celestite voxels of a
  9³ window), c the plateau; the band's sum of fractions is the celestite volume there, and the brightest voxels of
  the band are labelled celestite until that sum is reached.
- ``global``: one threshold per step, half-way between celestite's and gypsum's medians.

Run only on the tuning half to choose (the results, 2026-12-06, are in the README's ablation: on the network trained
without the ground-truth redraw, each rule makes celestite's volume more right and its drift worse; the workflow now
runs the ``mass`` idea slab by slab, 2D, through ``core.labelling.partial_volume``, the rule ``slabs`` here)::

    python bench/celestite_partial_volume.py "bench/.runs/square-root class weights" --split tuning
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CELESTITE, GYPSUM = 4, 1
STRUCT = ndi.generate_binary_structure(3, 1)


def _plateau(image: np.ndarray, grains: np.ndarray) -> float:
    core = ndi.binary_erosion(grains, STRUCT, iterations=3)
    return float(np.median(image[core])) if core.sum() > 50 else float(np.percentile(image[grains], 90))


def _nearest_other(labels: np.ndarray, grains: np.ndarray) -> np.ndarray:
    idx = ndi.distance_transform_edt(grains, return_distances=False, return_indices=True)
    return labels[tuple(idx)]


def _relabel(labels: np.ndarray, grains: np.ndarray, new: np.ndarray) -> np.ndarray:
    out = labels.copy()
    removed = grains & ~new
    out[removed] = _nearest_other(labels, grains)[removed]
    out[new] = CELESTITE
    return out


def halfway(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    grains = labels == CELESTITE
    c = _plateau(image, grains)
    band = ndi.binary_dilation(grains, STRUCT) & ~ndi.binary_erosion(grains, STRUCT)
    near = _nearest_other(labels, grains)
    thr = np.zeros(image.shape, np.float32)
    for p in np.unique(labels):
        interior = ndi.binary_erosion(labels == p, STRUCT, iterations=2)
        if p != CELESTITE and interior.sum() > 100:
            thr[band & (near == p)] = (c + float(np.median(image[interior]))) / 2
    judged = band & (thr > 0)
    new = (grains & ~judged) | (judged & (image >= thr))
    return _relabel(labels, grains, new)


def mass(image: np.ndarray, labels: np.ndarray, *, width: int = 2, inner: int = 3, window: int = 9) -> np.ndarray:
    grains = labels == CELESTITE
    c = _plateau(image, grains)
    core = ndi.binary_erosion(grains, STRUCT, iterations=inner)
    band = ndi.binary_dilation(grains, STRUCT, iterations=width) & ~core
    outside = (~ndi.binary_dilation(grains, STRUCT, iterations=width + 1)).astype(np.float32)
    weight = ndi.uniform_filter(outside, window)
    b = np.where(weight > 1e-3, ndi.uniform_filter(image * outside, window) / np.maximum(weight, 1e-6),
                 float(np.median(image[outside > 0])))
    frac = np.clip((image - b) / (c - b), -0.5, 1.5)
    k = int(np.clip(round(float(frac[band].sum())), 0, int(band.sum())))
    where = np.flatnonzero(band)
    new = core.ravel().copy()
    new[where[np.argsort(-frac[band])[:k]]] = True
    return _relabel(labels, grains, new.reshape(grains.shape))


def global_threshold(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    grains = labels == CELESTITE
    g = float(np.median(image[ndi.binary_erosion(labels == GYPSUM, STRUCT, iterations=2)]))
    thr = (_plateau(image, grains) + g) / 2
    band = ndi.binary_dilation(grains, STRUCT, iterations=2) & ~ndi.binary_erosion(grains, STRUCT, iterations=2)
    return _relabel(labels, grains, (grains & ~band) | (band & (image >= thr)))


def slabs(image: np.ndarray, labels: np.ndarray, *, slab: int = 8) -> np.ndarray:
    """What the workflow runs (``segment_series``): the 2D unmixing of core.labelling.partial_volume, slab by slab."""
    from core.labelling.partial_volume import redraw_partial_volume

    out = labels.copy()
    for z0 in range(0, labels.shape[0], slab):
        out[z0:z0 + slab], _ = redraw_partial_volume(image[z0:z0 + slab], labels[z0:z0 + slab], CELESTITE)
    return out


RULES = {"halfway": halfway, "mass": mass, "global": global_threshold, "slabs": slabs}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def score(family: Path, runs: Path, variant: str, rule) -> dict:
    meta = json.loads((family / variant / "dataset.json").read_text())
    true_n, seg_n, new_n, seg_dice, new_dice, seg_mean, new_mean = ([] for _ in range(7))
    for step in meta["steps"]:
        truth = tifffile.imread(family / variant / step["truth"])
        seg = tifffile.imread(runs / variant / "segmentations" / f"{step['name']}.tif")
        new = rule(tifffile.imread(family / variant / step["scan"]).astype(np.float32), seg)
        present = [k for k in np.unique(truth) if k > 0]
        true_n.append((truth == CELESTITE).sum())
        seg_n.append((seg == CELESTITE).sum())
        new_n.append((new == CELESTITE).sum())
        seg_dice.append(_dice(truth == CELESTITE, seg == CELESTITE))
        new_dice.append(_dice(truth == CELESTITE, new == CELESTITE))
        seg_mean.append(np.mean([_dice(truth == k, seg == k) for k in present]))
        new_mean.append(np.mean([_dice(truth == k, new == k) for k in present]))
    t, s, n = (np.asarray(x, float) for x in (true_n, seg_n, new_n))
    drift = lambda v: 100 * float(np.abs(v / v[0] - 1).max())  # noqa: E731 -- the bench's celestite drift
    return {"variant": variant, "error_pct": (100 * float((s / t - 1).mean()), 100 * float((n / t - 1).mean())),
            "drift_pct": (drift(s), drift(n)), "celestite_dice": (float(np.mean(seg_dice)), float(np.mean(new_dice))),
            "worst_step_dice": (float(min(seg_mean)), float(min(new_mean)))}


def main(argv: list[str] | None = None) -> int:
    from bench.family import split  # the family's written-down split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", help="a run folder of bench_accuracy.py (one subfolder per variant)")
    ap.add_argument("--family-root", default=str(ROOT / "bench" / ".family"))
    ap.add_argument("--split", choices=("tuning", "test"), default="tuning")
    ap.add_argument("--rule", choices=sorted(RULES), action="append")
    args = ap.parse_args(argv)
    runs, family = Path(args.runs), Path(args.family_root)
    variants = [v for v in split()[args.split] if (runs / v / "segmentations").is_dir()]
    print("| rule | variant | celestite volume error % (before → after) | drift % | celestite Dice | worst step Dice |")
    print("|---|---|---|---|---|---|")
    for name in args.rule or sorted(RULES):
        for v in variants:
            r = score(family, runs, v, RULES[name])
            print(f"| {name} | {v} | {r['error_pct'][0]:+.1f} → {r['error_pct'][1]:+.1f} | {r['drift_pct'][0]:.1f} → "
                  f"{r['drift_pct'][1]:.1f} | {r['celestite_dice'][0]:.3f} → {r['celestite_dice'][1]:.3f} | "
                  f"{r['worst_step_dice'][0]:.3f} → {r['worst_step_dice'][1]:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
