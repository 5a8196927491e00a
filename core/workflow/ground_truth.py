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

import contextlib

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
    "partial_volume_sentence",
    "time_context_sentence",
    "redraw_outdated",
    "extra_slices_sentence",
    "rings_sentence",
    "train_candidate",
    "load_candidate",
    "load_accepted",
    "accept_candidate",
    "ground_truth_volume",
    "threshold_comparison",
    "HeldOutForest",
    "held_out_forest",
    "held_out_labels",
    "threshold_wins",
    "most_uncertain_window",
]

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]
GT_DIR = "ground_truth"
_FEATURE_MEMORY = 2 << 30  # keep the labelled slices' features in memory up to this many bytes; recompute beyond


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
    extra_slices : tuple of int
        Unscribbled z indices the same forest also labelled, for the U-Net to train on (never validated on;
        :func:`core.labelling.forest.extra_slices`), ascending; empty for a result from before they existed.
    extra_labels : ndarray, uint8, shape (len(extra_slices), y, x), or None
    """

    folder: Path
    step: int
    step_name: str
    slices: tuple[int, ...]
    labels: np.ndarray
    uncertainty: np.ndarray
    meta: dict[str, Any]
    extra_slices: tuple[int, ...] = ()
    extra_labels: np.ndarray | None = None

    def slice_labels(self, z: int) -> np.ndarray:
        return self.labels[self.slices.index(z)]

    def slice_uncertainty(self, z: int) -> np.ndarray:
        return self.uncertainty[self.slices.index(z)]


def labelled_steps(project) -> dict[int, list[int]]:
    """``{step index: [labelled z, ...]}`` for every step that has brushed labels."""
    from core.workflow.labels import LabelStore

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
           uncertainty: np.ndarray, meta: dict, forest=None, copy_classifier_from: Path | None = None,
           extra_slices: Sequence[int] = (), extra_labels: np.ndarray | None = None) -> Path:
    """Write a complete result folder next to ``folder`` and swap it in, one writer at a time."""
    from core.labelling.forest import save_forest
    import os
    import uuid

    from core.atomic import remove_orphan_temporaries, writer_lock

    folder.parent.mkdir(parents=True, exist_ok=True)
    # one writer at a time (a second one waits for the first, then writes whole); what a crashed writer left goes
    with writer_lock(folder, what=f"the ground truth ({folder.name})", wait_s=120.0):
        remove_orphan_temporaries(folder.parent, (f".{folder.name}-*-tmp", f".{folder.name}-old"))
        tmp = folder.parent / f".{folder.name}-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}-tmp"
        tmp.mkdir()
        try:
            _write_stack(tmp / "labels.tif", labels)
            _write_stack(tmp / "uncertainty.tif", uncertainty.astype(np.float32))
            if len(extra_slices):
                _write_stack(tmp / "extra_labels.tif", extra_labels)
            if forest is not None:
                save_forest(tmp / "classifier.skops", forest)
            elif copy_classifier_from is not None:
                for p in copy_classifier_from.parent.glob("classifier.*"):
                    shutil.copy2(p, tmp / p.name)
            atomic_write_json(tmp / "meta.json", {**meta, "step": int(step), "step_name": step_name,
                                                   "slices": [int(z) for z in slices],
                                                   "extra_slices": [int(z) for z in extra_slices]})
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
        extra_slices = tuple(int(z) for z in meta.get("extra_slices") or ())
        extra = tifffile.imread(folder / "extra_labels.tif") if extra_slices else None
    except (OSError, ValueError) as exc:
        raise ReactomoError(f"The ground truth in {folder} cannot be read ({exc}); train the random forest again.") from None
    slices = tuple(int(z) for z in meta["slices"])
    if labels.ndim == 2:
        labels, unc = labels[None], unc[None]
    if extra is not None and extra.ndim == 2:
        extra = extra[None]
    return StoredGroundTruth(folder, int(meta["step"]), str(meta["step_name"]), slices, labels, unc, meta,
                             extra_slices, extra)


def train_candidate(
    project,
    *,
    step: int | None = None,
    feature_config=None,
    forest_config=None,
    on_progress: Progress | None = None,
    time_context: int | None = None,
    extra_slices: int | None = None,
) -> StoredGroundTruth:
    """Train the forest on the brushed labels of ``step`` and store the full labelling as the candidate.

    Parameters
    ----------
    project : core.workflow.project.Project
    step : int, optional
        The time step whose labels to learn from (default: the step with the most labelled slices).
    feature_config : core.labelling.features.FeatureConfig, optional
    forest_config : core.labelling.forest.ForestConfig, optional
    on_progress : callable, optional
        ``on_progress(fraction, message)``.
    time_context : int, optional
        Time steps on each side of ``step`` whose scans the forest also reads when they are aligned (default
        :data:`core.labelling.forest.TIME_CONTEXT`; :func:`core.segmentation.temporal.aligned_neighbours`). What was
        read, or why not, is kept in the candidate's ``meta["time_context"]``.
    extra_slices : int, optional
        How many unscribbled slices of ``step`` the same forest also labels, for the U-Net to train on (a count,
        :data:`core.labelling.forest.ALL_SLICES` or :data:`~core.labelling.forest.AUTO_SLICES`; default
        :data:`core.labelling.forest.EXTRA_SLICES`), spread over the stack (:func:`core.labelling.forest.extra_slices`;
        the training leaves out those beside its held-out slices). Kept as ``extra_slices``/``extra_labels``; the
        result's ``slices`` stay the scribbled ones.

    Raises
    ------
    ReactomoError
        No labels, labels of one phase only, codes outside the phase table, bad settings.
    """
    from core.labelling.features import FeatureConfig
    from core.labelling.forest import (EXTRA_SLICES, TIME_CONTEXT, ForestConfig, check_extra_memory,
                                       extra_slices as choose_extra, ground_truth_from_scribbles)
    from core.segmentation.temporal import aligned_neighbours
    from core.workflow.labels import LabelStore

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
    n_extra = EXTRA_SLICES if extra_slices is None else extra_slices
    brushed = [int(z) for z in np.flatnonzero(scribbles.reshape(scribbles.shape[0], -1).any(axis=1))]
    plane = int(scribbles.shape[1]) * int(scribbles.shape[2])
    more = choose_extra(scribbles.shape[0], brushed, [], n_extra, plane_px=plane)
    check_extra_memory(len(more), plane, what="fewer slices labelled for the U-Net (--extra-slices)")
    around = aligned_neighbours([s.path for s in scans], step, TIME_CONTEXT if time_context is None else time_context)
    around["names"] = [scans[t].name for t in around["steps"]]  # to tell later whether they are still those scans
    with contextlib.ExitStack() as opened:
        volume = opened.enter_context(project.open_step(step))
        near = {off: opened.enter_context(project.open_step(t)) for off, t in zip(around["offsets"], around["steps"])}
        result = ground_truth_from_scribbles(volume, scribbles, feature_config=feature_config,
                                             forest_config=forest_config, phases=project.phases(),
                                             on_progress=on_progress, neighbours=near, also=more)
        grey = np.stack([volume.slice(0, z) for z in result.slices])
    stacked = np.stack([result.labels[z] for z in result.slices])  # the scribbled slices and the extra ones
    # the pores' and the inert phases' edges redrawn from the scan (the forest spreads a high-contrast phase by its
    # smoothed features, never shown an edge to refuse), as `core run` does by default: core.labelling.partial_volume
    from core.labelling.partial_volume import default_codes, matrix_codes, redraw_partial_volume

    redrawn = []
    matrix = matrix_codes(project.phases())  # the phase around each edge read from beyond its band, as `run` does
    for code in default_codes(project.phases()):
        stacked, info = redraw_partial_volume(grey, stacked, int(code), matrix=matrix)
        redrawn.append(info)
    del grey
    own = [i for i, z in enumerate(result.slices) if z not in set(more)]
    at = [i for i, z in enumerate(result.slices) if z in set(more)]
    slices = tuple(result.slices[i] for i in own)
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
        "labels_sha256": _labels_digest(scribbles),
        "partial_volume": redrawn,
        "time_context": around,
        "rings": project.rings(),  # how the scans were read (ring artefacts removed or kept)
    }
    folder = Path(project.root) / GT_DIR / "candidate"
    _store(folder, step=step, step_name=scans[step].name, slices=slices, labels=stacked[own],
           uncertainty=result.uncertainty[own], meta=meta, forest=result.forest,
           extra_slices=more, extra_labels=stacked[at] if at else None)
    log.info("project %s: forest ground truth of %s on %d slices (and %d more for the U-Net) in %.1f s", project.name,
             scans[step].name, len(slices), len(more), result.seconds.get("total", float("nan")))
    return _load(folder)  # type: ignore[return-value]


def time_context_sentence(stored: StoredGroundTruth, scans=None) -> str:
    """One sentence on the neighbouring time steps the forest read beside the labelled one ("" when it was told to
    read none). ``scans`` (the project's :class:`core.imaging.io.ScanInfo` list) names the steps."""
    tc = stored.meta.get("time_context") or {}
    if not tc or not tc.get("reach"):
        return ""

    def name(t: int) -> str:
        return scans[t].name if scans is not None and 0 <= t < len(scans) else f"step {t}"

    if tc.get("applied"):
        steps = [name(int(t)) for t in tc.get("steps") or []]
        return (f"The forest also read {' and '.join(steps) if len(steps) <= 2 else ', '.join(steps)}, the same slices "
                f"of the neighbouring step{'s' if len(steps) > 1 else ''} (the scans are aligned): a thin young lath is "
                "thicker a step later, and the rock's static structure is the same at every step.")
    return f"The forest read {stored.step_name} alone: {tc.get('reason') or 'no neighbouring step could be read'}."


def rings_sentence(stored: StoredGroundTruth, project=None) -> str:
    """One sentence on how the forest read the scans: with their ring artefacts removed or as reconstructed; and when
    the project's setting has changed since ("" for a labelling made before the setting existed, read as is)."""
    mode = stored.meta.get("rings")
    if mode is None:
        return ""
    said = ("The forest read the scans with their ring artefacts removed (measured on each scan around the rotation "
            "axis; the Data page's setting)." if mode == "remove" else
            "The forest read the scans as reconstructed, ring artefacts kept (the Data page's setting).")
    if project is not None and project.rings() != mode:
        said += (" The project's setting has changed since: train the forest again so that it reads the scans as the "
                 "network will.")
    return said


def _joined(words: list[str], last: str) -> str:
    """"a", "a and b", "a, b and c" (``last`` the closing word)."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}" if words else "no phase"


def partial_volume_sentence(stored: StoredGroundTruth, phases) -> str:
    """One sentence on the edges redrawn from the scan in this ground truth ("" when none was)."""
    done = [i for i in stored.meta.get("partial_volume") or [] if i.get("applied")]
    if not done:
        return ""
    parts = []
    for i in done:
        before, after = int(i["before"]), int(i["after"])
        change = 100.0 * (after / before - 1) if before else 0.0
        sign = f"{change:+.1f}".replace("-", "−")  # a typographic minus, as elsewhere on the pages
        parts.append(f"{phases.by_code(int(i['code'])).name} {before:,} → {after:,} px ({sign} %)")
    around = sum(int(i.get("matrix_relabelled") or 0) for i in done)
    matrix = [int(c) for c in (done[0].get("matrix") or [])]
    beyond = ""
    if matrix:
        named = _joined([phases.by_code(c).name for c in matrix if c in phases.codes], "or")
        beyond = (f" Within each edge's band, where a pixel is a blend of the two sides, {around:,} px of {named} were "
                  "given the label found just beyond the band.")
    return ("Edges redrawn from the scan by partial volume (linear unmixing), since the forest misplaces the edges of "
            "phases far from their neighbours' grey: " + "; ".join(parts) + "." + beyond)


def extra_slices_sentence(stored: StoredGroundTruth | None) -> str:
    """What the forest labelled beyond the scribbled slices for the U-Net, in one sentence ("" when nothing)."""
    if stored is None or not stored.extra_slices:
        return ""
    zs = stored.extra_slices
    shown = ", ".join(str(z) for z in zs[:8]) + (f", … {zs[-1]}" if len(zs) > 8 else "")
    return (f"The forest also labelled {len(zs)} unscribbled slice{'s' if len(zs) != 1 else ''} of {stored.step_name} "
            f"(z {shown}) for the U-Net to train on; it never validates on them, and leaves out those beside a "
            "held-out slice.")


def redraw_outdated(stored: StoredGroundTruth | None, phases) -> str:
    """One sentence when ``stored`` had other edges redrawn than the current default redraws ("" when the same).

    A labelling kept from before a default changed (celestite alone until 2026-12-06, 13:00 UTC; nothing before
    that) is still a valid labelling, so it is not refused, but the U-Net taught by it learns the edges the forest
    drew for the phases it leaves out, and ``core run`` would redraw them: the user is told, and how to catch up.
    """
    from core.labelling.partial_volume import default_codes, matrix_codes

    if stored is None:
        return ""
    want = default_codes(phases)
    done = [i for i in stored.meta.get("partial_volume") or [] if "code" in i]
    had = [int(i["code"]) for i in done]

    def names(codes):
        known = [phases.by_code(c).name for c in codes if c in phases.codes]
        return ", ".join(known) if known else "no phase"

    if had == want:
        want_matrix = matrix_codes(phases) if want else []
        had_matrix = [int(c) for c in (done[0].get("matrix") or [])] if done else []
        if had_matrix == want_matrix:
            return ""
        now = (f"re-reads the {_joined([phases.by_code(c).name for c in want_matrix if c in phases.codes], 'and')} "
               "labels within each edge's band from beyond it" if want_matrix
               else "keeps the forest's labels within each edge's band")
        return (f"This labelling was made with an earlier default for the phase around a redrawn edge; the workflow "
                f"now {now}, as `core run` does. Train the forest again to label with the current default.")
    return (f"This labelling was made with an earlier default: the edges redrawn from the scan were those of "
            f"{names(had)}; the workflow now redraws {names(want)}, in this order, as `core run` does. Train the "
            "forest again to label with the current default (the network learns these edges).")


def _labels_digest(scribbles: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(scribbles, dtype=np.uint8).tobytes()).hexdigest()


def staleness(project, stored: StoredGroundTruth | None) -> str | None:
    """Why ``stored`` (a forest's result) no longer matches the brushed labels of its step, or None when it does.

    A result trained before more slices were brushed (or some were changed or erased) must not be offered for
    acceptance as if it were current."""
    from core.workflow.labels import LabelStore

    if stored is None:
        return None
    store = LabelStore(project)
    now = store.step_slices(stored.step)
    was = list(stored.slices)
    if sorted(now) != sorted(was):
        added, gone = sorted(set(now) - set(was)), sorted(set(was) - set(now))
        parts = ([f"{len(added)} slice{'s' if len(added) != 1 else ''} brushed since ({', '.join(f'z {z}' for z in added[:6])})"]
                 if added else []) + ([f"{len(gone)} no longer labelled"] if gone else [])
        return (f"This forest was trained on {len(was)} slice{'s' if len(was) != 1 else ''} of {stored.step_name}; "
                f"{' and '.join(parts)}. Train it again to use every label.")
    digest = stored.meta.get("labels_sha256")
    if digest and digest != _labels_digest(store.volume(stored.step)):
        return (f"The labels of {stored.step_name} changed after this forest was trained (strokes added, erased or "
                "undone). Train it again to use them.")
    return _neighbours_changed(project, stored)


def _neighbours_changed(project, stored: StoredGroundTruth) -> str | None:
    """A sentence when the neighbouring steps the forest read are no longer the project's scans at those steps."""
    tc = stored.meta.get("time_context") or {}
    names, steps = tc.get("names"), tc.get("steps") or []
    if not names:
        return None
    scans = project.scans()
    now = [scans[int(t)].name if 0 <= int(t) < len(scans) else None for t in steps]
    if now == list(names):
        return None
    return (f"The forest also read {', '.join(names)} beside {stored.step_name}, but the project's scans at those steps "
            "have changed since. Train it again to read the current ones.")


def load_candidate(project) -> StoredGroundTruth | None:
    """The latest training, or ``None``."""
    return _load(Path(project.root) / GT_DIR / "candidate")


def load_accepted(project) -> StoredGroundTruth | None:
    """The accepted ground truth, or ``None``."""
    return _load(Path(project.root) / GT_DIR / "accepted")


def accept_candidate(project) -> StoredGroundTruth:
    """Make the candidate the project's ground truth (manifest section ``ground_truth``)."""
    from core.atomic import writer_lock

    # the candidate stays locked while it is copied: labels and classifier come from the same training, never
    # from one training and the one that another process swapped in meanwhile (locks always taken in this order)
    with writer_lock(Path(project.root) / GT_DIR / "candidate", what="the forest's result", wait_s=120.0):
        cand = load_candidate(project)
        if cand is None:
            raise ReactomoError("There is no random-forest result to accept yet; train the forest first.")
        stale = staleness(project, cand)
        if stale:
            raise ReactomoError(stale.replace("Train it again", "Train the forest again before accepting"))
        folder = Path(project.root) / GT_DIR / "accepted"
        _store(folder, step=cand.step, step_name=cand.step_name, slices=cand.slices, labels=cand.labels,
               uncertainty=cand.uncertainty,
               meta={**cand.meta, "accepted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
               copy_classifier_from=cand.folder / "classifier.skops", extra_slices=cand.extra_slices,
               extra_labels=cand.extra_labels)
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
    held_out: HeldOutForest | None = None,
) -> dict[str, Any]:
    """Label the ground-truth slices with the threshold baseline and score both methods.

    Which method is better is judged against a reference neither was made from (the honest reference):

    - the demo's known truth on the labelled slices, when the project has one (every pixel, edges included);
    - otherwise the **held-out scribbles** of ``held_out`` (:func:`held_out_forest`): the forest's label of each
      scribbled pixel comes from a forest trained without that pixel's slice (or stroke), and the threshold is
      scored on the same pixels. Scoring the stored forest on all its scribbles would favour it, since those are
      the pixels it was trained on. Scribbles lie mostly inside phases, so both scores run higher than on whole
      slices; the comparison between the two is what counts.

    ``dice_vs_forest`` is agreement between the two methods, not quality: it judges neither.

    Parameters
    ----------
    method : {"otsu", "ranges"}
        Multi-Otsu on the labelled slices (classes mapped to phases by brightness), or manual grey ranges.
    ranges : sequence of (code, low, high), required for ``"ranges"``
    held_out : HeldOutForest, optional
        Held-out forest labels of the same slices (from :func:`held_out_forest`); without it and without a known
        truth there is no verdict.

    Returns
    -------
    dict
        ``labels`` (uint8, like ``stored.labels``), ``ranges`` (the grey ranges used), ``dice_vs_forest``
        ({code: Dice}); when the project holds the demo with its known truth, ``dice_truth`` ({"random forest":
        {code: Dice}, "threshold": {code: Dice}}); with ``held_out``, ``dice_held_out`` (the same two keys, on the
        held-out scribbles); and ``verdict``: ``{"reference": str or None, "phases": [codes where the threshold
        wins], "sentence": str or None}`` from :func:`threshold_wins`.
    """
    from core.segmentation.metrics import dice_per_phase
    from core.labelling.threshold import check_ranges, multi_otsu, threshold_ranges

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
        from core.imaging.io import open_volume

        with open_volume(project.resolve_path(demo["truth"][stored.step])) as tv:
            truth = np.stack([np.asarray(tv.slice(0, z)) for z in stored.slices])
        out["dice_truth"] = {
            "random forest": dice_per_phase(stored.labels, truth, codes=codes),
            "threshold": dice_per_phase(labels, truth, codes=codes),
        }
    skip: Sequence[int] = ()
    if held_out is not None:
        if not isinstance(held_out, HeldOutForest):
            raise ReactomoError(f"held_out must be a HeldOutForest (from held_out_forest); got {type(held_out).__name__}.")
        if held_out.scribbles.shape != labels.shape:
            raise ReactomoError(f"The held-out labels have shape {held_out.scribbles.shape} but the ground-truth slices are "
                                f"{labels.shape}; compute them for this ground truth.")
        if held_out.scribbles.any():
            out["dice_held_out"] = {"random forest": held_out.dice(codes=codes),
                                    "threshold": dice_per_phase(labels, held_out.scribbles, codes=codes)}
            skip = held_out.unjudged
    if "dice_truth" in out:
        reference, scores = "against the demo's known truth", out["dice_truth"]
    elif "dice_held_out" in out:
        reference, scores = "on the held-out scribbles", out["dice_held_out"]
    else:
        reference, scores = None, None
    wins, sentence = (threshold_wins(scores["random forest"], scores["threshold"], phases=phases, reference=reference,
                                     skip=() if "dice_truth" in out else skip) if scores else ([], None))
    out["verdict"] = {"reference": reference, "phases": wins, "sentence": sentence}
    return out


def _fmt_pair(a: float, b: float) -> tuple[str, str]:
    """Two Dice values with enough decimals (2, more when they would read the same) to show which is higher."""
    for d in (2, 3, 4):
        x, y = f"{a:.{d}f}", f"{b:.{d}f}"
        if x != y:
            return x, y
    return f"{a:.5f}", f"{b:.5f}"


def threshold_wins(
    forest_dice: dict[int, float],
    threshold_dice: dict[int, float],
    *,
    phases,
    reference: str,
    skip: Sequence[int] = (),
    margin: float = 0.0,
) -> tuple[list[int], str | None]:
    """The phases where the threshold baseline agrees with a reference better than the forest does, and one sentence.

    Parameters
    ----------
    forest_dice, threshold_dice : dict
        ``{code: Dice}`` of each method against the same reference (``nan`` or None = not scored).
    phases : PhaseTable
        Gives the order and the names.
    reference : str
        How the sentence names the reference, e.g. ``"on the held-out scribbles"``.
    skip : sequence of int
        Codes not to judge (e.g. a phase brushed in one fold only, which a held-out forest never saw).
    margin : float
        The threshold wins where its Dice exceeds the forest's by more than this (default 0: any higher value).

    Returns
    -------
    (list of int, str or None)
        The codes where the threshold wins, in table order, and the sentence (None when it wins nowhere).

    Examples
    --------
    >>> from core.phases import DEFAULT_PHASES
    >>> threshold_wins({3: 0.91, 1: 0.97}, {3: 0.93, 1: 0.80}, phases=DEFAULT_PHASES, reference="on the held-out scribbles")[1]
    "The threshold beats the forest on pore (Dice 0.93 vs 0.91) on the held-out scribbles: brush more pore pixels near its edges, or check the forest's features."
    """
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
        raise ReactomoError(f"margin must be a number from 0 to 1; got {margin!r}.")

    def finite(v) -> bool:
        return v is not None and np.isfinite(v)

    wins: list[tuple[int, str, float, float]] = []
    for p in phases:
        f, t = forest_dice.get(p.code), threshold_dice.get(p.code)
        if p.code in skip or not (finite(f) and finite(t)):
            continue
        if float(t) > float(f) + margin:
            wins.append((p.code, p.name, float(t), float(f)))
    if not wins:
        return [], None
    items = []
    for i, (_, name, t, f) in enumerate(wins):
        a, b = _fmt_pair(t, f)
        items.append(f"{name} ({'Dice ' if i == 0 else ''}{a} vs {b})")
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    advice = (f"brush more {wins[0][1]} pixels near its edges" if len(wins) == 1
              else "brush more pixels of these phases near their edges")
    return ([c for c, *_ in wins],
            f"The threshold beats the forest on {listed} {reference}: {advice}, or check the forest's features.")


@dataclass
class HeldOutForest:
    """Forest labels of scribbled pixels, each from a forest that was trained without them (cross-validation).

    Attributes
    ----------
    by : {"slice", "stroke", "none"}
        How the scribbles were split: by labelled slice (two or more slices), by stroke (the connected brushed
        regions of one slice), or not at all (nothing could be held out; see ``note``).
    folds : int
        Number of groups: the forest was trained once per group, without it.
    scribbles : ndarray, uint8, shape (n_slices, y, x)
        The brushed codes of the pixels that got a held-out label, 0 elsewhere (the reference).
    forest : ndarray, uint8, shape (n_slices, y, x)
        The held-out forest labels of those pixels, 0 elsewhere.
    unjudged : tuple of int
        Codes brushed in one group only: the forest that had to label them never saw the phase, so their held-out
        score says nothing about the forest (left out of the verdict).
    note : str or None
        One sentence on what could not be held out, if anything.
    """

    by: str
    folds: int
    scribbles: np.ndarray
    forest: np.ndarray
    unjudged: tuple[int, ...] = ()
    note: str | None = None

    def dice(self, labels: np.ndarray | None = None, *, codes: Sequence[int]) -> dict[int, float]:
        """Dice per phase of ``labels`` (default: the held-out forest labels) on the held-out scribbles."""
        from core.segmentation.metrics import dice_per_phase

        return dice_per_phase(self.forest if labels is None else labels, self.scribbles, codes=codes)

    def describe(self) -> str:
        """One sentence for a caption: what the held-out reference is."""
        if self.by == "none":
            return self.note or "No scribble could be held out."
        group = "labelled slice" if self.by == "slice" else "brushed stroke"
        return (f"Held-out scribbles: the forest was trained again {self.folds} times, each time without one group of "
                f"{group}s, and scored on the scribbles it did not see; the threshold is scored on the same pixels. "
                "Scribbles lie mostly inside phases, so both scores run higher than on whole slices.")


def _folds(scribbles: np.ndarray, folds: int) -> tuple[np.ndarray, str, int]:
    """Group id per brushed pixel (int16, -1 where unbrushed), how the groups were made, and how many there are."""
    n = scribbles.shape[0]
    group = np.full(scribbles.shape, -1, np.int16)
    if n >= 2:
        k = min(folds, n)
        for i in range(n):  # interleaved: every group spans the depth of the labelled slices
            group[i][scribbles[i] > 0] = i % k
        return group, "slice", k
    from scipy import ndimage as ndi

    comps = []
    for c in (int(v) for v in np.unique(scribbles[0]) if v):
        lab, m = ndi.label(scribbles[0] == c, structure=np.ones((3, 3), bool))
        comps.append((lab, m))
    k = min(folds, max((m for _, m in comps), default=0))
    if k < 2:
        return group, "none", 0
    for lab, m in comps:  # per phase, the largest stroke first, dealt round the groups
        sizes = np.bincount(lab.ravel(), minlength=m + 1)[1:]
        lut = np.full(m + 1, -1, np.int16)
        lut[np.argsort(-sizes, kind="stable") + 1] = np.arange(m) % k
        mask = lab > 0
        group[0][mask] = lut[lab[mask]]
    return group, "stroke", k


def held_out_labels(
    scan: np.ndarray | Any,
    scribbles: np.ndarray,
    slices: Sequence[int],
    *,
    feature_config=None,
    forest_config=None,
    phases=None,
    folds: int = 5,
    n_jobs: int | None = None,
    on_progress: Progress | None = None,
    neighbours=None,
) -> HeldOutForest:
    """Cross-validate the forest on the scribbles: label each scribbled pixel with a forest trained without it.

    The scribbles are split into ``folds`` groups: by labelled slice when there are two or more (slice ``i`` of
    ``slices`` goes to group ``i % folds``), else by stroke (each phase's connected brushed regions of the one slice,
    largest first, dealt round the groups). For each group the forest is trained on the other groups' scribbles
    with the same features and settings, and labels the slices of the group (with its edge-aware refinement); its
    labels are kept on the group's scribbled pixels only.

    Parameters
    ----------
    scan : ndarray (z, y, x) or core.imaging.io.Volume
        The labelled time step; not modified.
    scribbles : ndarray, uint8, shape (len(slices), y, x)
        Brushed codes of the labelled slices (0 = unlabelled), in the order of ``slices``.
    slices : sequence of int
        The z index of each scribble slice.
    feature_config, forest_config : FeatureConfig, ForestConfig, optional
        The forest's settings (default: the defaults).
    phases : PhaseTable, optional
    folds : int
        Groups, 2-20 (fewer when there are fewer slices or strokes).
    n_jobs : int, optional
        Threads.
    on_progress : callable, optional
        ``on_progress(fraction, message)``.
    neighbours : mapping of int to scan, optional
        The neighbouring time steps the forest also reads, as in
        :func:`core.labelling.forest.ground_truth_from_scribbles` (the same features, so the same forest is judged).

    Returns
    -------
    HeldOutForest

    Raises
    ------
    ReactomoError
        Scribbles not matching ``slices`` or the scan, or bad settings.
    """
    from core.labelling.features import FeatureConfig, FeatureStack, intensity_reference, volume_features
    from core.labelling.forest import ForestConfig, _check_neighbours, predict_forest, train_forest, with_neighbours
    from core.phases import DEFAULT_PHASES

    progress = on_progress or (lambda f, m: None)
    feature_config = feature_config or FeatureConfig()
    forest_config = forest_config or ForestConfig()
    phases = phases or DEFAULT_PHASES
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 2 <= folds <= 20:
        raise ReactomoError(f"folds must be a whole number from 2 to 20; got {folds!r}.")
    scribbles = np.asarray(scribbles)
    zs = [int(z) for z in slices]
    if scribbles.ndim != 3 or scribbles.shape[0] != len(zs) or scribbles.dtype != np.uint8:
        raise ReactomoError(f"The scribbles must be uint8 (n_slices, y, x) with one slice per z in slices ({len(zs)}); "
                            f"got {scribbles.dtype} {scribbles.shape}.")
    if tuple(scan.shape[1:]) != scribbles.shape[1:] or any(not 0 <= z < scan.shape[0] for z in zs):
        raise ReactomoError(f"The scribbles {scribbles.shape[1:]} on slices {zs} do not fit the scan {tuple(scan.shape)}.")
    group, by, k = _folds(scribbles, int(folds))
    empty = np.zeros_like(scribbles)
    if by == "none":
        return HeldOutForest("none", 0, empty, empty.copy(), note=(
            "Every phase is brushed as one stroke on one slice, so no scribble can be held out to check the forest; "
            "brush a second slice or a few more strokes."))
    codes = [int(c) for c in np.unique(scribbles) if c]
    unjudged = tuple(c for c in codes if np.unique(group[scribbles == c]).size < 2)

    others = _check_neighbours(neighbours, tuple(scan.shape))
    volumes = [(0, scan)] + others
    references = {}
    for off, v in volumes:
        references[off] = (intensity_reference(v, percentiles=feature_config.percentiles)
                           if feature_config.normalise == "volume" else None)

    def features(batch: list[int], on_progress=None) -> list:
        n = len(volumes)
        parts = [volume_features(v, batch, config=feature_config, reference=references[off], n_jobs=n_jobs,
                                 on_progress=None if on_progress is None else
                                 (lambda f, m, j=j: on_progress((j + f) / n, m)))
                 for j, (off, v) in enumerate(volumes)]
        return [with_neighbours(own, [(off, p[i]) for (off, _), p in zip(others, parts[1:])])
                for i, own in enumerate(parts[0])]

    plane_bytes = 4 * scribbles.shape[1] * scribbles.shape[2] * (feature_config.n_features * len(volumes) + 1)
    keep = plane_bytes * len(zs) <= _FEATURE_MEMORY
    full: list = [None] * len(zs)
    if keep:  # all slices at once: computed in parallel threads
        full = features(zs, on_progress=lambda f, m: progress(0.4 * f, m))
    brushed: list = []  # per slice: (compact FeatureStack of its brushed pixels, their codes, their groups)
    for i, z in enumerate(zs):
        st = full[i] if keep else features([z])[0]
        mask = scribbles[i] > 0
        compact = FeatureStack(data=np.ascontiguousarray(st.data[:, mask])[:, None, :], names=st.names,
                               guide=np.zeros((1, int(mask.sum())), np.float32), z=None, config=feature_config,
                               reference=st.reference)
        brushed.append((compact, scribbles[i][mask][None, :], group[i][mask][None, :]))
        if not keep:
            progress(0.4 * (i + 1) / len(zs), f"Features of slice {z} ({i + 1} of {len(zs)})")

    scored, labels = np.zeros_like(scribbles), np.zeros_like(scribbles)
    skipped = []
    for f in range(k):
        inputs, targets = [], []
        for compact, lab, grp in brushed:
            train = np.where(grp != f, lab, 0).astype(np.uint8)
            if train.any():
                inputs.append(compact)
                targets.append(train)
        if len({int(c) for t in targets for c in np.unique(t) if c}) < 2:
            skipped.append(f)  # one phase left to learn from: no forest to judge
            continue
        forest = train_forest(inputs, targets, config=forest_config, phases=phases, n_jobs=n_jobs)
        for i, z in enumerate(zs):
            held = group[i] == f
            if not held.any():
                continue
            st = full[i] if full[i] is not None else features([z])[0]
            pred = predict_forest(forest, st, n_jobs=n_jobs)
            labels[i][held] = pred.labels[held]
            scored[i][held] = scribbles[i][held]
        progress(0.4 + 0.6 * (f + 1) / k, f"Held out group {f + 1} of {k}")
    note = None
    if skipped:
        note = (f"{len(skipped)} of {k} groups could not be held out (the other groups brush a single phase), so "
                "their scribbles are not scored.")
    return HeldOutForest(by, k, scored, labels, unjudged=unjudged, note=note)


def held_out_forest(project, stored: StoredGroundTruth, *, folds: int = 5, on_progress: Progress | None = None) -> HeldOutForest:
    """:func:`held_out_labels` for a project's ground truth: its step, its slices, its forest settings, and the
    scribbles now on those slices (the honest reference for :func:`threshold_comparison`)."""
    from core.labelling.features import FeatureConfig
    from core.labelling.forest import ForestConfig
    from core.workflow.labels import LabelStore

    store = LabelStore(project)
    scribbles = np.stack([store.get(stored.step, z) for z in stored.slices])
    fcfg = FeatureConfig.from_dict(stored.meta["feature_config"]) if stored.meta.get("feature_config") else None
    rcfg = ForestConfig.from_dict(stored.meta["forest_config"]) if stored.meta.get("forest_config") else None
    around = stored.meta.get("time_context") or {}
    if moved := _neighbours_changed(project, stored):
        raise ReactomoError(moved)
    with contextlib.ExitStack() as opened:
        vol = opened.enter_context(project.open_step(stored.step))
        near = {int(off): opened.enter_context(project.open_step(int(t)))
                for off, t in zip(around.get("offsets") or [], around.get("steps") or [])}
        return held_out_labels(vol, scribbles, stored.slices, feature_config=fcfg, forest_config=rcfg,
                               phases=project.phases(), folds=folds, on_progress=on_progress, neighbours=near)


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
