"""Evaluate segmentations against a reference: label files slab by slab, a project's segmentations, model tables.

References, in the order a user has them: the accepted ground-truth slices of the project (the random forest of
their scribbles, only on those slices), and on the demo experiment its known truth (every voxel of every step).
Voxels where the reference is 0 are not scored. Scores come from :mod:`core.segmentation.metrics` (8 metrics of SPEC.md + precision).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.errors import ReactomoError
from core.segmentation.metrics import METRICS, MetricsReport, confusion_table, metrics_from_table

__all__ = ["evaluate_files", "evaluate_segmentation", "comparison_rows", "report_csv", "references", "training_overlap",
           "coverage_note"]

_SLAB = 16


def evaluate_files(pred: str | os.PathLike, truth: str | os.PathLike, *, codes: Sequence[int],
                   names: Sequence[str] | None = None, slices: Sequence[int] | None = None,
                   box: tuple[int, int, int, int, int, int] | None = None) -> MetricsReport:
    """Score the label TIFF ``pred`` against the label TIFF ``truth`` (same shape), reading a slab at a time.

    Parameters
    ----------
    pred, truth : path-like
        uint8 label volumes (multi-page TIFF).
    codes, names
        Phase codes to score and their names.
    slices : sequence of int, optional
        Only these z slices of ``pred`` (e.g. the ground-truth slices).
    box : (z0, z1, y0, y1, x0, x1), optional
        The part of ``truth`` that ``pred`` covers (a segmentation of a z range or a region of interest): ``pred``'s
        shape must be the box's, and ``truth`` is read there only.
    """
    from core.imaging.io import open_volume

    codes = [int(c) for c in codes]
    table = np.zeros((len(codes), len(codes) + 1), np.int64)
    with open_volume(pred) as p, open_volume(truth) as t:
        for v, what in ((p, "prediction"), (t, "reference")):
            if v.dtype != np.uint8:
                raise ReactomoError(f"The {what} {v.path.name} holds {v.dtype} values, not uint8 label codes; give a label TIFF.")
        if box is not None:
            z0, z1, y0, y1, x0, x1 = (int(b) for b in box)
            inside = 0 <= z0 < z1 <= t.shape[0] and 0 <= y0 < y1 <= t.shape[1] and 0 <= x0 < x1 <= t.shape[2]
            if not inside or p.shape != (z1 - z0, y1 - y0, x1 - x0):
                raise ReactomoError(f"The prediction {p.path.name} of shape {p.shape} is not the block z {z0}-{z1}, "
                                    f"y {y0}-{y1}, x {x0}-{x1} of the reference {t.path.name} ({t.shape}); compare "
                                    "label volumes of the same scan.")
            t = _Cropped(t, z0, y0, x0, p.shape)
        elif p.shape != t.shape:
            raise ReactomoError(f"The prediction {p.path.name} has shape {p.shape} but the reference {t.path.name} has {t.shape}; "
                                "compare label volumes of the same scan.")
        seen = {"prediction": np.zeros(256, np.int64), "reference": np.zeros(256, np.int64)}

        def add(a: np.ndarray, b: np.ndarray) -> None:
            nonlocal table
            seen["prediction"] += np.bincount(a.ravel(), minlength=256)
            seen["reference"] += np.bincount(b.ravel(), minlength=256)
            table += confusion_table(a, b, codes=codes)

        if slices is not None:
            for z in slices:
                if not 0 <= int(z) < p.shape[0]:
                    raise ReactomoError(f"Slice {z} is not in the volume of {p.shape[0]} slices.")
                add(p.slice(0, int(z)), t.slice(0, int(z)))
        else:
            for z0 in range(0, p.shape[0], _SLAB):
                z1 = min(z0 + _SLAB, p.shape[0])
                add(p.slab(z0, z1), t.slab(z0, z1))
        known = set(codes) | {0}
        for what, v in (("prediction", p), ("reference", t)):
            foreign = [int(c) for c in np.flatnonzero(seen[what]) if int(c) not in known]
            if foreign:
                table_text = ", ".join(f"{c} {n}" for c, n in zip(codes, names)) if names else ", ".join(map(str, codes))
                raise ReactomoError(f"The {what} {v.path.name} holds label code{'s' if len(foreign) != 1 else ''} "
                                    f"{', '.join(map(str, foreign))}, not in the phase table ({table_text}); compare labels "
                                    "made with the same phase table (give it with --phases).")
    return metrics_from_table(table, codes=codes, names=names)


class _Cropped:
    """The block of an open label volume that a segmentation of a z range or a region covers, read like the volume."""

    def __init__(self, vol, z0: int, y0: int, x0: int, shape: tuple[int, ...]):
        self.vol, self.z0, self.y0, self.x0 = vol, z0, y0, x0
        self.shape, self.path, self.dtype = tuple(shape), vol.path, vol.dtype

    def _crop(self, a: np.ndarray) -> np.ndarray:
        return a[..., self.y0:self.y0 + self.shape[1], self.x0:self.x0 + self.shape[2]]

    def slice(self, axis: int, index: int) -> np.ndarray:
        if axis != 0:
            raise ReactomoError("Only XY slices of a cropped reference are read.")
        return self._crop(self.vol.slice(0, self.z0 + int(index)))

    def slab(self, z0: int, z1: int) -> np.ndarray:
        return self._crop(self.vol.slab(self.z0 + z0, self.z0 + z1))


def _box(settings: dict[str, Any], shape: Sequence[int]) -> tuple[int, int, int, int, int, int] | None:
    """(z0, z1, y0, y1, x0, x1) of the scan that a segmentation with these settings covers; None for the whole scan."""
    z_range, region = settings.get("z_range"), settings.get("region")
    if not z_range and not region:
        return None
    z0, z1 = (int(v) for v in (z_range or (0, shape[0])))
    y0, y1, x0, x1 = (int(v) for v in (region or (0, shape[1], 0, shape[2])))
    box = (z0, z1, y0, y1, x0, x1)
    return None if box == (0, shape[0], 0, shape[1], 0, shape[2]) else box


def references(project) -> dict[str, str]:
    """The references a project offers: ``{"ground truth": ..., "demo truth": ...}`` (labels shown to users)."""
    out = {}
    if project.manifest.get("ground_truth"):
        out["ground truth"] = "the accepted ground-truth slices of " + str(project.manifest["ground_truth"].get("step_name", "?"))
    demo = project.demo()
    if demo and demo.get("truth"):
        out["demo truth"] = "the demo experiment's known truth, every voxel of every step"
    return out


def evaluate_segmentation(project, name: str, *, reference: str = "demo truth", steps: Sequence[int] | None = None) -> dict[int, MetricsReport]:
    """Score the project's segmentation ``name`` per step against a reference (see :func:`references`).

    Returns
    -------
    dict
        ``{step: MetricsReport}`` for the steps that are segmented and have the reference.
    """
    from core.workflow.ground_truth import load_accepted
    from core.segmentation.series import read_series_record

    seg = project.manifest["segmentations"].get(name)
    if not seg:
        raise ReactomoError(f"The project has no segmentation called '{name}'; segment the steps first.")
    rec = read_series_record(seg["path"])
    if rec is None:
        raise ReactomoError(f"The segmentation '{name}' has no readable record in {seg['path']}; segment again.")
    phases = project.phases()
    done = {int(s["step"]): s for s in rec["steps"] if s.get("status") == "done"}
    if steps is not None:
        done = {k: v for k, v in done.items() if k in set(int(s) for s in steps)}
    if not done:
        raise ReactomoError(f"No step of the segmentation '{name}' is done yet.")
    scans = project.scans()
    box = _box(rec["settings"], scans[0].shape) if scans else None  # a z range or a region: scored where it was made
    out: dict[int, MetricsReport] = {}
    if reference == "demo truth":
        demo = project.demo()
        if not demo or not demo.get("truth"):
            raise ReactomoError("This project is not the demo experiment, so it has no known truth; use the ground truth as reference.")
        for step, s in sorted(done.items()):
            truth = project.resolve_path(demo["truth"][step])
            out[step] = evaluate_files(s["out_path"], truth, codes=phases.codes, names=phases.names, box=box)
        return out
    if reference == "ground truth":
        stored = load_accepted(project)
        if stored is None:
            raise ReactomoError("This project has no accepted ground truth yet; accept one on the Ground truth page.")
        if stored.step not in done:
            raise ReactomoError(f"The ground truth is on step {stored.step}, which this segmentation has not segmented.")
        from core.imaging.io import open_volume

        codes = list(phases.codes)
        table = np.zeros((len(codes), len(codes) + 1), np.int64)
        z0, z1, y0, y1, x0, x1 = box or (0, 1 << 30, 0, 1 << 30, 0, 1 << 30)
        inside = [(int(z), lab) for z, lab in zip(stored.slices, stored.labels) if z0 <= int(z) < z1]
        if not inside:
            raise ReactomoError(f"None of the ground truth's slices (z {', '.join(str(int(z)) for z in stored.slices)}) "
                                f"lies in the z range {z0}-{z1} this segmentation covers; use the demo truth, or "
                                "segment those slices.")
        with open_volume(done[stored.step]["out_path"]) as p:
            for z, lab in inside:
                table += confusion_table(p.slice(0, z - z0), lab[y0:y1, x0:x1], codes=codes)
        out[stored.step] = metrics_from_table(table, codes=codes, names=phases.names)
        return out
    raise ReactomoError(f"Unknown reference {reference!r}; use 'ground truth' or 'demo truth'.")


def coverage_note(project, name: str) -> str:
    """One sentence when segmentation ``name`` covers part of the scan only (a z range or a region of interest):
    it is scored there, so its scores compare with another's only over the same part. "" for the whole scan."""
    from core.segmentation.series import read_series_record

    seg = (project.manifest.get("segmentations") or {}).get(name) or {}
    scans = project.scans()
    try:
        rec = read_series_record(seg["path"]) or {}
        box = _box(rec.get("settings") or {}, scans[0].shape) if scans else None
    except (ReactomoError, OSError, KeyError, TypeError, ValueError):
        return ""
    if box is None:
        return ""
    z0, z1, y0, y1, x0, x1 = box
    nz, ny, nx = scans[0].shape
    part = [f"z {z0}-{z1}"] + ([f"y {y0}-{y1}", f"x {x0}-{x1}"] if (y0, y1, x0, x1) != (0, ny, 0, nx) else [])
    return (f"'{name}' covers {', '.join(part)} of the {nz}×{ny}×{nx} scan only, and is scored there: compare it "
            "with segmentations of the same part.")


def training_overlap(project, name: str) -> str:
    """One sentence when the accepted ground truth's slices are ones the segmentation's model was trained on ("" when
    none are, or when it cannot be told): scored against them, the Dice says how well the network learned its own
    training labels, not how well it segments what it never saw."""
    from core.network.bundle import read_card
    from core.segmentation.series import read_series_record
    from core.workflow.ground_truth import load_accepted

    seg = project.manifest["segmentations"].get(name) or {}
    stored = load_accepted(project)
    if stored is None or not seg:
        return ""
    try:
        rec = read_series_record(seg["path"]) or {}
        card = read_card(Path(rec["model"]["path"]))
    except (ReactomoError, OSError, KeyError, TypeError, ValueError):
        return ""
    prov = card.get("provenance") or {}
    step = prov.get("step", prov.get("label_step"))  # a project's model, or the shipped one (made from a demo)
    if step is None or int(step) != int(stored.step):
        return ""
    if prov.get("project") is not None and prov["project"] != project.name:
        return ""
    if "demo_config" in prov:  # trained on a demo experiment: this project's slices only if it is that demo
        scans = project.scans()
        if not project.demo() or not scans or list(scans[0].shape) != list(prov["demo_config"].get("shape") or []):
            return ""
    shared = sorted(set(int(z) for z in prov.get("slices") or []) & set(int(z) for z in stored.slices))
    if not shared:
        return ""
    demo = project.demo()
    return (f"The model of '{name}' ({card.get('name', Path(rec['model']['path']).name)}) was trained on "
            f"{len(shared)} of these {len(stored.slices)} ground-truth slices ({', '.join(f'z {z}' for z in shared[:8])}"
            f"{', ...' if len(shared) > 8 else ''}): on them the Dice says how well it learned its own training "
            "labels, not how well it segments what it never saw"
            + ("; the demo truth scores every voxel of every step." if demo and demo.get("truth") else
               "; label a few other slices and accept them to judge it."))


def comparison_rows(reports: dict[str, MetricsReport], *, metric: str = "dice") -> list[dict[str, Any]]:
    """One row per model or segmentation with ``metric`` per phase and averaged (the study's Table 1)."""
    if metric not in METRICS:
        raise ReactomoError(f"Unknown metric {metric!r}; use one of {list(METRICS)}.")
    rows = []
    for label, r in reports.items():
        row: dict[str, Any] = {"model": label}
        for c, n in zip(r.codes, r.names):
            row[n] = r.per_phase[c][metric]
        row["average"] = r.average[metric]
        rows.append(row)
    return rows


def report_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text of table rows (NaN written as empty cells)."""
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if isinstance(v, float) and np.isnan(v) else (f"{v:.6f}" if isinstance(v, float) else v)) for k, v in row.items()})
    return buf.getvalue()
