"""Screen: which features the forest that labels the U-Net's training slices reads (tuning half only).

The U-Net learns from the forest's ground truth, and the gap to the ceiling is in those labels (README, "The
ceiling"). The forest's feature set (`core.labelling.features.FeatureConfig`: scales 0.7, 1, 2, 4 px with 3D
smoothing; intensity, neighbourhood and edge-preserving groups) was chosen on the demo benchmark before the family
existed (`bench/bench_forest.py`), and never on the family. Scribbles stay inside thick laths, so the largest scale
(4 px, ±12 slices in 3D) tells the forest "inside a thick lath", which a thin lath never is. Smaller or fewer scales
might let it call thin laths bassanite; larger ones would do the opposite (a control).

Each arm labels exactly what `run` gives the U-Net: the label step's scan with its rings removed, the scribbled slices
and the extra slices `run` adds (the same held-out slices kept away), pores' and celestite's edges redrawn from the
scan as `run` does, the same forest seed. Scored against the truth of those slices, per phase (Dice), and reported:
the recall of the truth's thin bassanite (pixels of a 2D object part removed by a 3x3 opening). Nothing here trains a
network or computes the internal standard.

Written before it ran (2026-12-07, 20:58 UTC), the rule: an arm goes on to the whole workflow (two seeds, the standing
conditions (a)-(d) of bench/results/forest-slices-rules.txt, against the defaults run on this machine) only if the mean
over the six tuning variants of bassanite's or gypsum's Dice rises by at least 0.01, neither falls by more than 0.005,
and pores' and celestite's do not fall by more than 0.005; among arms that pass, the one with the largest mean of
bassanite's and gypsum's Dice. If none passes, the forest's features stay as they are.

Result (20:59 UTC, `screen-forest-features.json`): no arm passes (the largest change +0.002); see the README.

Second question, written 21:02 UTC before those arms ran: a denoised copy of the label step for the forest. Noise sits
at a third to a half of the gypsum-bassanite contrast, and every smoothing feature the forest has (Gaussian, 3x3
mean, guided filter) averages a thin lath away with its noise. Non-local means (scikit-image, 3D, patches of 3
voxels searched within 4, h = 0.8 or 1.2 times the noise sigma measured from neighbouring slices' differences, about
20 s a step here) averages like with like instead, so a thin lath's voxels are averaged with other lath voxels.
Arms: the forest reads the denoised scan instead of the scan, or both (the denoised one's features after the scan's);
the edges' redraw still reads the scan. The same rule as above, against the defaults run in the same invocation.
`--arms nlm` runs these (and the defaults).

Third question, written 21:11 UTC before those arms ran: the forest's own settings (`ForestConfig`: 4 trees of depth
12 from at most 4000 brushed pixels a phase, weights half-way to balanced, its probabilities refined by a guided filter
of radius 2), also chosen on the demo benchmark. The refinement smooths the probabilities across edges of low
contrast, which a thin lath's are. Arms: the refinement off, or of radius 1; 16 trees; every brushed pixel; trees
grown until pure; phases weighted as brushed or fully balanced. The same rule, against the defaults of the same
invocation. `--arms forest` runs these (and the defaults).

Run: .venv/bin/python bench/screen_forest_features.py [--family-root bench/.family] [--out FILE.json] [--arms a,b]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.family import ensure, split, variant  # noqa: E402
from bench.screen_temporal_features import judge  # noqa: E402  (the same rule as the time-context screen)

#: arm name -> FeatureConfig keyword arguments (the first is the defaults)
ARMS: dict[str, dict] = {
    "defaults (σ 0.7, 1, 2, 4)": {},
    "no σ 4": {"sigmas": (0.7, 1.0, 2.0)},
    "σ 0.5 added": {"sigmas": (0.5, 0.7, 1.0, 2.0, 4.0)},
    "σ 8 added (control)": {"sigmas": (0.7, 1.0, 2.0, 4.0, 8.0)},
    "in-plane smoothing only": {"context_3d": False},
    "every feature group": {"groups": ("intensity", "gradient", "structure", "neighbourhood", "morphology", "edges")},
    "nlm h 0.8 instead of the scan": {"_nlm": (0.8, "instead")},
    "nlm h 1.2 instead of the scan": {"_nlm": (1.2, "instead")},
    "nlm h 0.8 beside the scan": {"_nlm": (0.8, "beside")},
    "nlm h 1.2 beside the scan": {"_nlm": (1.2, "beside")},
    "forest: refinement off": {"_forest": {"refine_radius": 0}},
    "forest: refinement radius 1": {"_forest": {"refine_radius": 1}},
    "forest: 16 trees": {"_forest": {"n_trees": 16}},
    "forest: every brushed pixel": {"_forest": {"max_pixels_per_class": 0}},
    "forest: trees grown until pure": {"_forest": {"max_depth": None}},
    "forest: phases as brushed": {"_forest": {"class_balance": 0.0}},
    "forest: phases balanced": {"_forest": {"class_balance": 1.0}},
}
NAMES = {1: "gypsum", 2: "bassanite", 3: "pore", 4: "celestite"}


def _dice(a, b, c) -> float:
    import numpy as np

    pa, pb = a == c, b == c
    den = int(pa.sum()) + int(pb.sum())
    return float("nan") if den == 0 else 2.0 * int(np.logical_and(pa, pb).sum()) / den


def _thin(mask):
    """The pixels of a 2D mask (per slice) that a 3x3 opening removes: its thin parts."""
    import numpy as np
    from scipy import ndimage as ndi

    return np.stack([m & ~ndi.binary_opening(m, structure=np.ones((3, 3), bool)) for m in mask])


def _nlm(scan, h: float):
    """Non-local means of the whole scan in 3D, h = ``h`` times the noise sigma (from the differences of neighbouring
    slices, whose noise is independent while the rock is continuous)."""
    import numpy as np
    from skimage.restoration import denoise_nl_means

    x = np.asarray(scan, np.float32)
    d = (x[1:] - x[:-1]).ravel()
    sigma = float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))
    return denoise_nl_means(x, patch_size=3, patch_distance=4, h=h * sigma, sigma=sigma, fast_mode=True,
                            channel_axis=None).astype(np.float32)


def screen_variant(folder: Path, arms: dict[str, dict]) -> dict:
    import numpy as np
    import tifffile

    from core.imaging.rings import RINGS, open_scan
    from core.labelling.features import FeatureConfig
    from core.labelling.forest import EXTRA_SLICES, ForestConfig, extra_slices, ground_truth_from_scribbles
    from core.labelling.partial_volume import EDGE_BACKGROUND, matrix_codes, redraw_partial_volume, resolve_codes
    from core.network.train import TrainConfig, split_slices
    from core.phases import PhaseTable

    ds = json.loads((folder / "dataset.json").read_text())
    k, steps = int(ds["label_step"]), ds["steps"]
    phases = PhaseTable.from_dict(ds["phases"])
    scribbles = tifffile.imread(folder / "scribbles.tif")
    truth = tifffile.imread(folder / steps[k]["truth"])
    zs = [int(z) for z in np.flatnonzero(scribbles.reshape(scribbles.shape[0], -1).any(axis=1))]
    tc = TrainConfig(seed=0)
    held = [zs[i] for i in split_slices(len(zs), val_fraction=tc.val_fraction, seed=tc.held_out_seed)[1]]
    more = extra_slices(scribbles.shape[0], zs, held, EXTRA_SLICES, plane_px=scribbles.shape[1] * scribbles.shape[2])
    where = sorted(zs + more)
    with open_scan(folder / steps[k]["scan"], rings=RINGS) as vol:
        scan = vol.read()
    pv_codes = resolve_codes(phases, None)
    matrix = matrix_codes(phases, EDGE_BACKGROUND)
    ref = truth[where]
    thin_true = _thin(ref == 2)
    out = {"variant": folder.name, "label_step": k, "scribbled": zs, "extra": more, "arms": {}}
    for arm, spec in arms.items():
        fkw = {k: v for k, v in spec.items() if not k.startswith("_")}
        t0 = time.perf_counter()
        read, near = scan, None
        if "_nlm" in spec:
            h, how = spec["_nlm"]
            den = _nlm(scan, h)
            read, near = (den, None) if how == "instead" else (scan, {1: den})
        rf = ground_truth_from_scribbles(read, scribbles, feature_config=FeatureConfig(**fkw),
                                         forest_config=ForestConfig(seed=0, **spec.get("_forest", {})), phases=phases,
                                         also=more, neighbours=near)
        gt = rf.labels
        for code in pv_codes:
            gt, _ = redraw_partial_volume(scan, gt, code, slices=where, matrix=matrix)
        pred = gt[where]
        row = {"features": FeatureConfig(**fkw).to_dict(), "nlm": spec.get("_nlm"), "forest": spec.get("_forest"),
               "seconds": time.perf_counter() - t0,
               **{NAMES[c]: _dice(pred, ref, c) for c in NAMES},
               "thin_bassanite_recall": float((pred[thin_true] == 2).mean()) if thin_true.any() else float("nan"),
               "bassanite_volume_ratio": float((pred == 2).sum() / max(1, (ref == 2).sum()))}
        out["arms"][arm] = row
        print(f"{folder.name} {arm:>26}: " + " ".join(f"{NAMES[c]} {row[NAMES[c]]:.3f}" for c in NAMES)
              + f"  thin {row['thin_bassanite_recall']:.3f}  vol {row['bassanite_volume_ratio']:.2f}"
              + f"  ({row['seconds']:.0f} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family-root", type=Path, default=ROOT / "bench" / ".family")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--arms", default=None, help="comma-separated prefixes of arm names (default: all)")
    args = ap.parse_args(argv)
    names = list(ARMS)
    if args.arms:
        want = [a.strip() for a in args.arms.split(",")]
        names = [names[0]] + [n for n in names[1:] if any(n.startswith(w) for w in want)]
    arms = {n: ARMS[n] for n in names}
    rows = [screen_variant(ensure(variant(n), args.family_root), arms) for n in split()["tuning"]]
    keys = [*NAMES.values(), "thin_bassanite_recall", "bassanite_volume_ratio"]
    summary = {arm: {p: float(np.nanmean([r["arms"][arm][p] for r in rows])) for p in keys} for arm in arms}
    print("\nmean over the tuning half (the U-Net's training slices of the label step against the truth):")
    passing, best = judge(summary, names[0], width=26)
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "summary": summary, "passing": passing, "chosen": best},
                                       indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
