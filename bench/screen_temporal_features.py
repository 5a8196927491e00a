"""Screen: the forest's ground truth with features of the neighbouring time steps (tuning half only).

A voxel of a reacting rock has a history: a thin young lath at the labelled step is thicker one step later, and a
bassanite voxel one step earlier is still bassanite. So the forest that labels the scribbled slices of step k may
read the same pixels at k − 1 and k + 1 too: its features are the usual ones of step k, concatenated with the same
features computed on the neighbouring steps' scans (each scan normalised on its own, as the workflow does). The
scribbles stay those of step k; nothing else changes.

This screens the idea on the forest's labels of the scribbled slices against the truth of those slices, paired with
the forest of step k alone (the same code path, the same seed). Written before it ran, the rule: an arm goes on to
the whole workflow only if the mean over the six tuning variants of bassanite's or gypsum's Dice rises by at least
0.01, neither falls by more than 0.005, and pores' and celestite's do not fall by more than 0.005; among arms that
pass, the one with the largest mean of bassanite's and gypsum's Dice. The internal standard is not computed here.

Run: .venv/bin/python bench/screen_temporal_features.py [--family-root bench/.family] [--out FILE.json]
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

ARMS = {"step k alone": (0,), "k and k + 1": (0, 1), "k − 1 and k": (-1, 0), "k − 1, k, k + 1": (-1, 0, 1)}
NAMES = {1: "gypsum", 2: "bassanite", 3: "pore", 4: "celestite"}


def _dice(a, b, c) -> float:
    import numpy as np

    pa, pb = a == c, b == c
    den = int(pa.sum()) + int(pb.sum())
    return float("nan") if den == 0 else 2.0 * int(np.logical_and(pa, pb).sum()) / den


def screen_variant(folder: Path) -> dict:
    import numpy as np
    import tifffile

    from core.labelling.features import FeatureConfig, volume_features
    from core.labelling.forest import ForestConfig, predict_forest, train_forest

    ds = json.loads((folder / "dataset.json").read_text())
    k, steps = int(ds["label_step"]), ds["steps"]
    scribbles = tifffile.imread(folder / "scribbles.tif")
    truth = tifffile.imread(folder / steps[k]["truth"])
    zs = [int(z) for z in np.flatnonzero(scribbles.reshape(scribbles.shape[0], -1).any(axis=1))]
    fcfg = FeatureConfig()
    feats: dict[int, list] = {}
    for off in (-1, 0, 1):
        if 0 <= k + off < len(steps):
            scan = tifffile.imread(folder / steps[k + off]["scan"])
            feats[off] = volume_features(scan, zs, config=fcfg)
    out = {"variant": folder.name, "label_step": k, "slices": len(zs), "arms": {}}
    for arm, offs in ARMS.items():
        offs = tuple(o for o in offs if o in feats)
        t0 = time.perf_counter()
        data = [np.concatenate([feats[o][i].data for o in offs], axis=0) for i in range(len(zs))]
        forest = train_forest(data, [scribbles[z] for z in zs], config=ForestConfig(seed=0))
        pred = np.stack([predict_forest(forest, data[i], guide=feats[0][i].guide).labels for i in range(len(zs))])
        ref = truth[zs]
        out["arms"][arm] = {"steps": list(offs), "seconds": time.perf_counter() - t0,
                            **{NAMES[c]: _dice(pred, ref, c) for c in NAMES}}
        print(f"{folder.name} {arm:>16}: " + " ".join(f"{NAMES[c]} {out['arms'][arm][NAMES[c]]:.3f}" for c in NAMES),
              flush=True)
    return out


def judge(summary: dict[str, dict[str, float]], first: str, width: int = 16) -> tuple[list[str], str | None]:
    """The rule of the label screens (this one and screen_forest_features.py), printed arm by arm against ``first``:
    an arm passes when bassanite's or gypsum's mean Dice rises by 0.01 or more, neither falls by more than 0.005 and
    pores' and celestite's do not fall by more than 0.005; the best passing arm has the largest bassanite + gypsum."""
    base = summary[first]
    passing = []
    for arm, m in summary.items():
        d = {p: m[p] - base[p] for p in m}
        ok = (arm != first and max(d["bassanite"], d["gypsum"]) >= 0.01 and min(d["bassanite"], d["gypsum"]) >= -0.005
              and d["pore"] >= -0.005 and d["celestite"] >= -0.005)
        if ok:
            passing.append(arm)
        print(f"  {arm:>{width}}: " + " ".join(f"{p} {v:.3f} ({d[p]:+.3f})" for p, v in m.items()) + ("  passes" if ok else ""))
    best = max(passing, key=lambda a: summary[a]["bassanite"] + summary[a]["gypsum"]) if passing else None
    print(f"\nrule: {'goes on: ' + best if best else 'no arm passes'}")
    return passing, best


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family-root", type=Path, default=ROOT / "bench" / ".family")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = [screen_variant(ensure(variant(n), args.family_root)) for n in split()["tuning"]]
    base = rows[0]["arms"]["step k alone"]
    summary = {}
    for arm in ARMS:
        summary[arm] = {NAMES[c]: float(np.nanmean([r["arms"][arm][NAMES[c]] for r in rows])) for c in NAMES}
    print("\nmean over the tuning half (Dice on the scribbled slices against the truth):")
    passing, best = judge(summary, "step k alone")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "summary": summary, "passing": passing, "chosen": best}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
