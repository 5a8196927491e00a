"""The Ground truth step for a project: train the random forest on its brushed labels, keep the result as a
candidate, compare it with the threshold baseline, and accept it as the project's ground truth.

Shared by ``pages/3_Ground_Truth.py`` and ``python -m core ground-truth``. Files, inside the project:

``ground_truth/candidate/``  the latest training (``labels.tif`` and ``uncertainty.tif`` hold only the labelled
                             slices, stacked in the order of ``meta.json["slices"]``; ``classifier.skops`` + its
                             JSON card)
``ground_truth/accepted/``   the same layout, copied from the candidate when the user accepts it; the manifest's
                             ``ground_truth`` section points here (that is what the U-Net trains on).

Both folders are replaced whole (written to a temporary folder, then renamed), so a crash never leaves half a
result, and a refresh of the page shows the last training again.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_json
from core.errors import ReactomoError

__all__ = [
    "GT_DIR",
    "StoredGroundTruth",
    "labelled_steps",
    "train_candidate",
    "load_candidate",
    "load_accepted",
    "accept_candidate",
    "ground_truth_volume",
    "threshold_comparison",
    "most_uncertain_window",
]

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]
GT_DIR = "ground_truth"


@dataclass
class StoredGroundTruth:
    """A random-forest labelling kept in the project (candidate or accepted).

    Attributes
    ----------
    folder : Path
    step : int
        Index of the time step it labels.
    step_name : str
    slices : tuple of int
        Labelled z indices, ascending.
    labels : ndarray, uint8, shape (len(slices), y, x)
    uncertainty : ndarray, float32, shape (len(slices), y, x)
        ``1 − max class probability``.
    meta : dict
        Settings, timings, fractions, feature importances, versions (``meta.json``).
    """

    folder: Path
    step: int
    step_name: str
    slices: tuple[int, ...]
    labels: np.ndarray
    uncertainty: np.ndarray
    meta: dict[str, Any]

    def slice_labels(self, z: int) -> np.ndarray:
        return self.labels[self.slices.index(z)]

    def slice_uncertainty(self, z: int) -> np.ndarray:
        return self.uncertainty[self.slices.index(z)]


def labelled_steps(project) -> dict[int, list[int]]:
    """``{step index: [labelled z, ...]}`` for every step that has brushed labels."""
    from core.labels import LabelStore

    out: dict[int, list[int]] = {}
    for step, z in LabelStore(project).slices():
        out.setdefault(step, []).append(z)
    return {k: sorted(v) for k, v in sorted(out.items())}


def _default_step(project) -> int:
    steps = labelled_steps(project)
    if not steps:
        raise ReactomoError("No slice has brushed labels yet; brush a few pixels of every phase on the Label page first.")
    return max(steps, key=lambda s: (len(steps[s]), -s))


def _write_stack(path: Path, stack: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(path, stack, photometric="minisblack", compression="zlib", metadata={"axes": "ZYX"})


def _store(folder: Path, *, step: int, step_name: str, slices: Sequence[int], labels: np.ndarray,
           uncertainty: np.ndarray, meta: dict, forest=None, copy_classifier_from: Path | None = None) -> Path:
    """Write a complete result folder next to ``folder`` and swap it in."""
    from core.forest import save_forest

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}-{time.strftime('%Y%m%d%H%M%S')}-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_stack(tmp / "labels.tif", labels)
        _write_stack(tmp / "uncertainty.tif", uncertainty.astype(np.float32))
        if forest is not None:
            save_forest(tmp / "classifier.skops", forest)
        elif copy_classifier_from is not None:
            for p in copy_classifier_from.parent.glob("classifier.*"):
                shutil.copy2(p, tmp / p.name)
        atomic_write_json(tmp / "meta.json", {**meta, "step": int(step), "step_name": step_name,
                                               "slices": [int(z) for z in slices]})
        old = folder.parent / f".{folder.name}-old"
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _load(folder: Path) -> StoredGroundTruth | None:
    import tifffile

    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        labels = tifffile.imread(folder / "labels.tif")
        unc = tifffile.imread(folder / "uncertainty.tif")
    except (OSError, ValueError) as exc:
        raise ReactomoError(f"The ground truth in {folder} cannot be read ({exc}); train the random forest again.") from None
    slices = tuple(int(z) for z in meta["slices"])
    if labels.ndim == 2:
        labels, unc = labels[None], unc[None]
    return StoredGroundTruth(folder, int(meta["step"]), str(meta["step_name"]), slices, labels, unc, meta)


def train_candidate(
    project,
    *,
    step: int | None = None,
    feature_config=None,
    forest_config=None,
    on_progress: Progress | None = None,
) -> StoredGroundTruth:
    """Train the forest on the brushed labels of ``step`` and store the full labelling as the candidate.

    Parameters
    ----------
    project : core.project.Project
    step : int, optional
        The time step whose labels to learn from (default: the step with the most labelled slices).
    feature_config : core.features.FeatureConfig, optional
    forest_config : core.forest.ForestConfig, optional
    on_progress : callable, optional
        ``on_progress(fraction, message)``.

    Raises
    ------
    ReactomoError
        No labels, labels of one phase only, codes outside the phase table, bad settings.
    """
    from core.features import FeatureConfig
    from core.forest import ForestConfig, ground_truth_from_scribbles
    from core.labels import LabelStore

    scans = project.scans()
    if not scans:
        raise ReactomoError("This project has no scans yet; open them on the Data page first.")
    step = _default_step(project) if step is None else int(step)
    if not 0 <= step < len(scans):
        raise ReactomoError(f"Step {step} does not exist; the project has steps 0 to {len(scans) - 1}.")
    store = LabelStore(project)
    if not store.step_slices(step):
        raise ReactomoError(f"Step {scans[step].name} has no brushed labels; brush some on the Label page or pick a labelled step.")
    feature_config = feature_config or FeatureConfig()
    forest_config = forest_config or ForestConfig()
    scribbles = store.volume(step)
    with project.open_step(step) as volume:
        result = ground_truth_from_scribbles(volume, scribbles, feature_config=feature_config,
                                             forest_config=forest_config, phases=project.phases(),
                                             on_progress=on_progress)
    stacked = np.stack([result.labels[z] for z in result.slices])
    meta = {
        "kind": "random forest",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fractions": {str(k): float(v) for k, v in result.fractions.items()},
        "seconds": {k: float(v) for k, v in result.seconds.items()},
        "feature_config": feature_config.to_dict(),
        "forest_config": forest_config.to_dict(),
        "importances": [[n, float(v)] for n, v in result.forest.importances()],
        "brushed_pixels": {str(k): int(v) for k, v in result.forest.brushed_pixels.items()},
        "versions": dict(result.forest.versions),
    }
    folder = Path(project.root) / GT_DIR / "candidate"
    _store(folder, step=step, step_name=scans[step].name, slices=result.slices, labels=stacked,
           uncertainty=result.uncertainty, meta=meta, forest=result.forest)
    log.info("project %s: forest ground truth of %s on %d slices in %.1f s", project.name, scans[step].name,
             len(result.slices), result.seconds.get("total", float("nan")))
    return _load(folder)  # type: ignore[return-value]


def load_candidate(project) -> StoredGroundTruth | None:
    """The latest training, or ``None``."""
    return _load(Path(project.root) / GT_DIR / "candidate")


def load_accepted(project) -> StoredGroundTruth | None:
    """The accepted ground truth, or ``None``."""
    return _load(Path(project.root) / GT_DIR / "accepted")


def accept_candidate(project) -> StoredGroundTruth:
    """Make the candidate the project's ground truth (manifest section ``ground_truth``)."""
    cand = load_candidate(project)
    if cand is None:
        raise ReactomoError("There is no random-forest result to accept yet; train the forest first.")
    folder = Path(project.root) / GT_DIR / "accepted"
    _store(folder, step=cand.step, step_name=cand.step_name, slices=cand.slices, labels=cand.labels,
           uncertainty=cand.uncertainty, meta={**cand.meta, "accepted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
           copy_classifier_from=cand.folder / "classifier.skops")
    info = {
        "folder": f"{GT_DIR}/accepted",
        "step": cand.step,
        "step_name": cand.step_name,
        "slices": list(cand.slices),
        "kind": cand.meta.get("kind", "random forest"),
        "created": cand.meta.get("created"),
        "fractions": cand.meta.get("fractions", {}),
    }
    project.update(lambda m: m.__setitem__("ground_truth", info))
    return load_accepted(project)  # type: ignore[return-value]


def ground_truth_volume(stored: StoredGroundTruth, shape: tuple[int, int, int]) -> np.ndarray:
    """Full ``(z, y, x)`` uint8 labels: the stored slices, 0 elsewhere (what `python -m core train` reads)."""
    out = np.zeros(shape, dtype=np.uint8)
    for i, z in enumerate(stored.slices):
        out[z] = stored.labels[i]
    return out


def threshold_comparison(
    project,
    stored: StoredGroundTruth,
    *,
    method: str = "otsu",
    ranges: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Label the ground-truth slices with the threshold baseline and score both methods.

    Parameters
    ----------
    method : {"otsu", "ranges"}
        Multi-Otsu on the labelled slices (classes mapped to phases by brightness), or manual grey ranges.
    ranges : sequence of (code, low, high), required for ``"ranges"``

    Returns
    -------
    dict
        ``labels`` (uint8, like ``stored.labels``), ``ranges`` (the grey ranges used), ``dice_vs_forest``
        ({code: Dice}) and, when the project holds the demo with its known truth, ``dice_truth``
        ({"random forest": {code: Dice}, "threshold": {code: Dice}}).
    """
    from core.metrics import dice_per_phase
    from core.threshold import check_ranges, multi_otsu, threshold_ranges

    phases = project.phases()
    with project.open_step(stored.step) as vol:
        images = np.stack([np.asarray(vol.slice(0, z)) for z in stored.slices])
    if method == "otsu":
        res = multi_otsu(images, phases=phases)
        labels, used = res.labels, res.ranges
    elif method == "ranges":
        if not ranges:
            raise ReactomoError("Manual thresholds need a grey range for at least one phase.")
        used = check_ranges(ranges, phases=phases)
        labels = threshold_ranges(images, used, phases=phases)
    else:
        raise ReactomoError(f"Threshold method {method!r} is not known; use 'otsu' or 'ranges'.")
    codes = list(phases.codes)
    out: dict[str, Any] = {
        "labels": labels,
        "ranges": [r.to_dict() for r in used],
        "dice_vs_forest": dice_per_phase(labels, stored.labels, codes=codes),
    }
    demo = project.demo()
    if demo and len(demo.get("truth", [])) > stored.step:
        from core.io import open_volume

        with open_volume(project.resolve_path(demo["truth"][stored.step])) as tv:
            truth = np.stack([np.asarray(tv.slice(0, z)) for z in stored.slices])
        out["dice_truth"] = {
            "random forest": dice_per_phase(stored.labels, truth, codes=codes),
            "threshold": dice_per_phase(labels, truth, codes=codes),
        }
    return out


def most_uncertain_window(uncertainty: np.ndarray, *, window: int) -> tuple[int, int]:
    """Top-left ``(y0, x0)`` of the ``window``-sized square with the highest mean uncertainty (for relabelling)."""
    from scipy import ndimage as ndi

    ny, nx = uncertainty.shape
    h, w = min(window, ny), min(window, nx)
    mean = ndi.uniform_filter(np.nan_to_num(uncertainty.astype(np.float32)), size=(h, w), mode="constant")
    # uniform_filter centres its window; keep only centres whose whole window lies inside the slice.
    cy0, cx0 = h // 2, w // 2
    valid = mean[cy0 : ny - (h - 1 - h // 2), cx0 : nx - (w - 1 - w // 2)]
    iy, ix = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(iy), int(ix)
