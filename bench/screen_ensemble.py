"""Screen (2026-12-07, tuning half only, nothing chosen): what averaging the class probabilities of two U-Nets trained
with two seeds would give, against each alone.

Why: the same settings trained with another seed move a variant's worst step by up to 0.01-0.02 (v04 of the test half
0.849 and 0.839), and weight averaging, the one variance cure kept so far, works inside one training. An ensemble of two
trainings is the next one; with training in bfloat16 (the default since 2026-12-07) two trainings fit the 5-minute
budget. Before building it into bundles and inference, this measures its size on the saved networks of two finished
runs of the tuning half (``bench_accuracy.py --split tuning`` with ``--seed 0`` and ``--seed 1``): each step segmented
by each network (``segment_volume`` with the default inference, so the slice averaging too), the probabilities averaged,
scored against the truth. The network's raw output only: no edge redraw, no temporal labelling, no cleaning, so the
figures are lower than ``core run``'s and only the differences between the three columns count.

    python bench/screen_ensemble.py --a "bench/.runs/<seed 0 label>" --b "bench/.runs/<seed 1 label>" \
        --out bench/results/screen-ensemble.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.family import split  # noqa: E402


def worst_steps(a: Path, b: Path, family: Path, variant: str) -> dict[str, float]:
    from core.network.bundle import load_bundle
    from core.network.inference import InferenceConfig, segment_volume

    ma, ca = load_bundle(a / variant / "model")
    mb, cb = load_bundle(b / variant / "model")
    codes = np.array(ca["class_codes"])
    if list(codes) != list(cb["class_codes"]):
        raise SystemExit(f"{variant}: the two networks label different phases")
    means: dict[str, list[float]] = {"a": [], "b": [], "ensemble": []}
    scans = sorted((family / variant / "scans").glob("t*.tif"))
    if not scans:
        raise SystemExit(f"No scans in {family / variant / 'scans'}; write the family first (python bench/family.py) "
                         "or give --family-root.")
    for scan in scans:
        truth = tifffile.imread(family / variant / "truth" / scan.name)
        probs = {}
        for key, model, card in (("a", ma, ca), ("b", mb, cb)):
            acc = np.zeros((truth.shape[0], len(codes)) + truth.shape[1:], np.float32)

            def keep(z0: int, z1: int, p: np.ndarray, acc: np.ndarray = acc) -> None:
                acc[z0:z1] = p

            segment_volume(model, card, scan, config=InferenceConfig(), probabilities=keep)
            probs[key] = acc
        probs["ensemble"] = (probs["a"] + probs["b"]) / 2
        for key, p in probs.items():
            labels = codes[p.argmax(1)]
            dice = [2 * ((truth == c) & (labels == c)).sum() / ((truth == c).sum() + (labels == c).sum())
                    for c in codes if (truth == c).any()]
            means[key].append(float(np.mean(dice)))
    return {key: min(v) for key, v in means.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="runs folder of the first seed (one subfolder per variant)")
    ap.add_argument("--b", required=True, help="runs folder of the second seed")
    ap.add_argument("--family-root", default=str(ROOT / "bench" / ".family"))
    ap.add_argument("--out", help="JSON file for every number")
    args = ap.parse_args()
    rows = {}
    for variant in split()["tuning"]:
        rows[variant] = worst_steps(Path(args.a), Path(args.b), Path(args.family_root), variant)
        print(variant, {k: round(v, 4) for k, v in rows[variant].items()}, flush=True)
    means = {k: float(np.mean([r[k] for r in rows.values()])) for k in ("a", "b", "ensemble")}
    print("mean worst step:", {k: round(v, 4) for k, v in means.items()})
    if args.out:
        Path(args.out).write_text(json.dumps({"a": args.a, "b": args.b, "rows": rows, "means": means}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
