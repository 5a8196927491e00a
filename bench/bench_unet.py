"""U-Net quality and training time on the demo experiment: RF ground truth vs the full-truth ceiling, and an ablation.

Run: .venv/bin/python bench/bench_unet.py [--epochs 40] [--seed 0] [--device cpu] [--skip-ablation]
     .venv/bin/python bench/bench_unet.py --step-timing   (the time of one training step in each CPU arithmetic)

Data: the default demo experiment (``DemoConfig()``: 10 steps of 40 x 256 x 256, seed 0, label step 4 with 4
scribbled slices). Every model is the shipped model's network and settings (``scripts/make_demo_model.sh``: width
16, depth 4, patch 64, stride ratio 0.5, batch 16, ce+dice, balanced weights, Adam lr 2e-3, patience 8, 25 %
validation slices, seed 0), trained on the label step's scribbled slices, normalised with the default bright-tail
normalisation of the label step. Only the training labels differ:

- ``RF``: the random-forest ground truth of the demo scribbles (:func:`core.labelling.forest.ground_truth_from_scribbles`,
  default settings; what a user gets) -- the shipped model;
- ``ceiling``: the demo's full truth of the same slices (what a perfect ground truth would give);
- ``Otsu``: multi-Otsu thresholds of the same slices (:func:`core.labelling.threshold.multi_otsu`);
- each with and without augmentation (flips, 90 degree rotations, shear, scale; 2x).

Scoring: every step of the experiment, all 40 slices, is normalised with the bright-tail normalisation fitted to
that step (the card's method), predicted slice by slice (argmax -> phase codes) and compared with the demo truth
(:func:`core.segmentation.metrics.dice_per_phase`). Training time is the wall time of :func:`core.network.train.train_unet` (to the end
of early stopping; the best epoch's weights are kept). Prints Markdown tables for the README.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CODES = [1, 2, 3, 4]
NAMES = ["gypsum", "bassanite", "pore", "celestite"]


def settings(epochs: int, seed: int, augment: bool):
    from core.network.train import TrainConfig

    return TrainConfig(patch_size=64, stride_ratio=0.5, batch_size=16, max_epochs=epochs, patience=8,
                       val_fraction=0.25, augment=augment, loss="ce+dice", class_weights="balanced",
                       optimizer="adam", lr=2e-3, seed=seed)


def train(images, labels, *, epochs: int, seed: int, augment: bool, device: str):
    import torch

    from core.phases import DEFAULT_PHASES
    from core.network.train import train_unet
    from core.network.unet import UNetConfig, build_unet

    torch.manual_seed(seed)
    model = build_unet(UNetConfig(n_classes=4, width=16, depth=4))
    def on_epoch(h):
        print(f"  epoch {h['epoch']} val {h['val_loss']:.3f} ({h['seconds']:.1f} s)", file=sys.stderr, flush=True)

    r = train_unet(model, images, labels, config=settings(epochs, seed, augment), phases=DEFAULT_PHASES, device=device,
                   on_epoch=on_epoch)
    return model, r


def predict_volume(model, scan: np.ndarray, norm: dict, *, codes=CODES, batch: int = 8, device: str = "cpu") -> np.ndarray:
    """Phase codes of every slice of ``scan`` (z, y, x), slice by slice in batches, without gradients."""
    import torch

    from core.imaging.normalise import apply_normalisation

    lut = np.asarray(codes, dtype=np.uint8)
    out = np.zeros(scan.shape, np.uint8)
    model.eval().to(device)
    with torch.no_grad():
        for z0 in range(0, scan.shape[0], batch):
            x = torch.from_numpy(apply_normalisation(scan[z0:z0 + batch], norm)[:, None]).to(device)
            out[z0:z0 + batch] = lut[model(x).argmax(1).cpu().numpy()]
    return out


def score(model, exp, norms, device: str) -> list[dict[int, float]]:
    from core.segmentation.metrics import dice_per_phase

    return [dice_per_phase(predict_volume(model, scan, n, device=device), truth, codes=CODES)
            for scan, truth, n in zip(exp.scans, exp.truth, norms)]


def mean(d: dict[int, float]) -> float:
    return float(np.nanmean([d[c] for c in CODES]))


def step_timing(steps: int = 20, warmup: int = 3) -> int:
    """Milliseconds per training step of the default U-Net (width 16, depth 4; a batch of 16 patches of 64 x 64, the
    loss ce+dice, Adam) on the CPU, in float32 and bfloat16 autocast, each with and without channels-last
    convolutions, measured the way :func:`core.network.train.train_unet` runs them, one after the other in one
    process. Prints a Markdown table."""
    import torch

    from core.network.inference import native_bfloat16
    from core.network.train import _autocast, _channels_last, _loss
    from core.network.unet import UNetConfig, build_unet

    dev = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 64, 64, generator=gen)
    y = torch.randint(0, 4, (16, 64, 64), generator=gen)
    rows = []
    for label, bf16, cl in (("float32", False, False), ("float32, channels-last", False, True),
                            ("bfloat16", True, False), ("bfloat16, channels-last (the default where native)", True, True)):
        torch.manual_seed(0)
        model = build_unet(UNetConfig(n_classes=4, width=16, depth=4))
        model.train()
        if cl:
            model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with _autocast(dev, bf16):
                logits = model(_channels_last(x) if cl else x)
            _loss(logits.float(), y, kind="ce+dice", weight=None).backward()
            opt.step()

        for _ in range(warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        rows.append((label, 1000 * (time.perf_counter() - t0) / steps))
    base = rows[0][1]
    print(f"Training step of the default U-Net, batch 16 of 64 x 64 ({dt.date.today()}, {platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, native bfloat16: "
          f"{native_bfloat16()})\n")
    print("| arithmetic | ms per step | speed-up |\n|---|---|---|")
    for label, ms in rows:
        print(f"| {label} | {ms:.0f} | {base / ms:.2f}x |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40, help="maximum epochs (default 40, as the shipped model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--skip-ablation", action="store_true", help="only RF vs ceiling")
    ap.add_argument("--scarce", action="store_true",
                    help="only the scarce-label ablation: RF ground truth of ONE scribbled slice, with and without augmentation")
    ap.add_argument("--step-timing", action="store_true",
                    help="only the time of one training step in float32 and bfloat16, with and without channels-last")
    args = ap.parse_args()
    if args.step_timing:
        return step_timing()

    import torch

    from core.labelling.forest import ground_truth_from_scribbles
    from core.imaging.normalise import apply_normalisation, fit_normalisation
    from core.imaging.synthetic import DemoConfig, make_demo
    from core.labelling.threshold import multi_otsu

    t0 = time.perf_counter()
    exp = make_demo(DemoConfig())
    t_demo = time.perf_counter() - t0
    print(f"demo {t_demo:.0f} s", file=sys.stderr, flush=True)
    ls, zs = exp.label_step, list(exp.label_slices)
    scan = exp.scans[ls]
    t0 = time.perf_counter()
    rf = ground_truth_from_scribbles(scan, exp.scribbles)
    t_rf = time.perf_counter() - t0
    print(f"RF {t_rf:.0f} s", file=sys.stderr, flush=True)
    norm = fit_normalisation(scan, seed=args.seed)
    images = apply_normalisation(scan[zs], norm)
    gts = {"RF": rf.labels[zs], "ceiling": exp.truth[ls][zs], "Otsu": multi_otsu(scan[zs]).labels}
    norms = [fit_normalisation(s, seed=args.seed) for s in exp.scans]
    from core.segmentation.metrics import dice_per_phase

    gt_dice = {k: dice_per_phase(v, exp.truth[ls][zs], codes=CODES) for k, v in gts.items()}

    if args.scarce:
        z = zs[1]
        one = apply_normalisation(scan[[z]], norm)  # one slice: validation is a held-out strip of it
        print(f"## Scarce labels: RF ground truth of slice {z} of step {ls} only ({dt.date.today().isoformat()}, "
              f"{os.cpu_count()} CPU cores, torch {torch.__version__})\n")
        print("| augmentation | " + " | ".join(NAMES) + " | mean over 10 steps | best epoch | time (s) |\n|---|" + "---:|" * 7)
        for aug in (False, True):
            model, r = train(one, rf.labels[[z]], epochs=args.epochs, seed=args.seed, augment=aug, device=args.device)
            s_ = score(model, exp, norms, args.device)
            avg = lambda c: float(np.nanmean([d[c] for d in s_]))
            print(f"| {'yes' if aug else 'no'} | " + " | ".join(f"{avg(c):.3f}" for c in CODES)
                  + f" | {np.mean([mean(d) for d in s_]):.3f} | {r.best_epoch} | {r.seconds:.0f} |", flush=True)
        return 0
    runs = [("RF", True), ("ceiling", True)]
    if not args.skip_ablation:
        runs += [("RF", False), ("Otsu", True), ("Otsu", False)]
    results = {}
    for gt, aug in runs:
        model, r = train(images, gts[gt], epochs=args.epochs, seed=args.seed, augment=aug, device=args.device)
        t0 = time.perf_counter()
        per_step = score(model, exp, norms, args.device)
        t_inf = time.perf_counter() - t0
        results[(gt, aug)] = (r, per_step, t_inf)
        print(f"[{gt}, augment={aug}] {r.seconds:.0f} s, best epoch {r.best_epoch}/{len(r.history)}, "
              f"mean Dice over steps {np.mean([mean(d) for d in per_step]):.3f}, inference {t_inf:.1f} s", file=sys.stderr, flush=True)

    dev = results[("RF", True)][0].device
    print(f"## U-Net on the demo experiment ({dt.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} CPU cores, "
          f"{platform.processor() or platform.platform()}, torch {torch.__version__}, device {dev})\n")
    print(f"Demo generated in {t_demo:.0f} s; RF ground truth of the {len(zs)} scribbled slices of step {ls} in {t_rf:.1f} s. "
          f"Max epochs {args.epochs}, seed {args.seed}.\n")
    print("### Training labels against the demo truth (label step, the training slices)\n")
    print("| ground truth | " + " | ".join(NAMES) + " | mean |\n|---|" + "---:|" * 5)
    for k, d in gt_dice.items():
        print(f"| {k} | " + " | ".join(f"{d[c]:.3f}" for c in CODES) + f" | {mean(d):.3f} |")

    rf_r, rf_s, _ = results[("RF", True)]
    ce_r, ce_s, _ = results[("ceiling", True)]
    print("\n### RF ground truth vs ceiling (full truth), Dice against the demo truth on every step\n")
    print("| step | extent | RF: " + " | ".join(NAMES) + " | RF mean | ceiling mean | gap |\n|---|---:|" + "---:|" * 7)
    for t, (a, b) in enumerate(zip(rf_s, ce_s)):
        print(f"| {t} | {exp.extent[t]:.2f} | " + " | ".join(f"{a[c]:.3f}" for c in CODES)
              + f" | {mean(a):.3f} | {mean(b):.3f} | {mean(b) - mean(a):+.3f} |")
    avg = lambda s, c: float(np.nanmean([d[c] for d in s]))
    print("| all | | " + " | ".join(f"{avg(rf_s, c):.3f}" for c in CODES)
          + f" | {np.mean([mean(d) for d in rf_s]):.3f} | {np.mean([mean(d) for d in ce_s]):.3f} | "
          f"{np.mean([mean(d) for d in ce_s]) - np.mean([mean(d) for d in rf_s]):+.3f} |")
    print("\nCeiling per phase (average over steps): " + ", ".join(f"{n} {avg(ce_s, c):.3f}" for n, c in zip(NAMES, CODES)) + ".")
    print(f"Largest gap on one step: {max(mean(b) - mean(a) for a, b in zip(rf_s, ce_s)):+.3f}.\n")

    print("### Training time\n")
    print("| model | time (s) | epochs run | best epoch | s/epoch | inference, 10 steps x 40 slices (s) |\n|---|---:|---:|---:|---:|---:|")
    for (gt, aug), (r, _, t_inf) in results.items():
        print(f"| {gt}{'' if aug else ', no aug'} | {r.seconds:.0f} | {len(r.history)} | {r.best_epoch} | "
              f"{r.seconds / max(len(r.history), 1):.1f} | {t_inf:.1f} |")

    if not args.skip_ablation:
        print("\n### Ablation (as the study's Table 1): mean Dice over all 10 steps, per phase averaged over steps\n")
        print("| ground truth | augmentation | " + " | ".join(NAMES) + " | mean |\n|---|---|" + "---:|" * 5)
        for gt in ("Otsu", "RF", "ceiling"):
            for aug in (False, True):
                if (gt, aug) not in results:
                    continue
                s = results[(gt, aug)][1]
                print(f"| {gt} | {'yes' if aug else 'no'} | " + " | ".join(f"{avg(s, c):.3f}" for c in CODES)
                      + f" | {np.mean([mean(d) for d in s]):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
