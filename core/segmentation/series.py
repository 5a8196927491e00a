"""Segment every time step of an experiment: one model, many scans, locally or on a Dask cluster.

Each step is one task: load the model (once per process, :func:`core.network.inference.load_model_cached`), segment the
scan slab by slab (:func:`core.network.inference.segment_volume`), clean it (:mod:`core.segmentation.postprocess`) and write
``OUT/<scan name>.tif`` atomically. After every finished step the folder's record is rewritten atomically:

- ``segmentation.json``: the model (name, card checksum), every setting, library versions, and per step its
  status (``done`` / ``failed`` with the sentence / ``pending``), voxel counts, timings and warnings;
- ``phase_volumes.csv``: ``step, time_s, scan`` then per phase ``<name>_voxels``, ``<name>_volume_mm3`` and
  ``<name>_fraction`` (of the segmented voxels) for the steps done so far.

So a crash at step 37 keeps steps 0-36, and running again with ``resume=True`` (the default) skips the steps whose
label file exists and whose record matches the model and settings. A step that fails (a corrupt file in the
middle of a series) is reported with its sentence; the other steps still complete.

Schedulers
----------
``scheduler=None`` and ``workers=1``: in this process, one step after the other, with progress within each step.
``scheduler="local"`` (or ``workers > 1``): a Dask ``LocalCluster`` of ``workers`` single-threaded workers
(threads of this process, so the model is loaded once and shared; torch's own threads are divided among them).
``scheduler="tcp://host:port"``: an existing Dask cluster (e.g. one started by dask-jobqueue on SLURM); every
worker must see the model folder, the scans and the output folder at the same paths (a shared filesystem), and
loads the model once. Progress then moves step by step.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_json, atomic_write_text
from core.errors import ReactomoError
from core.phases import PhaseTable

__all__ = ["StepOutcome", "SeriesResult", "segment_series", "read_series_record",
           "phase_volumes_rows", "versions", "configured_schedulers", "check_offered_scheduler", "ENV_SCHEDULERS"]

log = logging.getLogger(__name__)

RECORD = "segmentation.json"
VOLUMES = "phase_volumes.csv"
FORMAT = "reactomo.segmentation"
TEMPORAL_DIR = ".probabilities"  # the steps' class probabilities while the series waits to be labelled together
STAGING_DIR = ".staged"  # inside TEMPORAL_DIR: the new labels before they are renamed into place
_PASS_BYTES = 512 * 1024**2  # working memory of the pass that labels the steps together


def versions() -> dict[str, str]:
    """Versions of the libraries that shape a result (recorded with every model and segmentation)."""
    import scipy
    import tifffile
    import torch

    import core

    out = {"reactomo": getattr(core, "__version__", "0"), "python": platform.python_version(), "numpy": np.__version__,
           "scipy": scipy.__version__, "torch": torch.__version__, "tifffile": tifffile.__version__}
    from core.network.hardware import machine

    m = machine()  # the same code and seed round differently on another instruction set: say which computed it
    out.update(cpu=m["cpu"], cpu_capability=m["cpu_capability"])
    try:
        import dask
        import distributed

        out.update(dask=dask.__version__, distributed=distributed.__version__)
    except ImportError:  # pragma: no cover - dask is a dependency
        pass
    return out


@dataclass
class StepOutcome:
    """What happened to one step."""

    step: int
    scan: str
    out_path: str
    status: str = "pending"  # pending | done | failed | cancelled
    counts: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    mvoxel_per_s: float = 0.0
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    cleaning: dict[str, Any] | None = None
    time_s: float | None = None
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "scan": self.scan, "out_path": self.out_path, "status": self.status,
                "counts": {str(k): int(v) for k, v in self.counts.items()}, "seconds": round(self.seconds, 3),
                "mvoxel_per_s": round(self.mvoxel_per_s, 4), "error": self.error, "warnings": list(self.warnings),
                "cleaning": self.cleaning, "time_s": self.time_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepOutcome":
        return cls(step=int(d["step"]), scan=str(d["scan"]), out_path=str(d["out_path"]), status=str(d.get("status", "pending")),
                   counts={int(k): int(v) for k, v in (d.get("counts") or {}).items()}, seconds=float(d.get("seconds", 0)),
                   mvoxel_per_s=float(d.get("mvoxel_per_s", 0)), error=str(d.get("error", "")),
                   warnings=list(d.get("warnings") or []), cleaning=d.get("cleaning"), time_s=d.get("time_s"))


@dataclass
class SeriesResult:
    """Outcome of :func:`segment_series`."""

    out_dir: Path
    steps: list[StepOutcome]
    seconds: float
    scheduler: str
    record: dict[str, Any]

    @property
    def done(self) -> list[StepOutcome]:
        return [s for s in self.steps if s.status == "done"]

    @property
    def failed(self) -> list[StepOutcome]:
        return [s for s in self.steps if s.status == "failed"]


# ------------------------------------------------------------------------------------------------- one step
def _segment_one(model_dir: str, scan: str, out_path: str, settings: dict[str, Any], device: str,
                 on_progress: Callable[[float, str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 neighbours: list[str | None] | None = None) -> dict[str, Any]:
    """Segment and clean one scan into ``out_path`` (also a Dask task: plain arguments, plain result); ``neighbours``:
    the scans of the steps around it for a model that reads them (None in a place: the scan itself)."""
    from core.segmentation.postprocess import PostprocessConfig, postprocess
    from core.network.inference import InferenceConfig, load_model_cached, segment_volume

    model, card = load_model_cached(model_dir, device=device)
    codes = [int(c) for c in card["class_codes"]]
    inference = InferenceConfig.from_dict({**settings["inference"], "device": device})
    post = PostprocessConfig.from_dict(settings["postprocess"]) if settings.get("postprocess") else None
    if post is not None and not post.enabled:
        post = None
    reports: list[dict] = []
    per_slab = None
    if post is not None and post.connectivity == "2d":  # slice by slice, inside the slab loop

        def per_slab(labels: np.ndarray) -> np.ndarray:
            cleaned, rep = postprocess(labels, post, codes=codes)
            reports.append(rep)
            return cleaned

    redraw = None
    redrawn: dict[Any, Any] = {}
    pv_codes = [int(c) for c in settings.get("partial_volume") or []]
    matrix = [int(c) for c in settings.get("partial_volume_matrix") or []]
    if pv_codes:
        from core.labelling.partial_volume import matrix_from_beyond_3d, redraw_partial_volume

        def redraw(labels: np.ndarray, grey: np.ndarray) -> np.ndarray:
            for code in pv_codes:
                labels, info = redraw_partial_volume(grey, labels, code, matrix=matrix)
                tally = redrawn.setdefault(code, {"before": 0, "after": 0})
                tally["before"] += int(info["before"])
                tally["after"] += int(info["after"])
                if matrix:
                    tally["matrix_relabelled"] = tally.get("matrix_relabelled", 0) + int(info["matrix_relabelled"])
            if matrix and labels.ndim == 3:  # the band across the slab's slices too (the blur is 3D)
                labels, moved = matrix_from_beyond_3d(labels, pv_codes, matrix)
                redrawn["band_3d"] = redrawn.get("band_3d", 0) + moved
            return labels

    region, z_range = settings.get("region"), settings.get("z_range")
    keep, store = None, None
    if settings.get("keep_probabilities"):  # the class probabilities kept for labelling the steps together afterwards
        from core.imaging.io import open_volume

        with open_volume(scan) as vol:
            nz, ny, nx = (int(v) for v in vol.shape)
        zz = tuple(z_range) if z_range else (0, nz)
        yx = tuple(region) if region else (0, ny, 0, nx)
    if settings.get("keep_probabilities") and 0 <= zz[0] < zz[1] <= nz and 0 <= yx[0] < yx[1] <= ny \
            and 0 <= yx[2] < yx[3] <= nx:  # a bad crop is refused by segment_volume with its own sentence
        path = probabilities_path(out_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            store = _disk_backed(path, (zz[1] - zz[0], len(codes) + 1, yx[1] - yx[0], yx[3] - yx[2]))
        except OSError as exc:  # the step is segmented all the same; the series is then labelled one by one
            log.info("no room for the class probabilities of %s: %s", out_path, exc)
            store = None

    if store is not None:

        def keep(z0: int, z1: int, probs: np.ndarray) -> None:
            # the probabilities (255 = 1) and, last, the class the network gave (ties and rounding aside)
            store[z0 - zz[0] : z1 - zz[0], :-1] = np.rint(np.clip(probs, 0.0, 1.0) * 255.0).astype(np.uint8)
            store[z0 - zz[0] : z1 - zz[0], -1] = probs.argmax(axis=1).astype(np.uint8)

    try:
        res = segment_volume(model, card, scan, out_path, config=inference, postprocess=per_slab,
                             z_range=tuple(z_range) if z_range else None, region=tuple(region) if region else None,
                             on_progress=on_progress, should_stop=should_stop, redraw=redraw, probabilities=keep,
                             neighbours=neighbours)
    finally:
        if keep is not None:
            store.flush()
            del store
    counts = {int(k): int(v) for k, v in res.counts.items()}
    report: dict[str, Any] | None = None
    if per_slab is not None:
        report = {"before": {c: sum(int(r["before"].get(c, 0)) for r in reports) for c in codes}, "after": counts,
                  "changed": sum(int(r["changed"]) for r in reports), "config": post.to_dict()}
    elif post is not None:  # 3D connectivity: the whole label volume at once (1 byte per voxel)
        from core.imaging.io import read_labels, write_labels

        labels = read_labels(out_path)
        cleaned, report = postprocess(labels, post, codes=codes)
        write_labels(out_path, cleaned, voxel_size_um=settings.get("voxel_size_um"))
        counts = {c: int(np.count_nonzero(cleaned == c)) for c in codes}
        report = {**report, "after": counts}
    return {"counts": counts, "seconds": res.seconds, "mvoxel_per_s": res.mvoxel_per_s, "warnings": list(res.warnings),
            "cleaning": _jsonable(report), "normalisation": _jsonable(res.normalisation), "device": str(res.device),
            "partial_volume": _jsonable(redrawn)}


def _disk_backed(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A new uint8 .npy memory map whose blocks are reserved on disk now.

    A memory map on a sparse file that meets a full disk kills the process (SIGBUS) when a page is written back; with
    the blocks reserved first, a full disk is an OSError here, which the caller turns into a sentence."""
    import errno

    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    if hasattr(os, "posix_fallocate"):
        try:
            with open(path, "r+b") as fh:
                os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                del store
                Path(path).unlink(missing_ok=True)
                raise
            # a file system that cannot reserve blocks (EOPNOTSUPP, EINVAL): written as before
    return store


def probabilities_path(out_path: str | os.PathLike) -> Path:
    """Where a step's class probabilities wait for the steps to be labelled together (uint8, 255 = 1)."""
    p = Path(out_path)
    return p.parent / TEMPORAL_DIR / (p.stem + ".npy")


def _history_roles(phases: PhaseTable, codes: list[int]) -> tuple[int, list[int]] | str:
    """(reactant, products and pore) of the phase table among the model's classes, or the reason there are none."""
    reactant = [p.code for p in phases.by_role("reactant")]
    products = [p.code for p in phases.by_role("product") + phases.by_role("pore")]
    if len(reactant) != 1 or not products or any(c not in codes for c in reactant + products):
        return ("the phase table names no single reactant and its products among the model's classes, so no history "
                "can be told from another")
    return reactant[0], products


def _can_label_together(pending: list[int], n: int, phases: PhaseTable, card: dict[str, Any], paths: list[Path],
                        out_dir: Path, z_range: Any, region: Any) -> dict[str, Any]:
    """{} when the steps can be labelled together after this call, else the record's reason why not."""
    import shutil

    if len(pending) != n:
        return {"applied": False, "reason": "some steps were segmented earlier (resumed) or not asked for; segment every "
                                            "step again to label them together"}
    if n < 2:
        return {"applied": False, "reason": "one step has no history"}
    codes = [int(c) for c in card["class_codes"]]
    roles = _history_roles(phases, codes)
    if isinstance(roles, str):
        return {"applied": False, "reason": roles}
    from core.imaging.io import open_volume

    with open_volume(paths[0]) as vol:
        nz, ny, nx = (int(v) for v in vol.shape)
    if z_range:
        nz = max(0, min(int(z_range[1]), nz) - max(int(z_range[0]), 0))
    if region:
        ny, nx = max(0, int(region[1]) - int(region[0])), max(0, int(region[3]) - int(region[2]))
    need = 1.1 * n * (len(codes) + 2) * nz * ny * nx  # the probabilities of every step, then its new labels
    free = shutil.disk_usage(out_dir).free
    if free < need:
        return {"applied": False, "reason": f"labelling the steps together needs {need / 1e9:.1f} GB free beside the "
                                            f"labels and {free / 1e9:.1f} GB are; free some space or segment with "
                                            "--no-temporal"}
    return {}


def _temporal_pass(outcomes: list["StepOutcome"], phases: PhaseTable, codes: list[int], voxel_size_um: float | None,
                   on_progress: Callable[[float, str], None], slab: int = 8, match_volumes: bool = False) -> dict[str, Any]:
    """Label every step again along each voxel's most probable history (core.segmentation.temporal); rewrite the
    label files and their counts. Only voxels whose label is the network's own (not changed by the edge redraw or
    the cleaning) are relabelled. With ``match_volumes``, each step's split between the reactant and the product is
    first matched to the network's expected split (:func:`core.segmentation.temporal.matched_offsets`)."""
    from core.imaging.io import open_volume, write_labels
    from core.segmentation.temporal import (MAX_SHIFT_VOX, allowed_transitions, centre_block, free_classes,
                                            matched_offsets, most_probable_histories, pair_histogram, step_shifts)

    roles = _history_roles(phases, codes)
    if isinstance(roles, str):
        return {"applied": False, "reason": roles}
    reactant, products = roles
    allowed = allowed_transitions(codes, reactant, products)
    free = free_classes(codes, reactant, products)

    on_progress(0.0, "checking that the scans are aligned")
    shifts = step_shifts(lambda i: centre_block(outcomes[i].scan), len(outcomes))
    total = np.cumsum(np.asarray(shifts, dtype=float), axis=0)  # against step 0: a slow drift adds up
    for i in range(1, len(shifts)):
        step_off, total_off = max(abs(v) for v in shifts[i]), float(np.abs(total[i]).max())
        if step_off > MAX_SHIFT_VOX or total_off > MAX_SHIFT_VOX:
            sh = ", ".join(f"{v:g}" for v in (shifts[i] if step_off > MAX_SHIFT_VOX else np.round(total[i], 3)))
            against = f"step {i - 1}" if step_off > MAX_SHIFT_VOX else "step 0"
            return {"applied": False, "shifts_vox": shifts,
                    "reason": f"step {i} is shifted by ({sh}) voxels (z, y, x) against {against}, more than "
                              f"{MAX_SHIFT_VOX:g}; register the scans to label the steps together"}
    lut = np.asarray(codes, dtype=np.uint8)
    stores = [np.load(probabilities_path(o.out_path), mmap_mode="r") for o in outcomes]
    shape = stores[0].shape
    if any(st.shape != shape for st in stores):
        return {"applied": False, "reason": "the steps were segmented with different shapes"}
    nz, ny, nx = shape[0], shape[2], shape[3]
    t_n = len(outcomes)
    # chunks of whole slices, or of rows of one slice, that keep the pass within _PASS_BYTES whatever the scan size
    per_voxel = t_n * (4 * len(codes) + 24)  # float probabilities, their logarithms, back-pointers, labels
    rows = int(max(1, min(ny, _PASS_BYTES // max(1, per_voxel * nx))))
    depth = int(max(1, min(8, _PASS_BYTES // max(1, per_voxel * nx * ny)))) if rows == ny else 1
    log_bias, matched = None, None
    if match_volumes:
        product = [p.code for p in phases.by_role("product")]
        if len(product) != 1:
            matched = {"applied": False, "reason": "the phase table names no single product whose volume could be matched"}
        else:
            ri, pi = codes.index(reactant), codes.index(product[0])
            hists = np.zeros((t_n, 256, 256), dtype=np.int64)
            for i, st in enumerate(stores):
                for z0 in range(0, nz, 4):
                    hists[i] += pair_histogram(np.asarray(st[z0 : z0 + 4]), ri, pi)
                on_progress(0.1 + 0.1 * (i + 1) / t_n, f"expected volumes of step {i + 1} of {t_n}")
            offsets, info = matched_offsets(hists)
            log_bias = np.zeros((t_n, len(codes)), dtype=np.float32)
            log_bias[:, pi] = offsets
            matched = {"applied": True, "product": phases.by_code(product[0]).name, **info}
    staging = probabilities_path(outcomes[0].out_path).parent / STAGING_DIR
    staging.mkdir(parents=True, exist_ok=True)
    new = [_disk_backed(staging / f"step_{i}.npy", (nz, ny, nx)) for i in range(t_n)]
    changed = [0] * t_n
    counts = np.zeros((t_n, 256), dtype=np.int64)
    vols = [open_volume(o.out_path) for o in outcomes]
    try:
        for z0 in range(0, nz, depth):
            z1 = min(z0 + depth, nz)
            finals = [np.asarray(vol.slab(z0, z1)) for vol in vols]
            for y0 in range(0, ny, rows):
                y1 = min(y0 + rows, ny)
                block = np.stack([np.asarray(st[z0:z1, :, y0:y1]) for st in stores])  # (T, n, C + 1, rows, x)
                probs = block[:, :, :-1].transpose(0, 2, 1, 3, 4).astype(np.float32)  # (T, C, n, rows, x)
                probs *= np.float32(1.0 / 255.0)  # stored as uint8, 255 = 1
                given = block[:, :, -1]  # (T, n, rows, x): the class each step's network gave
                del block
                hist = lut[most_probable_histories(probs, allowed, free, given=given, log_bias=log_bias)]
                del probs
                for i in range(t_n):
                    final = finals[i][:, y0:y1]
                    out = np.where(final == lut[given[i]], hist[i], final)  # only the network's own labels move
                    changed[i] += int(np.count_nonzero(out != final))
                    counts[i] += np.bincount(out.ravel(), minlength=256)
                    new[i][z0:z1, y0:y1] = out
            on_progress(0.2 + 0.7 * z1 / nz, f"labelled slices {z1} of {nz} of every step together")
    finally:
        for vol in vols:
            vol.close()
    # every step's new labels are written beside the old ones first, then all are renamed into place: a disk that
    # fills up on the way leaves the per-step labels as they were
    staged = []
    try:
        for i in range(t_n):
            target = staging / f"step_{i}.tif"
            write_labels(target, np.asarray(new[i]), voxel_size_um=voxel_size_um)
            staged.append(target)
    except BaseException:
        for target in staged:
            target.unlink(missing_ok=True)
        raise
    del new, stores
    for i, (o, target) in enumerate(zip(outcomes, staged)):
        try:
            os.replace(target, o.out_path)
        except OSError as exc:
            done = ", ".join(str(k) for k in range(i)) or "none"
            raise ReactomoError(f"Step {i}'s labels could not be replaced ({exc.strerror or exc}); steps {done} hold the "
                                f"steps labelled together, the others their own labels: segment again to make them "
                                f"agree.") from None
        o.counts = {int(c): int(counts[i][c]) for c in sorted(set(codes) | set(np.flatnonzero(counts[i]).tolist()))}
    return {"applied": True, "shifts_vox": shifts, "changed_voxels": changed,
            "allowed": f"{phases.by_code(reactant).name} may become "
                       + " or ".join(phases.by_code(c).name for c in products) + ", which never turn back; "
                       + "the other phases are placed by each step alone",
            **({"volumes_matched": matched} if matched is not None else {})}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _sentence(exc: BaseException) -> str:
    if isinstance(exc, ReactomoError):
        return str(exc)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


# ----------------------------------------------------------------------------------------------- the record
def phase_volumes_rows(steps: Sequence[StepOutcome], phases: PhaseTable, voxel_size_um: float | None) -> list[dict[str, Any]]:
    """Rows of ``phase_volumes.csv`` for the steps that are done, in step order."""
    vox_mm3 = (float(voxel_size_um) * 1e-3) ** 3 if voxel_size_um else None
    rows = []
    for s in sorted(steps, key=lambda s: s.step):
        if s.status != "done":
            continue
        total = sum(s.counts.get(p.code, 0) for p in phases) or 1
        row: dict[str, Any] = {"step": s.step, "time_s": s.time_s if s.time_s is not None else "", "scan": s.scan}
        for p in phases:
            n = int(s.counts.get(p.code, 0))
            row[f"{p.name}_voxels"] = n
            row[f"{p.name}_volume_mm3"] = f"{n * vox_mm3:.6g}" if vox_mm3 else ""
            row[f"{p.name}_fraction"] = f"{n / total:.6f}"
        rows.append(row)
    return rows


def _csv_text(rows: list[dict[str, Any]], phases: PhaseTable) -> str:
    cols = ["step", "time_s", "scan"] + [f"{p.name}_{k}" for p in phases for k in ("voxels", "volume_mm3", "fraction")]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def read_series_record(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``segmentation.json`` of a segmentation folder, or None when there is none (or it is unreadable)."""
    import json

    p = Path(out_dir) / RECORD
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("format") == FORMAT else None


# ------------------------------------------------------------------------------------------------ the series
def _check_scans(scans: Sequence[str | os.PathLike]) -> list[Path]:
    from core.imaging.io import TIFF_SUFFIXES

    if isinstance(scans, (str, os.PathLike)) or not scans:
        raise ReactomoError("Give at least one scan to segment (a list of TIFF files or folders of slices).")
    paths = [Path(os.path.abspath(os.path.expanduser(os.fspath(s)))) for s in scans]
    names: dict[str, Path] = {}
    for p in paths:
        if not p.exists():
            raise ReactomoError(f"The scan {p} does not exist; check the path.")
        stem = p.name
        for suf in TIFF_SUFFIXES:
            if stem.lower().endswith(suf):
                stem = stem[: -len(suf)]
                break
        if stem in names:
            raise ReactomoError(f"Two scans are both called '{stem}' ({names[stem]} and {p}); their label files would overwrite each other, so rename one.")
        names[stem] = p
    return paths


def _label_name(scan: Path) -> str:
    from core.imaging.io import TIFF_SUFFIXES

    stem = scan.name
    for suf in TIFF_SUFFIXES:
        if stem.lower().endswith(suf):
            return stem[: -len(suf)] + ".tif"
    return stem + ".tif"


def _resolve_settings(phases: PhaseTable, inference: Any, postprocess: Any, partial_volume: Sequence[int] | None,
                      edge_background: str | None = None):
    """The inference, cleaning and partial-volume settings of a series, defaults filled in and checked; the last
    item is the partial-volume redraw's ``matrix`` (:func:`core.labelling.partial_volume.matrix_codes`)."""
    from core.network.inference import InferenceConfig
    from core.segmentation.postprocess import PostprocessConfig, default_postprocess

    inference = inference if inference is not None else InferenceConfig()
    if isinstance(inference, dict):
        inference = InferenceConfig.from_dict(inference)
    inference.validate()
    if isinstance(postprocess, str):
        if postprocess != "default":
            raise ReactomoError(f"postprocess must be 'default', None or a PostprocessConfig; got {postprocess!r}.")
        postprocess = default_postprocess(phases)
    elif isinstance(postprocess, dict):
        postprocess = PostprocessConfig.from_dict(postprocess)
    if postprocess is not None:
        postprocess.validate()
    # the pores' and the inert phases' edges redrawn from the scan, slab by slab, before the cleaning
    # (core.labelling.partial_volume): chosen on the accuracy family's tuning half against the truth
    if partial_volume is None:
        from core.labelling.partial_volume import default_codes

        partial_volume = default_codes(phases)
    partial_volume = [int(c) for c in partial_volume]
    unknown = [c for c in partial_volume if c not in phases.codes]
    if unknown:
        raise ReactomoError(f"Phase code {unknown[0]} is not in the phase table (codes {list(phases.codes)}); it cannot be redrawn.")
    from core.labelling.partial_volume import matrix_codes

    matrix = matrix_codes(phases, edge_background) if partial_volume else []
    return inference, postprocess, partial_volume, matrix


def _settings_record(inference, postprocess, z_range, region, voxel_size_um, partial_volume, temporal,
                     matrix=(), match_volumes=False) -> dict[str, Any]:
    """The ``settings`` of a segmentation record: what must match for two runs to make one series."""
    record = {"inference": {k: v for k, v in inference.to_dict().items() if k != "device"},
              "postprocess": postprocess.to_dict() if postprocess is not None else None,
              "z_range": list(z_range) if z_range else None, "region": list(region) if region else None,
              "voxel_size_um": voxel_size_um, "partial_volume": partial_volume, "temporal": bool(temporal)}
    if matrix:  # only when used, so the records of series segmented before it match their own settings
        record["partial_volume_matrix"] = [int(c) for c in matrix]
    if temporal and match_volumes:  # likewise only when used
        record["match_volumes"] = True
    return record


def _done_otherwise(prior: dict[str, Any] | None, weights_sha256: str, settings: dict[str, Any],
                    scans: Sequence[str | os.PathLike] | None = None) -> list[str]:
    """Names of the scans the record ``prior`` has done with another model or other settings than these (only
    among ``scans`` when given)."""
    if not prior or (prior.get("model", {}).get("weights_sha256") == weights_sha256
                     and prior.get("settings") == settings):
        return []
    among = None if scans is None else {str(p) for p in scans}
    return [Path(str(d.get("scan"))).name for d in prior.get("steps", [])
            if d.get("status") == "done" and (among is None or str(d.get("scan")) in among)]


def folder_conflict(out_dir: str | os.PathLike, model_dir: str | os.PathLike, *, phases: PhaseTable | None = None,
                    voxel_size_um: float | None = None, inference: Any = None, postprocess: Any = "default",
                    z_range: tuple[int, int] | None = None, region: tuple[int, int, int, int] | None = None,
                    partial_volume: Sequence[int] | None = None, temporal: bool = False,
                    edge_background: str | None = None, match_volumes: bool | None = None) -> str | None:
    """One sentence when ``out_dir`` already holds steps segmented with another model or other settings than
    :func:`segment_series` would use with these arguments (None when it holds none).

    For a caller that adds steps to a folder one at a time (beamtime mode): it is told when it starts, not when the
    next scan arrives and :func:`segment_series` refuses to mix the two."""
    from core.network.bundle import read_card

    card = read_card(Path(os.path.abspath(os.fspath(model_dir))))
    phases = phases or PhaseTable.from_dict(card["phases"])
    inference, postprocess, partial_volume, matrix = _resolve_settings(phases, inference, postprocess, partial_volume,
                                                                       edge_background)
    if match_volumes is None:
        from core.segmentation.temporal import MATCH_VOLUMES as match_volumes
    settings = _settings_record(inference, postprocess, z_range, region, voxel_size_um, partial_volume, temporal,
                                matrix, bool(match_volumes))
    left = _done_otherwise(read_series_record(Path(out_dir)), card["weights_sha256"], settings)
    if not left:
        return None
    return (f"The folder {out_dir} holds {len(left)} step(s) segmented with another model or other settings "
            f"({', '.join(left[:3])}{', ...' if len(left) > 3 else ''}); give a new output folder, or segment every "
            f"step again there with `segment`.")


def segment_series(
    model_dir: str | os.PathLike,
    scans: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    phases: PhaseTable | None = None,
    times_s: Sequence[float] | None = None,
    voxel_size_um: float | None = None,
    inference: Any = None,
    postprocess: Any = "default",
    z_range: tuple[int, int] | None = None,
    region: tuple[int, int, int, int] | None = None,
    steps: Sequence[int] | None = None,
    scheduler: str | None = None,
    workers: int = 1,
    resume: bool = True,
    on_progress: Callable[[float, str], None] | None = None,
    on_step: Callable[[StepOutcome], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    extra: dict[str, Any] | None = None,
    cleaning_source: str | None = None,
    redo: Sequence[int] = (),
    partial_volume: Sequence[int] | None = None,
    temporal: bool = False,
    edge_background: str | None = None,
    match_volumes: bool | None = None,
) -> SeriesResult:
    """Segment the scans with one model bundle and write ``out_dir/<scan>.tif``, ``phase_volumes.csv`` and the record.

    Parameters
    ----------
    model_dir : path-like
        A model bundle folder (``models/NAME``).
    scans : sequence of path-like
        One scan per time step, in time order (TIFF stacks or folders of slices).
    out_dir : path-like
        Output folder (created).
    phases : PhaseTable, optional
        The project's phase table; the model must have been trained for it. Default: the model's own.
    times_s : sequence of float, optional
        Time of each step in seconds (for ``phase_volumes.csv``).
    voxel_size_um : float, optional
        For volumes in mm³ (and the label files' metadata).
    inference : core.network.inference.InferenceConfig, optional
    postprocess : core.segmentation.postprocess.PostprocessConfig, "default" or None
        ``"default"``: the study's cleaning for the phase table (:func:`core.segmentation.postprocess.default_postprocess`);
        None: no cleaning.
    cleaning_source : str, optional
        One sentence saying where the cleaning comes from (the model's stored choice, the study's, set by hand),
        kept in the record as ``cleaning_source`` and shown in the analysis report.
    z_range, region : optional
        Segment only slices ``z0:z1`` / the rectangle ``(y0, y1, x0, x1)`` of every scan.
    steps : sequence of int, optional
        Indices of the scans to segment (default all).
    scheduler : None, "local" or a Dask scheduler address
    workers : int
        Dask workers for ``"local"`` (``workers > 1`` with ``scheduler=None`` means ``"local"``).
    resume : bool
        Skip steps already done with the same model and settings (found by their scan's path, so a scan inserted
        before them in time order does not make them run again).
    redo : sequence of int
        Steps to segment again although the record has them done (a scan that was written again).
    on_progress, on_step, should_stop : callables, optional
        Progress ``(fraction, message)``; each finished step; cancel request (checked between slabs or steps).
    extra : dict, optional
        JSON-able information stored in the record (e.g. the project name).
    partial_volume : sequence of int, optional
        Phase codes whose edges are redrawn from the scan, in this order (default: the phase table's pore phase,
        then its inert phases; :func:`core.labelling.partial_volume.default_codes`).
    edge_background : {"beyond", "nearest"}, optional
        How a redrawn edge's band reads the phase around it (:func:`core.labelling.partial_volume.matrix_codes`);
        default :data:`core.labelling.partial_volume.EDGE_BACKGROUND`.
    temporal : bool
        Label the steps together: once every step is segmented, each voxel's labels follow its most probable history
        among those the reaction allows (:mod:`core.segmentation.temporal`). Needs the whole series segmented in this
        call (not resumed, no step failed) and aligned scans; otherwise the steps stay labelled one by one and the
        record's ``temporal`` says why.
    match_volumes : bool, optional
        With ``temporal``: first match each step's split between the reactant and the product to the network's
        expected split (:func:`core.segmentation.temporal.matched_offsets`); recorded in ``temporal.volumes_matched``.
        Default :data:`core.segmentation.temporal.MATCH_VOLUMES`.

    Returns
    -------
    SeriesResult

    Raises
    ------
    ReactomoError
        Bad model, scans, settings or output folder (before anything is written). Failures of single steps do not
        raise: they are in the result and the record.
    core.errors.JobCancelled
        When ``should_stop`` returned True (the steps done so far are kept).
    """
    from core.network.bundle import read_card
    from core.errors import JobCancelled
    from core.network.inference import load_model_cached

    t_start = time.perf_counter()
    model_dir = Path(os.path.abspath(os.fspath(model_dir)))
    card = read_card(model_dir)
    trained = PhaseTable.from_dict(card["phases"])
    from core.network.inference import model_time_context

    model_time_context(card)  # a bad card is refused here, before anything is written
    # loads and checks the weights (checksum, phase table) here, before anything is written
    load_model_cached(model_dir, phases=phases, device="cpu")
    phases = phases or trained
    paths = _check_scans(scans)
    n = len(paths)
    if steps is None:
        todo = list(range(n))
    else:
        todo = sorted({int(s) for s in steps})
        bad = [s for s in todo if not 0 <= s < n]
        if bad or not todo:
            raise ReactomoError(f"Steps {bad or '[]'} are not in this series of {n} scans; give step numbers from 0 to {n - 1}.")
    if times_s is not None and len(times_s) != n:
        raise ReactomoError(f"{len(times_s)} times were given for {n} scans; give one time per scan.")
    inference, postprocess, partial_volume, matrix = _resolve_settings(phases, inference, postprocess, partial_volume,
                                                                       edge_background)
    if workers < 1 or workers > 256:
        raise ReactomoError(f"workers must be from 1 to 256; got {workers}.")
    if scheduler is None and workers > 1:
        scheduler = "local"
    if scheduler is not None and scheduler != "local" and "://" not in scheduler:
        raise ReactomoError(f"The scheduler must be 'local' or an address such as tcp://host:8786; got {scheduler!r}.")
    if scheduler is not None and scheduler != "local":
        _probe_scheduler(scheduler)  # before anything is written
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReactomoError(f"The output {out_dir} is a file; give a folder for the label files.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReactomoError(f"The output folder {out_dir} cannot be created ({exc.strerror or exc}).") from None

    from core.atomic import remove_orphan_temporaries, writer_lock

    # one writer per folder: a second segmentation into it is refused with a sentence and never mixes its files
    # with the first one's; label files a killed writer left half-written go first
    with writer_lock(out_dir, what=f"the segmentation folder {out_dir}"):
        remove_orphan_temporaries(out_dir)
        if match_volumes is None:
            from core.segmentation.temporal import MATCH_VOLUMES as match_volumes
        settings = _settings_record(inference, postprocess, z_range, region, voxel_size_um, partial_volume, temporal,
                                    matrix, bool(match_volumes))
        model_info = {"path": str(model_dir), "name": card.get("name", model_dir.name), "weights_sha256": card["weights_sha256"],
                      "normalisation": card.get("normalisation"), "class_codes": card["class_codes"]}
        outcomes = [StepOutcome(step=i, scan=str(p), out_path=str(out_dir / _label_name(p)),
                                time_s=float(times_s[i]) if times_s is not None else None) for i, p in enumerate(paths)]
        prior = read_series_record(out_dir)
        # steps done before with another model or other settings, not asked for now, would silently drop out of
        # the record (and of the results made from it): refused, so a series never mixes two segmentations
        wanted = {str(paths[i]) for i in todo}
        left = _done_otherwise(prior, card["weights_sha256"], settings, [p for p in paths if str(p) not in wanted])
        if left:
            raise ReactomoError(
                f"The folder {out_dir} holds {len(left)} step(s) segmented with another model or other settings "
                f"({', '.join(left[:3])}{', ...' if len(left) > 3 else ''}) that this call leaves out; segment "
                f"every step again, or write to a new folder.")
        old = prior if resume else None
        if old and old.get("model", {}).get("weights_sha256") == model_info["weights_sha256"] and old.get("settings") == settings:
            # matched by scan, not by position: a scan that arrives late and sorts before others (live at a
            # beamline) shifts the step numbers of the later ones, which stay done
            index = {str(p): i for i, p in enumerate(paths)}
            again = {int(r) for r in redo}
            for d in old.get("steps", []):
                try:
                    prev = StepOutcome.from_dict(d)
                except (KeyError, TypeError, ValueError):
                    continue
                i = index.get(prev.scan)
                if i is not None and i not in again and prev.status == "done" and Path(prev.out_path).is_file():
                    prev.step, prev.time_s, prev.resumed = i, outcomes[i].time_s, True
                    outcomes[i] = prev
        pending = [i for i in todo if outcomes[i].status != "done"]
        device = inference.device
        if device == "auto":
            from core.network.unet import select_device

            device = str(select_device("auto"))

        lock = threading.Lock()
        record: dict[str, Any] = {}
        together: dict[str, Any] = dict(old.get("temporal") or {}) if old and not pending and temporal else {}
        # labelling the steps together needs every step segmented now: decided before anything is kept for it
        keep_probabilities = False
        if temporal and pending:
            earlier = dict(old.get("temporal") or {}) if old else {}
            together = _can_label_together(pending, n, phases, card, paths, out_dir, z_range, region)
            keep_probabilities = not together
            if together and (earlier.get("applied") or earlier.get("mixed")):
                # some steps keep the labels the series got together, the others are labelled alone now: said by
                # scan, not by step number (a scan that arrives late renumbers the steps after it)
                old_scans = [str(d.get("scan")) for d in old.get("steps", [])]
                if earlier.get("mixed"):
                    before = set(earlier.get("together_scans") or
                                 [old_scans[k] for k in earlier.get("together_steps") or [] if k < len(old_scans)])
                else:
                    before = set(old_scans)
                kept = [outcomes[i].scan for i in range(n)
                        if i not in pending and outcomes[i].resumed and outcomes[i].scan in before]
                if kept:
                    together = {"applied": False, "mixed": True, "together_scans": kept,
                                "reason": "some steps were segmented again on their own after the series was labelled "
                                          "together; segment every step again to label them all together"}
        run_settings = {**settings, "keep_probabilities": keep_probabilities}  # not recorded: how, not what
        from core.network.inference import model_time_context

        reach = model_time_context(card)
        near, time_record = time_neighbours(paths, reach) if reach and pending else (None, None)
        if reach and not pending and old:
            time_record = old.get("time_context")

        def save() -> None:
            with lock:
                if together.get("mixed"):  # the step numbers of this series, from what each step holds now
                    ts = set(together.get("together_scans") or [])
                    together["together_steps"] = [i for i, o in enumerate(outcomes) if o.scan in ts]
                    together["alone_steps"] = [i for i, o in enumerate(outcomes) if o.scan not in ts and o.status == "done"]
                    together["missing_steps"] = [i for i, o in enumerate(outcomes) if o.scan not in ts and o.status != "done"]
                record.clear()
                record.update({"format": FORMAT, "format_version": 1, "model": model_info, "settings": settings,
                               "phases": phases.to_dict(), "voxel_size_um": voxel_size_um, "device": device,
                               "scheduler": scheduler or "in-process", "workers": workers, "versions": versions(),
                               "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "steps": [o.to_dict() for o in outcomes], **({"extra": extra} if extra else {}),
                               **({"cleaning_source": cleaning_source} if cleaning_source else {}),
                               **({"temporal": together} if together else {}),
                               **({"time_context": time_record} if time_record else {})})
                atomic_write_json(out_dir / RECORD, record)
                atomic_write_text(out_dir / VOLUMES, _csv_text(phase_volumes_rows(outcomes, phases, voxel_size_um), phases))

        def finish(i: int, result: dict[str, Any] | None, exc: BaseException | None) -> None:
            o = outcomes[i]
            if exc is None and result is not None:
                o.status, o.counts, o.seconds = "done", result["counts"], result["seconds"]
                o.mvoxel_per_s, o.warnings, o.cleaning, o.error = result["mvoxel_per_s"], result["warnings"], result["cleaning"], ""
            else:
                o.status, o.error = "failed", _sentence(exc)
                log.info("step %d (%s) failed: %s", i, o.scan, o.error)  # the caller says it (on_step, the record)
            save()
            if on_step is not None:
                on_step(o)

        save()
        report = on_progress or (lambda f, m: None)
        stop = should_stop or (lambda: False)
        done_before = len(todo) - len(pending)
        cancelled = False
        if scheduler is None:
            for k, i in enumerate(pending):
                if stop():
                    cancelled = True
                    break
                base = (done_before + k) / len(todo)
                name = Path(outcomes[i].scan).name

                def step_progress(f: float, m: str, base=base, name=name, i=i) -> None:
                    report(min(1.0, base + f / len(todo)), f"step {i} ({name}): {m}")

                report(base, f"step {i} ({name})")
                try:
                    res = _segment_one(str(model_dir), outcomes[i].scan, outcomes[i].out_path, run_settings, device,
                                       step_progress, stop, near[i] if near else None)
                except JobCancelled:
                    cancelled = True
                    break
                except Exception as exc:  # one failing step does not stop the others
                    finish(i, None, exc)
                    continue
                finish(i, res, None)
        else:
            cancelled = _run_dask(scheduler, workers, pending, outcomes, model_dir, run_settings, device, finish, report,
                                  stop, len(todo), done_before, near)
        if keep_probabilities and not cancelled:
            import shutil

            lost = [i for i in range(n) if not probabilities_path(outcomes[i].out_path).is_file()]
            if any(outcomes[i].status != "done" for i in range(n)):
                together = {"applied": False, "reason": "a step failed"}
            elif lost:
                together = {"applied": False, "reason": f"the disk had no room for the class probabilities of step "
                                                        f"{lost[0]}; free some space and segment again to label them "
                                                        f"together"}
            else:
                codes = [int(c) for c in card["class_codes"]]
                try:
                    together = _temporal_pass(outcomes, phases, codes, voxel_size_um,
                                              lambda f, m: report(0.99, f"all steps: {m}"),
                                              match_volumes=bool(match_volumes))
                except BaseException as exc:  # said in the record too, then raised
                    together = {"applied": False, "reason": f"the pass that labels the steps together stopped: "
                                                            f"{_sentence(exc)}"}
                    save()
                    if isinstance(exc, OSError):
                        raise ReactomoError(f"The steps could not be labelled together ({exc.strerror or exc}); "
                                            "the per-step labels are kept.") from None
                    raise
                finally:
                    shutil.rmtree(out_dir / TEMPORAL_DIR, ignore_errors=True)
            save()
        elif together and pending:
            save()
        if (out_dir / TEMPORAL_DIR).exists():  # left by a stopped or killed run: never used again
            import shutil

            shutil.rmtree(out_dir / TEMPORAL_DIR, ignore_errors=True)
        if cancelled:
            save()
            raise JobCancelled(f"Segmentation stopped; {sum(o.status == 'done' for o in outcomes)} of {n} steps are done and kept.")
        report(1.0, f"{sum(outcomes[i].status == 'done' for i in todo)} of {len(todo)} steps segmented")
        return SeriesResult(out_dir=out_dir, steps=[outcomes[i] for i in todo], seconds=time.perf_counter() - t_start,
                            scheduler=scheduler or "in-process", record=dict(record))


def _connect(scheduler: str):
    from distributed import Client

    try:
        return Client(scheduler, timeout="5s")
    except (OSError, TimeoutError) as exc:
        raise ReactomoError(f"No Dask scheduler answers at {scheduler} ({exc}); start the cluster or check the address.") from None


def _probe_scheduler(scheduler: str) -> None:
    _connect(scheduler).close()


def time_neighbours(paths: Sequence[Path], reach: int) -> tuple[list[list[str | None]], dict[str, Any]]:
    """For a model that reads ``reach`` steps on each side: each step's neighbouring scans in channel order (None = the
    step's own scan: beyond the series' ends, or around a step whose window is not aligned) and a record."""
    from core.network.inference import time_offsets
    from core.segmentation.temporal import aligned_neighbours

    n = len(paths)
    near: list[list[str | None]] = []
    alone: dict[int, str] = {}
    for i in range(n):
        around = aligned_neighbours(list(paths), i, reach) if n > 1 else {"applied": False, "reason": "the series has one step"}
        if around["applied"]:
            near.append([str(paths[i + o]) if 0 <= i + o < n else None for o in time_offsets(reach)])
        else:
            near.append([None] * (2 * reach))
            alone[i] = (str(around["reason"] or "").replace(f"against step {i} or the labelled step", f"against step {i}")
                        .replace("the labelled step", f"step {i}")
                        .replace("the forest to read the steps around the labelled one", "the network to read the steps around each"))
    record = {"reach": int(reach), "steps_read_alone": sorted(alone),
              "reason": next(iter(alone.values()), None) if alone else None}
    return near, record


def _run_dask(scheduler, workers, pending, outcomes, model_dir, settings, device, finish, report, stop, total, done_before,
              near=None) -> bool:
    """Run the pending steps as Dask tasks; returns True when cancelled."""
    import torch
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    threads_before = torch.get_num_threads()
    try:
        if scheduler == "local":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=False, dashboard_address=None)
            client = Client(cluster)
        else:
            client = _connect(scheduler)
        with client:
            futures = {}
            for i in pending:
                f = client.submit(_segment_one, str(model_dir), outcomes[i].scan, outcomes[i].out_path, settings, device,
                                  None, None, near[i] if near else None, key=f"reactomo-segment-{i}-{os.getpid()}-{time.monotonic_ns()}", pure=False)
                futures[f] = i
            n_done = 0
            report(done_before / total, f"{len(pending)} steps sent to {scheduler} ({workers} worker{'s' if workers != 1 else ''})")
            ac = as_completed(list(futures))
            for f in ac:
                i = futures[f]
                try:
                    res = f.result()
                except Exception as exc:
                    finish(i, None, exc)
                else:
                    finish(i, res, None)
                n_done += 1
                report((done_before + n_done) / total, f"step {i} {outcomes[i].status} ({n_done} of {len(pending)})")
                if stop():
                    for g in futures:
                        if not g.done():
                            g.cancel()
                    return True
        return False
    finally:
        if cluster is not None:
            cluster.close()
        torch.set_num_threads(threads_before)


# ----------------------------------------------------------------------------------------------- a project
#: Environment variable where the administrator lists the Dask schedulers the dashboard may use (comma-separated
#: addresses such as ``tls://cluster:8786``). Nothing else reaches a page.
ENV_SCHEDULERS = "REACTOMO_DASK_SCHEDULERS"


def configured_schedulers() -> list[str]:
    """The Dask scheduler addresses the server's administrator offers to every user (``REACTOMO_DASK_SCHEDULERS``)."""
    raw = os.environ.get(ENV_SCHEDULERS, "")
    return [a.strip() for a in raw.split(",") if a.strip() and "://" in a.strip()]


def check_offered_scheduler(scheduler: str | None) -> None:
    """Refuse a scheduler address the administrator did not offer (the project-level path, used by the pages).

    The CLI's ``--scheduler`` stays free: there the user runs code as themselves. A page runs as the server, so an
    address typed by anyone with the URL would let a hostile scheduler's workers run code as the server.
    """
    if scheduler is None or scheduler == "local":
        return
    offered = configured_schedulers()
    if scheduler not in offered:
        where = (f"the offered ones are {', '.join(offered)}" if offered else
                 f"none is offered; the administrator lists them in {ENV_SCHEDULERS}")
        raise ReactomoError(f"The Dask scheduler {scheduler} is not one the server's administrator offers ({where}); "
                            "use this process or a local cluster, or ask for the cluster to be added.")


