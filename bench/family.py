"""The benchmark family: twelve simulated 4D experiments that differ from the demo in physics and in look.

Why a family: a workflow tuned on one demo learns that demo. These variants are scanned by a simulated synchrotron
tomograph (``imaging="tomography"``, :mod:`core.imaging.tomography`: forward projection over 180°, photon noise with a
vertical beam profile, miscalibrated detector columns that leave half-rings, detector blur, filtered back projection,
optional propagation phase contrast, gain/offset drift between steps), and they vary what the rock and the reaction
look like and how the user labelled them:

- gypsum/bassanite contrast 0.08-0.12 of the gypsum-celestite gap, noise 600-850 grey (the old, harder demo was
  0.08 / 850);
- lath thickness 2.5-6 voxels, length, orientation scatter, grain size; old pore sizes and amounts; celestite
  0.015-0.06 of the volume;
- kinetics (Avrami n, half time, plateau), 5-8 steps, undersampled scans, strong drift, phase contrast;
- which step is labelled (early, mid-reaction or late) and how many slices carry scribbles (4 to 13).

The split, made once on 2026-12-04 and never to be changed: the variants were numbered as designed below, then
``numpy.random.default_rng(20261204).permutation(12)`` chose the test half (its first six entries). **Every
default of the workflow is chosen on the tuning half only; the test half is only ever reported.** A change to any
variant is a new family (rename it ``family-2`` and re-split); never edit a variant to make it pass.

Run ``python bench/family.py [--out bench/.family] [--only NAME]`` to write the variants (each like
``python -m core demo``: ``scans/``, ``truth/``, ``scribbles.tif``, ``dataset.json``); ``bench/bench_accuracy.py``
does it on demand and caches them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FAMILY = "family-1"
SPLIT_SEED = 20261204
#: Shared by every variant unless it says otherwise: a scanned experiment of 6 steps of 48 x 256 x 256.
BASE: dict[str, Any] = {"steps": 6, "shape": (48, 256, 256), "imaging": "tomography", "interval_s": 300.0}


@dataclass(frozen=True)
class Variant:
    """One experiment of the family: a name, what makes it different, and its generator settings."""

    name: str
    about: str
    settings: dict[str, Any] = field(default_factory=dict)

    def config(self):
        """The :class:`core.imaging.synthetic.DemoConfig` of this variant."""
        from core.imaging.synthetic import DemoConfig

        return DemoConfig.from_dict({**BASE, **self.settings})

    def digest(self) -> str:
        """Short hash of the generator settings and version (the cache key of a written variant)."""
        from core import __version__

        text = json.dumps({"family": FAMILY, "config": self.config().to_dict(), "version": __version__}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


VARIANTS: tuple[Variant, ...] = (
    Variant("v01-thin-laths-low-contrast", "the old demo's difficulty: contrast 0.08, noise 850, laths 3 voxels thick",
            {"seed": 101, "bassanite_contrast": 0.08, "noise_grey": 850.0, "lath_width_vox": 3.0, "n_label_slices": 8}),
    Variant("v02-early-label-slow", "slow kinetics, 7 steps, the scribbles on an early step",
            {"seed": 102, "steps": 7, "bassanite_contrast": 0.10, "noise_grey": 700.0, "lath_width_vox": 4.0,
             "half_time_fraction": 0.6, "label_step": 2, "n_label_slices": 6}),
    Variant("v03-late-label-big-pores", "large old pores, 5 % celestite, 4 scribbled slices of a late step",
            {"seed": 103, "bassanite_contrast": 0.12, "noise_grey": 600.0, "lath_width_vox": 6.0, "pore_size": 1.4,
             "pore_fraction": 0.012, "celestite_fraction": 0.05, "label_step": 4, "n_label_slices": 4}),
    Variant("v04-very-thin-scattered", "laths 2.5 voxels thick, scattered orientations, small grains, 13 slices",
            {"seed": 104, "bassanite_contrast": 0.09, "noise_grey": 800.0, "lath_width_vox": 2.5,
             "lath_scatter_deg": 25.0, "grain_size_vox": 30.0, "n_label_slices": 13}),
    Variant("v05-phase-contrast-little-celestite", "phase-contrast fringes, 1.5 % celestite, small pores",
            {"seed": 105, "bassanite_contrast": 0.11, "noise_grey": 750.0, "phase_contrast": 0.4,
             "celestite_fraction": 0.015, "pore_size": 0.7, "n_label_slices": 5}),
    Variant("v06-undersampled-drift", "180 projections, twice the drift, the scribbles on an early step",
            {"seed": 106, "bassanite_contrast": 0.08, "noise_grey": 650.0, "lath_width_vox": 3.5, "n_angles": 180,
             "drift_gain": -0.06, "drift_offset_grey": -800.0, "label_step": 1, "n_label_slices": 10}),
    Variant("v07-fast-complete", "coarse grains, Avrami n = 3 to 95 % conversion in 5 steps",
            {"seed": 107, "steps": 5, "bassanite_contrast": 0.10, "noise_grey": 850.0, "lath_width_vox": 5.0,
             "grain_size_vox": 60.0, "avrami_n": 3.0, "extent_max": 0.95, "n_label_slices": 6}),
    Variant("v08-celestite-rich-late-label", "6 % celestite, light phase contrast, 8 steps, a late step labelled",
            {"seed": 108, "steps": 8, "bassanite_contrast": 0.085, "noise_grey": 700.0, "lath_width_vox": 3.0,
             "phase_contrast": 0.25, "celestite_fraction": 0.06, "label_step": 6, "n_label_slices": 7}),
    Variant("v09-thin-porous-early", "laths 2.5 voxels, 1.5 % old pores, 4 scribbled slices of an early step",
            {"seed": 109, "bassanite_contrast": 0.12, "noise_grey": 850.0, "lath_width_vox": 2.5,
             "pore_fraction": 0.015, "label_step": 1, "n_label_slices": 4}),
    Variant("v10-aligned-slow-start", "aligned laths, Avrami n = 1.5, larger pores, 13 slices",
            {"seed": 110, "bassanite_contrast": 0.095, "noise_grey": 600.0, "lath_width_vox": 4.5,
             "lath_scatter_deg": 5.0, "pore_size": 1.2, "avrami_n": 1.5, "n_label_slices": 13}),
    Variant("v11-strong-rings-fringes", "strong half-rings, phase contrast 0.5, small grains",
            {"seed": 111, "bassanite_contrast": 0.08, "noise_grey": 750.0, "lath_width_vox": 4.0,
             "phase_contrast": 0.5, "grain_size_vox": 35.0, "ring_grey": 3000.0, "n_label_slices": 8}),
    Variant("v12-partial-fast", "70 % plateau reached early, 7 steps, 9 slices",
            {"seed": 112, "steps": 7, "bassanite_contrast": 0.11, "noise_grey": 800.0, "lath_width_vox": 3.0,
             "extent_max": 0.7, "half_time_fraction": 0.35, "n_label_slices": 9}),
)


def split() -> dict[str, list[str]]:
    """``{"tuning": [...], "test": [...]}``: the split made once (see the module docstring)."""
    import numpy as np

    order = np.random.default_rng(SPLIT_SEED).permutation(len(VARIANTS))
    test = sorted(int(i) for i in order[: len(VARIANTS) // 2])
    return {"tuning": [v.name for i, v in enumerate(VARIANTS) if i not in test],
            "test": [v.name for i, v in enumerate(VARIANTS) if i in test]}


def variant(name: str) -> Variant:
    """The variant called ``name`` (or a unique prefix of it, e.g. ``v03``)."""
    hits = [v for v in VARIANTS if v.name == name or v.name.startswith(name)]
    if len(hits) != 1:
        raise SystemExit(f"No single variant matches {name!r}; choose from {', '.join(v.name for v in VARIANTS)}.")
    return hits[0]


def ensure(v: Variant, root: Path) -> Path:
    """Write variant ``v`` under ``root`` unless an identical one is there already; returns its folder."""
    from core.imaging.synthetic import write_demo

    folder = root / v.name
    stamp = folder / ".digest"
    if stamp.exists() and stamp.read_text().strip() == v.digest() and (folder / "dataset.json").exists():
        return folder
    t0 = time.perf_counter()
    write_demo(folder, v.config())
    stamp.write_text(v.digest() + "\n")
    print(f"wrote {v.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return folder


#: Slices of the simulated second labelling (fewer than any first labelling: a user's second, shorter visit).
SECOND_SLICES = 4


def second_labelling(folder: Path) -> tuple[Path, int]:
    """A simulated user's second labelling of a written variant: ``(scribbles TIFF, step)``.

    The protocol, fixed before any run and the same for every variant: the user brushes the step at the other end of
    the reaction from the one labelled first, as a user who saw only the scans would pick it (the second scan, where
    the first laths are thin and few, when the first labelling was on step 2 or later; else the last scan), on
    :data:`SECOND_SLICES` evenly spaced slices other than the first labelling's, with the same simulated brush
    (strokes wholly inside their phase, :func:`core.imaging.synthetic._scribble_slice`). Written once beside
    ``scribbles.tif`` as ``scribbles_step<k>.tif``.
    """
    import numpy as np

    from core.imaging.io import read_labels, write_labels
    from core.imaging.synthetic import _scribble_slice

    meta = json.loads((folder / "dataset.json").read_text())
    n = len(meta["steps"])
    step = 1 if meta["label_step"] >= 2 else n - 1
    path = folder / f"scribbles_step{step}.tif"
    if path.exists():
        return path, step
    truth = read_labels(folder / meta["steps"][step]["truth"])
    nz = truth.shape[0]
    taken = set(meta["label_slices"])
    candidates = [z for z in range(2, nz - 2) if z not in taken]
    pick = [candidates[int(i)] for i in np.linspace(0, len(candidates) - 1, SECOND_SLICES + 2)[1:-1].round()]
    cfg = meta["config"]
    out = np.zeros(truth.shape, dtype=np.uint8)
    for z in pick:
        out[z] = _scribble_slice(truth[z], fraction=float(cfg["scribble_fraction"]),
                                 rng=np.random.default_rng([int(cfg["seed"]), 41, step, z]))
    write_labels(path.with_suffix(".part.tif"), out, voxel_size_um=meta.get("voxel_size_um"))
    path.with_suffix(".part.tif").replace(path)
    return path, step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / ".family"), help="folder of the written variants")
    ap.add_argument("--only", action="append", default=[], help="variant name or prefix (repeatable)")
    ap.add_argument("--split", action="store_true", help="print the tuning/test split and exit")
    a = ap.parse_args(argv)
    if a.split:
        print(json.dumps(split(), indent=2))
        return 0
    chosen = [variant(n) for n in a.only] if a.only else list(VARIANTS)
    for v in chosen:
        print(ensure(v, Path(a.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
